/**
 * The filter session engine: serves one MTA connection (a {@link Duplex}) with a
 * {@link Filter}. It negotiates, tracks state leniently (Postfix's extra ABORTs, macros for
 * switched-off events, repeated HELO, QUIT_NC reuse), calls the handlers, validates what they
 * return, and never sends the MTA anything illegal: a handler that throws, hangs or returns
 * nonsense is answered with the configured fallback.
 *
 * @module
 */

import { BodyPipe } from "./body_pipe.ts";
import { decodeCommand } from "../wire/command_codec.ts";
import {
  ConnectionClosedError,
  FilterHandlerError,
  MilterError,
  MilterProtocolError,
  MilterTimeoutError,
} from "../wire/errors.ts";
import { parseAddress, parseEsmtpArgs } from "../mail/esmtp.ts";
import { bodyBuffering, type EventName, type Filter, type HandlerResult } from "./filter.ts";
import { bindEom, ContextView, type EomContextView, SessionState } from "./context.ts";
import { FrameDecoder } from "../wire/frame.ts";
import {
  EVENT_BITS,
  type FilterRequirements,
  negotiateFilter,
  requirementsOf,
} from "./negotiate.ts";
import { encodeReply } from "../wire/reply_codec.ts";
import type { Command, Duplex, Negotiated, Reply } from "../wire/types.ts";
import { type ReplyVerdict, type Stage, verdictToReply } from "./verdict.ts";
import { MILTER_CHUNK_SIZE, SMFIP } from "../wire/constants.ts";
import type { EnvelopeAddress } from "../mail/envelope.ts";

/** What the MTA is told when a handler fails: a verdict, or a custom reply. */
export type Fallback = "tempfail" | "reject" | "accept" | "continue" | ReplyVerdict;

/**
 * Something that happened in a session, for logs and metrics.
 *
 * @example
 * ```ts
 * import type { SessionEvent } from "@milterkit/milterkit";
 * const log = (e: SessionEvent) => { if (e.type === "error") console.error(e.error.message); };
 * ```
 */
export type SessionEvent =
  | { readonly type: "negotiated"; readonly negotiated: Negotiated }
  | {
    readonly type: "reply";
    readonly stage: Stage;
    readonly reply: Reply;
    readonly latencyMs: number;
  }
  | { readonly type: "error"; readonly error: Error; readonly stage?: Stage }
  | { readonly type: "message"; readonly verdict: Reply["type"]; readonly number: number }
  | { readonly type: "progress"; readonly stage: Stage };

/** Options of {@link serveConnection}. */
export interface SessionOptions {
  /** Answer when a handler throws, times out or returns something illegal. Default tempfail. */
  readonly fallback?: Fallback;
  /** Largest frame data accepted, in bytes (default 1 MiB). */
  readonly maxDataSize?: number;
  /** Time a handler may take before the fallback is sent (default 0: no limit). */
  readonly handlerTimeoutMs?: number;
  /** Time the eom handler may take (default: `handlerTimeoutMs`). */
  readonly eomTimeoutMs?: number;
  /** While the eom handler runs longer than this, send PROGRESS at this interval (0: off). */
  readonly progressIntervalMs?: number;
  /** Close the connection after this long without a command (default 0: never). */
  readonly idleTimeoutMs?: number;
  /** When aborted: a running handler gets the fallback, then the connection closes. */
  readonly signal?: AbortSignal;
  /** Receives session events. Must not throw. */
  readonly onEvent?: (event: SessionEvent) => void;
}

/** How a session ended. */
export interface ServedSession {
  /** Messages that reached a verdict. */
  readonly messages: number;
  /** What was negotiated (undefined when negotiation did not happen). */
  readonly negotiated: Negotiated | undefined;
  /** Why the session ended. */
  readonly end: "quit" | "eof" | "error" | "signal" | "idle";
  /** The error that ended it, if any. */
  readonly error?: Error;
}

/** Replies that end the current message (at any stage but RCPT). */
const FINAL_FOR_MESSAGE = new Set(["accept", "reject", "tempfail", "discard", "replycode"]);

class Stop extends Error {}

/**
 * Serves one MTA connection until QUIT, EOF, a protocol error, idle timeout or `signal`.
 * Never rejects: errors are reported in the summary and through `onEvent`.
 *
 * @param conn The connection's byte streams.
 * @param filter The filter.
 * @param options Fallback, limits, timeouts, events.
 * @returns How the session ended.
 *
 * @example
 * ```ts
 * import { defineFilter, serveConnection, MilterClient } from "@milterkit/milterkit";
 * import { duplexPair } from "@milterkit/milterkit/testing";
 * const [mta, filterSide] = duplexPair();
 * const done = serveConnection(filterSide, defineFilter({ helo: () => "reject" }));
 * ```
 */
export function serveConnection<C, M>(
  conn: Duplex,
  filter: Filter<C, M>,
  options: SessionOptions = {},
): Promise<ServedSession> {
  return new FilterSession(conn, filter, options).run();
}

class FilterSession<C, M> {
  readonly #conn: Duplex;
  readonly #filter: Filter<C, M>;
  readonly #opts: SessionOptions;
  readonly #req: FilterRequirements;
  readonly #state: SessionState<C, M>;
  readonly #ctx: ContextView<C, M>;
  readonly #abort = new AbortController();
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #negotiated: Negotiated | undefined;
  #optnegReply: Uint8Array | undefined;
  /** A message is open (MAIL seen, no verdict/abort yet). */
  #inMessage = false;
  /** The open message was decided by us (later events are answered without handlers). */
  #messageDecided = false;
  /** The connection was accepted/rejected at CONNECT/HELO. */
  #connectionDecided = false;
  /** Body chunks after SKIP are answered without calling the handler. */
  #skipBody = false;
  /** A failure at a no-reply event, to answer at the next replied command. */
  #pending: Reply | undefined;
  #bodyPipe: BodyPipe | undefined;
  #bodyTask: Promise<HandlerResult> | undefined;
  #bodySettled: { value: HandlerResult } | { error: unknown } | undefined;
  /** Rejects the read in progress (set while `#read` waits). */
  #readReject: ((e: unknown) => void) | undefined;
  #readStarted = 0;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #messages = 0;

  constructor(conn: Duplex, filter: Filter<C, M>, opts: SessionOptions) {
    this.#conn = conn;
    this.#filter = filter;
    this.#opts = opts;
    this.#req = requirementsOf(filter);
    this.#state = new SessionState(filter, this.#abort.signal);
    this.#ctx = new ContextView(this.#state);
  }

  #emit(e: SessionEvent): void {
    try {
      this.#opts.onEvent?.(e);
    } catch {
      // A broken listener must not break the session.
    }
  }

  async run(): Promise<ServedSession> {
    const reader = this.#conn.readable.getReader();
    this.#writer = this.#conn.writable.getWriter();
    const decoder = new FrameDecoder(
      this.#opts.maxDataSize === undefined ? {} : { maxDataSize: this.#opts.maxDataSize },
    );
    let end: ServedSession["end"] = "eof";
    let error: Error | undefined;
    const outer = this.#opts.signal;
    const onOuterAbort = () => this.#abort.abort(outer?.reason);
    outer?.addEventListener("abort", onOuterAbort, { once: true });
    const onAbort = () => this.#readReject?.(new Stop("signal"));
    this.#abort.signal.addEventListener("abort", onAbort, { once: true });
    const idle = this.#opts.idleTimeoutMs ?? 0;
    if (idle > 0) this.#armIdle(idle, idle);
    try {
      if (outer?.aborted) throw new Stop("signal");
      loop: while (true) {
        const r = await this.#read(reader);
        if (r.done) {
          decoder.finish();
          break;
        }
        for (const frame of decoder.push(r.value)) {
          if (await this.#handle(decodeCommand(frame))) {
            end = "quit";
            break loop;
          }
          if (this.#abort.signal.aborted) throw new Stop("signal");
        }
      }
    } catch (e) {
      if (e instanceof Stop) end = e.message as ServedSession["end"];
      else {
        end = "error";
        error = e instanceof Error ? e : new MilterError(String(e));
        this.#emit({ type: "error", error });
      }
      if (end === "idle") {
        error = new MilterTimeoutError(
          `No command from the MTA for ${this.#opts.idleTimeoutMs} ms (idleTimeoutMs)`,
          this.#opts.idleTimeoutMs ?? 0,
        );
        this.#emit({ type: "error", error });
      }
    } finally {
      outer?.removeEventListener("abort", onOuterAbort);
      this.#abort.signal.removeEventListener("abort", onAbort);
      if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
      await this.#endConnection();
      this.#abort.abort(new ConnectionClosedError("Session ended"));
      await reader.cancel().catch(() => {});
      if (end === "quit" || end === "eof") await this.#writer.close().catch(() => {});
      else await this.#writer.abort(error).catch(() => {});
    }
    const summary: ServedSession = { messages: this.#messages, negotiated: this.#negotiated, end };
    return error ? { ...summary, error } : summary;
  }

  /**
   * Reads the next chunk. One abort listener and one idle timer serve the whole session (set up
   * in `run`), so a read costs no timer or listener of its own.
   */
  #read(
    reader: ReadableStreamDefaultReader<Uint8Array>,
  ): Promise<ReadableStreamReadResult<Uint8Array>> {
    if (this.#abort.signal.aborted) return Promise.reject(new Stop("signal"));
    return new Promise((resolve, reject) => {
      this.#readStarted = performance.now();
      this.#readReject = reject;
      reader.read().then((r) => {
        this.#readReject = undefined;
        resolve(r);
      }, (e) => {
        this.#readReject = undefined;
        reject(
          e instanceof MilterError
            ? e
            : new ConnectionClosedError("Connection to the MTA failed", { cause: e }),
        );
      });
    });
  }

  /** Fails the read in progress (if any) when the MTA has been silent for `idleTimeoutMs`. */
  #armIdle(idle: number, wait: number): void {
    this.#idleTimer = setTimeout(() => {
      const waited = performance.now() - this.#readStarted;
      if (this.#readReject !== undefined && waited >= idle) {
        this.#readReject(new Stop("idle"));
        return;
      }
      this.#armIdle(idle, this.#readReject !== undefined ? idle - waited : idle);
    }, Math.max(1, wait));
  }

  async #send(reply: Reply): Promise<void> {
    await this.#writer!.write(encodeReply(reply));
  }

  /** Handles one command; returns true when the session is over. */
  async #handle(cmd: Command): Promise<boolean> {
    const st = this.#state;
    if (cmd.type === "optneg") {
      await this.#negotiate(cmd);
      return false;
    }
    if (cmd.type === "macro") {
      st.macros.set(cmd.stage, cmd.macros);
      return false;
    }
    if (this.#negotiated === undefined) {
      throw new MilterProtocolError(
        `Expected SMFIC_OPTNEG first, got ${cmd.type.toUpperCase()}`,
        { reason: "unexpected" },
      );
    }
    switch (cmd.type) {
      case "connect": {
        await this.#abortMessage();
        st.macros.enter("C");
        const { type: _t, rawAddress: _r, ...info } = cmd;
        st.client = info;
        await this.#event("connect", () => this.#filter.connect?.(info, this.#ctx));
        return false;
      }
      case "helo":
        await this.#abortMessage();
        st.macros.enter("H");
        st.helo = cmd.name;
        await this.#event("helo", () => this.#filter.helo?.(cmd.name, this.#ctx));
        return false;
      case "mail": {
        await this.#abortMessage();
        st.macros.enter("M");
        const sender = envelope(cmd.sender, cmd.args);
        this.#startMessage(sender);
        await this.#event("envfrom", () => this.#filter.envfrom?.(sender, this.#ctx));
        return false;
      }
      case "rcpt": {
        st.macros.enter("R");
        this.#ensureMessage();
        const rcpt = envelope(cmd.recipient, cmd.args);
        const reply = await this.#event("envrcpt", () => this.#filter.envrcpt?.(rcpt, this.#ctx));
        if (reply === undefined || reply.type === "continue") st.recipients.push(rcpt);
        return false;
      }
      case "data":
        st.macros.enter("T");
        this.#ensureMessage();
        await this.#event("data", () => this.#filter.data?.(this.#ctx));
        return false;
      case "header": {
        st.macros.enter("L");
        this.#ensureMessage();
        const h = { name: cmd.name, value: cmd.value };
        st.headers.push(h);
        await this.#event("header", () => this.#filter.header?.(h, this.#ctx));
        return false;
      }
      case "eoh":
        st.macros.enter("N");
        this.#ensureMessage();
        await this.#event("eoh", () => this.#filter.eoh?.(this.#ctx));
        return false;
      case "body":
        st.macros.enter("B");
        this.#ensureMessage();
        await this.#body(cmd.chunk);
        return false;
      case "eom":
        st.macros.enter("E");
        this.#ensureMessage();
        if (cmd.chunk && cmd.chunk.length > 0) this.#collectBody(cmd.chunk);
        await this.#eom();
        return false;
      case "unknown":
        st.macros.enter("U");
        await this.#event("unknown", () => this.#filter.unknown?.(cmd.line, this.#ctx));
        return false;
      case "abort":
        await this.#abortMessage();
        return false;
      case "quit":
        return true;
      case "quit_nc":
        await this.#endConnection();
        st.resetConnection();
        this.#connectionDecided = false;
        return false;
      case "raw":
        this.#emit({
          type: "error",
          error: new MilterProtocolError(
            `Ignored unknown command byte 0x${cmd.code.toString(16)} (${cmd.payload.length} bytes)`,
            { reason: "unexpected", code: cmd.code },
          ),
        });
        return false;
    }
  }

  async #negotiate(cmd: Command & { type: "optneg" }): Promise<void> {
    if (this.#optnegReply !== undefined) {
      // A repeated OPTNEG (after QUIT_NC, or a confused MTA): answer the same again.
      await this.#writer!.write(this.#optnegReply);
      return;
    }
    // A failed negotiation throws: libmilter closes the connection and so do we; the MTA then
    // applies its own failure policy (Postfix: milter_default_action).
    const { reply, negotiated } = negotiateFilter(cmd, this.#req);
    this.#negotiated = negotiated;
    this.#state.negotiated = negotiated;
    this.#optnegReply = encodeReply(reply);
    await this.#writer!.write(this.#optnegReply);
    this.#emit({ type: "negotiated", negotiated });
  }

  #expectsReply(stage: Exclude<Stage, "eom">): boolean {
    return (this.#negotiated!.protocol & EVENT_BITS[stage].nr) === 0;
  }

  /**
   * Runs a handler for an event and answers it when the MTA waits for an answer.
   * Returns the reply sent (or that would have been sent).
   */
  async #event(
    stage: Exclude<Stage, "eom">,
    call: () => HandlerResult | Promise<HandlerResult>,
  ): Promise<Reply | undefined> {
    const replies = this.#expectsReply(stage);
    const messageStage = stage !== "connect" && stage !== "helo" && stage !== "unknown";
    const bypass = this.#connectionDecided || (messageStage && this.#messageDecided) ||
      (stage === "body" && this.#skipBody);
    const has = typeof this.#filter[stage] === "function";
    let reply: Reply;
    const started = performance.now();
    if (this.#pending && replies && messageStage) {
      reply = this.#pending;
      this.#pending = undefined;
    } else if (bypass || !has) {
      reply = { type: "continue" };
    } else {
      reply = await this.#run(stage, call);
    }
    if (!replies) {
      if (reply.type !== "continue") {
        if (messageStage && this.#inMessage) this.#pending = reply;
        this.#emit({
          type: "error",
          stage,
          error: new FilterHandlerError(
            `The ${stage} handler answered ${reply.type} but ${stage} is negotiated as no-reply;` +
              (messageStage ? " it is sent at the next answered command" : " it is dropped"),
            stage,
          ),
        });
      }
      return reply;
    }
    await this.#send(reply);
    this.#emit({ type: "reply", stage, reply, latencyMs: performance.now() - started });
    this.#afterReply(stage, reply);
    return reply;
  }

  #afterReply(stage: Stage, reply: Reply): void {
    if (stage === "connect" || stage === "helo") {
      if (reply.type !== "continue") this.#connectionDecided = true;
      return;
    }
    if (stage === "body" && reply.type === "skip") {
      this.#skipBody = true;
      return;
    }
    if (stage === "envrcpt" && reply.type !== "accept") return;
    if (stage === "unknown") return;
    if (FINAL_FOR_MESSAGE.has(reply.type) && this.#inMessage) {
      this.#messageDecided = true;
      this.#inMessage = false;
      this.#finishMessage(reply.type);
    }
  }

  #fallbackReply(): Reply {
    const f = this.#opts.fallback ?? "tempfail";
    const r = verdictToReply(f, "envfrom", false);
    return "reply" in r ? r.reply : { type: "tempfail" };
  }

  /** Runs a handler with the timeout and signal rules; any failure becomes the fallback. */
  async #run(stage: Stage, call: () => HandlerResult | Promise<HandlerResult>): Promise<Reply> {
    const skip = (this.#negotiated!.protocol & SMFIP.SKIP) !== 0;
    try {
      const verdict = await this.#guard(stage, call);
      const r = verdictToReply(verdict, stage, skip);
      if ("error" in r) throw new FilterHandlerError(r.error, stage);
      return r.reply;
    } catch (e) {
      const error = e instanceof FilterHandlerError ? e : new FilterHandlerError(
        `The ${stage} handler failed: ${e instanceof Error ? e.message : String(e)}`,
        stage,
        { cause: e },
      );
      this.#emit({ type: "error", error, stage });
      return this.#fallbackReply();
    }
  }

  /** Awaits a handler, racing its time limit and the session's abort signal. */
  async #guard<T>(stage: Stage, call: () => T | Promise<T>): Promise<T> {
    const signal = this.#abort.signal;
    // A handler that answers synchronously needs no timer and no listener. (Handlers still run
    // when the session is ending: abort and close handlers must get their chance.)
    const result = call();
    if (!isThenable(result)) return result;
    const limit = (stage === "eom" ? this.#opts.eomTimeoutMs : undefined) ??
      this.#opts.handlerTimeoutMs ?? 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    const guards = new Promise<never>((_, reject) => {
      if (limit > 0) {
        timer = setTimeout(
          () =>
            reject(
              new FilterHandlerError(
                `The ${stage} handler did not answer within ${limit} ms (${
                  stage === "eom" && this.#opts.eomTimeoutMs !== undefined
                    ? "eomTimeoutMs"
                    : "handlerTimeoutMs"
                })`,
                stage,
              ),
            ),
          limit,
        );
      }
      onAbort = () =>
        reject(new FilterHandlerError(`The ${stage} handler was stopped: session ending`, stage));
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([result, guards]);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }

  #collectBody(chunk: Uint8Array): void {
    const st = this.#state;
    st.bodySize += chunk.length;
    const cfg = bodyBuffering(this.#filter);
    if (!cfg || st.bodyTruncated) return;
    const max = cfg.maxBytes;
    const room = max - st.bodyBuffered;
    if (chunk.length <= room) {
      st.bodyChunks.push(chunk);
      st.bodyBuffered += chunk.length;
      return;
    }
    if (room > 0) {
      st.bodyChunks.push(chunk.subarray(0, room));
      st.bodyBuffered += room;
    }
    st.bodyTruncated = true;
    const onLimit = cfg.onLimit;
    if (onLimit !== "truncate" && !this.#pending && !this.#messageDecided) {
      this.#pending = onLimit === "accept"
        ? { type: "accept" }
        : onLimit === "reject"
        ? { type: "replycode", text: `552 5.3.4 Message body over ${max} bytes` }
        : { type: "replycode", text: `452 4.3.4 Message body over ${max} bytes` };
      this.#emit({
        type: "error",
        stage: "body",
        error: new FilterHandlerError(
          `Message body over the buffer limit of ${max} bytes (maxBodyBytes): ${onLimit}`,
          "body",
        ),
      });
    }
  }

  async #body(chunk: Uint8Array): Promise<void> {
    this.#collectBody(chunk);
    if (this.#filter.bodyStream && !this.#messageDecided && !this.#connectionDecided) {
      if (this.#bodyPipe === undefined) {
        const pipe = new BodyPipe();
        this.#bodyPipe = pipe;
        this.#bodySettled = undefined;
        const task = this.#guard("body", () => this.#filter.bodyStream!(pipe.stream, this.#ctx));
        this.#bodyTask = task;
        task.then((value) => {
          if (this.#bodyTask === task) this.#bodySettled = { value };
        }, (error) => {
          if (this.#bodyTask === task) this.#bodySettled = { error };
        });
      }
      await this.#bodyPipe.push(chunk, this.#bodyTask);
      const early = this.#bodySettled;
      if (early !== undefined) {
        // The stream handler decided before the end of the body.
        const r = await this.#run("body", () => {
          if ("error" in early) throw early.error;
          return early.value;
        });
        if (r.type !== "continue") {
          this.#dropBodyPipe();
          return void (await this.#answerBody(r));
        }
      }
    }
    await this.#event("body", () => this.#filter.body?.(chunk, this.#ctx));
  }

  async #answerBody(reply: Reply): Promise<void> {
    if (!this.#expectsReply("body")) {
      this.#pending ??= reply;
      return;
    }
    await this.#send(reply);
    this.#afterReply("body", reply);
  }

  async #eom(): Promise<void> {
    const st = this.#state;
    const started = performance.now();
    let reply: Reply;
    let ctx: EomContextView<C, M> | undefined;
    if (this.#pending) reply = this.#pending;
    else if (this.#connectionDecided || this.#messageDecided) reply = { type: "continue" };
    else {
      reply = { type: "continue" };
      if (this.#bodyPipe) {
        this.#bodyPipe.close();
        reply = await this.#run("body", () => this.#bodyTask!);
      }
      const eom = reply.type === "continue"
        ? bindEom(this.#filter, st, () => this.#progress())
        : undefined;
      if (eom) {
        ctx = eom.ctx;
        reply = await this.#withKeepAlive(() => this.#run("eom", eom.call));
      }
    }
    if (ctx && (reply.type === "continue" || reply.type === "accept")) {
      try {
        await this.#sendModifications(ctx);
      } catch (e) {
        if (e instanceof FilterHandlerError) {
          this.#emit({ type: "error", error: e, stage: "eom" });
          reply = this.#fallbackReply();
        } else throw e;
      }
    }
    await this.#send(reply);
    this.#emit({ type: "reply", stage: "eom", reply, latencyMs: performance.now() - started });
    this.#messages++;
    if (this.#inMessage) this.#finishMessage(reply.type);
    this.#inMessage = false;
    this.#messageDecided = false;
    this.#pending = undefined;
    this.#skipBody = false;
    this.#dropBodyPipe();
    st.resetMessage();
  }

  #startMessage(sender: EnvelopeAddress | undefined): void {
    this.#state.newMessage(sender);
    this.#inMessage = true;
    this.#messageDecided = false;
    this.#skipBody = false;
    this.#pending = undefined;
  }

  /** With SMFIP_NOMAIL the first command of a message is RCPT, DATA, a header, … */
  #ensureMessage(): void {
    if (!this.#inMessage && !this.#messageDecided) this.#startMessage(undefined);
  }

  #finishMessage(verdict: Reply["type"]): void {
    this.#emit({ type: "message", verdict, number: this.#state.messageNumber });
  }

  async #sendModifications(ctx: EomContextView<C, M>): Promise<void> {
    for (const m of ctx.queue) {
      if (m.type !== "replbody-stream") {
        if (m.type === "replbody") {
          for (let p = 0; p < m.chunk.length || p === 0; p += MILTER_CHUNK_SIZE) {
            await this.#send({
              type: "replbody",
              chunk: m.chunk.subarray(p, p + MILTER_CHUNK_SIZE),
            });
            if (m.chunk.length === 0) break;
          }
        } else await this.#send(m);
        continue;
      }
      const reader = m.stream.getReader();
      let sent = false;
      try {
        while (true) {
          const { value, done } = await reader.read();
          if (done) break;
          for (let p = 0; p < value.length; p += MILTER_CHUNK_SIZE) {
            await this.#send({ type: "replbody", chunk: value.subarray(p, p + MILTER_CHUNK_SIZE) });
            sent = true;
          }
        }
      } catch (e) {
        throw new FilterHandlerError(
          `The replacement body stream failed${sent ? " after part of it was sent" : ""}: ${
            e instanceof Error ? e.message : String(e)
          }`,
          "eom",
          { cause: e },
        );
      } finally {
        reader.releaseLock();
      }
      if (!sent) await this.#send({ type: "replbody", chunk: new Uint8Array(0) });
    }
  }

  async #progress(): Promise<void> {
    await this.#send({ type: "progress" });
    this.#emit({ type: "progress", stage: "eom" });
  }

  /**
   * Runs `f`, sending PROGRESS every `progressIntervalMs` while it is pending. A keep-alive that
   * cannot be written means the MTA is gone: the session is aborted, so the handler's
   * `ctx.signal` fires instead of the handler running on for nobody.
   */
  async #withKeepAlive<T>(f: () => Promise<T>): Promise<T> {
    const every = this.#opts.progressIntervalMs ?? 0;
    if (every <= 0) return await f();
    const timer = setInterval(() => {
      this.#progress().catch((e) => {
        this.#abort.abort(
          new ConnectionClosedError("The MTA went away while the eom handler ran", { cause: e }),
        );
      });
    }, every);
    try {
      return await f();
    } finally {
      clearInterval(timer);
    }
  }

  #dropBodyPipe(): void {
    this.#bodyPipe?.error(new ConnectionClosedError("Message ended"));
    this.#bodyPipe = undefined;
    this.#bodyTask = undefined;
    this.#bodySettled = undefined;
  }

  /** Ends an open message: abort handler (only inside a message), then reset. */
  async #abortMessage(): Promise<void> {
    if (this.#inMessage && this.#filter.abort) {
      try {
        await this.#guard("eom", () => this.#filter.abort!(this.#ctx));
      } catch (e) {
        this.#emit({
          type: "error",
          error: new FilterHandlerError(
            `The abort handler failed: ${e instanceof Error ? e.message : String(e)}`,
            "abort",
            { cause: e },
          ),
        });
      }
    }
    this.#inMessage = false;
    this.#messageDecided = false;
    this.#pending = undefined;
    this.#skipBody = false;
    this.#dropBodyPipe();
    this.#state.resetMessage();
  }

  /** Ends the SMTP session on the filter side: abort an open message, then close handler. */
  async #endConnection(): Promise<void> {
    if (this.#negotiated === undefined) return;
    await this.#abortMessage();
    if (this.#filter.close) {
      try {
        await this.#guard("eom", () => this.#filter.close!(this.#ctx));
      } catch (e) {
        this.#emit({
          type: "error",
          error: new FilterHandlerError(
            `The close handler failed: ${e instanceof Error ? e.message : String(e)}`,
            "close",
            { cause: e },
          ),
        });
      }
    }
  }
}

function isThenable<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof v === "object" && v !== null &&
    typeof (v as { then?: unknown }).then === "function";
}

function envelope(raw: string, args: readonly string[]): EnvelopeAddress {
  return { address: parseAddress(raw).address, raw, args, params: parseEsmtpArgs(args) };
}

/** The event names a filter can use, re-exported for adapters of the API. */
export type { EventName };
