/**
 * Socket adapter over `Deno.listen`/`Deno.connect` (TCP and Unix sockets). Streams are built over
 * `conn.read`/`conn.write` instead of `conn.readable`, which allocates 64 KiB per read.
 *
 * @module
 */

import { type SocketAddress, toSocketAddress } from "../socket_spec.ts";
import {
  errorCode,
  finishUnixListen,
  listenError,
  prepareUnixPath,
  withConnectLimits,
} from "./_shared.ts";
import { deno, type DenoListener, options, toAddress, wrap } from "./_deno_conn.ts";
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
