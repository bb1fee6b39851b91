/**
 * Pieces every socket adapter needs: Unix socket file handling, error mapping, a push-based
 * readable with pause/resume backpressure, an accept queue and connect limits. Private to
 * `lib/adapters/`.
 *
 * @module
 */

import { connect as netConnect } from "node:net";
import { chmod, lstat, unlink } from "node:fs/promises";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { formatSocketSpec, type SocketAddress } from "../socket_spec.ts";
import {
  ConnectionClosedError,
  MilterError,
  MilterTimeoutError,
  thrownMessage,
} from "../../wire/errors.ts";
import type { ConnectOptions, ListenOptions } from "./types.ts";

/** Bytes a connection's readable buffers before it stops reading from the socket. */
export const READ_HIGH_WATER_MARK = 64 * 1024;
/** Bytes a connection's writable accepts before `writer.ready` waits. */
export const WRITE_HIGH_WATER_MARK = 64 * 1024;

const DENO_NAMES: Record<string, string> = {
  ConnectionRefused: "ECONNREFUSED",
  ConnectionReset: "ECONNRESET",
  ConnectionAborted: "ECONNABORTED",
  BrokenPipe: "EPIPE",
  NotConnected: "ENOTCONN",
  NotFound: "ENOENT",
  PermissionDenied: "EACCES",
  AddrInUse: "EADDRINUSE",
  AddrNotAvailable: "EADDRNOTAVAIL",
  TimedOut: "ETIMEDOUT",
};

const REASONS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset by peer",
  ECONNABORTED: "connection aborted",
  EPIPE: "broken pipe",
  ENOTCONN: "not connected",
  ENOENT: "no such socket file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EADDRINUSE: "address in use",
  EADDRNOTAVAIL: "address not available on this host",
  ETIMEDOUT: "timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  ENOTFOUND: "host name not found",
  EAI_AGAIN: "host name lookup failed",
};

/** The errno-style code of a runtime error (`ECONNRESET`), from `code` or a Deno error name. */
export function errorCode(e: unknown): string | undefined {
  if (typeof e !== "object" || e === null) return undefined;
  const { code, name } = e as { code?: unknown; name?: unknown };
  if (typeof code === "string" && code !== "") return code;
  return typeof name === "string" ? DENO_NAMES[name] : undefined;
}

function reason(e: unknown): string {
  const code = errorCode(e);
  const known = code === undefined ? undefined : REASONS[code];
  if (known !== undefined) return `${known} (${code})`;
  return thrownMessage(e);
}

/** The reason, naming a missing directory of a Unix socket path rather than a missing file. */
function reasonAt(address: SocketAddress, e: unknown): string {
  if (address.transport === "unix" && errorCode(e) === "ENOENT") {
    const dir = dirname(address.path);
    if (!existsSync(dir)) return `the directory ${dir} does not exist (ENOENT)`;
  }
  return reason(e);
}

/**
 * Maps a runtime socket failure to {@link ConnectionClosedError}, keeping the original as cause.
 */
export function closedError(doing: string, e: unknown): ConnectionClosedError {
  if (e instanceof ConnectionClosedError) return e;
  return new ConnectionClosedError(`Connection failed while ${doing}: ${reason(e)}`, { cause: e });
}

/** The error for a failed connect, naming the address. */
export function connectError(address: SocketAddress, e: unknown): Error {
  if (e instanceof MilterError) return e;
  return new ConnectionClosedError(
    `Cannot connect to ${formatSocketSpec(address)}: ${reasonAt(address, e)}`,
    {
      cause: e,
    },
  );
}

/** The error for a failed listen, naming the address. */
export function listenError(address: SocketAddress, e: unknown): Error {
  if (e instanceof MilterError) return e;
  return new MilterError(`Cannot listen on ${formatSocketSpec(address)}: ${reasonAt(address, e)}`, {
    cause: e,
  });
}

/** Resolves whether something accepts connections on the Unix socket at `path`. */
function unixSocketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ path });
    const done = (answer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    // A listener with a full backlog does not answer at once: count it as alive.
    const timer = setTimeout(() => done(true), 1000);
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/**
 * Makes `path` free for a new Unix socket listener: removes a stale socket file that nobody
 * listens on; refuses (and never deletes) anything else.
 */
export async function prepareUnixPath(path: string, options: ListenOptions): Promise<void> {
  const where = `unix:${path}`;
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (e) {
    if (errorCode(e) === "ENOENT") return;
    throw listenError({ transport: "unix", path }, e);
  }
  if (!isSocket) {
    throw new MilterError(
      `Cannot listen on ${where}: the path exists and is not a socket, so it was left in place`,
    );
  }
  if (options.removeStale === false) {
    throw new MilterError(`Cannot listen on ${where}: a socket file exists (removeStale is false)`);
  }
  if (await unixSocketAnswers(path)) {
    throw new MilterError(`Cannot listen on ${where}: another process is listening on it`);
  }
  try {
    await unlink(path);
  } catch (e) {
    if (errorCode(e) !== "ENOENT") throw listenError({ transport: "unix", path }, e);
  }
}

/**
 * Applies the mode to a freshly bound Unix socket and returns a function that removes the file
 * later, only if it is still the socket this listener created.
 */
export async function finishUnixListen(
  path: string,
  options: ListenOptions,
): Promise<() => Promise<void>> {
  await chmod(path, options.unixMode ?? 0o660);
  const { ino } = await lstat(path);
  return async () => {
    try {
      const st = await lstat(path);
      if (st.isSocket() && st.ino === ino) await unlink(path);
    } catch {
      // Already gone (Deno and Bun remove it themselves on close).
    }
  };
}

/** The reading side of a push-based socket (Bun, `node:net`), fed by its data callbacks. */
export interface PushReadable {
  /** The stream handed to the connection's user. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Queues a chunk the runtime delivered; pauses the socket when the queue is full. */
  push(chunk: Uint8Array): void;
  /** Ends the stream after the queued chunks (peer's FIN). */
  end(): void;
  /** Errors the stream (queued chunks are dropped). */
  fail(error: Error): void;
  /** Whether the stream has ended, failed or been cancelled. */
  readonly done: boolean;
}

/** How a {@link PushReadable} drives its socket. */
export interface ReadFlow {
  /** Stop delivering data. */
  pause(): void;
  /** Deliver data again. */
  resume(): void;
  /** The reader lost interest (`cancel`). */
  cancel(): void;
}

/** Builds a readable over a push-based socket, pausing it while the queue is full. */
export function pushReadable(flow: ReadFlow): PushReadable {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let paused = false;
  let done = false;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    pull() {
      if (paused && !done) {
        paused = false;
        flow.resume();
      }
    },
    cancel() {
      done = true;
      flow.cancel();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: READ_HIGH_WATER_MARK }));
  return {
    readable,
    get done() {
      return done;
    },
    push(chunk) {
      if (done || chunk.byteLength === 0) return;
      controller.enqueue(chunk);
      if (!paused && (controller.desiredSize ?? 0) <= 0) {
        paused = true;
        flow.pause();
      }
    },
    end() {
      if (done) return;
      done = true;
      controller.close();
    },
    fail(error) {
      if (done) return;
      done = true;
      controller.error(error);
    },
  };
}

/** Connections accepted but not yet taken by the listener's iterator. */
export class AcceptQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiters: Array<(r: IteratorResult<T>) => void> = [];
  #ended = false;
  #drop: (item: T) => void;

  /**
   * Creates an empty queue.
   *
   * @param drop Closes an item that is still queued when the queue ends.
   */
  constructor(drop: (item: T) => void) {
    this.#drop = drop;
  }

  /** Hands an accepted item to a waiting iterator, or queues it. */
  push(item: T): void {
    if (this.#ended) return this.#drop(item);
    const waiter = this.#waiters.shift();
    if (waiter) waiter({ value: item, done: false });
    else this.#items.push(item);
  }

  /** Ends the iteration; queued items are dropped. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const item of this.#items.splice(0)) this.#drop(item);
    for (const waiter of this.#waiters.splice(0)) waiter({ value: undefined, done: true });
  }

  /** Yields items until {@link AcceptQueue.end}. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        const item = this.#items.shift();
        if (item !== undefined) return Promise.resolve({ value: item, done: false });
        if (this.#ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiters.push(resolve));
      },
      return: () => {
        this.end();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

/**
 * Runs a connect attempt under a timeout and an abort signal. A connection that arrives after
 * the caller gave up is discarded.
 */
export function withConnectLimits<T>(
  address: SocketAddress,
  options: ConnectOptions,
  attempt: (giveUp: AbortSignal) => Promise<T>,
  discard: (late: T) => void,
): Promise<T> {
  const { signal, timeoutMs } = options;
  if (signal?.aborted) return Promise.reject(signal.reason);
  const giveUp = new AbortController();
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = () => {
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      if (settled) return;
      finish();
      giveUp.abort();
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        if (settled) return;
        finish();
        giveUp.abort();
        reject(
          new MilterTimeoutError(
            `Cannot connect to ${
              formatSocketSpec(address)
            }: no answer in ${timeoutMs} ms (timeoutMs)`,
            timeoutMs,
          ),
        );
      }, timeoutMs);
    }
    attempt(giveUp.signal).then((value) => {
      if (settled) return discard(value);
      finish();
      resolve(value);
    }, (e) => {
      if (settled) return;
      finish();
      reject(connectError(address, e));
    });
  });
}

/** A plain `Uint8Array` view of a runtime buffer (no `Buffer` methods with other semantics). */
export function plainBytes(chunk: Uint8Array): Uint8Array {
  return chunk.constructor === Uint8Array
    ? chunk
    : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/** The loopback address for a TCP address whose hostname is empty. */
export function hostOf(address: { readonly hostname: string }): string {
  return address.hostname === "" ? "127.0.0.1" : address.hostname;
}
