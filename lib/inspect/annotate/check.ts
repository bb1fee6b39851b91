/**
 * The protocol checker's per-frame rules: reply-code syntax, header indexes, CR in header
 * values, action bits. Pure functions over decoded replies; the stateful rules (pairing,
 * no-reply, stage) live in `annotate.ts` and `annotate_pairing.ts`.
 *
 * @module
 */

import { MODIFICATION_ACTION } from "../../wire/command_bits.ts";
import type { Reply } from "../../wire/types.ts";
import { SMFIF } from "../../wire/constants.ts";

/**
 * What the checker can flag, one name per rule:
 * - `missing-optneg`: the MTA's first frame is not OPTNEG
 * - `bad-negotiation`: the filter's OPTNEG reply asks for a higher version, or actions or
 *   protocol bits the MTA did not offer
 * - `reply-after-noreply`: a reply to a command whose reply was switched off (NR_*)
 * - `duplicate-final`: a second final reply to one command
 * - `unsolicited-reply`: a reply when no command waits for one (e.g. before OPTNEG)
 * - `missing-reply`: a command that waits for a reply got none before the session ended
 * - `modification-outside-eom`: a modification frame not between EOM and its final reply
 * - `action-not-negotiated`: a modification whose SMFIF_* action was not negotiated
 * - `bad-header-index`: CHGHEADER index 0 or huge; INSHEADER index that is negative as int32
 * - `cr-in-header`: a CR in a header name or value sent by the filter
 * - `bad-reply-code`: a REPLYCODE text that is not a valid 4xx/5xx SMTP reply
 * - `skip-not-negotiated`: SKIP without SMFIP_SKIP
 * - `verdict-not-allowed`: a reply not allowed for the command it answers (discard at connect)
 * - `disabled-command`: the MTA sent a command the filter switched off (NO*)
 * - `command-after-quit`: a command after QUIT
 * - `oversized-frame`: a frame over 65535 data bytes (libmilter's limit) without MDS_*
 * - `garbage-frame`: bytes that do not frame or decode as milter
 * - `unknown-code`: a command or response byte the protocol does not define
 */
export type IssueRule =
  | "missing-optneg"
  | "bad-negotiation"
  | "reply-after-noreply"
  | "duplicate-final"
  | "unsolicited-reply"
  | "missing-reply"
  | "modification-outside-eom"
  | "action-not-negotiated"
  | "bad-header-index"
  | "cr-in-header"
  | "bad-reply-code"
  | "skip-not-negotiated"
  | "verdict-not-allowed"
  | "disabled-command"
  | "command-after-quit"
  | "oversized-frame"
  | "garbage-frame"
  | "unknown-code";

/** One finding of the protocol checker. */
export interface Issue {
  /** The event (frame) that shows the problem. */
  readonly seq: number;
  /** Which rule it breaks. */
  readonly rule: IssueRule;
  /** What is wrong, in a sentence. */
  readonly message: string;
}

/** Largest CHGHEADER index the checker takes as plausible. */
const MAX_PLAUSIBLE_INDEX = 0xffff;

/**
 * Lists what is wrong with an SMTP reply text sent in SMFIR_REPLYCODE.
 *
 * @param text The reply as decoded (lines joined with CRLF).
 * @returns Problems in sentences; empty when the reply is valid.
 *
 * @example
 * ```ts
 * import { checkReplyText } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.deepEqual(checkReplyText("550 5.7.1 No"), []);
 * assert.equal(checkReplyText("250 ok").length, 1);
 * ```
 */
export function checkReplyText(text: string): string[] {
  const problems: string[] = [];
  const lines = text.split("\r\n");
  let code: string | undefined;
  lines.forEach((line, i) => {
    const last = i === lines.length - 1;
    const where = lines.length > 1 ? `line ${i + 1}: ` : "";
    const m = /^(\d{3})(?:([ -])(.*))?$/s.exec(line);
    if (m === null) {
      problems.push(
        `${where}does not start with a 3-digit code and a space: ${
          JSON.stringify(line.slice(0, 20))
        }`,
      );
      return;
    }
    const [, digits, sep, rest = ""] = m;
    if (i === 0 && !/^[45]/.test(digits!)) {
      problems.push(`Reply code ${digits} is not 4xx or 5xx`);
    }
    if (code !== undefined && digits !== code) {
      problems.push(`${where}code ${digits} differs from the first line's ${code}`);
    }
    code ??= digits;
    if (!last && sep !== "-") problems.push(`${where}a line before the last must use "${digits}-"`);
    if (last && sep === "-") problems.push(`${where}the last line must use "${digits} ", not "-"`);
    if (/[\r\n]/.test(rest)) {
      problems.push(`${where}bare CR or LF inside a line (join lines with CRLF)`);
    }
    const enhanced = /^(\d)\.\d{1,3}\.\d{1,3}(?: |$)/.exec(rest);
    if (enhanced && enhanced[1] !== digits![0]) {
      problems.push(
        `${where}enhanced status ${rest.split(" ")[0]} does not match the class of ${digits}`,
      );
    }
    if (/%(?!%)/.test(rest.replaceAll("%%", ""))) {
      problems.push(`${where}lone "%" (write "%%"; Sendmail drops the whole text)`);
    }
  });
  return problems;
}

/**
 * Checks one modification against the negotiated actions and the header rules.
 *
 * @param reply A decoded modification reply.
 * @param actions The negotiated SMFIF_* word, or `undefined` before negotiation.
 * @returns Rule violations (without `seq`).
 *
 * @example
 * ```ts
 * import { checkModification } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * const found = checkModification({ type: "chgheader", index: 0, name: "X", value: "" }, 0x10);
 * assert.equal(found[0]?.rule, "bad-header-index");
 * ```
 */
export function checkModification(
  reply: Reply,
  actions: number | undefined,
): { rule: IssueRule; message: string }[] {
  const out: { rule: IssueRule; message: string }[] = [];
  const bit = MODIFICATION_ACTION[reply.type];
  if (bit !== undefined && actions !== undefined && (actions & bit) === 0) {
    const name = Object.entries(SMFIF).find(([, v]) => v === bit)?.[0] ?? "?";
    out.push({
      rule: "action-not-negotiated",
      message: `${reply.type.toUpperCase()} needs SMFIF_${name}, which was not negotiated`,
    });
  }
  if (reply.type === "chgheader") {
    if (reply.index === 0) {
      out.push({
        rule: "bad-header-index",
        message: `CHGHEADER index 0 for ${reply.name}: indexes are 1-based (MTAs take 0 as 1)`,
      });
    } else if (reply.index > MAX_PLAUSIBLE_INDEX) {
      out.push({
        rule: "bad-header-index",
        message: `CHGHEADER index ${reply.index} for ${reply.name} is over ${MAX_PLAUSIBLE_INDEX}`,
      });
    }
  }
  if (reply.type === "insheader" && reply.index >= 0x80000000) {
    out.push({
      rule: "bad-header-index",
      message: `INSHEADER index ${reply.index} is ${
        reply.index - 0x100000000
      } as a signed number (Postfix: configuration error)`,
    });
  }
  if (
    (reply.type === "addheader" || reply.type === "insheader" || reply.type === "chgheader") &&
    (reply.name.includes("\r") || reply.value.includes("\r"))
  ) {
    out.push({
      rule: "cr-in-header",
      message: `${reply.type.toUpperCase()} ${reply.name}: CR in a header (fold with LF only)`,
    });
  }
  return out;
}
