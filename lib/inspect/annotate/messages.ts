/**
 * The message side of the session annotator: which transaction (MAIL..EOM/ABORT) each
 * command belongs to, and how replies decide messages and recipients.
 *
 * @module
 */

import type { MessageSummary, Outcome, RecipientSummary } from "./types.ts";
import type { Command, Reply } from "../../wire/types.ts";

const IN_MESSAGE = new Set(["rcpt", "data", "header", "eoh", "body", "eom"]);

/**
 * The transactions of one session, built command by command.
 *
 * @example
 * ```ts
 * import { MessageLog } from "./messages.ts";
 * import assert from "node:assert/strict";
 * const log = new MessageLog();
 * log.route({ type: "mail", sender: "<a@b>", args: [] }, 0, undefined);
 * assert.equal(log.current?.sender, "<a@b>");
 * ```
 */
export class MessageLog {
  /** Every message so far, in order. */
  readonly all: MessageSummary[] = [];
  /** The open message, if any. */
  current: MessageSummary | undefined;
  #queueId: string | undefined;

  /**
   * Files a command under its message, opening one at MAIL (or at the first message command
   * when MAIL was switched off).
   *
   * @param cmd The command.
   * @param seq Its event number.
   * @param time Its time, if known.
   * @returns The message it belongs to, or `undefined` outside a message.
   */
  route(cmd: Command, seq: number, time: number | undefined): MessageSummary | undefined {
    if (cmd.type === "macro") {
      const i = cmd.macros.find(([k]) => k === "i" || k === "{i}");
      if (i !== undefined && i[1] !== "") {
        if (this.current) this.current.queueId ??= i[1];
        else this.#queueId = i[1];
      }
      return this.current;
    }
    if (cmd.type === "mail") {
      if (this.current) this.close({ kind: "aborted", stage: "envfrom" }, time);
      const m = this.#open(seq, time);
      m.sender = cmd.sender;
      m.senderArgs = cmd.args;
      return m;
    }
    if (!IN_MESSAGE.has(cmd.type)) return this.current;
    const m = this.current ?? this.#open(seq, time);
    m.endTime = time ?? m.endTime;
    if (cmd.type === "rcpt") m.recipients.push({ address: cmd.recipient, args: cmd.args });
    else if (cmd.type === "header") m.headers.push({ name: cmd.name, value: cmd.value });
    else if (cmd.type === "body") {
      m.bodySize += cmd.chunk.length;
      m.bodyChunks++;
    } else if (cmd.type === "eom" && cmd.chunk) m.bodySize += cmd.chunk.length;
    return m;
  }

  #open(seq: number, time: number | undefined): MessageSummary {
    const m: MessageSummary = {
      index: this.all.length,
      firstSeq: seq,
      senderArgs: [],
      recipients: [],
      headers: [],
      bodySize: 0,
      bodyChunks: 0,
      modifications: [],
      outcome: { kind: "incomplete", stage: "envfrom" },
      latency: {},
      startTime: time,
      endTime: time,
    };
    if (this.#queueId !== undefined) m.queueId = this.#queueId;
    this.all.push(m);
    this.current = m;
    return m;
  }

  /**
   * Ends the open message (ABORT, QUIT, EOM answered); `outcome` replaces an undecided one,
   * else it becomes `aborted`.
   *
   * @param outcome The outcome to set, if undecided.
   * @param time When it ended.
   */
  close(outcome: Outcome | undefined, time: number | undefined): void {
    const m = this.current;
    if (m === undefined) return;
    if (m.outcome.kind === "incomplete") {
      m.outcome = outcome ?? { kind: "aborted", stage: lastStage(m) };
    }
    m.endTime = time ?? m.endTime;
    this.current = undefined;
    this.#queueId = undefined;
  }

  /**
   * Applies a final reply's outcome to its message: RCPT answers decide that recipient (a
   * discard the whole message); CONTINUE before EOM decides nothing; the answer to EOM closes
   * the message.
   *
   * @param outcome The reply's outcome (stage = the answered command).
   * @param m The message of the answered command.
   * @param recipient The recipient, for an answer to RCPT.
   * @param time When the reply came.
   */
  decide(
    outcome: Outcome,
    m: MessageSummary,
    recipient: RecipientSummary | undefined,
    time: number | undefined,
  ): void {
    const stage = outcome.stage;
    if (stage === "unknown") return;
    if (stage === "envrcpt") {
      if (recipient) recipient.outcome = outcome;
      if (outcome.kind !== "discard") return;
    } else if (outcome.reply === "continue" && stage !== "eom") return;
    if (m.outcome.kind === "incomplete") {
      m.outcome = outcome;
      m.endTime = time ?? m.endTime; // the verdict's time
    }
    if (stage === "eom" && this.current === m) this.close(undefined, time);
  }
}

function lastStage(m: MessageSummary): string {
  if (m.bodyChunks > 0) return "body";
  if (m.headers.length > 0) return "header";
  if (m.recipients.length > 0) return "envrcpt";
  return "envfrom";
}

/**
 * The outcome a final reply gives: CONTINUE/ACCEPT accept, a REPLYCODE rejects (5xx) or
 * tempfails (4xx), the others are what they say; SKIP and the rest decide nothing.
 *
 * @param reply The final reply.
 * @param stage The stage of the command it answers (`envfrom`, `eom`, …).
 * @param seq Its event number.
 * @returns The outcome, or `undefined`.
 *
 * @example
 * ```ts
 * import { outcomeOf } from "./messages.ts";
 * import assert from "node:assert/strict";
 * assert.equal(outcomeOf({ type: "replycode", text: "451 4.7.1 Later" }, "eom", 9)?.kind, "tempfail");
 * ```
 */
export function outcomeOf(reply: Reply, stage: string, seq: number): Outcome | undefined {
  switch (reply.type) {
    case "continue":
    case "accept":
      return { kind: "accept", stage, reply: reply.type, seq };
    case "reject":
    case "tempfail":
    case "discard":
    case "shutdown":
      return { kind: reply.type, stage, reply: reply.type, seq };
    case "replycode":
      return {
        kind: reply.text.startsWith("4") ? "tempfail" : "reject",
        stage,
        reply: "replycode",
        text: reply.text,
        seq,
      };
    default:
      return undefined;
  }
}
