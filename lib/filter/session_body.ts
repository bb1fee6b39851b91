/**
 * Body handling of the session engine: buffering for `bufferBody` (with its size limit) and the
 * stream handed to a `bodyStream` handler. No I/O: the engine feeds chunks and asks what to do.
 *
 * @module
 */

import { BodyPipe } from "./body_pipe.ts";
import { ConnectionClosedError, FilterHandlerError } from "../wire/errors.ts";
import type { BodyBuffering, HandlerResult } from "./filter.ts";
import type { SessionState } from "./context.ts";
import type { Reply } from "../wire/types.ts";

/**
 * Adds a body chunk to the session's size count and, with `bufferBody`, to the buffer.
 *
 * @returns The reply the limit calls for (to answer at the next replied command) and the error
 * to report, when this chunk crossed `maxBodyBytes` with an `onBodyLimit` other than truncate.
 */
export function collectBody<C, M>(
  cfg: BodyBuffering | undefined,
  st: SessionState<C, M>,
  chunk: Uint8Array,
): { reply: Reply; error: FilterHandlerError } | undefined {
  st.bodySize += chunk.length;
  if (cfg === undefined || st.bodyTruncated) return undefined;
  const max = cfg.maxBytes;
  const room = max - st.bodyBuffered;
  if (chunk.length <= room) {
    st.bodyChunks.push(chunk);
    st.bodyBuffered += chunk.length;
    return undefined;
  }
  if (room > 0) {
    st.bodyChunks.push(chunk.subarray(0, room));
    st.bodyBuffered += room;
  }
  st.bodyTruncated = true;
  const onLimit = cfg.onLimit;
  if (onLimit === "truncate") return undefined;
  const reply: Reply = onLimit === "accept"
    ? { type: "accept" }
    : onLimit === "reject"
    ? { type: "replycode", text: `552 5.3.4 Message body over ${max} bytes` }
    : { type: "replycode", text: `452 4.3.4 Message body over ${max} bytes` };
  const error = new FilterHandlerError(
    `Message body over the buffer limit of ${max} bytes (maxBodyBytes): ${onLimit}`,
    "body",
  );
  return { reply, error };
}

/** The outcome of a `bodyStream` handler once it settled. */
export type Settled = { readonly value: HandlerResult } | { readonly error: unknown };

/**
 * One message's `bodyStream` handler: the pipe it reads and its outcome. When the handler
 * settles, the pipe is stopped: chunks it did not read are dropped, never queued.
 */
export class BodyStream {
  readonly pipe: BodyPipe = new BodyPipe();
  /** The handler's outcome, once it settled. */
  settled: Settled | undefined;
  /** The outcome has been turned into a reply already (it was continue). */
  judged = false;
  /** The handler's promise while it runs. */
  readonly task: PromiseLike<HandlerResult> | undefined;

  /**
   * Starts the handler.
   *
   * @param start Calls the filter's `bodyStream` with the pipe's stream.
   */
  constructor(
    start: (stream: ReadableStream<Uint8Array>) => HandlerResult | Promise<HandlerResult>,
  ) {
    let result: HandlerResult | PromiseLike<HandlerResult>;
    try {
      result = start(this.pipe.stream);
    } catch (error) {
      this.#settle({ error });
      return;
    }
    if (!isThenable(result)) {
      this.#settle({ value: result });
      return;
    }
    this.task = result;
    result.then((value) => this.#settle({ value }), (error) => this.#settle({ error }));
  }

  #settle(s: Settled): void {
    if (this.settled !== undefined) return;
    this.settled = s;
    this.pipe.stop(new ConnectionClosedError("The bodyStream handler already returned"));
  }

  /** Ends the stream for a reader still reading (message over or aborted). */
  drop(): void {
    this.pipe.error(new ConnectionClosedError("Message ended"));
    this.settled ??= { value: undefined };
  }
}

/** Whether a value is a promise-like (a handler answered asynchronously). */
export function isThenable<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof v === "object" && v !== null &&
    typeof (v as { then?: unknown }).then === "function";
}
