/**
 * I/O helpers of the session driver: a {@link ByteChannel} over a {@link Duplex}'s web streams
 * (for duplexes whose adapter offers no direct channel), and the pause that lets other
 * connections run.
 *
 * @module
 */

import { ConnectionClosedError, MilterError } from "../wire/errors.ts";
import type { ByteChannel, Duplex } from "../wire/types.ts";

const NOOP = (): void => {};

/**
 * The duplex's direct channel when its adapter has one, else one over its streams.
 *
 * @param conn The connection.
 * @returns A channel; the streams are locked to it.
 */
export function channelOf(conn: Duplex): ByteChannel {
  return conn.channel?.() ?? streamChannel(conn);
}

function readFailure(e: unknown): Error {
  return e instanceof MilterError
    ? e
    : new ConnectionClosedError("Connection to the MTA failed", { cause: e });
}

/**
 * A channel over web streams. A failed write is reported by the next read (and a pending read
 * is stopped for it), as a socket's reads fail once it broke.
 */
function streamChannel(conn: Duplex): ByteChannel {
  const reader = conn.readable.getReader();
  const writer = conn.writable.getWriter();
  let last: Promise<void> | undefined;
  let cancelled = false;
  let failed: Error | undefined;
  const onWriteError = (e: unknown) => {
    failed ??= e instanceof MilterError
      ? e
      : new ConnectionClosedError("Writing to the MTA failed", { cause: e });
    reader.cancel().catch(NOOP);
  };
  return {
    read() {
      if (failed) return Promise.reject(failed);
      if (cancelled) return null;
      return reader.read().then((r) => {
        if (failed) throw failed;
        return r.done || cancelled ? null : r.value;
      }, (e) => {
        if (failed) throw failed;
        if (cancelled) return null;
        throw readFailure(e);
      });
    },
    cancel() {
      cancelled = true;
      reader.cancel().catch(NOOP);
    },
    write(bytes) {
      if (failed) return Promise.reject(failed);
      const p = writer.write(bytes);
      last = p;
      p.catch(onWriteError);
      return (writer.desiredSize ?? 0) > 0 ? undefined : writer.ready.then(() => p);
    },
    async end() {
      await last;
      await writer.close();
    },
    destroy() {
      reader.cancel().catch(NOOP);
      writer.abort().catch(NOOP);
    },
  };
}

const setImmediateFn = (globalThis as { setImmediate?: (f: () => void) => void }).setImmediate;
/** Consecutive yields before one goes through the timer queue. */
const TIMER_YIELD_EVERY = 8;

/**
 * Lets other connections' I/O run before a busy session goes on. `setImmediate` is cheap but
 * some event loops run every queued immediate before polling sockets again, so every
 * {@link TIMER_YIELD_EVERY}th consecutive yield goes through a timer, which always lets I/O in.
 *
 * @param consecutive How many yields in a row this is (from 1).
 */
export function yieldTurn(consecutive: number): Promise<void> {
  return new Promise<void>((r) => {
    if (setImmediateFn !== undefined && consecutive % TIMER_YIELD_EVERY !== 0) setImmediateFn(r);
    else setTimeout(r, 0);
  });
}
