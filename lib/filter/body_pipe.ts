/**
 * A byte stream fed chunk by chunk whose producer waits while the consumer is behind: the body
 * of a message handed to a `bodyStream` handler without buffering it.
 *
 * @module
 */

/**
 * Feeds chunks into a `ReadableStream`, waiting while the stream's queue is full. Once the
 * consumer cancels the stream or the producer {@link BodyPipe.stop}s it, queued chunks are
 * dropped and later ones are never queued: memory stays bounded by the high-water mark.
 *
 * @example
 * ```ts
 * import { BodyPipe } from "./body_pipe.ts";
 * import assert from "node:assert/strict";
 * const pipe = new BodyPipe(4);
 * const reading = new Response(pipe.stream).text();
 * await pipe.push(new TextEncoder().encode("hello "));
 * await pipe.push(new TextEncoder().encode("world"));
 * pipe.close();
 * assert.equal(await reading, "hello world");
 * ```
 */
export class BodyPipe {
  /** The stream the consumer reads. */
  readonly stream: ReadableStream<Uint8Array>;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #wake: (() => void) | undefined;
  #room: Promise<void> | undefined;
  #cancelled = false;
  #closed = false;

  /**
   * Creates the pipe.
   *
   * @param highWaterMark Bytes queued before `push` waits (default 256 KiB).
   */
  constructor(highWaterMark = 256 * 1024) {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.#controller = c;
        },
        pull: () => this.#release(),
        cancel: () => {
          this.#cancelled = true;
          this.#release();
        },
      },
      new ByteLengthQueuingStrategy({ highWaterMark }),
    );
  }

  /** True once the consumer cancelled the stream or the producer stopped it. */
  get cancelled(): boolean {
    return this.#cancelled;
  }

  #release(): void {
    const w = this.#wake;
    this.#wake = undefined;
    this.#room = undefined;
    w?.();
  }

  /**
   * Queues a chunk without waiting (dropped once cancelled or closed).
   *
   * @param chunk Bytes to add.
   * @returns True while the queue has room for more; false when the producer should wait for
   * {@link BodyPipe.room}.
   */
  offer(chunk: Uint8Array): boolean {
    if (this.#cancelled || this.#closed) return true;
    this.#controller.enqueue(chunk);
    return (this.#controller.desiredSize ?? 1) > 0;
  }

  /** Resolves when the consumer reads (the queue has room again), cancels, or the pipe stops. */
  room(): Promise<void> {
    if (this.#cancelled || this.#closed || (this.#controller.desiredSize ?? 1) > 0) {
      return Promise.resolve();
    }
    return this.#room ??= new Promise<void>((r) => (this.#wake = r));
  }

  /**
   * Adds a chunk; resolves when the queue has room again (or the consumer gave up, or
   * `until` settles).
   *
   * @param chunk Bytes to add.
   * @param until Stop waiting when this settles (e.g. the consumer's handler finished).
   */
  async push(chunk: Uint8Array, until?: Promise<unknown>): Promise<void> {
    if (this.offer(chunk)) return;
    const done = until?.then(() => {}, () => {});
    await (done ? Promise.race([this.room(), done]) : this.room());
  }

  /** Ends the stream (end of message). */
  close(): void {
    if (this.#closed || this.#cancelled) return;
    this.#closed = true;
    this.#controller.close();
  }

  /** Errors the stream (message aborted or connection lost). */
  error(reason: unknown): void {
    if (this.#closed || this.#cancelled) return;
    this.#closed = true;
    this.#controller.error(reason);
    this.#release();
  }

  /**
   * Cancels from the producer's side: queued chunks are dropped, later ones ignored, a waiting
   * producer released. Used when the consumer settled without reading everything.
   *
   * @param reason What a late reader of the stream sees.
   */
  stop(reason: unknown): void {
    if (this.#cancelled) return;
    if (!this.#closed) this.#controller.error(reason);
    this.#cancelled = true;
    this.#release();
  }
}
