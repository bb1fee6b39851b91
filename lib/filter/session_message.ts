/**
 * The message part of the session state machine (no I/O): events and their answers, the body
 * (buffered or streamed to `bodyStream`), and end of message with its modifications.
 *
 * @module
 */

import { FilterHandlerError } from "../wire/errors.ts";
import type { Reply } from "../wire/types.ts";
import type { EnvelopeAddress } from "../mail/envelope.ts";
import { bindEom } from "./context.ts";
import { bodyBuffering } from "./filter.ts";
import { EVENT_BITS } from "./negotiate.ts";
import type { Stage } from "./verdict.ts";
import { BodyStream, collectBody } from "./session_body.ts";
import { EomOutput } from "./session_eom.ts";
import { type Cont, CONTINUE, MachineCore } from "./session_core.ts";
import { briefChange, type ServedMessage } from "./log.ts";

/** A modification as queued at end of message. */
type Change = Parameters<typeof briefChange>[0];

/** Events, body and end of message on top of the machine's mechanics. */
export abstract class MessageMachine<C, M> extends MachineCore<C, M> {
  protected stream: BodyStream | undefined;
  protected eomReply: Reply = CONTINUE;
  /** The end-of-message modifications, for the message record. */
  protected eomQueue: readonly Change[] = [];
  /** When the open message began, and the last stage it reached (for the message record). */
  protected messageStarted = 0;
  protected messageStage: Stage = "envfrom";
  /** The event being answered (one at a time): stage, start, whether the MTA waits, rcpt. */
  protected evStage: Exclude<Stage, "eom"> = "connect";
  protected evStarted = 0;
  protected evReplies = false;
  protected evRcpt: EnvelopeAddress | undefined;
  /** The filter's body buffering settings. */
  protected readonly buffering = bodyBuffering(this.filter);
  protected readonly onResult: Cont = (v, e, f) =>
    this.answer(this.evStage, this.verdict(this.evStage, v, e, f));

  protected expectsReply(stage: Exclude<Stage, "eom">): boolean {
    return (this.negotiatedAs!.protocol & EVENT_BITS[stage].nr) === 0;
  }

  /** Runs a handler for an event and answers it when the MTA waits for an answer. */
  protected event(stage: Exclude<Stage, "eom">, invoke: () => unknown): void {
    const flow = this.flow;
    this.evStage = stage;
    if (stage !== "connect" && stage !== "helo" && stage !== "unknown") this.messageStage = stage;
    this.evStarted = performance.now();
    this.evReplies = this.expectsReply(stage);
    const messageStage = stage !== "connect" && stage !== "helo" && stage !== "unknown";
    if (flow.pending !== undefined && this.evReplies && messageStage) {
      const reply = flow.pending;
      flow.pending = undefined;
      return this.answer(stage, reply);
    }
    if (flow.bypass(stage, messageStage) || typeof this.filter[stage] !== "function") {
      return this.answer(stage, CONTINUE);
    }
    this.call(stage, invoke, this.onResult);
  }

  protected answer(stage: Exclude<Stage, "eom">, reply: Reply): void {
    const flow = this.flow;
    if (stage === "envrcpt" && reply.type === "continue") {
      this.state.recipients.push(this.evRcpt!);
    }
    if (!this.evReplies) {
      if (reply.type !== "continue") {
        const messageStage = stage !== "connect" && stage !== "helo" && stage !== "unknown";
        if (messageStage && flow.inMessage) flow.pending = reply;
        this.emit({
          type: "error",
          stage,
          error: new FilterHandlerError(
            `The ${stage} handler answered ${reply.type} but ${stage} is negotiated as no-reply;` +
              (messageStage ? " it is sent at the next answered command" : " it is dropped"),
            stage,
          ),
        });
      }
      return;
    }
    this.send(reply);
    this.emit({ type: "reply", stage, reply, latencyMs: performance.now() - this.evStarted });
    if (flow.afterReply(stage, reply)) this.finishMessage(reply, stage);
  }

  protected collect(chunk: Uint8Array): void {
    const limit = collectBody(this.buffering, this.state, chunk);
    if (limit !== undefined && this.flow.pending === undefined && !this.flow.decided) {
      this.flow.pending = limit.reply;
      this.emit({ type: "error", stage: "body", error: limit.error });
    }
  }

  protected body(chunk: Uint8Array): void {
    this.collect(chunk);
    const f = this.filter;
    if (f.bodyStream && !this.flow.decided && !this.flow.connectionDecided) {
      const s = this.stream ??= new BodyStream((stream) => f.bodyStream!(stream, this.ctx));
      if (s.settled === undefined && !s.pipe.offer(chunk)) {
        return this.block(s.pipe.room(), "body", (_v, e, failed) => {
          if (failed) s.settled ??= { error: e };
          this.bodyAfterStream(chunk);
        });
      }
    }
    this.bodyAfterStream(chunk);
  }

  protected bodyAfterStream(chunk: Uint8Array): void {
    const s = this.stream;
    if (s?.settled !== undefined && !s.judged) {
      // The stream handler decided before the end of the body.
      s.judged = true;
      const early = s.settled;
      const r = "error" in early
        ? this.verdict("body", undefined, early.error, true)
        : this.verdict("body", early.value, undefined, false);
      if (r.type !== "continue") {
        this.dropStream();
        if (!this.expectsReply("body")) this.flow.pending ??= r;
        else {
          this.send(r);
          if (this.flow.afterReply("body", r)) this.finishMessage(r, "body");
        }
        return;
      }
    }
    this.event("body", () => this.filter.body?.(chunk, this.ctx));
  }

  protected eom(): void {
    const flow = this.flow;
    this.evStarted = performance.now();
    if (flow.pending !== undefined) return this.eomFinal(flow.pending);
    if (flow.connectionDecided || flow.decided) return this.eomFinal(CONTINUE);
    const s = this.stream;
    if (s === undefined) return this.eomHandler(CONTINUE);
    s.pipe.close();
    if (s.settled !== undefined) {
      if (s.judged) return this.eomHandler(CONTINUE);
      const early = s.settled;
      return this.eomHandler(
        "error" in early
          ? this.verdict("body", undefined, early.error, true)
          : this.verdict("body", early.value, undefined, false),
      );
    }
    this.block(s.task!, "body", (v, e, failed) => {
      this.eomHandler(this.verdict("body", v, e, failed));
    });
  }

  protected eomHandler(reply: Reply): void {
    const eom = reply.type === "continue"
      ? bindEom(this.filter, this.state, () => this.progress())
      : undefined;
    if (eom === undefined) return this.eomFinal(reply);
    const ctx = eom.ctx;
    this.eomQueue = ctx.queue;
    this.call("eom", eom.call, (v, e, failed) => {
      const r = this.verdict("eom", v, e, failed);
      if (r.type !== "continue" && r.type !== "accept") return this.eomFinal(r);
      this.eomReply = r;
      this.eomOut = new EomOutput(ctx.queue);
    }, true);
  }

  protected full = (): boolean => this.outBytes >= this.outputLimit;

  protected pumpEom(): void {
    const out = this.eomOut!;
    const r = out.fill(this.send, this.full);
    if (r === "full") return;
    if (r === "done") {
      this.eomOut = undefined;
      return this.eomFinal(this.eomReply);
    }
    this.block(r, "eom", (v, e, failed) => {
      if (!failed) return out.received(v as ReadableStreamReadResult<Uint8Array>, this.send);
      this.eomOut = undefined;
      this.emit({ type: "error", error: out.failed(e), stage: "eom" });
      this.eomFinal(this.fallbackReply());
    });
    this.wait.limitMs = 0;
  }

  protected eomFinal(reply: Reply): void {
    this.send(reply);
    this.emit({
      type: "reply",
      stage: "eom",
      reply,
      latencyMs: performance.now() - this.evStarted,
    });
    this.messageCount++;
    const sent = reply.type === "continue" || reply.type === "accept" ? this.eomQueue : [];
    if (this.flow.inMessage) this.finishMessage(reply, "eom", sent);
    this.eomQueue = [];
    this.resetMessage();
  }

  protected startMessage(sender: EnvelopeAddress | undefined): void {
    this.state.newMessage(sender);
    this.flow.start();
    this.messageStarted = performance.now();
    this.messageStage = "envfrom";
  }

  /** With SMFIP_NOMAIL the first command of a message is RCPT, DATA, a header, … */
  protected ensureMessage(): void {
    if (this.flow.state === "idle") this.startMessage(undefined);
  }

  protected finishMessage(reply: Reply, stage: Stage, changes: readonly Change[] = []): void {
    const record = this.record(reply.type, stage, reply, changes);
    this.emit({ type: "message", verdict: reply.type, number: record.number, record });
  }

  /** What the per-message log line shows about the open message. */
  protected record(
    verdict: ServedMessage["verdict"],
    stage: Stage,
    reply: Reply | undefined,
    changes: readonly Change[],
  ): ServedMessage {
    const st = this.state;
    return {
      number: st.messageNumber,
      queueId: st.macros.get("i"),
      client: st.client,
      sender: st.sender?.raw,
      recipients: st.recipients.map((r) => r.raw),
      verdict,
      stage,
      reply: reply?.type === "replycode" ? reply.text : undefined,
      changes: changes.map(briefChange),
      bodyBytes: st.bodySize,
      durationMs: performance.now() - this.messageStarted,
    };
  }

  protected dropStream(): void {
    this.stream?.drop();
    this.stream = undefined;
  }

  protected resetMessage(): void {
    this.flow.reset();
    this.dropStream();
    this.state.resetMessage();
  }
}
