/**
 * Feeds the two byte streams of a recorded or captured session into a
 * {@link SessionAnnotator} in the order the frames happened. With arrival information
 * (segments) each frame is placed at the moment its last byte arrived; without it (two bare
 * `.bin` files) the protocol decides: replies are taken while a command waits for one.
 *
 * @module
 */

import { type AnnotatorOptions, SessionAnnotator } from "./annotator.ts";
import { MilterProtocolError } from "../../wire/errors.ts";
import { FrameDecoder } from "../../wire/frame.ts";
import type { Direction, Frame } from "../../wire/types.ts";
import type { StreamSegment } from "../capture/tcp.ts";

/** The two directions of one session, with arrival information when known. */
export interface StreamPair {
  /** Bytes from the MTA. */
  readonly toFilter: Uint8Array;
  /** Bytes from the filter. */
  readonly toMta: Uint8Array;
  /** Where the bytes came from, in arrival order (absent for bare byte files). */
  readonly segments?: readonly StreamSegment[];
}

/** Largest frame the dumper frames (bigger lengths are taken as garbage). */
const DUMP_MAX_FRAME = 64 * 1024 * 1024;

interface Placed {
  readonly frame: Frame;
  readonly order: number;
  readonly time: number | undefined;
}

interface Split {
  readonly frames: { frame: Frame; end: number }[];
  readonly error?: MilterProtocolError;
  readonly errorAt: number;
}

function split(bytes: Uint8Array): Split {
  const d = new FrameDecoder({ maxDataSize: DUMP_MAX_FRAME });
  const frames: { frame: Frame; end: number }[] = [];
  try {
    let end = 0;
    for (const frame of d.push(bytes)) {
      end += 5 + frame.payload.length;
      frames.push({ frame, end });
    }
    d.finish();
    return { frames, errorAt: bytes.length };
  } catch (e) {
    const error = asProtocolError(e);
    return { frames, error, errorAt: error.offset ?? d.offset };
  }
}

function asProtocolError(e: unknown): MilterProtocolError {
  return e instanceof MilterProtocolError
    ? e
    : new MilterProtocolError(String(e), { reason: "malformed" });
}

/** Maps a stream offset to the arrival (index, time) by which all bytes before it were in. */
class Clock {
  readonly #starts: number[] = [];
  readonly #orders: number[] = [];
  readonly #segments: readonly StreamSegment[];

  constructor(segments: readonly StreamSegment[], direction: Direction) {
    this.#segments = segments;
    const mine = segments
      .map((s, order) => ({ s, order }))
      .filter(({ s }) => s.direction === direction && s.length > 0)
      .sort((a, b) => a.s.offset - b.s.offset);
    let max = -1;
    for (const { s, order } of mine) {
      max = Math.max(max, order);
      this.#starts.push(s.offset);
      this.#orders.push(max);
    }
  }

  at(end: number): { order: number; time: number | undefined } {
    const starts = this.#starts;
    let lo = 0;
    let hi = starts.length - 1;
    if (hi < 0) return { order: Infinity, time: undefined };
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid]! <= end - 1) lo = mid;
      else hi = mid - 1;
    }
    const order = this.#orders[lo]!;
    return { order, time: this.#segments[order]?.time };
  }
}

/**
 * Decodes both streams and runs them through an annotator in the order they happened.
 * Framing errors (garbage, truncation) become `garbage-frame` issues; decoding stops for that
 * direction at that point.
 *
 * @param pair The two streams, with segments when known.
 * @param options Annotator options.
 * @returns The annotator, fed completely (call `summary()` on it).
 *
 * @example
 * ```ts
 * import { annotateStreams } from "@milterkit/milterkit/inspect";
 * import { encodeCommand, encodeReply } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const a = annotateStreams({
 *   toFilter: encodeCommand({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff }),
 *   toMta: encodeReply({ type: "optneg", version: 6, actions: 1, protocol: 0 }),
 * });
 * assert.equal(a.summary().negotiation.filter?.actions, 1);
 * ```
 */
export function annotateStreams(pair: StreamPair, options?: AnnotatorOptions): SessionAnnotator {
  const a = new SessionAnnotator(options);
  const commands = split(pair.toFilter);
  const replies = split(pair.toMta);
  if (pair.segments !== undefined && pair.segments.length > 0) {
    const place = (s: Split, d: Direction): Placed[] => {
      const clock = new Clock(pair.segments!, d);
      return s.frames.map(({ frame, end }) => ({ frame, ...clock.at(end) }));
    };
    const cs = place(commands, "to-filter");
    const rs = place(replies, "to-mta");
    let i = 0;
    let j = 0;
    while (i < cs.length || j < rs.length) {
      const c = cs[i];
      const r = rs[j];
      if (c !== undefined && (r === undefined || c.order <= r.order)) {
        a.pushCommand(c.frame, c.time);
        i++;
      } else {
        a.pushReply(r!.frame, r!.time);
        j++;
      }
    }
  } else {
    let i = 0;
    let j = 0;
    const cs = commands.frames;
    const rs = replies.frames;
    while (i < cs.length || j < rs.length) {
      if ((a.awaitingReply || i >= cs.length) && j < rs.length) a.pushReply(rs[j++]!.frame);
      else a.pushCommand(cs[i++]!.frame);
    }
  }
  for (const [s, d] of [[commands, "to-filter"], [replies, "to-mta"]] as const) {
    if (s.error) a.pushFramingError(d, s.error);
  }
  return a;
}

/**
 * Feeds a session into a {@link SessionAnnotator} as its bytes arrive, both directions in the
 * order they happened: each frame is pushed when its last byte comes in, at that chunk's time.
 * Holds only a partial frame per direction; a framing error stops that direction and becomes
 * a `garbage-frame` issue at {@link StreamFeed.finish}.
 *
 * @example
 * ```ts
 * import { encodeCommand, encodeReply } from "@milterkit/milterkit/wire";
 * import { StreamFeed } from "./feed.ts";
 * import assert from "node:assert/strict";
 * const feed = new StreamFeed();
 * feed.push("to-filter", encodeCommand({ type: "mail", sender: "<a@b>", args: [] }), 1);
 * feed.push("to-mta", encodeReply({ type: "replycode", text: "550 5.7.1 No" }), 4);
 * assert.equal(feed.finish().summary().messages[0]?.outcome.kind, "reject");
 * ```
 */
export class StreamFeed {
  /** The annotator being fed. */
  readonly annotator: SessionAnnotator;
  readonly #decoders: Record<Direction, FrameDecoder> = {
    "to-filter": new FrameDecoder({ maxDataSize: DUMP_MAX_FRAME }),
    "to-mta": new FrameDecoder({ maxDataSize: DUMP_MAX_FRAME }),
  };
  readonly #errors: Partial<Record<Direction, MilterProtocolError>> = {};

  /**
   * Creates a feed around a fresh annotator.
   *
   * @param options Annotator options (`keepEvents: false` to keep only the summary).
   */
  constructor(options?: AnnotatorOptions) {
    this.annotator = new SessionAnnotator(options);
  }

  /**
   * Adds bytes of one direction.
   *
   * @param direction Which way they went.
   * @param bytes The next bytes of that direction (frames may keep views into them).
   * @param time When they arrived (ms since the epoch), when known.
   */
  push(direction: Direction, bytes: Uint8Array, time?: number): void {
    if (this.#errors[direction] !== undefined) return;
    let frames: Frame[];
    try {
      frames = this.#decoders[direction].push(bytes);
    } catch (e) {
      this.#errors[direction] = asProtocolError(e);
      return;
    }
    const t = time === undefined || Number.isNaN(time) ? undefined : time;
    for (const f of frames) {
      if (direction === "to-filter") this.annotator.pushCommand(f, t);
      else this.annotator.pushReply(f, t);
    }
  }

  /**
   * Ends both directions: a frame cut short or a framing error becomes an issue.
   *
   * @returns The annotator, fed completely.
   */
  finish(): SessionAnnotator {
    for (const d of ["to-filter", "to-mta"] as const) {
      if (this.#errors[d] === undefined) {
        try {
          this.#decoders[d].finish();
        } catch (e) {
          this.#errors[d] = asProtocolError(e);
        }
      }
      const error = this.#errors[d];
      if (error !== undefined) this.annotator.pushFramingError(d, error);
    }
    return this.annotator;
  }
}
