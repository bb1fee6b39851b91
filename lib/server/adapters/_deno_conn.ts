/**
 * Deno connections as {@link Connection}s: reads over `conn.read` into a growing buffer, writes
 * over `conn.write`, as lazily built streams or the direct channel. Private to
 * `lib/server/adapters/`; `deno.ts` listens and connects with it.
 *
 * @module
 */

import type { SocketAddress } from "../socket_spec.ts";
import { ConnectionClosedError } from "../../wire/errors.ts";
import type { ByteChannel } from "../../wire/types.ts";
import {
  closedError,
  errorCode,
  hostOf,
  READ_HIGH_WATER_MARK,
  WRITE_HIGH_WATER_MARK,
} from "./_shared.ts";
import type { Connection } from "./types.ts";

export interface DenoAddr {
  readonly transport: string;
  readonly hostname?: string;
  readonly port?: number;
  readonly path?: string | null;
}

export interface DenoConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay?(noDelay?: boolean): void;
  readonly localAddr: DenoAddr;
  readonly remoteAddr: DenoAddr;
}

export interface DenoListener {
  accept(): Promise<DenoConn>;
  close(): void;
  readonly addr: DenoAddr;
}

export type DenoSocketOptions =
  | { transport: "tcp"; hostname: string; port: number; reusePort?: boolean }
  | { transport: "unix"; path: string };

export interface DenoLike {
  listen(options: DenoSocketOptions): DenoListener;
  connect(options: DenoSocketOptions): Promise<DenoConn>;
}

export function deno(): DenoLike {
  const d = (globalThis as unknown as { Deno?: DenoLike }).Deno;
  if (!d) throw new TypeError("The Deno adapter needs the Deno runtime (globalThis.Deno)");
  return d;
}

const FIRST_READ = 8 * 1024;
const MAX_READ = 64 * 1024;

export function toAddress(a: DenoAddr): SocketAddress | undefined {
  if (a.transport === "tcp" && a.hostname !== undefined && a.port !== undefined) {
    return { transport: "tcp", hostname: a.hostname, port: a.port };
  }
  if (a.transport === "unix" && a.path) return { transport: "unix", path: a.path };
  return undefined;
}

export function options(address: SocketAddress): DenoSocketOptions {
  return address.transport === "unix"
    ? { transport: "unix", path: address.path }
    : { transport: "tcp", hostname: hostOf(address), port: address.port };
}

export function wrap(conn: DenoConn): Connection {
  let closed = false;
  let readDone = false;
  let writeDone = false;
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch {
      // Already closed by the runtime.
    }
  };
  const settle = () => {
    if (readDone && writeDone) close();
  };
  try {
    conn.setNoDelay?.(true);
  } catch {
    // Not a TCP connection.
  }

  // Read into a buffer; hand a large read downstream as is (and never touch that buffer again),
  // copy a small one out so a mostly empty buffer is not kept alive by the decoder's views.
  let size = FIRST_READ;
  let buffer = new Uint8Array(size);
  const take = (n: number): Uint8Array => {
    if (n * 2 < buffer.length) return buffer.slice(0, n);
    const chunk = buffer.subarray(0, n);
    if (n === buffer.length && size < MAX_READ) size *= 2;
    buffer = new Uint8Array(size);
    return chunk;
  };
  const readError = (e: unknown) =>
    closed ? new ConnectionClosedError("Connection was closed locally") : closedError("reading", e);
  const writeError = (e: unknown) =>
    closed
      ? new ConnectionClosedError("Cannot write: the connection was closed locally")
      : closedError("writing", e);
  const writeAll = async (chunk: Uint8Array) => {
    try {
      let offset = 0;
      while (offset < chunk.byteLength) {
        offset += await conn.write(offset === 0 ? chunk : chunk.subarray(offset));
      }
    } catch (e) {
      throw writeError(e);
    }
  };
  const closeWrite = async () => {
    try {
      if (!closed) await conn.closeWrite();
    } catch (e) {
      if (errorCode(e) !== "ENOTCONN") throw closedError("closing the write side", e);
    } finally {
      writeDone = true;
      settle();
    }
  };
  let taken: "streams" | "channel" | undefined;
  const claim = (by: "streams" | "channel") => {
    if (taken !== undefined && taken !== by) {
      throw new TypeError(
        `The connection's ${taken === "channel" ? "channel" : "streams"} are in use`,
      );
    }
    taken = by;
  };

  let readable: ReadableStream<Uint8Array> | undefined;
  const makeReadable = () =>
    new ReadableStream<Uint8Array>({
      async pull(controller) {
        let n: number | null;
        try {
          n = await conn.read(buffer);
        } catch (e) {
          readDone = true;
          controller.error(readError(e));
          return;
        }
        if (n === null) {
          readDone = true;
          controller.close();
          settle();
          return;
        }
        controller.enqueue(take(n));
      },
      cancel() {
        readDone = true;
        settle();
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: READ_HIGH_WATER_MARK }));

  let writable: WritableStream<Uint8Array> | undefined;
  const makeWritable = () =>
    new WritableStream<Uint8Array>({
      write: writeAll,
      close: closeWrite,
      abort() {
        writeDone = true;
        close();
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: WRITE_HIGH_WATER_MARK }));

  /**
   * The connection without streams: a read is one `conn.read`, a write one `conn.write` (after
   * the writes still in flight, so they stay in order).
   */
  const channel = (): ByteChannel => {
    claim("channel");
    let cancelled = false;
    let failure: Error | undefined;
    let wake: ((chunk: Uint8Array | null) => void) | undefined;
    let inFlight = 0;
    let tail: Promise<void> = Promise.resolve();
    return {
      read() {
        if (failure) return Promise.reject(failure);
        if (cancelled || readDone) return null;
        // A pending `conn.read` cannot be withdrawn: `cancel` settles the promise instead.
        return new Promise<Uint8Array | null>((resolve, reject) => {
          wake = resolve;
          conn.read(buffer).then((n) => {
            if (wake !== resolve) return;
            wake = undefined;
            if (n === null) {
              readDone = true;
              settle();
              resolve(null);
            } else resolve(take(n));
          }, (e) => {
            if (wake !== resolve) return;
            wake = undefined;
            readDone = true;
            reject(readError(e));
          });
        });
      },
      cancel() {
        if (cancelled) return;
        cancelled = true;
        readDone = true;
        const w = wake;
        wake = undefined;
        w?.(null);
        settle();
      },
      write(bytes) {
        if (failure) return Promise.reject(failure);
        if (writeDone || closed) return Promise.reject(writeError(new Error("closed")));
        inFlight += bytes.byteLength;
        const p = tail =
          (inFlight === bytes.byteLength ? writeAll(bytes) : tail.then(() => writeAll(bytes)))
            .then(() => {
              inFlight -= bytes.byteLength;
            }, (e) => {
              failure ??= e;
              throw e;
            });
        p.catch(() => {});
        return inFlight > WRITE_HIGH_WATER_MARK ? p : undefined;
      },
      async end() {
        await tail;
        if (failure) throw failure;
        if (!readDone) return await closeWrite();
        // Done reading too: closing sends the FIN (no separate half-close).
        writeDone = true;
        settle();
      },
      destroy() {
        writeDone = true;
        close();
      },
    };
  };

  return {
    get readable() {
      if (readable === undefined) {
        claim("streams");
        readable = makeReadable();
      }
      return readable;
    },
    get writable() {
      if (writable === undefined) {
        claim("streams");
        writable = makeWritable();
      }
      return writable;
    },
    channel,
    remote: toAddress(conn.remoteAddr),
    local: toAddress(conn.localAddr),
    close,
  };
}
