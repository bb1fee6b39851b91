/**
 * Socket adapter over `node:net` (TCP and Unix sockets). Works under Node, Deno and Bun.
 *
 * @module
 */

import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { type SocketAddress, toSocketAddress } from "../socket_spec.ts";
import { ConnectionClosedError } from "../../wire/errors.ts";
import type { ByteChannel } from "../../wire/types.ts";
import {
  AcceptQueue,
  closedError,
  finishUnixListen,
  hostOf,
  listenError,
  plainBytes,
  prepareUnixPath,
  pushReadable,
  withConnectLimits,
  WRITE_HIGH_WATER_MARK,
} from "./_shared.ts";
import { Inbox, pushChannel } from "./_channel.ts";
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

function tcpAddress(host: string | undefined, port: number | undefined): SocketAddress | undefined {
  return host && port !== undefined ? { transport: "tcp", hostname: host, port } : undefined;
}

function wrap(socket: Socket, unixPath: string | undefined, isClient: boolean): Connection {
  let readDone = false;
  let writeDone = false;
  let failure: ConnectionClosedError | undefined;
  const settle = () => {
    if (readDone && writeDone) socket.destroy();
  };
  const stopReading = () => {
    // Keep draining (and dropping) what the peer sends, so it never blocks on us.
    readDone = true;
    socket.resume();
    settle();
  };
  const flow = { pause: () => socket.pause(), resume: () => socket.resume() };
  const inbox = new Inbox(flow);
  if (!unixPath) socket.setNoDelay(true);
  socket.on("data", (chunk: Uint8Array) => inbox.push(plainBytes(chunk)));
  socket.on("end", () => {
    readDone = true;
    inbox.end();
    settle();
  });
  socket.on("error", (e) => {
    failure ??= closedError("reading or writing", e);
  });
  socket.on("close", () => {
    // Nobody reads any more (the usual end of a session): no error to build.
    if (readDone && failure === undefined) return inbox.end();
    readDone = true;
    const error = failure ?? new ConnectionClosedError("Connection closed before the peer's EOF");
    inbox.fail(error);
  });

  const closedForWrite = () =>
    Promise.reject(failure ?? new ConnectionClosedError("Cannot write: socket is closed"));
  const endWrite = () =>
    new Promise<void>((resolve, reject) => {
      if (socket.destroyed) {
        writeDone = true;
        return reject(failure ?? new ConnectionClosedError("Cannot close: socket is closed"));
      }
      const onClose = () => reject(failure ?? new ConnectionClosedError("Socket closed"));
      socket.once("close", onClose);
      socket.end(() => {
        socket.off("close", onClose);
        writeDone = true;
        settle();
        resolve();
      });
    });
  const destroy = () => {
    writeDone = true;
    socket.destroy();
  };
  let readable: ReadableStream<Uint8Array> | undefined;
  const makeReadable = () => {
    if (inbox.attached) throw new TypeError("The connection's channel is in use");
    const source = pushReadable({ ...flow, cancel: stopReading });
    inbox.attach(source);
    return source.readable;
  };
  let writable: WritableStream<Uint8Array> | undefined;
  const makeWritable = () =>
    new WritableStream<Uint8Array>({
      write(chunk) {
        if (socket.destroyed || socket.writableEnded) return closedForWrite();
        // Resolve once the bytes are with the kernel, so close() cannot drop acknowledged data.
        return new Promise<void>((resolve, reject) => {
          socket.write(chunk, (e) => e ? reject(failure ?? closedError("writing", e)) : resolve());
        });
      },
      close: endWrite,
      abort: destroy,
    }, new ByteLengthQueuingStrategy({ highWaterMark: WRITE_HIGH_WATER_MARK }));
  const channel = (): ByteChannel => {
    if (inbox.attached) throw new TypeError("The connection's readable is in use");
    const { channel, sink } = pushChannel({
      ...flow,
      stopReading,
      write(bytes) {
        if (socket.destroyed || socket.writableEnded) return closedForWrite();
        // Taken while under the socket's high-water mark (a failure shows in the next read).
        if (socket.write(bytes)) return undefined;
        return new Promise<void>((resolve, reject) => {
          const onDrain = () => {
            socket.off("close", onClose);
            resolve();
          };
          const onClose = () => {
            socket.off("drain", onDrain);
            reject(failure ?? new ConnectionClosedError("Socket closed"));
          };
          socket.once("drain", onDrain);
          socket.once("close", onClose);
        });
      },
      // `socket.end` writes what is buffered first.
      end: endWrite,
      destroy,
    });
    inbox.attach(sink);
    return channel;
  };

  const unix: SocketAddress | undefined = unixPath
    ? { transport: "unix", path: unixPath }
    : undefined;
  return {
    get readable() {
      return readable ??= makeReadable();
    },
    get writable() {
      return writable ??= makeWritable();
    },
    channel,
    remote: unixPath ? (isClient ? unix : undefined) : tcpAddress(
      socket.remoteAddress,
      socket.remotePort,
    ),
    local: unixPath ? (isClient ? undefined : unix) : tcpAddress(
      socket.localAddress,
      socket.localPort,
    ),
    close: () => {
      socket.destroy();
    },
  };
}

function boundAddress(server: Server, asked: SocketAddress): SocketAddress {
  const info = server.address();
  if (asked.transport === "unix" || info === null || typeof info === "string") return asked;
  return { transport: "tcp", hostname: info.address, port: info.port };
}

/**
 * Listens with `node:net` on a TCP address or a Unix socket path.
 *
 * @param spec Where to listen: a socket spec (`inet:8890@127.0.0.1`, `unix:/run/m.sock`) or an
 *   address; port 0 picks a free port.
 * @param options Unix socket mode (default `0o660`), stale file removal, backlog.
 * @returns The listener.
 * @throws {SocketSpecError} The spec cannot be parsed.
 * @throws {MilterError} The address is in use, or the path holds a file that is not a socket.
 *
 * @example
 * ```ts
 * import { listen } from "@milterkit/milterkit/node";
 * const listener = await listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 * await listener.close();
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
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    queue.push(wrap(socket, unixPath, false));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      const backlog = options.backlog === undefined ? {} : { backlog: options.backlog };
      server.listen(
        address.transport === "unix" ? { path: address.path, ...backlog } : {
          host: hostOf(address),
          port: address.port,
          ...backlog,
          ...(options.reusePort ? { reusePort: true } : {}),
        },
        () => {
          server.off("error", reject);
          resolve();
        },
      );
    });
  } catch (e) {
    server.close();
    throw listenError(address, e);
  }
  // Accept failures (EMFILE, a client that reset early) concern one client: keep serving.
  server.on("error", () => {});
  let removeFile: (() => Promise<void>) | undefined;
  if (unixPath !== undefined) {
    try {
      removeFile = await finishUnixListen(unixPath, options);
    } catch (e) {
      server.close();
      throw listenError(address, e);
    }
  }
  let closing = false;
  return {
    address: boundAddress(server, address),
    close: async () => {
      if (closing) return;
      closing = true;
      queue.end();
      server.close();
      await removeFile?.();
    },
    [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
  };
}

/**
 * Connects with `node:net` to a TCP address or a Unix socket path.
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
 * import { connect, listen } from "@milterkit/milterkit/node";
 * const listener = await listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 * const conn = await connect(listener.address);
 * conn.close();
 * await listener.close();
 * ```
 */
export async function connect(
  spec: string | SocketAddress,
  options: ConnectOptions = {},
): Promise<Connection> {
  const address = toSocketAddress(spec);
  const socket = await withConnectLimits(
    address,
    options,
    (giveUp) =>
      new Promise<Socket>((resolve, reject) => {
        const s = netConnect(
          address.transport === "unix"
            ? { path: address.path, allowHalfOpen: true }
            : { host: hostOf(address), port: address.port, allowHalfOpen: true },
        );
        giveUp.addEventListener("abort", () => s.destroy(), { once: true });
        s.once("error", reject);
        s.once("connect", () => {
          s.off("error", reject);
          resolve(s);
        });
      }),
    (late) => late.destroy(),
  );
  return wrap(socket, address.transport === "unix" ? address.path : undefined, true);
}

/**
 * The `node:net` adapter as a {@link NetworkAdapter}.
 *
 * @example
 * ```ts
 * import { nodeAdapter } from "@milterkit/milterkit/node";
 * const listener = await nodeAdapter.listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 * await listener.close();
 * ```
 */
export const nodeAdapter: NetworkAdapter = { name: "node", listen, connect };
