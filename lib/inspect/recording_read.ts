/**
 * Reading recordings back (see `recording.ts` for the format) and the per-segment `.jsonl`
 * logs of the capture tools.
 *
 * @module
 */

import { CaptureFormatError } from "./capture/pcap.ts";
import type { StreamSegment } from "./capture/tcp.ts";
import type { Direction } from "../wire/types.ts";

/** The `format` value of a recording's header line. */
export const RECORDING_FORMAT = "milterkit-recording";
/** The recording format version this module writes and reads. */
export const RECORDING_VERSION = 1;

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let p = 0;
  for (const part of parts) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

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
 * import { isRecording } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * assert.ok(isRecording('{"format":"milterkit-recording","version":1}'));
 * ```
 */
export function isRecording(head: string): boolean {
  return /^\s*\{[^\n]*"format"\s*:\s*"milterkit-recording"/.test(head);
}

/**
 * Reads a recording back into per-session byte streams with timing.
 *
 * @param input The whole text, or its lines.
 * @returns Header, sessions and notes. A last line cut short is skipped with a note.
 * @throws {CaptureFormatError} when the header line is missing or names another format or a
 * newer version (offset = line number).
 *
 * @example
 * ```ts
 * import { readRecording } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const r = readRecording('{"format":"milterkit-recording","version":1}\n');
 * assert.deepEqual(r.sessions, []);
 * ```
 */
export function readRecording(input: string | Iterable<string>): Recording {
  const lines = typeof input === "string" ? input.split("\n") : [...input];
  let n = 0;
  while (n < lines.length && lines[n]!.trim() === "") n++;
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(lines[n] ?? "");
  } catch {
    throw new CaptureFormatError(
      `Not a milterkit recording: line ${n + 1} is not a JSON header`,
      n + 1,
    );
  }
  if (header?.format !== RECORDING_FORMAT) {
    throw new CaptureFormatError(
      `Not a milterkit recording: line ${n + 1} has format ${JSON.stringify(header?.format)}`,
      n + 1,
    );
  }
  if (typeof header.version !== "number" || header.version > RECORDING_VERSION) {
    throw new CaptureFormatError(
      `Recording version ${header.version} is not supported (max ${RECORDING_VERSION})`,
      n + 1,
    );
  }
  interface Building {
    id: string;
    mta?: string;
    filter?: string;
    startTime: number | undefined;
    endTime: number | undefined;
    endReason: string | undefined;
    chunks: Record<Direction, Uint8Array[]>;
    sizes: Record<Direction, number>;
    segments: StreamSegment[];
    notes: string[];
  }
  const sessions = new Map<string, Building>();
  const notes: string[] = [];
  const get = (id: string, t: number | undefined): Building => {
    let s = sessions.get(id);
    if (s === undefined) {
      s = {
        id,
        startTime: t,
        endTime: undefined,
        endReason: undefined,
        chunks: { "to-filter": [], "to-mta": [] },
        sizes: { "to-filter": 0, "to-mta": 0 },
        segments: [],
        notes: [],
      };
      sessions.set(id, s);
    }
    return s;
  };
  for (let i = n + 1; i < lines.length; i++) {
    const text = lines[i]!;
    if (text.trim() === "") continue;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(text);
    } catch {
      notes.push(`Line ${i + 1} is not complete JSON and was skipped`);
      continue;
    }
    if (o === null || typeof o !== "object" || Array.isArray(o)) {
      notes.push(`Line ${i + 1} is not a JSON object and was skipped`);
      continue;
    }
    const t = typeof o.t === "number" ? o.t : undefined;
    if (typeof o.session !== "string") {
      if (o.type === "note") notes.push(String(o.text));
      continue;
    }
    const s = get(o.session, t);
    switch (o.type) {
      case "start":
        if (typeof o.mta === "string") s.mta = o.mta;
        if (typeof o.filter === "string") s.filter = o.filter;
        s.startTime = t;
        break;
      case "data": {
        const dir = o.dir === "to-mta" ? "to-mta" : "to-filter";
        let bytes: Uint8Array;
        try {
          bytes = fromBase64(String(o.b64));
        } catch {
          notes.push(`Line ${i + 1} has bad base64 data and was skipped`);
          continue;
        }
        s.segments.push({
          time: t ?? NaN,
          direction: dir,
          offset: s.sizes[dir],
          length: bytes.length,
        });
        s.chunks[dir].push(bytes);
        s.sizes[dir] += bytes.length;
        break;
      }
      case "note":
        s.notes.push(String(o.text));
        break;
      case "end":
        s.endTime = t;
        s.endReason = typeof o.reason === "string" ? o.reason : "eof";
        break;
    }
  }
  return {
    header,
    notes,
    sessions: [...sessions.values()].map((s) => ({
      id: s.id,
      ...(s.mta !== undefined ? { mta: s.mta } : {}),
      ...(s.filter !== undefined ? { filter: s.filter } : {}),
      startTime: s.startTime,
      endTime: s.endTime,
      endReason: s.endReason,
      toFilter: concat(s.chunks["to-filter"]),
      toMta: concat(s.chunks["to-mta"]),
      segments: s.segments,
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
 * import { readSegmentLog } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const s = readSegmentLog('{"t": 0.5, "dir": "to-mta", "len": 5, "hex": "0000000163"}\n');
 * assert.equal(s.toMta.length, 5);
 * assert.equal(s.segments[0]?.time, 500);
 * ```
 */
export function readSegmentLog(
  text: string,
): { toFilter: Uint8Array; toMta: Uint8Array; segments: StreamSegment[]; notes: string[] } {
  const chunks: Record<Direction, Uint8Array[]> = { "to-filter": [], "to-mta": [] };
  const sizes: Record<Direction, number> = { "to-filter": 0, "to-mta": 0 };
  const segments: StreamSegment[] = [];
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
    const time = typeof o.t === "number" ? o.t * 1000 : NaN;
    segments.push({ time, direction: o.dir, offset: sizes[o.dir], length: bytes.length });
    chunks[o.dir].push(bytes);
    sizes[o.dir] += bytes.length;
  }
  return {
    toFilter: concat(chunks["to-filter"]),
    toMta: concat(chunks["to-mta"]),
    segments,
    notes,
  };
}
