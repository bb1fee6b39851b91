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
  thrownMessage,
} from "../wire/errors.ts";
import type { EventName, Filter } from "./filter.ts";
import type { ByteChannel, Duplex, Negotiated } from "../wire/types.ts";
import { channelOf, yieldTurn } from "./session_io.ts";
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

/** The reason handlers' `ctx.signal` gives once a session is over (one shared instance). */
const SESSION_ENDED = new ConnectionClosedError("Session ended");

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
 * import { defineFilter, serveConnection } from "@milterkit/milterkit";
 * import { MilterClient } from "@milterkit/milterkit/mta";
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
  /** `ctx.signal`'s controller, made when a handler or a wait first needs it. */
  #ac: AbortController | undefined;
  /** Whether the session's signal fired (made or not), and why. */
  #aborted = false;
  #abortReason: unknown;
  /** Whether an abort stops the session (from the start of `run` to its cleanup). */
  #live = false;
  readonly #machine: SessionMachine<C, M>;
  #ch!: ByteChannel;
  /** Rejects the write wait in progress (set while one is pending). */
  #interrupt: ((e: unknown) => void) | undefined;
  /** Why the session must stop (idle, signal, a failed write), once known. */
  #halted: unknown;
  #readStarted = 0;
  #reading = false;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** A write the socket has not taken yet (backpressure). */
  #pending: Promise<void> | undefined;

  constructor(conn: Duplex, filter: Filter<C, M>, opts: SessionOptions) {
    this.#conn = conn;
    this.#opts = opts;
    this.#machine = new SessionMachine(filter, {
      ...opts,
      signal: () => this.#signal(),
      flush: () => this.#flush() ?? Promise.resolve(),
    });
  }

  async run(): Promise<ServedSession> {
    const m = this.#machine;
    const ch = this.#ch = channelOf(this.#conn);
    let end: ServedSession["end"] = "eof";
    let error: Error | undefined;
    const outer = this.#opts.signal;
    const onOuterAbort = () => this.#abort(outer?.reason);
    outer?.addEventListener("abort", onOuterAbort, { once: true });
    this.#live = true;
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
            // No await (and no microtask) when the socket took the replies at once.
            const flushing = this.#flush();
            if (flushing !== undefined) await flushing;
            let chunk = ch.read();
            if (chunk instanceof Promise) {
              // Inline (not a helper's promise): one hop from a chunk's arrival to its replies.
              // No timer or listener per read: the idle timer and #halt cancel the channel.
              this.#readStarted = performance.now();
              this.#reading = true;
              try {
                chunk = await chunk;
              } catch (e) {
                if (this.#halted !== undefined) throw this.#halted;
                throw e;
              } finally {
                this.#reading = false;
              }
            }
            if (this.#halted !== undefined) throw this.#halted;
            if (chunk === null) {
              m.finish();
              break loop;
            }
            m.push(chunk);
            break;
          }
          case "wait":
            await this.#flush();
            await this.#settle(step);
            break;
          case "flush":
            await this.#flush();
            break;
          case "yield":
            await this.#flush();
            await yieldTurn(++yields);
            break;
          default:
            end = "quit";
            break loop;
        }
        if (this.#halted !== undefined) throw this.#halted;
      }
    } catch (e) {
      if (e instanceof Stop) end = e.message as ServedSession["end"];
      else {
        end = "error";
        error = e instanceof Error ? e : new MilterError(thrownMessage(e));
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
      this.#live = false;
      if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
      await this.#close();
      this.#abort(SESSION_ENDED);
      ch.cancel();
      if (end === "quit" || end === "eof") {
        await this.#finalWrites().then(() => this.#deadline(ch.end())).catch(() => ch.destroy());
      } else {
        await this.#finalWrites().catch(() => {});
        ch.destroy();
      }
    }
    const summary: ServedSession = { messages: m.messages, negotiated: m.negotiated, end };
    return error ? { ...summary, error } : summary;
  }

  /** The session's signal (`ctx.signal`), made on first use (already aborted if it fired). */
  #signal(): AbortSignal {
    if (this.#ac === undefined) {
      this.#ac = new AbortController();
      if (this.#aborted) this.#ac.abort(this.#abortReason);
    }
    return this.#ac.signal;
  }

  /** Fires the session's signal (once); while the session runs, this also stops it. */
  #abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#abortReason = reason;
    if (this.#live) this.#halt(new Stop("signal"));
    this.#ac?.abort(reason);
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
    if (this.#halted !== undefined && !(this.#halted instanceof Stop)) return;
    await this.#flush();
  }

  #emit(e: SessionEvent): void {
    try {
      this.#opts.onEvent?.(e);
    } catch {
      // A broken listener must not break the session.
    }
  }

  /**
   * Writes the machine's output in one write. Waits only while the socket has not taken earlier
   * output, and then at most `writeTimeoutMs`.
   */
  #flush(): Promise<void> | undefined {
    const bytes = this.#machine.takeOutput();
    if (bytes !== undefined) {
      const p = this.#ch.write(bytes);
      if (p !== undefined) {
        this.#pending = p;
        p.then(() => {
          if (this.#pending === p) this.#pending = undefined;
        }, this.#onWriteError);
      }
    }
    const pending = this.#pending;
    if (pending === undefined) return undefined;
    return this.#deadline(pending);
  }

  readonly #onWriteError = (e: unknown): void => {
    this.#halt(
      e instanceof MilterError
        ? e
        : new ConnectionClosedError("Writing to the MTA failed", { cause: e }),
    );
  };

  /** Stops the session: the read in progress ends (the channel is cancelled), a wait fails. */
  #halt(reason: unknown): void {
    this.#halted ??= reason;
    if (this.#reading) this.#ch.cancel();
    this.#interrupt?.(reason);
  }

  /** Awaits a write (or the end of the output) within `writeTimeoutMs`. */
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

  /** Fails the read in progress (if any) when the MTA has been silent for `idleTimeoutMs`. */
  #armIdle(idle: number, wait: number): void {
    this.#idleTimer = setTimeout(() => {
      const waited = performance.now() - this.#readStarted;
      if (this.#reading && waited >= idle) {
        this.#halt(new Stop("idle"));
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
    const signal = this.#signal();
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
          this.#abort(
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
