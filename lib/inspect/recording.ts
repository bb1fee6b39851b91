/**
 * The recording format written by `milterkit proxy --record` and read by `milterkit dump`.
 *
 * ## Format (JSON Lines, version 1)
 *
 * One JSON object per line, UTF-8, lines separated by `\n`. Every line is complete on its
 * own, so a recorder that is killed loses at most the line it was writing.
 *
 * 1. Header (first line):
 *    `{"format":"milterkit-recording","version":1,"created":"2026-11-21T18:00:00.000Z","redacted":false}`
 *    (writers may add fields such as `"tool"`; readers ignore unknown fields).
 * 2. Then, interleaved across sessions in the order things happened (`t` is milliseconds since
 *    the Unix epoch, fractional allowed; `session` is the writer's id, unique per recording):
 *    - `{"type":"start","session":"c1","t":…,"mta":"127.0.0.1:41234","filter":"127.0.0.1:9601"}`
 *      (`mta`/`filter` optional free text naming the peers)
 *    - `{"type":"data","session":"c1","t":…,"dir":"to-filter","b64":"AAAADU8…"}`: bytes as they
 *      passed, base64. Concatenating a session's `data` lines of one `dir` gives that
 *      direction's byte stream; their order and `t` give the interleaving and timing.
 *    - `{"type":"event","session":"c1","t":…,"seq":0,"dir":"to-filter","stage":"optneg",
 *      "summary":"OPTNEG v6 …","decoded":{…},"answers":3,"latencyMs":0.2}`: one decoded frame
 *      (from {@link SessionAnnotator}); byte fields appear as `{"size":n}`. Informative only:
 *      readers rebuild everything from `data` lines.
 *    - `{"type":"note","session":"c1","t":…,"text":"…"}`: something the writer wants a reader
 *      to know (framing error, bytes left out).
 *    - `{"type":"end","session":"c1","t":…,"reason":"eof"}`
 *
 * ## Redaction (`redact: true`, header `"redacted":true`)
 *
 * Header values and body bytes are removed from both the events and the raw data. For that
 * the writer does not copy chunks as they came: it cuts each direction into frames and writes
 * one `data` line per chunk holding the complete frames it finished, re-encoded with
 * - `L` HEADER, `h` ADDHEADER, `i` INSHEADER, `m` CHGHEADER: the value replaced by an empty
 *   string (names and indexes kept);
 * - `B` BODY, `E` data, `b` REPLBODY: every byte replaced by `x` (0x78), so sizes and chunking
 *   stay visible;
 * - a frame of those kinds that does not decode: its whole payload replaced by `x`.
 * Everything else (negotiation, macros, connect info, envelope addresses, reply texts) is kept.
 * Bytes of a partial frame wait for the rest (lost if the recorder dies first); after a
 * framing error the rest of that direction is not written, and a `note` line says so.
 *
 * @module
 */

import { SessionAnnotator } from "./annotate/annotator.ts";
import { decodedToJson, describeDecoded } from "./annotate/render.ts";
import { concatBytes } from "../wire/concat.ts";
import { decodeCommand, encodeCommand } from "../wire/command_codec.ts";
import { encodeFrame, FrameDecoder } from "../wire/frame.ts";
import { decodeReply, encodeReply } from "../wire/reply_codec.ts";
import { RECORDING_FORMAT, RECORDING_VERSION } from "./recording_read.ts";
import type { Direction, Frame } from "../wire/types.ts";
import type { AnnotatedEvent, SessionSummary } from "./annotate/annotator.ts";

/** Options of {@link RecordingWriter}. */
export interface RecordingWriterOptions {
  /** Remove header values and body bytes from data and events (see the module doc). */
  readonly redact?: boolean;
  /** Write decoded `event` lines (default true). */
  readonly events?: boolean;
  /** Clock in ms since the epoch (default `Date.now`). */
  readonly now?: () => number;
  /** Extra fields for the header line (e.g. `{ tool: "milterkit 0.1.0" }`). */
  readonly header?: Readonly<Record<string, unknown>>;
  /**
   * How many lines the sink has lost so far ({@link RecordingFile.lostLines}). When it grows
   * during a session, that session's recording is cut: a note says so and its later data is
   * left out, so no session is recorded with a hole in its byte stream.
   */
  readonly lostLines?: () => number;
}

interface WriterSession {
  readonly annotator: SessionAnnotator | undefined;
  /** The sink's lost-line count when the session started. */
  readonly lost: number;
  cut: boolean;
  readonly decoders: Record<Direction, FrameDecoder>;
  readonly failed: Record<Direction, boolean>;
}

/** What redaction removes, per command byte (L, B, E) and response byte (h, i, m, b). */
const REDACT_COMMANDS: Readonly<Record<number, "value" | "bytes">> = {
  0x4c: "value",
  0x42: "bytes",
  0x45: "bytes",
};
const REDACT_REPLIES: Readonly<Record<number, "value" | "bytes">> = {
  0x68: "value",
  0x69: "value",
  0x6d: "value",
  0x62: "bytes",
};

/**
 * Writes a recording, one line at a time, through a sink the caller provides.
 *
 * @example
 * ```ts
 * import { RecordingWriter, readRecording } from "@milterkit/milterkit/inspect";
 * import { encodeCommand } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const lines: string[] = [];
 * const w = new RecordingWriter((line) => lines.push(line));
 * w.start("c1", { mta: "127.0.0.1:5000" });
 * w.data("c1", "to-filter", encodeCommand({ type: "quit" }));
 * w.end("c1");
 * assert.equal(readRecording(lines).sessions[0]?.toFilter.length, 5);
 * ```
 */
export class RecordingWriter {
  readonly #sink: (line: string) => void;
  readonly #redact: boolean;
  readonly #events: boolean;
  readonly #now: () => number;
  readonly #lostLines: () => number;
  readonly #sessions = new Map<string, WriterSession>();

  /**
   * Writes the header line at once.
   *
   * @param sink Receives each line, without the trailing newline.
   * @param options Redaction, events, clock.
   */
  constructor(sink: (line: string) => void, options: RecordingWriterOptions = {}) {
    this.#sink = sink;
    this.#redact = options.redact ?? false;
    this.#events = options.events ?? true;
    this.#now = options.now ?? Date.now;
    this.#lostLines = options.lostLines ?? (() => 0);
    this.#sink(JSON.stringify({
      format: RECORDING_FORMAT,
      version: RECORDING_VERSION,
      created: new Date(this.#now()).toISOString(),
      redacted: this.#redact,
      ...options.header,
    }));
  }

  #line(obj: Record<string, unknown>): void {
    this.#sink(JSON.stringify(obj));
  }

  /**
   * Starts a session.
   *
   * @param session Id, unique within the recording.
   * @param info Peer names and start time.
   */
  start(session: string, info: { mta?: string; filter?: string; time?: number } = {}): void {
    this.#sessions.set(session, {
      annotator: this.#events ? new SessionAnnotator({ keepEvents: false }) : undefined,
      lost: this.#lostLines(),
      cut: false,
      decoders: { "to-filter": new FrameDecoder(), "to-mta": new FrameDecoder() },
      failed: { "to-filter": false, "to-mta": false },
    });
    this.#line({ type: "start", session, t: info.time ?? this.#now(), ...peerFields(info) });
  }

  /**
   * Records bytes that passed in one direction (and their decoded frames as events).
   *
   * @param session The session id given to {@link RecordingWriter.start}.
   * @param dir Which way the bytes went.
   * @param bytes The bytes, exactly as forwarded.
   * @param time When they passed (default now).
   */
  data(session: string, dir: Direction, bytes: Uint8Array, time?: number): void {
    const s = this.#sessions.get(session);
    const t = time ?? this.#now();
    if (s === undefined) {
      throw new RangeError(`Session ${JSON.stringify(session)} was not started`);
    }
    if (s.cut) return;
    if (this.#lostLines() !== s.lost) {
      s.cut = true;
      this.#line({
        type: "note",
        session,
        t,
        text: "recording lines were lost during this session; the rest of it is not recorded",
      });
      return;
    }
    if (!this.#redact) this.#line({ type: "data", session, t, dir, b64: toBase64(bytes) });
    if (s.failed[dir] || (!this.#redact && s.annotator === undefined)) return;
    let frames: Frame[];
    try {
      frames = s.decoders[dir].push(bytes);
    } catch (e) {
      s.failed[dir] = true;
      this.#line({
        type: "note",
        session,
        t,
        text: `${dir}: ${(e as Error).message}; ${
          this.#redact
            ? "the rest of this direction is not recorded"
            : "no more events for this direction"
        }`,
      });
      return;
    }
    if (this.#redact) frames = frames.map((f) => redactFrame(f, dir));
    if (this.#redact && frames.length > 0) {
      const parts = frames.map((f) => encodeFrame(f.code, f.payload));
      this.#line({ type: "data", session, t, dir, b64: toBase64(concatBytes(parts)) });
    }
    if (s.annotator === undefined) return;
    for (const f of frames) {
      const e = dir === "to-filter" ? s.annotator.pushCommand(f, t) : s.annotator.pushReply(f, t);
      this.#event(session, e, t);
    }
  }

  /**
   * Records an event decoded elsewhere: for a caller that annotates the session itself (as
   * the proxy does), with a writer made with `events: false` so nothing is decoded twice.
   *
   * @param session The session id.
   * @param e The annotated frame.
   */
  event(session: string, e: AnnotatedEvent): void {
    const s = this.#sessions.get(session);
    if (s === undefined || s.cut) return;
    this.#event(session, e, e.time ?? this.#now());
  }

  #event(session: string, e: AnnotatedEvent, t: number): void {
    this.#line({
      type: "event",
      session,
      t,
      seq: e.seq,
      dir: e.direction,
      stage: e.stage,
      summary: describeDecoded(e.decoded, e.direction),
      decoded: decodedToJson(e.decoded),
      ...(e.answers !== undefined ? { answers: e.answers } : {}),
      ...(e.latencyMs !== undefined ? { latencyMs: e.latencyMs } : {}),
    });
  }

  /**
   * Writes a note line.
   *
   * @param text What to note.
   * @param session The session it concerns, if any.
   */
  note(text: string, session?: string): void {
    this.#line({
      type: "note",
      ...(session !== undefined ? { session } : {}),
      t: this.#now(),
      text,
    });
  }

  /**
   * Ends a session.
   *
   * @param session The session id.
   * @param info Why it ended and when.
   * @returns The annotator's summary when events are on.
   */
  end(session: string, info: { reason?: string; time?: number } = {}): SessionSummary | undefined {
    const s = this.#sessions.get(session);
    this.#sessions.delete(session);
    this.#line({ type: "end", session, t: info.time ?? this.#now(), reason: info.reason ?? "eof" });
    return s?.annotator?.summary();
  }
}

function peerFields(info: { mta?: string; filter?: string }): Record<string, string> {
  const out: Record<string, string> = {};
  if (info.mta !== undefined) out.mta = info.mta;
  if (info.filter !== undefined) out.filter = info.filter;
  return out;
}

/**
 * Removes header values and body bytes from one frame, as described in the module doc.
 *
 * @param frame The frame.
 * @param dir Its direction.
 * @returns The frame to record.
 *
 * @example
 * ```ts
 * import { redactFrame } from "@milterkit/milterkit/inspect";
 * import { decodeCommand } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const f = { code: 0x4c, payload: new TextEncoder().encode("Subject\0secret\0") };
 * assert.deepEqual(decodeCommand(redactFrame(f, "to-filter")), { type: "header", name: "Subject", value: "" });
 * ```
 */
export function redactFrame(frame: Frame, dir: Direction): Frame {
  const kind = (dir === "to-filter" ? REDACT_COMMANDS : REDACT_REPLIES)[frame.code];
  if (kind === undefined) return frame;
  if (kind === "value") {
    try {
      const bytes = dir === "to-filter"
        ? encodeCommand(withoutValue(decodeCommand(frame)))
        : encodeReply(withoutValue(decodeReply(frame)));
      return { code: frame.code, payload: bytes.subarray(5) };
    } catch {
      // an undecodable frame loses its whole payload below
    }
  }
  return { code: frame.code, payload: new Uint8Array(frame.payload.length).fill(0x78) };
}

function withoutValue<T extends object>(d: T): T {
  if (!("value" in d)) throw new TypeError("Frame has no header value");
  return { ...d, value: "" };
}

function toBase64(bytes: Uint8Array): string {
  // Native where the runtime has it (Bun, Deno, recent Node): no intermediate string.
  const native = (bytes as Uint8Array & { toBase64?: () => string }).toBase64;
  if (native !== undefined) return native.call(bytes);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export type { RecordedSession, Recording } from "./recording_read.ts";
export {
  isRecording,
  readRecording,
  readSegmentLog,
  RECORDING_FORMAT,
  RECORDING_VERSION,
} from "./recording_read.ts";
