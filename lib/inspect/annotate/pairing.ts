/**
 * The reply side of the session annotator: which command each reply answers, and whether that
 * reply may answer it. A queue of the commands waiting for a reply, the last command (to tell a
 * duplicate final reply from a reply to a command whose reply was switched off), and the rules
 * about the filter's OPTNEG reply and its final verdicts. Internal to `annotate.ts`.
 *
 * @module
 */

import { checkReplyText, type Issue, type IssueRule } from "./check.ts";
import type { MessageSummary, NegotiationSummary, RecipientSummary } from "./types.ts";
import type { CommandType, Reply } from "../../wire/types.ts";
import { FINAL_REPLIES } from "../../wire/command_bits.ts";
import { SMFIP } from "../../wire/constants.ts";

/** A rule violation before it is tied to an event. */
type Violation = { rule: IssueRule; message: string };

const MDS_MASK = SMFIP.MDS_256K | SMFIP.MDS_1M;

/** A command waiting for its reply. */
export interface Pending {
  readonly seq: number;
  readonly type: CommandType;
  readonly time: number | undefined;
  readonly message: MessageSummary | undefined;
  readonly recipient: RecipientSummary | undefined;
}

/** The commands of one session that wait for a reply, oldest first. */
export class PendingReplies {
  readonly #pending: Pending[] = [];
  #last: { seq: number; type: CommandType; suppressed: boolean; answered: boolean } | undefined;

  /** The command the next reply answers, if any. */
  get head(): Pending | undefined {
    return this.#pending[0];
  }

  /** The commands still waiting, oldest first. */
  get waiting(): readonly Pending[] {
    return this.#pending;
  }

  /**
   * Records a command the MTA sent.
   *
   * @param command The command (queued when it expects a reply).
   * @param expects Whether it waits for a reply.
   * @param suppressed Whether its reply was switched off by an NR_* flag.
   */
  sent(command: Pending, expects: boolean, suppressed: boolean): void {
    if (expects) this.#pending.push(command);
    if (command.type !== "macro") {
      this.#last = { seq: command.seq, type: command.type, suppressed, answered: false };
    }
  }

  /**
   * Marks the oldest waiting command as answered by a final reply.
   *
   * @param head The command (the current `head`).
   */
  answered(head: Pending): void {
    this.#pending.shift();
    if (this.#last?.seq === head.seq) this.#last.answered = true;
  }

  /**
   * Explains a reply that came while no command waited for one.
   *
   * @param reply The reply.
   * @returns The rule it breaks.
   */
  unpaired(reply: Reply): Violation {
    const last = this.#last;
    if (last?.suppressed) {
      return {
        rule: "reply-after-noreply",
        message:
          `${reply.type.toUpperCase()} answers event ${last.seq}, whose reply was switched off by an NR_* flag`,
      };
    } else if (last?.answered && last.type !== "optneg" && FINAL_REPLIES.has(reply.type)) {
      return {
        rule: "duplicate-final",
        message: `Second final reply ${reply.type.toUpperCase()} to event ${last.seq}`,
      };
    }
    return {
      rule: "unsolicited-reply",
      message: `${reply.type.toUpperCase()} while no command waits for a reply`,
    };
  }

  /**
   * Lists the commands that never got their reply.
   *
   * @returns One `missing-reply` issue per waiting command.
   */
  missing(): Issue[] {
    return this.#pending.map((p) => ({
      seq: p.seq,
      rule: "missing-reply",
      message: `${p.type.toUpperCase()} got no reply before the session ended`,
    }));
  }
}

/**
 * Checks the filter's OPTNEG reply against what the MTA offered.
 *
 * @param r The filter's OPTNEG reply.
 * @param mta The MTA's offer.
 * @returns A `bad-negotiation` violation, if the reply asks for more than was offered.
 */
export function checkNegotiation(
  r: Extract<Reply, { type: "optneg" }>,
  mta: NonNullable<NegotiationSummary["mta"]>,
): Violation[] {
  const problems: string[] = [];
  if (r.version > mta.version || r.version < 2) {
    problems.push(`version ${r.version} (MTA offered ${mta.version})`);
  }
  const extraActions = r.actions & ~mta.actions;
  if (extraActions) problems.push(`actions 0x${extraActions.toString(16)} not offered`);
  const extraProto = r.protocol & ~mta.protocol & ~MDS_MASK;
  if (extraProto) problems.push(`protocol bits 0x${extraProto.toString(16)} not offered`);
  if (problems.length === 0) return [];
  return [{
    rule: "bad-negotiation",
    message: `Filter's OPTNEG reply asks for ${problems.join(", ")}`,
  }];
}

/**
 * Checks that a final reply may answer the command it answers.
 *
 * @param reply The final reply.
 * @param stage The type of the command it answers.
 * @param protocol The filter's negotiated protocol word (0 before negotiation).
 * @returns The violations, in the order they are reported.
 */
export function checkFinal(
  reply: Reply,
  stage: string,
  protocol: number,
): Violation[] {
  if (reply.type === "skip") {
    if (protocol & SMFIP.SKIP) {
      if (!["body", "header", "rcpt"].includes(stage)) {
        return [{
          rule: "verdict-not-allowed",
          message: `SKIP in answer to ${stage.toUpperCase()} (only BODY is portable)`,
        }];
      }
      return [];
    }
    return [{
      rule: "skip-not-negotiated",
      message: "SKIP sent without SMFIP_SKIP in the negotiation",
    }];
  }
  const out: Violation[] = [];
  if (reply.type === "discard" && ["connect", "helo", "unknown"].includes(stage)) {
    out.push({
      rule: "verdict-not-allowed",
      message: `DISCARD in answer to ${stage.toUpperCase()}`,
    });
  }
  if (reply.type === "connfail") {
    out.push({
      rule: "verdict-not-allowed",
      message: "SMFIR_CONN_FAIL is reserved and implemented by no MTA",
    });
  }
  if (reply.type === "replycode") {
    for (const p of checkReplyText(reply.text)) out.push({ rule: "bad-reply-code", message: p });
  }
  return out;
}
