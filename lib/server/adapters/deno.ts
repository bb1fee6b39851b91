/**
 * Socket adapter over `Deno.listen`/`Deno.connect` (TCP and Unix sockets). Streams are built over
 * `conn.read`/`conn.write` instead of `conn.readable`, which allocates 64 KiB per read.
 *
 * @module
 */

import type { SocketAddress } from "../socket_spec.ts";
import { ConnectionClosedError } from "../../wire/errors.ts";
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
  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch (e) {
        readDone = true;
        controller.error(
          closed ? new ConnectionClosedError("Connection was closed locally") : closedError(
            "reading",
            e,
          ),
        );
        return;
      }
      if (n === null) {
        readDone = true;
        controller.close();
        settle();
        return;
      }
      if (n * 2 >= buffer.length) {
        controller.enqueue(buffer.subarray(0, n));
        if (n === buffer.length && size < MAX_READ) size *= 2;
        buffer = new Uint8Array(size);
      } else {
        controller.enqueue(buffer.slice(0, n));
      }
    },
    cancel() {
      readDone = true;
      settle();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: READ_HIGH_WATER_MARK }));

  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      try {
        let offset = 0;
        while (offset < chunk.byteLength) {
          offset += await conn.write(offset === 0 ? chunk : chunk.subarray(offset));
        }
      } catch (e) {
        throw closed
          ? new ConnectionClosedError("Cannot write: the connection was closed locally")
          : closedError("writing", e);
      }
    },
    async close() {
      try {
        if (!closed) await conn.closeWrite();
      } catch (e) {
        if (errorCode(e) !== "ENOTCONN") throw closedError("closing the write side", e);
      } finally {
        writeDone = true;
        settle();
      }
    },
    abort() {
      writeDone = true;
      close();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: WRITE_HIGH_WATER_MARK }));

  return {
    readable,
    writable,
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
 * @param address Where to listen; port 0 picks a free port.
 * @param listenOptions Unix socket mode (default `0o660`) and stale file removal.
 * @returns The listener.
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
  address: SocketAddress,
  listenOptions: ListenOptions = {},
): Promise<Listener> {
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
 * @param address Where to connect.
 * @param connectOptions Abort signal and timeout.
 * @returns The connection.
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
  address: SocketAddress,
  connectOptions: ConnectOptions = {},
): Promise<Connection> {
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
