/**
 * The MTA side's byte channel: writes frames and reads filter frames one at a time, each under a
 * time limit, without ever losing bytes to a timed-out read and without unhandled rejections
 * when the filter goes away.
 *
 * @module
 */

import { ConnectionClosedError, MilterError, MilterTimeoutError } from "../wire/errors.ts";
import { FrameDecoder } from "../wire/frame.ts";
import type { Duplex, Frame } from "../wire/types.ts";

type ReadOutcome =
  | { readonly kind: "data"; readonly bytes: Uint8Array }
  | { readonly kind: "eof"; readonly cause?: unknown };

/** Waits for `p` at most `ms` milliseconds; `onTimeout` builds the error. */
async function within<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  if (!Number.isFinite(ms)) return await p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), Math.max(0, ms));
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Frame reader/writer over a {@link Duplex}, used by `MilterClient`.
 *
 * @example
 * ```ts
 * import { FrameChannel } from "./io.ts";
 * import { duplexPair } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 * const [a, b] = duplexPair();
 * const ch = new FrameChannel(a, 1024 * 1024);
 * const w = b.writable.getWriter();
 * await w.write(new Uint8Array([0, 0, 0, 1, 0x63]));
 * const f = await ch.read({ timeoutMs: 1000, what: "the reply to SMFIC_HELO" });
 * assert.equal(f.code, 0x63);
 * await ch.close();
 * ```
 */
export class FrameChannel {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #decoder: FrameDecoder;
  readonly #frames: Frame[] = [];
  #pending: Promise<ReadOutcome> | undefined;
  #eof: ReadOutcome | undefined;
  #closed = false;

  /**
   * @param conn The connection to the filter.
   * @param maxDataSize Largest accepted frame data size from the filter.
   */
  constructor(conn: Duplex, maxDataSize: number) {
    this.#reader = conn.readable.getReader();
    this.#writer = conn.writable.getWriter();
    this.#decoder = new FrameDecoder({ maxDataSize });
    // A closed peer must not surface as an unhandled rejection of `closed`.
    this.#reader.closed.catch(() => {});
    this.#writer.closed.catch(() => {});
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Frames already received but not yet read (a filter that answered ahead of time). */
  get buffered(): number {
    return this.#frames.length;
  }

  /**
   * Writes bytes to the filter.
   *
   * @param bytes One or more encoded frames.
   * @param timeoutMs Time limit for the write (backpressure from a filter that does not read).
   * @param what What is being sent, for error messages.
   * @throws {ConnectionClosedError} when the filter's side is gone.
   * @throws {MilterTimeoutError} when the write does not complete in time.
   */
  async write(bytes: Uint8Array, timeoutMs: number, what: string): Promise<void> {
    if (this.#closed) throw new ConnectionClosedError(`Cannot send ${what}: the client is closed`);
    const p = this.#writer.write(bytes);
    p.catch(() => {});
    try {
      await within(
        p,
        timeoutMs,
        () => new MilterTimeoutError(`Sending ${what} took over ${timeoutMs} ms`, timeoutMs),
      );
    } catch (e) {
      if (e instanceof MilterError) throw e;
      throw new ConnectionClosedError(`Filter connection closed while sending ${what}`, {
        cause: e,
      });
    }
  }

  /**
   * Tells whether the filter already sent a frame nobody read (bytes sitting in the stream now),
   * without waiting for the network: used to catch a second reply before the next command.
   *
   * @returns True when at least one complete frame is waiting.
   * @throws {MilterProtocolError} on bad framing of the waiting bytes.
   */
  async poll(): Promise<boolean> {
    while (this.#frames.length === 0 && this.#eof === undefined && !this.#closed) {
      const pending = this.#startRead();
      const none = Symbol("none");
      let tick: Promise<typeof none> = Promise.resolve(none);
      for (let i = 0; i < 4; i++) tick = tick.then((v) => v);
      const outcome = await Promise.race([pending, tick]);
      if (outcome === none) return false;
      this.#pending = undefined;
      if (outcome.kind === "eof") this.#eof = outcome;
      else for (const f of this.#decoder.push(outcome.bytes)) this.#frames.push(f);
    }
    return this.#frames.length > 0;
  }

  #startRead(): Promise<ReadOutcome> {
    this.#pending ??= this.#reader.read().then(
      (r): ReadOutcome => (r.done ? { kind: "eof" } : { kind: "data", bytes: r.value }),
      (e): ReadOutcome => ({ kind: "eof", cause: e }),
    );
    return this.#pending;
  }

  /**
   * Reads the next frame from the filter.
   *
   * @param options `timeoutMs` for this read, optional absolute `deadline` (ms since epoch,
   * from `Date.now()`) with its `deadlineMs` length for messages, and `what` is being waited
   * for (e.g. `"the reply to SMFIC_BODYEOB"`).
   * @returns The frame.
   * @throws {MilterTimeoutError} when nothing complete arrives in time.
   * @throws {ConnectionClosedError} at EOF (also EOF inside a frame, the truncation as cause).
   * @throws {MilterProtocolError} on bad framing.
   */
  async read(options: {
    readonly timeoutMs: number;
    /** The option that set `timeoutMs`, named in the timeout error (e.g. `commandTimeoutMs`). */
    readonly limit?: string;
    readonly what: string;
    readonly deadline?: number;
    readonly deadlineMs?: number;
  }): Promise<Frame> {
    const { what } = options;
    while (this.#frames.length === 0) {
      if (this.#eof !== undefined) {
        let cause = this.#eof.kind === "eof" ? this.#eof.cause : undefined;
        try {
          this.#decoder.finish();
        } catch (e) {
          cause = e;
        }
        throw new ConnectionClosedError(
          `Filter closed the connection while the MTA waited for ${what}`,
          cause === undefined ? undefined : { cause },
        );
      }
      if (this.#closed) {
        throw new ConnectionClosedError(`Cannot read ${what}: the client is closed`);
      }
      let ms = options.timeoutMs;
      let overall = false;
      if (options.deadline !== undefined) {
        const left = options.deadline - Date.now();
        if (left < ms) {
          ms = left;
          overall = true;
        }
      }
      const outcome = await within(this.#startRead(), ms, () =>
        overall
          ? new MilterTimeoutError(
            `No final reply for ${what} within the overall limit of ${options.deadlineMs} ms` +
              " (eomTimeoutMs)",
            options.deadlineMs ?? ms,
          )
          : new MilterTimeoutError(
            `No frame from the filter within ${ms} ms (${
              options.limit ? `${options.limit}, ` : ""
            }waiting for ${what})`,
            ms,
          ));
      this.#pending = undefined;
      if (outcome.kind === "eof") {
        this.#eof = outcome;
        continue;
      }
      for (const f of this.#decoder.push(outcome.bytes)) this.#frames.push(f);
    }
    return this.#frames.shift()!;
  }

  /**
   * Releases both streams: closes the writable (the filter sees EOF), cancels the readable.
   * Never throws and never waits longer than `graceMs` for a filter that does not read.
   *
   * @param graceMs How long to wait for queued bytes to drain before aborting.
   */
  async close(graceMs = 1000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closing = this.#writer.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drained = await Promise.race([
      closing.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs))),
    ]);
    clearTimeout(timer);
    if (!drained) await this.#writer.abort().catch(() => {});
    await this.#reader.cancel().catch(() => {});
    this.#pending?.catch(() => {});
    try {
      this.#writer.releaseLock();
    } catch { /* still in use: nothing to release */ }
    try {
      this.#reader.releaseLock();
    } catch { /* nothing */ }
  }
}
