/**
 * Socket adapter over `Bun.listen`/`Bun.connect` (TCP and Unix sockets). Per-socket state lives
 * in `socket.data`. `socket.write` may take only part of a chunk: the rest is kept and written
 * on `drain`. Reads pause the socket while the readable's queue is full. Sockets are half-open
 * (`allowHalfOpen`), so the peer's FIN ends the readable without losing queued data.
 *
 * @module
 */

import { type SocketAddress, toSocketAddress } from "../socket_spec.ts";
import {
  AcceptQueue,
  finishUnixListen,
  hostOf,
  listenError,
  prepareUnixPath,
  withConnectLimits,
} from "./_shared.ts";
import { bun, type BunListener, handlers } from "./_bun_socket.ts";
import { ConnectionClosedError } from "../../wire/errors.ts";
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

/**
 * Listens with `Bun.listen` on a TCP address or a Unix socket path.
 *
 * @param spec Where to listen: a socket spec (`inet:8890@127.0.0.1`, `unix:/run/m.sock`) or an
 *   address; port 0 picks a free port.
 * @param options Unix socket mode (default `0o660`) and stale file removal.
 * @returns The listener.
 * @throws {SocketSpecError} The spec cannot be parsed.
 * @throws {MilterError} The address is in use, or the path holds a file that is not a socket.
 *
 * @example
 * ```ts
 * import { listen } from "@milterkit/milterkit/bun";
 * if ("Bun" in globalThis) { // this adapter needs the Bun runtime
 *   const listener = await listen("inet:0@127.0.0.1");
 *   await listener.close();
 * }
 * ```
 */
export async function listen(
  spec: string | SocketAddress,
  options: ListenOptions = {},
): Promise<Listener> {
  const address = toSocketAddress(spec);
  const unixPath = address.transport === "unix" ? address.path : undefined;
  if (unixPath !== undefined) await prepareUnixPath(unixPath, options);
  const queue = new AcceptQueue<Connection>((conn) => conn.close());
  let server: BunListener;
  try {
    server = bun().listen({
      ...(address.transport === "unix"
        ? { unix: address.path }
        : { hostname: hostOf(address), port: address.port, reusePort: options.reusePort }),
      allowHalfOpen: true,
      socket: handlers(unixPath, false, (state) => queue.push(state.connection)),
    });
  } catch (e) {
    throw listenError(address, e);
  }
  let removeFile: (() => Promise<void>) | undefined;
  if (unixPath !== undefined) {
    try {
      removeFile = await finishUnixListen(unixPath, options);
    } catch (e) {
      server.stop(false);
      throw listenError(address, e);
    }
  }
  const bound: SocketAddress = address.transport === "unix" ? address : {
    transport: "tcp",
    hostname: server.hostname ?? hostOf(address),
    port: server.port ?? address.port,
  };
  let closing = false;
  return {
    address: bound,
    close: async () => {
      if (closing) return;
      closing = true;
      queue.end();
      server.stop(false);
      await removeFile?.();
    },
    [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
  };
}

/**
 * Connects with `Bun.connect` to a TCP address or a Unix socket path.
 *
 * @param spec Where to connect: a socket spec (`inet:8890@127.0.0.1`) or an address.
 * @param options Abort signal and timeout.
 * @returns The connection.
 * @throws {SocketSpecError} The spec cannot be parsed.
 * @throws {ConnectionClosedError} The connection was refused, naming the address.
 * @throws {MilterTimeoutError} No answer within `timeoutMs`.
 *
 * @example
 * ```ts
 * import { connect, listen } from "@milterkit/milterkit/bun";
 * if ("Bun" in globalThis) { // this adapter needs the Bun runtime
 *   const listener = await listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 *   const conn = await connect(listener.address);
 *   conn.close();
 *   await listener.close();
 * }
 * ```
 */
export async function connect(
  spec: string | SocketAddress,
  options: ConnectOptions = {},
): Promise<Connection> {
  const address = toSocketAddress(spec);
  const unixPath = address.transport === "unix" ? address.path : undefined;
  const socket = await withConnectLimits(
    address,
    options,
    () =>
      bun().connect({
        ...(address.transport === "unix"
          ? { unix: address.path }
          : { hostname: hostOf(address), port: address.port }),
        allowHalfOpen: true,
        socket: handlers(unixPath, true, () => {}),
      }),
    (late) => late.end(),
  );
  const state = socket.data;
  if (!state) throw new ConnectionClosedError(`Connection to ${address.transport} closed at once`);
  return state.connection;
}

/**
 * The Bun adapter as a {@link NetworkAdapter}.
 *
 * @example
 * ```ts
 * import { bunAdapter } from "@milterkit/milterkit/bun";
 * if ("Bun" in globalThis) { // this adapter needs the Bun runtime
 *   const listener = await bunAdapter.listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 *   await listener.close();
 * }
 * ```
 */
export const bunAdapter: NetworkAdapter = { name: "bun", listen, connect };
