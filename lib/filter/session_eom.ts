/**
 * End-of-message output of the session engine: turns the modifications a handler queued into the
 * replies the MTA receives, cutting replacement bodies into REPLBODY chunks. No I/O: replies go
 * to a callback, a streamed body is read only when the engine asks for its next chunk.
 *
 * @module
 */

import { FilterHandlerError, thrownMessage } from "../wire/errors.ts";
import type { QueuedModification } from "./context.ts";
import type { Reply } from "../wire/types.ts";
import { MILTER_CHUNK_SIZE } from "../wire/constants.ts";

/** What {@link EomOutput.fill} stopped at. */
export type FillResult =
  | "done"
  | "full"
  | Promise<ReadableStreamReadResult<Uint8Array>>;

/**
 * Emits a modification queue as replies, a bounded amount at a time, so a large replacement body
 * is written as it is produced instead of being copied into one output buffer.
 */
export class EomOutput {
  readonly #queue: readonly QueuedModification[];
  #index = 0;
  /** The replacement body being cut, and the position in it. */
  #body: Uint8Array | undefined;
  #pos = 0;
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #sent = false;

  /**
   * @param queue The modifications, in the order the handler asked for them.
   */
  constructor(queue: readonly QueuedModification[]) {
    this.#queue = queue;
  }

  /**
   * Emits replies until the queue is done, `full()` says the output should be written first, or
   * the next chunk of a streamed body must be read (the returned promise; hand its outcome to
   * {@link EomOutput.received} or {@link EomOutput.failed}).
   */
  fill(send: (reply: Reply) => void, full: () => boolean): FillResult {
    while (true) {
      if (full()) return "full";
      const body = this.#body;
      if (body !== undefined) {
        if (this.#pos < body.length) {
          send({
            type: "replbody",
            chunk: body.subarray(this.#pos, this.#pos + MILTER_CHUNK_SIZE),
          });
          this.#pos += MILTER_CHUNK_SIZE;
          this.#sent = true;
          continue;
        }
        this.#body = undefined;
        if (this.#reader === undefined) continue;
      }
      if (this.#reader !== undefined) return this.#reader.read();
      const m = this.#queue[this.#index++];
      if (m === undefined) return "done";
      if (m.type === "replbody") {
        if (m.chunk.length === 0) send({ type: "replbody", chunk: m.chunk });
        else this.#start(m.chunk);
      } else if (m.type === "replbody-stream") {
        this.#sent = false;
        this.#reader = m.stream.getReader();
      } else send(m);
    }
  }

  #start(chunk: Uint8Array): void {
    this.#body = chunk;
    this.#pos = 0;
  }

  /** Takes the next chunk of a streamed body (or its end). */
  received(r: ReadableStreamReadResult<Uint8Array>, send: (reply: Reply) => void): void {
    if (!r.done) {
      this.#start(r.value);
      return;
    }
    this.#reader!.releaseLock();
    this.#reader = undefined;
    if (!this.#sent) send({ type: "replbody", chunk: new Uint8Array(0) });
  }

  /**
   * A streamed body failed while being read.
   *
   * @returns The error to report (the MTA gets the fallback).
   */
  failed(e: unknown): FilterHandlerError {
    this.#reader?.releaseLock();
    this.#reader = undefined;
    return new FilterHandlerError(
      `The replacement body stream failed${this.#sent ? " after part of it was sent" : ""}: ${
        thrownMessage(e)
      }`,
      "eom",
      { cause: e },
    );
  }
}
