/**
 * Reading recordings back (see `recording.ts` for the format) and the per-segment `.jsonl`
 * logs of the capture tools.
 *
 * @module
 */

import { CaptureFormatError } from "./capture/pcap.ts";
import { StreamCollector, type StreamSegment } from "./capture/tcp.ts";
import type { Direction } from "../wire/types.ts";

/** The `format` value of a recording's header line. */
export const RECORDING_FORMAT = "milterkit-recording";
/** The recording format version this module writes and reads. */
export const RECORDING_VERSION = 1;

function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** One session read back from a recording. */
export interface RecordedSession {
  /** The writer's session id. */
  readonly id: string;
  /** The MTA peer as written, if any. */
  readonly mta?: string;
  /** The filter peer as written, if any. */
  readonly filter?: string;
  /** Start time (ms since the epoch). */
  readonly startTime: number | undefined;
  /** End time, when an `end` line was seen. */
  readonly endTime: number | undefined;
  /** The `end` line's reason, or `undefined` when the recording stops first. */
  readonly endReason: string | undefined;
  /** Bytes from the MTA. */
  readonly toFilter: Uint8Array;
  /** Bytes from the filter. */
  readonly toMta: Uint8Array;
  /** Arrival of the bytes, in line order. */
  readonly segments: StreamSegment[];
  /** Notes written for this session. */
  readonly notes: string[];
}

/** A whole recording read back. */
export interface Recording {
  /** The header line. */
  readonly header: Readonly<Record<string, unknown>>;
  /** Sessions in order of their `start` line (or first line). */
  readonly sessions: RecordedSession[];
  /** Lines that could not be read and notes without a session. */
  readonly notes: string[];
}

/**
 * Tells whether text starts like a recording.
 *
 * @param head The first bytes of a file, as text.
 * @returns True when the first line names the recording format.
 *
 * @example
 * ```ts
 * import { isRecording } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.ok(isRecording('{"format":"milterkit-recording","version":1}'));
 * ```
 */
export function isRecording(head: string): boolean {
  return /^\s*\{[^\n]*"format"\s*:\s*"milterkit-recording"/.test(head);
}

/** What {@link RecordingReader} knows about one session; updated as lines come. */
export interface RecordingSessionInfo {
  /** The writer's session id. */
  readonly id: string;
  /** Position among the recording's sessions (0-based, by first line). */
  readonly index: number;
  /** The MTA peer as written, if any. */
  mta?: string;
  /** The filter peer as written, if any. */
  filter?: string;
  /** Start time (ms since the epoch). */
  startTime: number | undefined;
  /** End time, when an `end` line was seen. */
  endTime: number | undefined;
  /** The `end` line's reason, or `undefined` when the recording stops first. */
  endReason: string | undefined;
  /** Notes written for this session. */
  readonly notes: string[];
}

/** Where {@link RecordingReader} sends a recording's sessions. */
export interface RecordingSink {
  /** A session's first line was read. */
  start(s: RecordingSessionInfo): void;
  /** Bytes of one direction, in line order. */
  data(s: RecordingSessionInfo, direction: Direction, bytes: Uint8Array, time: number): void;
  /** The session's `end` line, or the end of the recording for sessions without one. */
  end(s: RecordingSessionInfo): void;
}

/**
 * Reads a recording line by line and hands out each session's bytes as they come; a session
 * is forgotten at its `end` line, so memory follows the sessions open at one time. Damaged
 * lines (not JSON, not an object, bad base64) are skipped with a note.
 *
 * @example
 * ```ts
 * import { RecordingReader } from "./recording_read.ts";
 * import assert from "node:assert/strict";
 * const ended: string[] = [];
 * const r = new RecordingReader({ start() {}, data() {}, end: (s) => ended.push(s.id) });
 * r.line('{"format":"milterkit-recording","version":1}');
 * r.line('{"type":"start","session":"c1","t":1}');
 * r.line("null");
 * r.line('{"type":"end","session":"c1","t":2}');
 * assert.deepEqual(ended, ["c1"]);
 * assert.match(r.finish().notes[0]!, /Line 3 is not a JSON object/);
 * ```
 */
export class RecordingReader {
  readonly #sink: RecordingSink;
  readonly #open = new Map<string, RecordingSessionInfo>();
  readonly #notes: string[] = [];
  #header: Record<string, unknown> | undefined;
  #line = 0;
  #count = 0;

  /**
   * Creates a reader expecting the header line first.
   *
   * @param sink Receives the sessions.
   */
  constructor(sink: RecordingSink) {
    this.#sink = sink;
  }

  /** The header line, once read. */
  get header(): Readonly<Record<string, unknown>> | undefined {
    return this.#header;
  }

  /** Notes without a session (damaged lines) so far; taken notes are not repeated. */
  takeNotes(): string[] {
    return this.#notes.splice(0);
  }

  /**
   * Reads the next line.
   *
   * @param text The line without its `\n`.
   * @throws {CaptureFormatError} when the first non-empty line is not a recording header of a
   * supported version (offset = line number).
   */
  line(text: string): void {
    const n = ++this.#line;
    if (text.trim() === "") return;
    if (this.#header === undefined) {
      this.#header = parseHeader(text, n);
      return;
    }
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(text);
    } catch {
      this.#notes.push(`Line ${n} is not complete JSON and was skipped`);
      return;
    }
    if (o === null || typeof o !== "object" || Array.isArray(o)) {
      this.#notes.push(`Line ${n} is not a JSON object and was skipped`);
      return;
    }
    const t = typeof o.t === "number" ? o.t : undefined;
    if (typeof o.session !== "string") {
      if (o.type === "note") this.#notes.push(String(o.text));
      return;
    }
    let s = this.#open.get(o.session);
    if (s === undefined) {
      s = {
        id: o.session,
        index: this.#count++,
        startTime: t,
        endTime: undefined,
        endReason: undefined,
        notes: [],
      };
      this.#open.set(o.session, s);
      if (o.type === "start") this.#peers(s, o);
      this.#sink.start(s);
    }
    switch (o.type) {
      case "start":
        this.#peers(s, o);
        s.startTime = t;
        break;
      case "data": {
        let bytes: Uint8Array;
        try {
          bytes = fromBase64(String(o.b64));
        } catch {
          this.#notes.push(`Line ${n} has bad base64 data and was skipped`);
          return;
        }
        this.#sink.data(s, o.dir === "to-mta" ? "to-mta" : "to-filter", bytes, t ?? NaN);
        break;
      }
      case "note":
        s.notes.push(String(o.text));
        break;
      case "end":
        s.endTime = t;
        s.endReason = typeof o.reason === "string" ? o.reason : "eof";
        this.#open.delete(s.id);
        this.#sink.end(s);
        break;
    }
  }

  #peers(s: RecordingSessionInfo, o: Record<string, unknown>): void {
    if (typeof o.mta === "string") s.mta = o.mta;
    if (typeof o.filter === "string") s.filter = o.filter;
  }

  /**
   * Ends the recording: sessions without an `end` line end here (`endReason` undefined).
   *
   * @returns The header and the notes not yet taken.
   * @throws {CaptureFormatError} when there was no header line at all.
   */
  finish(): { header: Readonly<Record<string, unknown>>; notes: string[] } {
    if (this.#header === undefined) this.#header = parseHeader("", this.#line + 1);
    for (const s of [...this.#open.values()]) {
      this.#open.delete(s.id);
      this.#sink.end(s);
    }
    return { header: this.#header, notes: this.takeNotes() };
  }
}

function parseHeader(text: string, n: number): Record<string, unknown> {
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(text);
  } catch {
    throw new CaptureFormatError(`Not a milterkit recording: line ${n} is not a JSON header`, n);
  }
  if (header?.format !== RECORDING_FORMAT) {
    throw new CaptureFormatError(
      `Not a milterkit recording: line ${n} has format ${JSON.stringify(header?.format)}`,
      n,
    );
  }
  if (typeof header.version !== "number" || header.version > RECORDING_VERSION) {
    throw new CaptureFormatError(
      `Recording version ${header.version} is not supported (max ${RECORDING_VERSION})`,
      n,
    );
  }
  return header;
}

/**
 * Reads a recording back into per-session byte streams with timing.
 *
 * @param input The whole text, or its lines.
 * @returns Header, sessions and notes. Damaged lines are skipped with a note.
 * @throws {CaptureFormatError} when the header line is missing or names another format or a
 * newer version (offset = line number).
 *
 * @example
 * ```ts
 * import { readRecording } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * const r = readRecording('{"format":"milterkit-recording","version":1}\n');
 * assert.deepEqual(r.sessions, []);
 * ```
 */
export function readRecording(input: string | Iterable<string>): Recording {
  const building = new Map<RecordingSessionInfo, StreamCollector>();
  const reader = new RecordingReader({
    start: (s) => void building.set(s, new StreamCollector()),
    data: (s, dir, bytes, time) => building.get(s)!.push(dir, bytes, time),
    end() {},
  });
  for (const line of typeof input === "string" ? input.split("\n") : input) reader.line(line);
  const { header, notes } = reader.finish();
  return {
    header,
    notes,
    sessions: [...building].map(([s, b]) => ({
      id: s.id,
      ...(s.mta !== undefined ? { mta: s.mta } : {}),
      ...(s.filter !== undefined ? { filter: s.filter } : {}),
      startTime: s.startTime,
      endTime: s.endTime,
      endReason: s.endReason,
      ...b.result(),
      notes: s.notes,
    })),
  };
}

/**
 * Reads the per-segment log format of the capture tools (`pcap.sK.jsonl`, `tap.cK.jsonl`):
 * one `{"t": seconds, "dir": "to-filter"|"to-mta", "len": n, "hex": "…"}` per TCP segment,
 * plus `{"dir": …, "eof": true}` lines.
 *
 * @param text The file's text.
 * @returns Both streams with segment timing (times in ms from the first segment).
 * @throws {CaptureFormatError} for a line that is not such a segment (offset = line number).
 *
 * @example
 * ```ts
 * import { readSegmentLog } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * const s = readSegmentLog('{"t": 0.5, "dir": "to-mta", "len": 5, "hex": "0000000163"}\n');
 * assert.equal(s.toMta.length, 5);
 * assert.equal(s.segments[0]?.time, 500);
 * ```
 */
export function readSegmentLog(
  text: string,
): { toFilter: Uint8Array; toMta: Uint8Array; segments: StreamSegment[]; notes: string[] } {
  const collector = new StreamCollector();
  const notes: string[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    let o: { t?: unknown; dir?: unknown; hex?: unknown; eof?: unknown };
    try {
      o = JSON.parse(line) ?? {};
    } catch {
      if (i >= lines.length - 2) {
        notes.push(`Line ${i + 1} is not complete JSON and was skipped`);
        continue;
      }
      throw new CaptureFormatError(`Segment log line ${i + 1} is not JSON`, i + 1);
    }
    if (o.dir !== "to-filter" && o.dir !== "to-mta") {
      throw new CaptureFormatError(`Segment log line ${i + 1} has no valid "dir"`, i + 1);
    }
    if (o.eof === true) continue;
    if (typeof o.hex !== "string" || !/^(?:[0-9a-fA-F]{2})*$/.test(o.hex)) {
      throw new CaptureFormatError(`Segment log line ${i + 1} has no valid "hex"`, i + 1);
    }
    const bytes = new Uint8Array(o.hex.length / 2);
    for (let k = 0; k < bytes.length; k++) bytes[k] = parseInt(o.hex.slice(2 * k, 2 * k + 2), 16);
    collector.push(o.dir, bytes, typeof o.t === "number" ? o.t * 1000 : NaN);
  }
  return { ...collector.result(), notes };
}
