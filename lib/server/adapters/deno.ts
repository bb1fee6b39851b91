/**
 * Socket adapter over `Deno.listen`/`Deno.connect` (TCP and Unix sockets). Streams are built over
 * `conn.read`/`conn.write` instead of `conn.readable`, which allocates 64 KiB per read.
 *
 * @module
 */

import { type SocketAddress, toSocketAddress } from "../socket_spec.ts";
import { ConnectionClosedError } from "../../wire/errors.ts";
import type { ByteChannel } from "../../wire/types.ts";
import {
  closedError,
  errorCode,
  finishUnixListen,
  hostOf,
  listenError,
  prepareUnixPath,
  READ_HIGH_WATER_MARK,
  withConnectLimits,
  WRITE_HIGH_WATER_MARK,
} from "./_shared.ts";
import type {
  Connection,
  ConnectOptions,
  Listener,
  ListenOptions,
  NetworkAdapter,
} from "./types.ts";

export type {
  AdapterName,
  Connection,
  ConnectOptions,
  Listener,
  ListenOptions,
  NetworkAdapter,
} from "./types.ts";
export type { SocketAddress } from "../socket_spec.ts";

interface DenoAddr {
  readonly transport: string;
  readonly hostname?: string;
  readonly port?: number;
  readonly path?: string | null;
}

interface DenoConn {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
  setNoDelay?(noDelay?: boolean): void;
  readonly localAddr: DenoAddr;
  readonly remoteAddr: DenoAddr;
}

interface DenoListener {
  accept(): Promise<DenoConn>;
  close(): void;
  readonly addr: DenoAddr;
}

type DenoSocketOptions =
  | { transport: "tcp"; hostname: string; port: number; reusePort?: boolean }
  | { transport: "unix"; path: string };

interface DenoLike {
  listen(options: DenoSocketOptions): DenoListener;
  connect(options: DenoSocketOptions): Promise<DenoConn>;
}

function deno(): DenoLike {
  const d = (globalThis as unknown as { Deno?: DenoLike }).Deno;
  if (!d) throw new TypeError("The Deno adapter needs the Deno runtime (globalThis.Deno)");
  return d;
}

const FIRST_READ = 8 * 1024;
const MAX_READ = 64 * 1024;

function toAddress(a: DenoAddr): SocketAddress | undefined {
  if (a.transport === "tcp" && a.hostname !== undefined && a.port !== undefined) {
    return { transport: "tcp", hostname: a.hostname, port: a.port };
  }
  if (a.transport === "unix" && a.path) return { transport: "unix", path: a.path };
  return undefined;
}

function options(address: SocketAddress): DenoSocketOptions {
  return address.transport === "unix"
    ? { transport: "unix", path: address.path }
    : { transport: "tcp", hostname: hostOf(address), port: address.port };
}

function wrap(conn: DenoConn): Connection {
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
        await closeWrite();
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

/** Accept errors that concern one client only: keep accepting. */
const TRANSIENT = new Set(["ECONNABORTED", "ECONNRESET", "EPROTO", "EMFILE", "ENFILE"]);

/**
 * Listens with `Deno.listen` on a TCP address or a Unix socket path.
 *
 * @param spec Where to listen: a socket spec (`inet:8890@127.0.0.1`, `unix:/run/m.sock`) or an
 *   address; port 0 picks a free port.
 * @param listenOptions Unix socket mode (default `0o660`) and stale file removal.
 * @returns The listener.
 * @throws {SocketSpecError} The spec cannot be parsed.
 * @throws {MilterError} The address is in use, or the path holds a file that is not a socket.
 *
 * @example
 * ```ts
 * import { listen } from "@milterkit/milterkit/deno";
 * const listener = await listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 * await listener.close();
 * ```
 */
export async function listen(
  spec: string | SocketAddress,
  listenOptions: ListenOptions = {},
): Promise<Listener> {
  const address = toSocketAddress(spec);
  if (address.transport === "unix") await prepareUnixPath(address.path, listenOptions);
  let listener: DenoListener;
  try {
    const o = options(address);
    listener = deno().listen(
      o.transport === "tcp" && listenOptions.reusePort ? { ...o, reusePort: true } : o,
    );
  } catch (e) {
    throw listenError(address, e);
  }
  let removeFile: (() => Promise<void>) | undefined;
  if (address.transport === "unix") {
    try {
      removeFile = await finishUnixListen(address.path, listenOptions);
    } catch (e) {
      listener.close();
      throw listenError(address, e);
    }
  }
  const bound = toAddress(listener.addr) ?? address;
  let closing = false;
  const next = async (): Promise<IteratorResult<Connection>> => {
    while (!closing) {
      try {
        return { value: wrap(await listener.accept()), done: false };
      } catch (e) {
        if (closing) break;
        const code = errorCode(e);
        if (code === undefined || !TRANSIENT.has(code)) throw listenError(bound, e);
        if (code === "EMFILE" || code === "ENFILE") await new Promise((r) => setTimeout(r, 100));
      }
    }
    return { value: undefined, done: true };
  };
  const close = async () => {
    if (closing) return;
    closing = true;
    try {
      listener.close();
    } catch {
      // Already closed.
    }
    await removeFile?.();
  };
  return {
    address: bound,
    close,
    [Symbol.asyncIterator]: () => ({
      next,
      return: async () => {
        await close();
        return { value: undefined, done: true };
      },
    }),
  };
}

/**
 * Connects with `Deno.connect` to a TCP address or a Unix socket path.
 *
 * @param spec Where to connect: a socket spec (`inet:8890@127.0.0.1`) or an address.
 * @param connectOptions Abort signal and timeout.
 * @returns The connection.
 * @throws {SocketSpecError} The spec cannot be parsed.
 * @throws {ConnectionClosedError} The connection was refused, naming the address.
 * @throws {MilterTimeoutError} No answer within `timeoutMs`.
 *
 * @example
 * ```ts
 * import { connect, listen } from "@milterkit/milterkit/deno";
 * const listener = await listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 * const conn = await connect(listener.address);
 * conn.close();
 * await listener.close();
 * ```
 */
export async function connect(
  spec: string | SocketAddress,
  connectOptions: ConnectOptions = {},
): Promise<Connection> {
  const address = toSocketAddress(spec);
  const conn = await withConnectLimits(
    address,
    connectOptions,
    () => deno().connect(options(address)),
    (late) => late.close(),
  );
  return wrap(conn);
}

/**
 * The Deno adapter as a {@link NetworkAdapter}.
 *
 * @example
 * ```ts
 * import { denoAdapter } from "@milterkit/milterkit/deno";
 * const listener = await denoAdapter.listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 * await listener.close();
 * ```
 */
export const denoAdapter: NetworkAdapter = { name: "deno", listen, connect };
