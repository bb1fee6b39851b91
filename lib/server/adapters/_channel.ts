/**
 * The direct (stream-free) path of push-based sockets (Bun, `node:net`): an inbox that holds
 * data until the connection's consumer picks streams or the channel, and the channel itself.
 * Private to `lib/server/adapters/`.
 *
 * @module
 */

import type { ByteChannel } from "../../wire/types.ts";
import { READ_HIGH_WATER_MARK } from "./_shared.ts";

/** Where a push-based socket's data goes: a stream or a channel, whichever is taken first. */
export interface Sink {
  /** A chunk arrived. */
  push(chunk: Uint8Array): void;
  /** The peer's EOF. */
  end(): void;
  /** The connection failed. */
  fail(error: Error): void;
}

/** Pausing and resuming a push-based socket. */
export interface Flow {
  pause(): void;
  resume(): void;
}

/**
 * Holds what a push-based socket delivers before its consumer chose between the stream and the
 * channel (pausing the socket when it piles up), then hands everything to the one chosen.
 */
export class Inbox implements Sink {
  readonly #flow: Flow;
  #early: Uint8Array[] = [];
  #earlyBytes = 0;
  #paused = false;
  #ending: { error?: Error } | undefined;
  #sink: Sink | undefined;

  /** @param flow Pauses and resumes the socket. */
  constructor(flow: Flow) {
    this.#flow = flow;
  }

  /** Whether a consumer took the data. */
  get attached(): boolean {
    return this.#sink !== undefined;
  }

  push(chunk: Uint8Array): void {
    if (this.#sink) return this.#sink.push(chunk);
    this.#early.push(chunk);
    this.#earlyBytes += chunk.byteLength;
    if (!this.#paused && this.#earlyBytes >= READ_HIGH_WATER_MARK) {
      this.#paused = true;
      this.#flow.pause();
    }
  }

  end(): void {
    if (this.#sink) this.#sink.end();
    else this.#ending ??= {};
  }

  fail(error: Error): void {
    if (this.#sink) this.#sink.fail(error);
    else this.#ending ??= { error };
  }

  /** Hands what arrived so far, and everything later, to `sink`. */
  attach(sink: Sink): void {
    this.#sink = sink;
    if (this.#paused) this.#flow.resume();
    for (const c of this.#early) sink.push(c);
    this.#early = [];
    const ending = this.#ending;
    if (ending?.error) sink.fail(ending.error);
    else if (ending) sink.end();
  }
}

/** The socket operations behind {@link pushChannel}. */
export interface ChannelSocket extends Flow {
  /** Stops reading for good: keep draining (and dropping) what the peer sends. */
  stopReading(): void;
  write(bytes: Uint8Array): Promise<void> | undefined;
  end(): Promise<void>;
  destroy(): void;
}

/**
 * A {@link ByteChannel} over a push-based socket (Bun, `node:net`): delivered chunks go straight
 * to a waiting read, or to a short queue that pauses the socket when full. No stream machinery
 * per round trip.
 *
 * @returns The channel, and the sink the socket's data callbacks feed.
 */
export function pushChannel(socket: ChannelSocket): { channel: ByteChannel; sink: Sink } {
  const queue: Uint8Array[] = [];
  let queued = 0;
  let paused = false;
  let ended = false;
  let cancelled = false;
  let failure: Error | undefined;
  let resolve: ((c: Uint8Array | null) => void) | undefined;
  let reject: ((e: Error) => void) | undefined;
  const settleRead = (chunk: Uint8Array | null, error?: Error) => {
    const res = resolve;
    const rej = reject;
    resolve = reject = undefined;
    if (error) rej?.(error);
    else res?.(chunk);
  };
  const sink: Sink = {
    push(chunk) {
      if (cancelled) return;
      if (resolve !== undefined) return settleRead(chunk);
      queue.push(chunk);
      queued += chunk.byteLength;
      if (!paused && queued >= READ_HIGH_WATER_MARK) {
        paused = true;
        socket.pause();
      }
    },
    end() {
      if (ended) return;
      ended = true;
      settleRead(null);
    },
    fail(error) {
      if (ended) return;
      ended = true;
      failure = error;
      settleRead(null, error);
    },
  };
  const channel: ByteChannel = {
    read() {
      const c = queue.shift();
      if (c !== undefined) {
        queued -= c.byteLength;
        if (paused && queued < READ_HIGH_WATER_MARK) {
          paused = false;
          socket.resume();
        }
        return c;
      }
      if (failure) return Promise.reject(failure);
      if (ended || cancelled) return null;
      return new Promise<Uint8Array | null>((res, rej) => {
        resolve = res;
        reject = rej;
      });
    },
    cancel() {
      if (cancelled) return;
      cancelled = true;
      queue.length = 0;
      settleRead(null);
      socket.stopReading();
    },
    write: (bytes) => socket.write(bytes),
    end: () => socket.end(),
    destroy: () => socket.destroy(),
  };
  return { channel, sink };
}
