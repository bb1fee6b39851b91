/**
 * Judging the filter's responses on the MTA side: which responses are legal after which
 * command, given what was negotiated (milter-protocol.md §3.4, portable subset, plus Postfix's
 * extras when imitating Postfix). Pure and synchronous; `MilterClient` feeds it frame by frame.
 *
 * @module
 */

import { MODIFICATION_ACTION } from "../wire/command_bits.ts";
import { replyName } from "./negotiate.ts";
import type { FinalReply } from "./types.ts";
import { MilterProtocolError } from "../wire/errors.ts";
import type { Modification, MtaStyle, Reply, Stage } from "../wire/types.ts";
import { SMFIF, SMFIP } from "../wire/constants.ts";

/** libmilter names of the commands, for messages. */
export const STAGE_COMMAND: Readonly<Record<Stage, string>> = {
  connect: "SMFIC_CONNECT",
  helo: "SMFIC_HELO",
  envfrom: "SMFIC_MAIL",
  envrcpt: "SMFIC_RCPT",
  data: "SMFIC_DATA",
  header: "SMFIC_HEADER",
  eoh: "SMFIC_EOH",
  body: "SMFIC_BODY",
  eom: "SMFIC_BODYEOB",
  unknown: "SMFIC_UNKNOWN",
};

const ACTION_LABEL: Readonly<Record<number, string>> = {
  [SMFIF.ADDHDRS]: "ADDHDRS",
  [SMFIF.CHGBODY]: "CHGBODY",
  [SMFIF.ADDRCPT]: "ADDRCPT",
  [SMFIF.DELRCPT]: "DELRCPT",
  [SMFIF.CHGHDRS]: "CHGHDRS",
  [SMFIF.QUARANTINE]: "QUARANTINE",
  [SMFIF.CHGFROM]: "CHGFROM",
  [SMFIF.ADDRCPT_PAR]: "ADDRCPT_PAR",
};

/**
 * Finds what is wrong with an SMFIR_REPLYCODE text, checking every line the way Postfix checks
 * the first (4xx/5xx, three digits, `-` on all lines but the last, enhanced-code class equal to
 * the reply class) plus same code on every line and no bare CR/LF.
 *
 * @param text The reply text (lines joined with CRLF).
 * @returns A description of the first problem, or undefined when valid.
 *
 * @example
 * ```ts
 * import { replyCodeProblem } from "./replies.ts";
 * import assert from "node:assert/strict";
 * assert.equal(replyCodeProblem("550 5.7.1 No"), undefined);
 * assert.match(replyCodeProblem("250 ok") ?? "", /4xx\/5xx/);
 * ```
 */
export function replyCodeProblem(text: string): string | undefined {
  const lines = text.split("\r\n");
  for (const [i, line] of lines.entries()) {
    if (!/^[45][0-9][0-9]([ -]|$)/.test(line)) {
      return `line ${i + 1} does not start with a 4xx/5xx code`;
    }
    if (line.slice(0, 3) !== text.slice(0, 3)) {
      return `line ${i + 1} has code ${line.slice(0, 3)}, the first line ${text.slice(0, 3)}`;
    }
    const sep = line[3];
    if (i < lines.length - 1 ? sep !== "-" : sep === "-") {
      return `line ${i + 1} has the wrong separator after the code`;
    }
    if (/[\r\n]/.test(line)) return `line ${i + 1} holds a bare CR or LF`;
    const d = line[4];
    if (d !== undefined && d >= "0" && d <= "9" && d !== line[0]) {
      return `enhanced status class ${d} differs from reply class ${line[0]}`;
    }
  }
  return undefined;
}

/** What the judge needs to know about the session. */
export interface JudgeContext {
  /** The command being answered. */
  readonly stage: Stage;
  /** Negotiated `SMFIF_*` actions. */
  readonly actions: number;
  /** Negotiated `SMFIP_*` bits. */
  readonly protocol: number;
  /** Whose extras are allowed (Postfix: SHUTDOWN; contiguous REPLBODY). */
  readonly mta: MtaStyle;
}

/** How one response fits: keep reading (`progress`, `modification`) or done (`final`). */
export type Judgement =
  | { readonly kind: "progress" }
  | { readonly kind: "modification"; readonly modification: Modification }
  | { readonly kind: "final"; readonly verdict: FinalReply };

/**
 * Judges the responses to one command, in order. Create one per command.
 *
 * @example
 * ```ts
 * import { ReplyJudge } from "./replies.ts";
 * import assert from "node:assert/strict";
 * const j = new ReplyJudge({ stage: "eom", actions: 0x1, protocol: 0, mta: "postfix" });
 * assert.equal(j.judge({ type: "addheader", name: "X", value: "1" }).kind, "modification");
 * assert.deepEqual(j.judge({ type: "accept" }), { kind: "final", verdict: { type: "accept" } });
 * assert.throws(() => j.judge({ type: "chgfrom", sender: "<a@b>" }));
 * ```
 */
export class ReplyJudge {
  readonly #ctx: JudgeContext;
  #replbody: "none" | "open" | "locked" = "none";

  /**
   * Creates a judge for one command.
   *
   * @param ctx The command and what was negotiated.
   */
  constructor(ctx: JudgeContext) {
    this.#ctx = ctx;
  }

  #unexpected(reply: Reply, why: string): MilterProtocolError {
    return new MilterProtocolError(
      `Filter sent ${replyName(reply)} in answer to ${STAGE_COMMAND[this.#ctx.stage]}: ${why}`,
      { reason: "unexpected", ...(reply.type === "raw" ? { code: reply.code } : {}) },
    );
  }

  /**
   * Judges the next response.
   *
   * @param reply The decoded response.
   * @returns Whether to keep reading, and what was received.
   * @throws {MilterProtocolError} reason `unexpected` for a response not allowed here (naming
   * the response and the command), `malformed` for a bad reply code or empty header name.
   */
  judge(reply: Reply): Judgement {
    const { stage, actions, protocol, mta } = this.#ctx;
    if (this.#replbody === "open" && reply.type !== "replbody") this.#replbody = "locked";
    switch (reply.type) {
      case "progress":
        return { kind: "progress" };
      case "addheader":
      case "insheader":
      case "chgheader":
      case "replbody":
      case "addrcpt":
      case "addrcpt_par":
      case "delrcpt":
      case "chgfrom":
      case "quarantine": {
        if (stage !== "eom") {
          throw this.#unexpected(reply, "modifications are only allowed at end of message");
        }
        const bit = MODIFICATION_ACTION[reply.type] ?? 0;
        if (bit === 0 || (actions & bit) === 0) {
          throw this.#unexpected(reply, `action ${ACTION_LABEL[bit]} was not negotiated`);
        }
        if (reply.type === "replbody") {
          if (this.#replbody === "locked" && mta === "postfix") {
            throw this.#unexpected(
              reply,
              "REPLBODY chunks must be contiguous (Postfix cannot mix them with other responses)",
            );
          }
          this.#replbody = "open";
        }
        if (
          (reply.type === "addheader" || reply.type === "insheader" ||
            reply.type === "chgheader") && reply.name === ""
        ) {
          throw new MilterProtocolError(
            `Filter sent ${replyName(reply)} with an empty header name in answer to ${
              STAGE_COMMAND[stage]
            }`,
            { reason: "malformed" },
          );
        }
        return { kind: "modification", modification: reply };
      }
      case "continue":
      case "accept":
      case "reject":
      case "tempfail":
        return { kind: "final", verdict: reply };
      case "replycode": {
        const problem = replyCodeProblem(reply.text);
        if (problem !== undefined) {
          throw new MilterProtocolError(
            `Filter sent a malformed SMFIR_REPLYCODE in answer to ${
              STAGE_COMMAND[stage]
            }: ${problem} (${JSON.stringify(reply.text)})`,
            { reason: "malformed" },
          );
        }
        return { kind: "final", verdict: reply };
      }
      case "discard":
        if (stage === "connect" || stage === "helo" || stage === "unknown") {
          throw this.#unexpected(reply, "DISCARD is only allowed from MAIL on");
        }
        return { kind: "final", verdict: reply };
      case "skip":
        if (stage !== "body") {
          throw this.#unexpected(reply, "SKIP is only portable in answer to BODY");
        }
        if ((protocol & SMFIP.SKIP) === 0) {
          throw this.#unexpected(reply, "SMFIP_SKIP was not negotiated");
        }
        return { kind: "final", verdict: reply };
      case "shutdown":
        if (mta !== "postfix") {
          throw this.#unexpected(reply, "SHUTDOWN is only understood by Postfix");
        }
        return { kind: "final", verdict: reply };
      default:
        throw this.#unexpected(reply, "not a valid response here");
    }
  }
}
