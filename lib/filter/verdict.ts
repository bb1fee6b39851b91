/**
 * What a filter handler answers, and the rules that turn it into a legal response: reply codes
 * (4xx/5xx, enhanced status class, `%` escaping, line limits, multi-line layout) and which
 * verdicts each stage allows.
 *
 * @module
 */

import type { Reply, Stage } from "../wire/types.ts";

/**
 * A custom SMTP reply. `code` 4xx makes it a temporary failure, 5xx a rejection.
 *
 * @example
 * ```ts
 * import type { ReplyVerdict } from "@milterkit/milterkit";
 * const v: ReplyVerdict = { code: 550, enhanced: "5.7.1", text: "Spam is not welcome here" };
 * ```
 */
export interface ReplyVerdict {
  /** SMTP reply code, 400..599 (421 makes the MTA close the SMTP session). */
  readonly code: number;
  /** Enhanced status code such as `5.7.1`; its first digit must match the code's. */
  readonly enhanced?: string;
  /** The text; an array (or a string with line breaks) gives a multi-line reply. */
  readonly text?: string | readonly string[];
}

/**
 * What a handler may return. `undefined` (returning nothing) means `"continue"`.
 *
 * @example
 * ```ts
 * import type { Verdict } from "@milterkit/milterkit";
 * const verdicts: Verdict[] = ["continue", "reject", { code: 451, text: "Try later" }];
 * ```
 */
export type Verdict =
  | "continue"
  | "accept"
  | "reject"
  | "tempfail"
  | "discard"
  | "skip"
  | ReplyVerdict;

/** Most lines a reply may have (libmilter's limit for `smfi_setmlreply`). */
export const MAX_REPLY_LINES = 32;

/** Most characters of text per reply line (libmilter's limit). */
export const MAX_REPLY_LINE_LENGTH = 980;

/**
 * Builds the wire text of a custom reply: validates the code and enhanced code, escapes `%` as
 * `%%` (Sendmail would otherwise discard the text), and joins multi-line replies with CRLF in
 * the `550-…` / `550 …` layout.
 *
 * @param reply The reply.
 * @returns The text of an SMFIR_REPLYCODE response.
 * @throws {RangeError} when the code is not 4xx/5xx, the enhanced code is malformed or of
 * another class, a line holds CR/LF/NUL, or a limit is exceeded.
 *
 * @example
 * ```ts
 * import { formatReply } from "./verdict.ts";
 * import assert from "node:assert/strict";
 * assert.equal(formatReply({ code: 550, enhanced: "5.7.1", text: "100% spam" }),
 *   "550 5.7.1 100%% spam");
 * assert.equal(formatReply({ code: 451, text: ["one", "two"] }), "451-one\r\n451 two");
 * ```
 */
export function formatReply(reply: ReplyVerdict): string {
  const { code, enhanced } = reply;
  if (!Number.isInteger(code) || code < 400 || code > 599) {
    throw new RangeError(`Reply code ${code} is not 4xx or 5xx`);
  }
  const cls = String(code)[0]!;
  if (enhanced !== undefined) {
    if (!/^[245]\.\d{1,3}\.\d{1,3}$/.test(enhanced)) {
      throw new RangeError(
        `Enhanced status code ${JSON.stringify(enhanced)} is not of the form X.Y.Z`,
      );
    }
    if (enhanced[0] !== cls) {
      throw new RangeError(
        `Enhanced status code ${enhanced} does not match the class of reply code ${code}`,
      );
    }
  }
  const raw = reply.text ?? "";
  const lines = typeof raw === "string" ? raw.split(/\r?\n/) : [...raw];
  if (lines.length === 0) lines.push("");
  if (lines.length > MAX_REPLY_LINES) {
    throw new RangeError(`Reply has ${lines.length} lines, over the limit of ${MAX_REPLY_LINES}`);
  }
  return lines.map((line, i) => {
    if (/[\r\n\0]/.test(line)) throw new RangeError("Reply line contains CR, LF or NUL");
    if (line.length > MAX_REPLY_LINE_LENGTH) {
      throw new RangeError(
        `Reply line of ${line.length} characters is over the limit of ${MAX_REPLY_LINE_LENGTH}`,
      );
    }
    const sep = i === lines.length - 1 ? " " : "-";
    const text = line.replaceAll("%", "%%");
    const body = enhanced === undefined ? text : text === "" ? enhanced : `${enhanced} ${text}`;
    return `${code}${sep}${body}`;
  }).join("\r\n");
}

/** The stages a verdict can be given at (the protocol's one stage vocabulary). */
export type { Stage };

const NO_DISCARD: ReadonlySet<Stage> = new Set(["connect", "helo", "unknown"]);

/**
 * Turns a handler's verdict into the response to send, or explains why it is illegal here.
 *
 * @param verdict What the handler returned (`undefined` = continue).
 * @param stage The stage whose command is being answered.
 * @param skipNegotiated Whether SMFIP_SKIP was negotiated.
 * @returns `{ reply }` to send, or `{ error }` describing the illegal verdict.
 *
 * @example
 * ```ts
 * import { verdictToReply } from "./verdict.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(verdictToReply("reject", "envrcpt", false), { reply: { type: "reject" } });
 * assert.ok("error" in verdictToReply("discard", "connect", false));
 * ```
 */
export function verdictToReply(
  verdict: Verdict | undefined | void,
  stage: Stage,
  skipNegotiated: boolean,
): { reply: Reply } | { error: string } {
  if (verdict === undefined || verdict === "continue") return { reply: { type: "continue" } };
  switch (verdict) {
    case "accept":
    case "reject":
    case "tempfail":
      return { reply: { type: verdict } };
    case "discard":
      return NO_DISCARD.has(stage)
        ? { error: `Verdict "discard" is not allowed at ${stage} (only from envfrom on)` }
        : { reply: { type: "discard" } };
    case "skip":
      if (stage !== "body") {
        return { error: `Verdict "skip" is only allowed at body, not ${stage}` };
      }
      return skipNegotiated ? { reply: { type: "skip" } } : { reply: { type: "continue" } };
  }
  if (typeof verdict !== "object" || verdict === null || typeof verdict.code !== "number") {
    return { error: `Handler returned ${JSON.stringify(verdict)}, which is not a verdict` };
  }
  try {
    return { reply: { type: "replycode", text: formatReply(verdict) } };
  } catch (e) {
    return { error: (e as Error).message };
  }
}
