/**
 * A byte stream fed chunk by chunk whose producer waits while the consumer is behind: the body
 * of a message handed to a `bodyStream` handler without buffering it.
 *
 * @module
 */

/**
 * Feeds chunks into a `ReadableStream`, waiting while the stream's queue is full.
 *
 * @example
 * ```ts
 * import { BodyPipe } from "@milterkit/milterkit";
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

  /** True once the consumer cancelled the stream (later chunks are dropped). */
  get cancelled(): boolean {
    return this.#cancelled;
  }

  #release(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  /**
   * Adds a chunk; resolves when the queue has room again (or the consumer gave up, or
   * `until` settles).
   *
   * @param chunk Bytes to add.
   * @param until Stop waiting when this settles (e.g. the consumer's handler finished).
   */
  async push(chunk: Uint8Array, until?: Promise<unknown>): Promise<void> {
    if (this.#cancelled || this.#closed) return;
    this.#controller.enqueue(chunk);
    let done = false;
    until?.then(() => {
      done = true;
      this.#release();
    }, () => {
      done = true;
      this.#release();
    });
    while (!this.#cancelled && !done && (this.#controller.desiredSize ?? 1) <= 0) {
      await new Promise<void>((r) => (this.#wake = r));
    }
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
  }
}
