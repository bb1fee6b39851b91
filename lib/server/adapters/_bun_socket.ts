/**
 * Bun sockets as connections: per-socket state (kept in `socket.data`), Bun's callbacks, partial
 * writes queued until `drain`, and the two ways to the data (streams or the direct channel).
 * Private to `lib/server/adapters/`; `bun.ts` listens and connects with it.
 *
 * @module
 */

import type { SocketAddress } from "../socket_spec.ts";
import { ConnectionClosedError } from "../../wire/errors.ts";
import {
  closedError,
  plainBytes,
  type PushReadable,
  pushReadable,
  WRITE_HIGH_WATER_MARK,
} from "./_shared.ts";
import { Inbox, pushChannel } from "./_channel.ts";
import type { ByteChannel } from "../../wire/types.ts";
import type { Connection } from "./types.ts";

/** The part of Bun's `Socket` this adapter uses. */
export interface BunSocket {
  data: SocketState | undefined;
  write(data: Uint8Array): number;
  /** Closes both directions after flushing. */
  end(): void;
  /** Half-close: sends FIN, keeps reading. */
  shutdown(halfClose?: boolean): void;
  pause(): void;
  resume(): void;
  setNoDelay?(noDelay?: boolean): boolean;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  readonly localAddress?: string;
  readonly localPort?: number;
}

interface BunSocketHandler {
  open(socket: BunSocket): void;
  data(socket: BunSocket, data: Uint8Array): void;
  drain(socket: BunSocket): void;
  end(socket: BunSocket): void;
  close(socket: BunSocket, error?: Error): void;
  error(socket: BunSocket, error: Error): void;
}

export interface BunListener {
  readonly port?: number;
  readonly hostname?: string;
  stop(closeActiveConnections?: boolean): void;
}

type BunSocketOptions =
  & { socket: BunSocketHandler; allowHalfOpen: boolean; reusePort?: boolean }
  & ({ hostname: string; port: number } | { unix: string });

export interface BunLike {
  listen(options: BunSocketOptions): BunListener;
  connect(options: BunSocketOptions): Promise<BunSocket>;
  gc?(force: boolean): void;
}

/**
 * Every chunk Bun delivers is a new buffer, garbage once the frame decoder copied it into its
 * frame. JavaScriptCore collects such buffers late: many connections each sending a large frame
 * then hold about twice the frames' size. A collection asked for after every this many bytes
 * received (by all sockets) keeps that garbage bounded.
 */
const COLLECT_EVERY = 64 * 1024 * 1024;
let receivedSinceCollect = 0;

function received(bytes: number): void {
  receivedSinceCollect += bytes;
  if (receivedSinceCollect < COLLECT_EVERY) return;
  receivedSinceCollect = 0;
  bun().gc?.(true);
}

export function bun(): BunLike {
  const b = (globalThis as unknown as { Bun?: BunLike }).Bun;
  if (!b) throw new TypeError("The Bun adapter needs the Bun runtime (globalThis.Bun)");
  return b;
}

interface PendingWrite {
  readonly chunk: Uint8Array;
  offset: number;
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

/** Everything one socket needs between Bun's callbacks, kept in `socket.data`. */
export interface SocketState {
  readonly inbox: Inbox;
  readonly connection: Connection;
  /** Writes the socket has not taken yet, in order. */
  readonly writes: PendingWrite[];
  failure: ConnectionClosedError | undefined;
  closed: boolean;
  closedLocally: boolean;
  readDone: boolean;
  writeDone: boolean;
}

function tcpAddress(host: string | undefined, port: number | undefined): SocketAddress | undefined {
  return host && port !== undefined ? { transport: "tcp", hostname: host, port } : undefined;
}

/** Writes now what the socket takes; queues the rest (and anything after it) for `drain`. */
function writeOrQueue(
  state: SocketState,
  socket: BunSocket,
  chunk: Uint8Array,
  closeError: () => Error,
): Promise<void> | undefined {
  if (state.closed || state.writeDone) return Promise.reject(closeError());
  let offset = 0;
  if (state.writes.length === 0) {
    const n = socket.write(chunk);
    if (n === chunk.byteLength) return undefined;
    if (n < 0) return Promise.reject(closeError());
    offset = n;
  }
  return new Promise<void>((resolve, reject) => {
    state.writes.push({ chunk, offset, resolve, reject });
  });
}

function createState(socket: BunSocket, unixPath: string | undefined, isClient: boolean) {
  const settle = () => {
    if (state.readDone && state.writeDone && !state.closed) socket.end();
  };
  const closeError = () =>
    state.failure ??
      new ConnectionClosedError(
        state.closedLocally ? "Connection was closed locally" : "Connection is closed",
      );
  const stopReading = () => {
    // Keep draining (and dropping) what the peer sends, so it never blocks on us.
    state.readDone = true;
    socket.resume();
    settle();
  };
  let readable: ReadableStream<Uint8Array> | undefined;
  const makeReadable = () => {
    if (state.inbox.attached) throw new TypeError("The connection's channel is in use");
    const source: PushReadable = pushReadable({
      pause: () => socket.pause(),
      resume: () => socket.resume(),
      cancel: stopReading,
    });
    state.inbox.attach(source);
    return source.readable;
  };
  let writable: WritableStream<Uint8Array> | undefined;
  const makeWritable = () =>
    new WritableStream<Uint8Array>({
      write: (chunk) => writeOrQueue(state, socket, chunk, closeError),
      close() {
        state.writeDone = true;
        if (state.closed) return Promise.reject(closeError());
        socket.shutdown();
        settle();
      },
      abort() {
        state.writeDone = true;
        close();
      },
    }, new ByteLengthQueuingStrategy({ highWaterMark: WRITE_HIGH_WATER_MARK }));
  let lastWrite: Promise<void> | undefined;
  const channel = (): ByteChannel => {
    if (state.inbox.attached) throw new TypeError("The connection's readable is in use");
    const { channel, sink } = pushChannel({
      pause: () => socket.pause(),
      resume: () => socket.resume(),
      stopReading,
      write(bytes) {
        const p = writeOrQueue(state, socket, bytes, closeError);
        if (p !== undefined) lastWrite = p;
        return p;
      },
      async end() {
        if (state.writes.length > 0) await lastWrite;
        state.writeDone = true;
        if (state.closed) throw closeError();
        // Done reading too: one `end` sends the FIN and closes (no separate half-close).
        if (!state.readDone) socket.shutdown();
        settle();
      },
      destroy() {
        state.writeDone = true;
        close();
      },
    });
    state.inbox.attach(sink);
    return channel;
  };
  const close = () => {
    if (state.closed) return;
    state.closedLocally = true;
    socket.end();
  };
  const unix: SocketAddress | undefined = unixPath
    ? { transport: "unix", path: unixPath }
    : undefined;
  const connection: Connection = {
    get readable() {
      return readable ??= makeReadable();
    },
    get writable() {
      return writable ??= makeWritable();
    },
    channel,
    remote: unixPath
      ? (isClient ? unix : undefined)
      : tcpAddress(socket.remoteAddress, socket.remotePort),
    local: unixPath
      ? (isClient ? undefined : unix)
      : tcpAddress(socket.localAddress, socket.localPort),
    close,
  };
  const state: SocketState = {
    inbox: new Inbox({ pause: () => socket.pause(), resume: () => socket.resume() }),
    connection,
    writes: [],
    failure: undefined,
    closed: false,
    closedLocally: false,
    readDone: false,
    writeDone: false,
  };
  if (!unixPath) socket.setNoDelay?.(true);
  return state;
}

export function handlers(
  unixPath: string | undefined,
  isClient: boolean,
  onOpen: (state: SocketState) => void,
): BunSocketHandler {
  return {
    open(socket) {
      socket.data = createState(socket, unixPath, isClient);
      onOpen(socket.data);
    },
    data(socket, data) {
      received(data.byteLength);
      socket.data?.inbox.push(plainBytes(data));
    },
    drain(socket) {
      const state = socket.data;
      if (!state) return;
      const writes = state.writes;
      while (writes.length > 0) {
        const p = writes[0]!;
        const n = socket.write(p.chunk.subarray(p.offset));
        if (n < 0) {
          const e = state.failure ??
            new ConnectionClosedError("Cannot write: connection is closed");
          for (const w of writes.splice(0)) w.reject(e);
          return;
        }
        p.offset += n;
        if (p.offset < p.chunk.byteLength) return;
        writes.shift();
        p.resolve();
      }
    },
    end(socket) {
      const state = socket.data;
      if (!state) return;
      state.readDone = true;
      state.inbox.end();
      if (state.writeDone && !state.closed) socket.end();
    },
    error(socket, error) {
      const state = socket.data;
      if (state) state.failure ??= closedError("reading or writing", error);
    },
    close(socket, error) {
      const state = socket.data;
      if (!state) return;
      state.closed = true;
      const reading = !state.readDone;
      state.readDone = true;
      if (error) state.failure ??= closedError("reading or writing", error);
      // Nobody waits on this socket any more (the usual end of a session): no error to build.
      if (!reading && state.writes.length === 0 && state.failure === undefined) {
        return state.inbox.end();
      }
      const failure = state.failure ??
        (state.closedLocally
          ? new ConnectionClosedError("Connection was closed locally")
          : undefined);
      // Bun reports a FIN that arrives after our own shutdown as close without end.
      if (failure) state.inbox.fail(failure);
      else state.inbox.end();
      const e = failure ??
        new ConnectionClosedError("Cannot write: the peer closed the connection");
      for (const w of state.writes.splice(0)) w.reject(e);
    },
  };
}
