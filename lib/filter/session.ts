/**
 * The filter session engine: serves one MTA connection (a {@link Duplex}) with a
 * {@link Filter}. The protocol logic lives in a state machine without I/O
 * (`session_machine.ts`); this file is its driver: it reads chunks, writes each chunk's replies in
 * one write, and owns the timers (idle, handler time limits, PROGRESS keep-alive, write deadline).
 * A handler that throws, hangs or returns nonsense is answered with the configured fallback.
 *
 * @module
 */

import {
  ConnectionClosedError,
  FilterHandlerError,
  MilterError,
  MilterTimeoutError,
} from "../wire/errors.ts";
import type { EventName, Filter } from "./filter.ts";
import type { Duplex, Negotiated } from "../wire/types.ts";
import {
  type Fallback,
  type SessionEvent,
  SessionMachine,
  type WaitStep,
} from "./session_machine.ts";
import type { FilterLogSink } from "./log.ts";

export type { Fallback, SessionEvent };

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
  /**
   * Close the connection when the MTA has not taken our output for this long while more is
   * waiting to be written (default 0: no limit). Output waiting for the MTA is bounded by the
   * connection's write buffer, whatever the filter produces.
   */
  readonly writeTimeoutMs?: number;
  /** When aborted: a running handler gets the fallback, then the connection closes. */
  readonly signal?: AbortSignal;
  /** Receives session events. Must not throw. */
  readonly onEvent?: (event: SessionEvent) => void;
  /** Where `ctx.log` writes (default: nowhere). */
  readonly filterLog?: FilterLogSink;
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

class Stop extends Error {}

const setImmediateFn = (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate;
/** Consecutive yields before one goes through the timer queue. */
const TIMER_YIELD_EVERY = 8;

/**
 * Lets other connections' I/O run before a busy session goes on. `setImmediate` is cheap but
 * some event loops run every queued immediate before polling sockets again, so every
 * {@link TIMER_YIELD_EVERY}th consecutive yield goes through a timer, which always lets I/O in.
 */
function yieldTurn(consecutive: number): Promise<void> {
  return new Promise<void>((r) => {
    if (setImmediateFn !== undefined && consecutive % TIMER_YIELD_EVERY !== 0) setImmediateFn(r);
    else setTimeout(r, 0);
  });
}

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
  return new SessionDriver(conn, filter, options).run();
}

class SessionDriver<C, M> {
  readonly #conn: Duplex;
  readonly #opts: SessionOptions;
  readonly #abort = new AbortController();
  readonly #machine: SessionMachine<C, M>;
  #writer!: WritableStreamDefaultWriter<Uint8Array>;
  /** Rejects the read or wait in progress (set while one is pending). */
  #interrupt: ((e: unknown) => void) | undefined;
  #readStarted = 0;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #writeError: Error | undefined;
  #lastWrite: Promise<void> | undefined;

  constructor(conn: Duplex, filter: Filter<C, M>, opts: SessionOptions) {
    this.#conn = conn;
    this.#opts = opts;
    this.#machine = new SessionMachine(filter, {
      ...opts,
      signal: this.#abort.signal,
      flush: () => this.#flush() ?? Promise.resolve(),
    });
  }

  async run(): Promise<ServedSession> {
    const m = this.#machine;
    const reader = this.#conn.readable.getReader();
    this.#writer = this.#conn.writable.getWriter();
    let end: ServedSession["end"] = "eof";
    let error: Error | undefined;
    const outer = this.#opts.signal;
    const onOuterAbort = () => this.#abort.abort(outer?.reason);
    outer?.addEventListener("abort", onOuterAbort, { once: true });
    const onAbort = () => this.#interrupt?.(new Stop("signal"));
    this.#abort.signal.addEventListener("abort", onAbort, { once: true });
    const idle = this.#opts.idleTimeoutMs ?? 0;
    if (idle > 0) this.#armIdle(idle, idle);
    let yields = 0;
    try {
      if (outer?.aborted) throw new Stop("signal");
      loop: while (true) {
        const step = m.run();
        switch (step.kind) {
          case "input": {
            yields = 0;
            await this.#flush();
            const r = await this.#read(reader);
            if (r.done) {
              m.finish();
              break loop;
            }
            m.push(r.value);
            break;
          }
          case "wait":
            await this.#flush();
            await this.#settle(step);
            break;
          case "flush":
            await this.#flush(true);
            break;
          case "yield":
            await this.#flush();
            await yieldTurn(++yields);
            break;
          default:
            end = "quit";
            break loop;
        }
        if (this.#writeError) throw this.#writeError;
        if (this.#abort.signal.aborted) throw new Stop("signal");
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
      await this.#close();
      this.#abort.abort(new ConnectionClosedError("Session ended"));
      await reader.cancel().catch(() => {});
      if (end === "quit" || end === "eof") {
        await this.#finalWrites().then(() => this.#writer.close()).catch(() => {});
      } else {
        await this.#finalWrites().catch(() => {});
        await this.#writer.abort(error).catch(() => {});
      }
    }
    const summary: ServedSession = { messages: m.messages, negotiated: m.negotiated, end };
    return error ? { ...summary, error } : summary;
  }

  /** Runs the abort and close handlers (each under its time limit). */
  async #close(): Promise<void> {
    const m = this.#machine;
    m.close();
    for (let step = m.run(); step.kind !== "closed"; step = m.run()) {
      if (step.kind === "wait") await this.#settle(step);
    }
  }

  /** Writes what is left before the connection closes, within the write deadline. */
  async #finalWrites(): Promise<void> {
    if (this.#writeError) return;
    this.#flush();
    const last = this.#lastWrite;
    if (last !== undefined) await this.#deadline(last);
  }

  #emit(e: SessionEvent): void {
    try {
      this.#opts.onEvent?.(e);
    } catch {
      // A broken listener must not break the session.
    }
  }

  /**
   * Writes the machine's output in one write. Waits only when the connection's write buffer is
   * full (or `drain` asks), and then at most `writeTimeoutMs`.
   */
  #flush(drain = false): Promise<void> | undefined {
    const bytes = this.#machine.takeOutput();
    const w = this.#writer;
    if (bytes !== undefined && this.#writeError === undefined) {
      const p = w.write(bytes);
      this.#lastWrite = p;
      p.catch((e) => {
        this.#writeError ??= e instanceof MilterError
          ? e
          : new ConnectionClosedError("Writing to the MTA failed", { cause: e });
        this.#interrupt?.(this.#writeError);
      });
    }
    if (this.#writeError) return Promise.reject(this.#writeError);
    if (!drain && (w.desiredSize ?? 0) > 0) return undefined;
    return this.#deadline(w.ready);
  }

  /** Awaits a write (or the writer's readiness) within `writeTimeoutMs`. */
  #deadline(p: Promise<void>): Promise<void> {
    const limit = this.#opts.writeTimeoutMs ?? 0;
    return new Promise<void>((resolve, reject) => {
      const timer = limit > 0
        ? setTimeout(() =>
          reject(
            new MilterTimeoutError(
              `The MTA did not read the filter's output for ${limit} ms (writeTimeoutMs)`,
              limit,
            ),
          ), limit)
        : undefined;
      this.#interrupt = reject;
      p.then(resolve, reject).finally(() => {
        clearTimeout(timer);
        this.#interrupt = undefined;
      });
    });
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
      this.#interrupt = reject;
      this.#reading = true;
      reader.read().then((r) => {
        this.#interrupt = undefined;
        this.#reading = false;
        resolve(r);
      }, (e) => {
        this.#interrupt = undefined;
        this.#reading = false;
        reject(
          e instanceof MilterError
            ? e
            : new ConnectionClosedError("Connection to the MTA failed", { cause: e }),
        );
      });
    });
  }

  #reading = false;

  /** Fails the read in progress (if any) when the MTA has been silent for `idleTimeoutMs`. */
  #armIdle(idle: number, wait: number): void {
    this.#idleTimer = setTimeout(() => {
      const waited = performance.now() - this.#readStarted;
      if (this.#reading && waited >= idle) {
        this.#interrupt?.(new Stop("idle"));
        return;
      }
      this.#armIdle(idle, this.#reading ? idle - waited : idle);
    }, Math.max(1, wait));
  }

  /**
   * Awaits a handler's promise, racing its time limit and the session's abort signal, with the
   * PROGRESS keep-alive for eom, and hands the outcome to the machine.
   */
  async #settle(step: WaitStep): Promise<void> {
    const m = this.#machine;
    const { stage, limitMs, limitName } = step;
    const signal = this.#abort.signal;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let onAbort: (() => void) | undefined;
    const guards = new Promise<never>((_, reject) => {
      if (limitMs > 0) {
        timer = setTimeout(
          () =>
            reject(
              new FilterHandlerError(
                `The ${stage} handler did not answer within ${limitMs} ms (${limitName})`,
                stage,
              ),
            ),
          limitMs,
        );
      }
      onAbort = () =>
        reject(new FilterHandlerError(`The ${stage} handler was stopped: session ending`, stage));
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    });
    const every = step.keepAlive ? this.#opts.progressIntervalMs ?? 0 : 0;
    // A keep-alive that cannot be written means the MTA is gone: the session is aborted, so the
    // handler's `ctx.signal` fires instead of the handler running on for nobody.
    const keepAlive = every > 0
      ? setInterval(() => {
        m.progress().catch((e) => {
          this.#abort.abort(
            new ConnectionClosedError("The MTA went away while the eom handler ran", { cause: e }),
          );
        });
      }, every)
      : undefined;
    try {
      m.settle(await Promise.race([step.promise, guards]));
    } catch (e) {
      m.fail(e);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      if (keepAlive !== undefined) clearInterval(keepAlive);
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }
}

/** The event names a filter can use, re-exported for adapters of the API. */
export type { EventName };
