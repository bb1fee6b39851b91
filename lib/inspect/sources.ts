/**
 * The inputs of `dump`, read as streams: a file is recognised by its first bytes
 * ({@link sniffInput}), then read in chunks; each session is annotated as its bytes arrive and
 * handed out as a {@link SessionReport} when it ends. Memory follows the sessions open at one
 * time (plus one chunk), not the size of the file.
 *
 * @module
 */

import { open, readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import { annotateStreams, StreamFeed, type StreamPair } from "./annotate/feed.ts";
import type { SessionAnnotator } from "./annotate/annotator.ts";
import { CaptureFormatError, CaptureReader } from "./capture/pcap.ts";
import { type InputKind, SNIFF_BYTES, sniffInput } from "./capture/sniff.ts";
import { TcpReassembler } from "./capture/tcp.ts";
import { looksLikeMtaStream } from "./capture/tcp.ts";
import { readSegmentLog, RecordingReader } from "./recording_read.ts";
import type { SessionReport } from "./timeline.ts";
import { concatBytes } from "../wire/concat.ts";
import { FrameDecoder } from "../wire/frame.ts";

/** Options of {@link readSessions}. */
export interface ReadSessionsOptions {
  /** Keep every annotated event in the reports (for timelines and replay; default true). */
  readonly keepEvents?: boolean;
  /** Stems of `.bin` pairs already read, shared across files so a pair is read once. */
  readonly seen?: Set<string>;
  /** Bytes read at a time (default 1 MiB). */
  readonly chunkSize?: number;
}

/** What {@link readSessions} found besides the sessions. */
export interface ReadSessionsResult {
  /** What the file was recognised as. */
  readonly kind: InputKind;
  /** Sessions handed out. */
  readonly sessions: number;
  /** Notes about the file that came after its last session was handed out. */
  readonly notes: string[];
  /** True when reading stopped at a damaged block; the sessions before it were handed out. */
  readonly damaged?: boolean;
}

/** Longest recording line read; longer ones are skipped with a note. */
const MAX_LINE = 64 * 1024 * 1024;
/** Sessions held back to keep the output in order before the oldest open one is passed by. */
const MAX_HELD = 256;

/** An input opened once: its first bytes for sniffing, then all of its bytes in chunks. */
interface OpenedInput {
  /** The first {@link SNIFF_BYTES} bytes (fewer when the input is shorter). */
  readonly head: Uint8Array;
  /** Total size; `Infinity` for a pipe, FIFO or device whose end was not reached by the head. */
  readonly size: number;
  /** Every byte of the input from the start, the head included. */
  chunks(chunkSize: number): AsyncGenerator<Uint8Array>;
  close(): Promise<void>;
}

/**
 * Opens an input once. A regular file's head is read in place and the file is then read from
 * its start; a pipe, FIFO or device cannot be read twice (and its size says nothing), so its head
 * is consumed, handed out first by `chunks`, and followed by the rest as it arrives.
 */
async function openInput(file: string): Promise<OpenedInput> {
  const fh = await open(file, "r");
  try {
    const st = await fh.stat();
    const regular = st.isFile();
    const buf = new Uint8Array(regular ? Math.min(st.size, SNIFF_BYTES) : SNIFF_BYTES);
    let got = 0;
    let ended = false;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, regular ? got : null);
      if (bytesRead === 0) {
        ended = true;
        break;
      }
      got += bytesRead;
    }
    const head = buf.subarray(0, got);
    return {
      head,
      size: regular ? st.size : ended ? got : Infinity,
      async *chunks(chunkSize) {
        if (!regular && head.length > 0) yield head;
        if (!regular && ended) return;
        for (;;) {
          const chunk = new Uint8Array(chunkSize);
          const { bytesRead } = await fh.read(chunk, 0, chunkSize, null);
          if (bytesRead === 0) return;
          yield chunk.subarray(0, bytesRead);
        }
      },
      close: () => fh.close(),
    };
  } catch (e) {
    await fh.close();
    throw e;
  }
}

/** Hands out reports in order of their index, holding finished ones while older are open. */
class InOrder {
  readonly #held = new Map<number, SessionReport>();
  readonly #emit: (r: SessionReport) => void;
  #next = 0;

  constructor(emit: (r: SessionReport) => void) {
    this.#emit = emit;
  }

  add(index: number, r: SessionReport): void {
    if (index < this.#next) {
      this.#emit(r);
      return;
    }
    this.#held.set(index, r);
    if (this.#held.size > MAX_HELD) this.#next = Math.min(...this.#held.keys());
    for (let h = this.#held.get(this.#next); h !== undefined; h = this.#held.get(this.#next)) {
      this.#held.delete(this.#next++);
      this.#emit(h);
    }
  }

  flush(): void {
    for (const i of [...this.#held.keys()].sort((a, b) => a - b)) this.#emit(this.#held.get(i)!);
    this.#held.clear();
  }
}

function report(
  id: string,
  a: SessionAnnotator,
  extra: { mta?: string; filter?: string; notes: readonly string[] },
): SessionReport {
  return {
    id,
    ...(extra.mta !== undefined ? { mta: extra.mta } : {}),
    ...(extra.filter !== undefined ? { filter: extra.filter } : {}),
    notes: extra.notes,
    summary: a.summary(),
    events: a.events,
  };
}

/**
 * Reads the sessions of one file, handing each out as it ends (in order of its start where
 * possible).
 *
 * @param file Path of a pcap/pcapng capture, a recording, a segment log or a byte stream.
 * @param onSession Called with each session; a promise it returns is awaited before reading
 * on (so a slow consumer holds back the reading, not the memory).
 * @param options Whether to keep events; the `.bin` pairs already read.
 * @returns The kind of file and notes that came after the last session.
 * @throws {CaptureFormatError} when the file is none of those, or its header is damaged.
 *
 * @example
 * ```ts ignore
 * import { readSessions } from "./sources.ts";
 * await readSessions("traffic.pcap", (s) => console.log(s.id, s.summary.messages.length));
 * ```
 */
export async function readSessions(
  file: string,
  onSession: (r: SessionReport) => void | Promise<void>,
  options: ReadSessionsOptions = {},
): Promise<ReadSessionsResult> {
  const input = await openInput(file);
  try {
    return await readOpened(input, file, onSession, options);
  } finally {
    await input.close();
  }
}

async function readOpened(
  input: OpenedInput,
  file: string,
  onSession: (r: SessionReport) => void | Promise<void>,
  options: ReadSessionsOptions,
): Promise<ReadSessionsResult> {
  const { head, size } = input;
  const kind = sniffInput(head, size);
  const name = basename(file);
  const keepEvents = options.keepEvents ?? true;
  const chunkSize = options.chunkSize ?? 1024 * 1024;
  let count = 0;
  let pending: string[] = [];
  // sessions that ended while a chunk was parsed; handed out (and awaited) after the chunk
  const ended: SessionReport[] = [];
  const emit = (r: SessionReport) => {
    count++;
    if (pending.length > 0) {
      r = { ...r, notes: [...pending, ...r.notes] };
      pending = [];
    }
    ended.push(r);
  };
  const drain = async () => {
    for (let r = ended.shift(); r !== undefined; r = ended.shift()) await onSession(r);
  };
  if (kind === "pcap" || kind === "pcapng") {
    const order = new InOrder(emit);
    const feeds = new Map<number, StreamFeed>();
    const reassembler = new TcpReassembler({
      open: (c) => void feeds.set(c.index, new StreamFeed({ keepEvents })),
      data: (c, dir, bytes, time) => feeds.get(c.index)!.push(dir, bytes, time),
      close: (c, end) => {
        const feed = feeds.get(c.index)!;
        feeds.delete(c.index);
        order.add(
          c.index,
          report(`${name}#s${c.index + 1}`, feed.finish(), {
            mta: `${c.mta.address}:${c.mta.port}`,
            filter: `${c.filter.address}:${c.filter.port}`,
            notes: end.notes,
          }),
        );
      },
    });
    const reader = new CaptureReader((p) => reassembler.push(p));
    let damage: string | undefined;
    try {
      for await (const chunk of input.chunks(chunkSize)) {
        reader.push(chunk);
        await drain();
      }
    } catch (e) {
      // A damaged block after sessions began: keep what was read (as for a capture cut short),
      // say where it stopped. Before any session, the file is refused as a whole.
      if (!(e instanceof CaptureFormatError) || (count === 0 && feeds.size === 0)) throw e;
      damage = `Capture damaged: ${e.message}; the rest of the file was not read`;
    }
    const notes = damage === undefined ? reader.finish().notes : [damage];
    reassembler.finish();
    order.flush();
    await drain();
    return {
      kind,
      sessions: count,
      notes: [...pending, ...notes],
      ...(damage === undefined ? {} : { damaged: true }),
    };
  }
  if (kind === "recording") {
    const order = new InOrder(emit);
    const feeds = new Map<string, StreamFeed>();
    const reader = new RecordingReader({
      start: (s) => void feeds.set(s.id, new StreamFeed({ keepEvents })),
      data: (s, dir, bytes, time) => feeds.get(s.id)!.push(dir, bytes, time),
      end: (s) => {
        const feed = feeds.get(s.id)!;
        feeds.delete(s.id);
        pending.push(...reader.takeNotes());
        order.add(
          s.index,
          report(`${name}#${s.id}`, feed.finish(), {
            ...(s.mta !== undefined ? { mta: s.mta } : {}),
            ...(s.filter !== undefined ? { filter: s.filter } : {}),
            notes: [
              ...s.notes,
              ...(s.endReason === undefined
                ? ["The recording stops before this session ended"]
                : []),
            ],
          }),
        );
      },
    });
    await readLines(input.chunks(chunkSize), (line) => reader.line(line), (n) => {
      pending.push(`Line ${n} is longer than ${MAX_LINE} bytes and was skipped`);
    }, drain);
    const { notes } = reader.finish();
    order.flush();
    await drain();
    return { kind, sessions: count, notes: [...pending, ...notes] };
  }
  if (kind === "segment-log") {
    const log = readSegmentLog(new TextDecoder().decode(await readFile(file)));
    emit(report(name.replace(/\.jsonl$/, ""), annotateStreams(log, { keepEvents }), log));
    await drain();
    return { kind, sessions: count, notes: [] };
  }
  const pair = await streamPair(file, options.seen ?? new Set());
  if (pair !== undefined) {
    emit(report(pair.id, annotateStreams(pair, { keepEvents }), pair));
  }
  await drain();
  return { kind, sessions: count, notes: [] };
}

/** Calls `onLine` for each line of an input read in chunks; over-long lines are skipped. */
async function readLines(
  chunks: AsyncIterable<Uint8Array>,
  onLine: (line: string) => void,
  onTooLong: (lineNumber: number) => void,
  afterChunk: () => Promise<void>,
): Promise<void> {
  const decoder = new TextDecoder();
  let parts: Uint8Array[] = [];
  let partLength = 0;
  let skipping = false;
  let n = 0;
  const join = (last: Uint8Array): Uint8Array => concatBytes([...parts, last]);
  for await (const chunk of chunks) {
    let from = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, from)) {
      n++;
      if (skipping) skipping = false;
      else onLine(decoder.decode(join(chunk.subarray(from, nl))));
      parts = [];
      partLength = 0;
      from = nl + 1;
    }
    if (from < chunk.length && !skipping) {
      parts.push(chunk.subarray(from));
      partLength += chunk.length - from;
      if (partLength > MAX_LINE) {
        onTooLong(n + 1);
        skipping = true;
        parts = [];
        partLength = 0;
      }
    }
    await afterChunk();
  }
  if (parts.length > 0) onLine(decoder.decode(join(new Uint8Array(0))));
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** A byte-stream file as a session: a `.bin` pair, or one stream with a guessed direction. */
async function streamPair(
  file: string,
  seen: Set<string>,
): Promise<(StreamPair & { id: string; notes: string[] }) | undefined> {
  const mine = new Uint8Array(await readFile(file));
  const empty = new Uint8Array(0);
  const bin = /^(.*)\.(to-filter|to-mta)\.bin$/.exec(file);
  if (bin) {
    const [, stem, dir] = bin;
    if (seen.has(stem!)) return undefined;
    seen.add(stem!);
    const other = `${stem}.${dir === "to-filter" ? "to-mta" : "to-filter"}.bin`;
    let theirs = (await exists(other)) ? new Uint8Array(await readFile(other)) : undefined;
    const notes = theirs ? [] : [`Only the ${dir} direction (${basename(other)} not found)`];
    if (
      theirs !== undefined && theirs.length > 0 && sniffInput(theirs, theirs.length) !== "stream"
    ) {
      notes.push(`${basename(other)} is not a milter byte stream and was left out`);
      theirs = undefined;
    }
    const pair = dir === "to-filter"
      ? { toFilter: mine, toMta: theirs ?? empty }
      : { toFilter: theirs ?? empty, toMta: mine };
    return { ...pair, id: basename(stem!), notes };
  }
  const toFilter = guessMtaSide(mine);
  return {
    ...(toFilter ? { toFilter: mine, toMta: empty } : { toFilter: empty, toMta: mine }),
    id: basename(file),
    notes: [
      `Only one direction; guessed ${toFilter ? "MTA to filter" : "filter to MTA"} from content`,
    ],
  };
}

/**
 * Guesses whether a lone stream came from the MTA: both sides start with a 13-byte OPTNEG, so
 * the frames after it decide (commands are upper-case letters, replies are not).
 */
function guessMtaSide(bytes: Uint8Array): boolean {
  let frames: { code: number }[] = [];
  try {
    frames = new FrameDecoder({ maxDataSize: 16 * 1024 * 1024 }).push(bytes).slice(1, 20);
  } catch {
    // undecodable: fall back to the first frame alone
  }
  if (frames.length === 0) return looksLikeMtaStream(bytes);
  const upper = frames.filter((f) => f.code >= 0x41 && f.code <= 0x5a).length;
  return upper * 2 > frames.length;
}
