/**
 * The session annotator shared by `dump`, the proxy and the protocol checker: a pure,
 * synchronous object fed the frames of one milter connection in the order they happened. It
 * decodes them, tracks negotiation, pairs each reply with the command it answers, splits the
 * session into messages, measures latencies and flags protocol mistakes. It never throws on
 * bad traffic: what does not decode becomes an event with an `error` and an issue.
 *
 * @module
 */

import { NO_EVENT_BIT, NO_REPLY_BIT, stageOf } from "../../wire/command_bits.ts";
import { decodeCommand } from "../../wire/command_codec.ts";
import { decodeReply } from "../../wire/reply_codec.ts";
import type {
  Command,
  CommandType,
  Direction,
  Frame,
  Modification,
  Reply,
} from "../../wire/types.ts";
import { SMFIP } from "../../wire/constants.ts";
import { checkModification, type Issue, type IssueRule } from "./check.ts";
import type {
  AnnotatedEvent,
  AnnotatorOptions,
  MessageSummary,
  NegotiationSummary,
  Outcome,
  SessionSummary,
} from "./types.ts";
import { MessageLog, outcomeOf } from "./messages.ts";
import { checkFinal, checkNegotiation, type Pending, PendingReplies } from "./pairing.ts";
import { thrownMessage } from "../../wire/errors.ts";

export type * from "./types.ts";

const MODIFICATIONS = new Set([
  "addheader",
  "insheader",
  "chgheader",
  "replbody",
  "addrcpt",
  "addrcpt_par",
  "delrcpt",
  "chgfrom",
  "quarantine",
]);
const LIBMILTER_MAX_DATA = 65535;

/**
 * Follows one milter session frame by frame.
 *
 * @example
 * ```ts
 * import { SessionAnnotator } from "@milterkit/milterkit/inspect";
 * import { encodeCommand, encodeReply, FrameDecoder } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const frame = (b: Uint8Array) => new FrameDecoder().push(b)[0]!;
 * const a = new SessionAnnotator();
 * a.pushCommand(frame(encodeCommand({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff })), 0);
 * a.pushReply(frame(encodeReply({ type: "optneg", version: 6, actions: 1, protocol: 0 })), 1);
 * a.pushCommand(frame(encodeCommand({ type: "mail", sender: "<a@b>", args: [] })), 2);
 * const r = a.pushReply(frame(encodeReply({ type: "replycode", text: "550 5.7.1 No" })), 5);
 * assert.equal(r.latencyMs, 3);
 * assert.equal(a.summary().messages[0]?.outcome.kind, "reject");
 * ```
 */
export class SessionAnnotator {
  readonly #keep: boolean;
  readonly #events: AnnotatedEvent[] = [];
  readonly #issues: Issue[] = [];
  readonly #log = new MessageLog();
  readonly #pending = new PendingReplies();
  readonly #negotiation: NegotiationSummary & { mta?: NegotiationSummary["mta"] } = {};
  #mtaOffer: NegotiationSummary["mta"];
  #connect: Extract<Command, { type: "connect" }> | undefined;
  readonly #helo: string[] = [];
  #outcome: Outcome | undefined;
  #seq = 0;
  #frames = { toFilter: 0, toMta: 0 };
  #ended: "quit" | "quit_nc" | "eof" = "eof";
  #quit = false;
  #start: number | undefined;
  #end: number | undefined;

  /**
   * Creates an annotator for one session.
   *
   * @param options Whether to keep events.
   */
  constructor(options: AnnotatorOptions = {}) {
    this.#keep = options.keepEvents ?? true;
  }

  /** The events so far (empty when `keepEvents` is false). */
  get events(): readonly AnnotatedEvent[] {
    return this.#events;
  }

  /** The issues found so far. */
  get issues(): readonly Issue[] {
    return this.#issues;
  }

  /** True while a command waits for (more of) its reply. */
  get awaitingReply(): boolean {
    return this.#pending.waiting.length > 0;
  }

  /** The effective protocol word: the filter's NO and NR bits that the MTA offered. */
  get protocol(): number {
    const f = this.#negotiation.filter;
    if (f === undefined) return 0;
    return this.#mtaOffer === undefined ? f.protocol : f.protocol & this.#mtaOffer.protocol;
  }

  #issue(seq: number, rule: IssueRule, message: string): void {
    this.#issues.push({ seq, rule, message });
  }

  #stamp(time: number | undefined): void {
    if (time === undefined || Number.isNaN(time)) return;
    this.#start ??= time;
    this.#end = time;
  }

  #emit(e: AnnotatedEvent): AnnotatedEvent {
    if (this.#keep) this.#events.push(e);
    return e;
  }

  #checkSize(seq: number, frame: Frame, what: string): void {
    const f = this.#negotiation.filter;
    const limit = f && f.protocol & SMFIP.MDS_1M
      ? 1048575
      : f && f.protocol & SMFIP.MDS_256K
      ? 262143
      : LIBMILTER_MAX_DATA;
    if (frame.payload.length > limit) {
      this.#issue(
        seq,
        "oversized-frame",
        `${what} carries ${frame.payload.length} data bytes, over the limit of ${limit}`,
      );
    }
  }

  /**
   * Adds a frame the MTA sent.
   *
   * @param frame The frame.
   * @param time When it was complete (ms), if known.
   * @returns The annotated event.
   */
  pushCommand(frame: Frame, time?: number): AnnotatedEvent {
    const seq = this.#seq++;
    this.#frames.toFilter++;
    this.#stamp(time);
    let cmd: Command;
    try {
      cmd = decodeCommand(frame);
    } catch (e) {
      const error = thrownMessage(e);
      this.#issue(seq, "garbage-frame", error);
      return this.#emit({
        seq,
        time,
        direction: "to-filter",
        frame,
        decoded: { error },
        stage: "none",
      });
    }
    this.#checkSize(seq, frame, `Command ${cmd.type.toUpperCase()}`);
    if (seq === 0 && cmd.type !== "optneg") {
      this.#issue(
        seq,
        "missing-optneg",
        `The session starts with ${cmd.type.toUpperCase()}, not OPTNEG`,
      );
    }
    if (this.#quit) {
      this.#issue(seq, "command-after-quit", `${cmd.type.toUpperCase()} after QUIT`);
    }
    if (cmd.type === "raw") {
      this.#issue(seq, "unknown-code", `Unknown command byte 0x${cmd.code.toString(16)}`);
    }
    const proto = this.protocol;
    const no = NO_EVENT_BIT[cmd.type];
    if (no !== undefined && proto & no) {
      this.#issue(
        seq,
        "disabled-command",
        `${cmd.type.toUpperCase()} sent although the filter set SMFIP_NO${
          cmd.type === "header" ? "HDRS" : cmd.type.toUpperCase()
        }`,
      );
    }
    const msg = this.#route(cmd, seq, time);
    const nr = NO_REPLY_BIT[cmd.type];
    const expects = cmd.type === "optneg" || cmd.type === "eom" ||
      (nr !== undefined && (proto & nr) === 0);
    const recipient = cmd.type === "rcpt" ? msg?.recipients.at(-1) : undefined;
    this.#pending.sent(
      { seq, type: cmd.type, time, message: msg, recipient },
      expects,
      nr !== undefined && !expects,
    );
    const event = this.#emit({
      seq,
      time,
      direction: "to-filter",
      frame,
      decoded: cmd,
      stage: stageName(cmd.type),
      ...(msg ? { message: msg.index } : {}),
    });
    if (cmd.type === "abort" || cmd.type === "quit" || cmd.type === "quit_nc") {
      this.#log.close(undefined, time);
    }
    return event;
  }

  /** Updates session and message state for a command; returns its message. */
  #route(cmd: Command, seq: number, time: number | undefined): MessageSummary | undefined {
    switch (cmd.type) {
      case "optneg":
        if (this.#mtaOffer === undefined) {
          this.#mtaOffer = { version: cmd.version, actions: cmd.actions, protocol: cmd.protocol };
          (this.#negotiation as { mta?: unknown }).mta = this.#mtaOffer;
        }
        return undefined;
      case "connect":
        this.#connect = cmd;
        return undefined;
      case "helo":
        this.#helo.push(cmd.name);
        return undefined;
      case "quit":
      case "quit_nc":
        this.#quit = cmd.type === "quit";
        this.#ended = cmd.type;
        return this.#log.current;
      default:
        return this.#log.route(cmd, seq, time);
    }
  }

  /**
   * Adds a frame the filter sent.
   *
   * @param frame The frame.
   * @param time When it was complete (ms), if known.
   * @returns The annotated event.
   */
  pushReply(frame: Frame, time?: number): AnnotatedEvent {
    const seq = this.#seq++;
    this.#frames.toMta++;
    this.#stamp(time);
    const head = this.#pending.head;
    let reply: Reply;
    try {
      reply = decodeReply(frame);
    } catch (e) {
      const error = thrownMessage(e);
      this.#issue(seq, "garbage-frame", error);
      return this.#emit({
        seq,
        time,
        direction: "to-mta",
        frame,
        decoded: { error },
        stage: head ? stageName(head.type) : "none",
      });
    }
    this.#checkSize(seq, frame, `Reply ${reply.type.toUpperCase()}`);
    const latencyMs = head?.time !== undefined && time !== undefined
      ? Math.round((time - head.time) * 1000) / 1000
      : undefined;
    const base = {
      seq,
      time,
      direction: "to-mta" as const,
      frame,
      decoded: reply,
      stage: head ? stageName(head.type) : "none",
      ...(head ? { answers: head.seq } : {}),
      ...(latencyMs !== undefined ? { latencyMs } : {}),
      ...(head?.message ? { message: head.message.index } : {}),
    };
    if (reply.type === "raw") {
      this.#issue(
        seq,
        "unknown-code",
        `Unknown or reserved response byte 0x${reply.code.toString(16)}`,
      );
      return this.#emit(base);
    }
    if (head === undefined) {
      const v = this.#pending.unpaired(reply);
      this.#issue(seq, v.rule, v.message);
      return this.#emit({ ...base, stage: "none" });
    }
    if (reply.type === "optneg" || head.type === "optneg") {
      if (reply.type !== "optneg" || head.type !== "optneg") {
        this.#issue(
          seq,
          "unsolicited-reply",
          `${reply.type.toUpperCase()} in answer to ${head.type.toUpperCase()}`,
        );
      } else this.#negotiated(seq, reply);
      this.#pending.answered(head);
      return this.#emit({ ...base, final: true });
    }
    if (reply.type === "progress") return this.#emit({ ...base, final: false });
    if (MODIFICATIONS.has(reply.type)) {
      if (head.type !== "eom") {
        this.#issue(
          seq,
          "modification-outside-eom",
          `${reply.type.toUpperCase()} in answer to ${head.type.toUpperCase()} (modifications are only allowed at end of message)`,
        );
      }
      for (const f of checkModification(reply, this.#negotiation.filter?.actions)) {
        this.#issue(seq, f.rule, f.message);
      }
      if (head.type === "eom") head.message?.modifications.push(reply as Modification);
      return this.#emit({ ...base, final: false });
    }
    this.#final(seq, reply, head, latencyMs);
    return this.#emit({ ...base, final: true });
  }

  #negotiated(seq: number, r: Extract<Reply, { type: "optneg" }>): void {
    this.#negotiation.filter = {
      version: r.version,
      actions: r.actions,
      protocol: r.protocol,
      symlists: r.symlists ?? [],
    };
    const mta = this.#mtaOffer;
    if (mta === undefined) return;
    for (const v of checkNegotiation(r, mta)) this.#issue(seq, v.rule, v.message);
  }

  #final(seq: number, reply: Reply, head: Pending, latencyMs: number | undefined): void {
    this.#pending.answered(head);
    const stage = stageName(head.type);
    const m = head.message;
    if (m && latencyMs !== undefined) {
      const s = (m.latency[stage] ??= { count: 0, totalMs: 0, maxMs: 0 });
      s.count++;
      s.totalMs += latencyMs;
      s.maxMs = Math.max(s.maxMs, latencyMs);
    }
    const protocol = this.#negotiation.filter?.protocol ?? 0;
    for (const v of checkFinal(reply, head.type, protocol)) this.#issue(seq, v.rule, v.message);
    if (reply.type === "skip") return;
    const outcome = outcomeOf(reply, stage, seq);
    if (outcome === undefined) return;
    if (stage === "connect" || stage === "helo") {
      if (reply.type !== "continue") this.#outcome = outcome;
      return;
    }
    if (m !== undefined) this.#log.decide(outcome, m, head.recipient, this.#end);
  }

  /**
   * Records that a direction's bytes stopped framing (garbage, a zero or huge length, or a
   * stream that ends inside a frame). Nothing after that point of that direction is read.
   *
   * @param direction The direction whose bytes failed.
   * @param error The frame reader's error (its message names the offset).
   */
  pushFramingError(direction: Direction, error: Error): void {
    const who = direction === "to-filter" ? "MTA" : "filter";
    this.#issue(this.#seq, "garbage-frame", `Bytes from the ${who}: ${error.message}`);
  }

  /**
   * Returns what is known about the session; call it when the connection has ended.
   * Commands still waiting for a reply are reported as `missing-reply`, an open message as
   * `incomplete`.
   *
   * @returns The summary (messages, negotiation, issues).
   */
  summary(): SessionSummary {
    const issues = [...this.#issues, ...this.#pending.missing()];
    issues.sort((a, b) => a.seq - b.seq);
    return {
      negotiation: this.#negotiation,
      ...(this.#connect ? { connect: this.#connect } : {}),
      helo: this.#helo,
      ...(this.#outcome ? { outcome: this.#outcome } : {}),
      messages: this.#log.all,
      issues,
      frames: { ...this.#frames },
      ended: this.#ended,
      startTime: this.#start,
      endTime: this.#end,
    };
  }
}

/** A command's name in reports: its stage (`envfrom`, `envrcpt`, …), else its type (`abort`). */
function stageName(type: CommandType): string {
  return stageOf(type) ?? type;
}
