/**
 * The mechanics of the session state machine, without I/O: frames in, encoded replies out,
 * handler calls that answer synchronously run inline, and a `wait` step for the driver when a
 * handler returns a promise. The protocol logic builds on it (`session_message.ts`,
 * `session_machine.ts`).
 *
 * @module
 */

import { concatBytes } from "../wire/concat.ts";
import { decodeCommand } from "../wire/command_codec.ts";
import { FilterHandlerError, thrownMessage } from "../wire/errors.ts";
import { FrameDecoder } from "../wire/frame.ts";
import { encodeReply } from "../wire/reply_codec.ts";
import type { Command, Frame, Negotiated, Reply } from "../wire/types.ts";
import type { Filter, HandlerResult } from "./filter.ts";
import { ContextView, SessionState } from "./context.ts";
import { type Stage, verdictToReply } from "./verdict.ts";
import { isThenable } from "./session_body.ts";
import { MessageFlow } from "./session_flow.ts";
import type { EomOutput } from "./session_eom.ts";
import type { MachineOptions, SessionEvent, Step, WaitStep } from "./session_types.ts";

const INPUT: Step = { kind: "input" };
const YIELD: Step = { kind: "yield" };
const FLUSH: Step = { kind: "flush" };
const QUIT: Step = { kind: "quit" };
const CLOSED: Step = { kind: "closed" };
/** No frames buffered. */
export const NO_FRAMES: Frame[] = [];
/** The continue reply. */
export const CONTINUE: Reply = { type: "continue" };
const CONTINUE_BYTES = encodeReply(CONTINUE);

/** What runs when a handler's outcome is known. */
export type Cont = (value: unknown, error: unknown, failed: boolean) => void;

/** The I/O-free mechanics every session machine shares. */
export abstract class MachineCore<C, M> {
  protected readonly filter: Filter<C, M>;
  protected readonly opts: MachineOptions;
  protected readonly state: SessionState<C, M>;
  protected readonly ctx: ContextView<C, M>;
  protected readonly flow: MessageFlow;
  protected readonly decoder: FrameDecoder;
  protected readonly wait: WaitStep;
  protected readonly budget: number;
  protected readonly outputLimit: number;
  protected frames: Frame[] = NO_FRAMES;
  protected next = 0;
  protected out: Uint8Array[] = [];
  protected outBytes = 0;
  protected cont: Cont | undefined;
  protected quit = false;
  protected closed = false;
  protected negotiatedAs: Negotiated | undefined;
  protected skipNegotiated = false;
  protected messageCount = 0;
  protected eomOut: EomOutput | undefined;

  constructor(filter: Filter<C, M>, opts: MachineOptions) {
    this.filter = filter;
    this.opts = opts;
    this.state = new SessionState(filter, opts.signal, opts.filterLog);
    this.ctx = new ContextView(this.state);
    this.flow = new MessageFlow();
    this.decoder = new FrameDecoder(
      opts.maxDataSize === undefined ? {} : { maxDataSize: opts.maxDataSize },
    );
    this.wait = {
      kind: "wait",
      promise: Promise.resolve(),
      stage: "connect",
      limitMs: 0,
      limitName: "",
      keepAlive: false,
    };
    this.budget = opts.budget ?? 256;
    this.outputLimit = opts.outputLimit ?? 64 * 1024;
  }
  /** What was negotiated (undefined before OPTNEG). */
  get negotiated(): Negotiated | undefined {
    return this.negotiatedAs;
  }

  /** Messages that reached end of message. */
  get messages(): number {
    return this.messageCount;
  }

  /** Bytes of output not yet taken. */
  get outputBytes(): number {
    return this.outBytes;
  }

  /**
   * Adds bytes from the MTA. Call only when `run` asked for input.
   *
   * @throws {MilterProtocolError} on bad framing.
   */
  push(chunk: Uint8Array): void {
    this.frames = this.decoder.push(chunk);
    this.next = 0;
  }

  /**
   * Declares the MTA's end of stream.
   *
   * @throws {MilterProtocolError} when it ended inside a frame.
   */
  finish(): void {
    this.decoder.finish();
  }

  /** Takes the encoded replies produced so far, as one buffer (undefined when none). */
  takeOutput(): Uint8Array | undefined {
    const out = this.out;
    if (out.length === 0) return undefined;
    this.out = [];
    this.outBytes = 0;
    return concatBytes(out);
  }

  /**
   * Serves buffered commands until one needs the driver.
   *
   * @throws {MilterProtocolError} on a protocol violation (the session must end).
   */
  run(): Step {
    let budget = this.budget;
    while (this.cont === undefined) {
      if (this.closed) return CLOSED;
      if (this.quit) return QUIT;
      if (this.outBytes >= this.outputLimit) return FLUSH;
      if (this.eomOut !== undefined) {
        this.pumpEom();
        continue;
      }
      if (this.next >= this.frames.length) {
        this.frames = NO_FRAMES;
        return INPUT;
      }
      if (--budget < 0) return YIELD;
      this.command(decodeCommand(this.frames[this.next++]!));
    }
    return this.wait;
  }

  /** Hands back the value of the promise of a `wait` step. */
  settle(value: unknown): void {
    const c = this.cont!;
    this.cont = undefined;
    c(value, undefined, false);
  }

  /** Hands back the failure (rejection, timeout, session ending) of a `wait` step. */
  fail(error: unknown): void {
    const c = this.cont!;
    this.cont = undefined;
    c(undefined, error, true);
  }

  /** Queues PROGRESS and writes it out (for `ctx.progress()` and the keep-alive). */
  progress(): Promise<void> {
    this.write(encodeReply({ type: "progress" }));
    this.emit({ type: "progress", stage: "eom" });
    return this.opts.flush();
  }

  protected emit(e: SessionEvent): void {
    try {
      this.opts.onEvent?.(e);
    } catch {
      // A broken listener must not break the session.
    }
  }

  protected write(bytes: Uint8Array): void {
    this.out.push(bytes);
    this.outBytes += bytes.length;
  }

  protected send = (reply: Reply): void => {
    this.write(reply.type === "continue" ? CONTINUE_BYTES : encodeReply(reply));
  };

  /** Calls a handler; `then` runs now for a synchronous answer, or after the driver's wait. */
  protected call(stage: Stage, invoke: () => unknown, then: Cont, keepAlive = false): void {
    let result: unknown;
    try {
      result = invoke();
    } catch (e) {
      return then(undefined, e, true);
    }
    if (!isThenable(result)) return then(result, undefined, false);
    this.block(result, stage, then, keepAlive);
  }

  protected block(
    promise: PromiseLike<unknown>,
    stage: Stage,
    then: Cont,
    keepAlive = false,
  ): void {
    const w = this.wait;
    const eom = this.opts.eomTimeoutMs;
    w.promise = promise;
    w.stage = stage;
    w.limitMs = (stage === "eom" ? eom : undefined) ?? this.opts.handlerTimeoutMs ?? 0;
    w.limitName = stage === "eom" && eom !== undefined ? "eomTimeoutMs" : "handlerTimeoutMs";
    w.keepAlive = keepAlive;
    this.cont = then;
  }

  /** A handler's outcome as the reply to send: any failure becomes the fallback. */
  protected verdict(stage: Stage, value: unknown, error: unknown, failed: boolean): Reply {
    if (!failed) {
      if (value === undefined || value === "continue") return CONTINUE;
      const r = verdictToReply(value as HandlerResult, stage, this.skipNegotiated);
      if ("reply" in r) return r.reply;
      error = new FilterHandlerError(r.error, stage);
    }
    const err = error instanceof FilterHandlerError ? error : new FilterHandlerError(
      `The ${stage} handler failed: ${thrownMessage(error)}`,
      stage,
      { cause: error },
    );
    this.emit({ type: "error", error: err, stage });
    return this.fallbackReply();
  }

  protected fallbackReply(): Reply {
    const r = verdictToReply(this.opts.fallback ?? "tempfail", "envfrom", false);
    return "reply" in r ? r.reply : { type: "tempfail" };
  }
  /** Serves one decoded command. */
  protected abstract command(cmd: Command): void;
  /** Emits the next part of the end-of-message output. */
  protected abstract pumpEom(): void;
}
