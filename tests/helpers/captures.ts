/**
 * Loader for the real milter traffic under `tests/data/captures/` (copied from
 * `/work/shared/captures`, see its README.md): lists captures and their sessions, and reads
 * each direction as bytes, as TCP segments (`.jsonl`) or as the independent Python dump (`.txt`).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";

/** The folder holding the copied captures. */
export const CAPTURES_ROOT: URL = new URL("../data/captures/", import.meta.url);

/** Direction of a stream, as the capture files name it. */
export type Direction = "to-filter" | "to-mta";

/** One TCP segment of a `.jsonl` timeline (EOF markers are left out). */
export interface Segment {
  /** Seconds since the connection's first data. */
  readonly t: number;
  /** Who the bytes went to. */
  readonly dir: Direction;
  /** The segment's bytes. */
  readonly bytes: Uint8Array;
}

/** One recorded milter connection of a capture. */
export interface CaptureSession {
  /** Capture folder name, e.g. `postfix-libmilter`. */
  readonly capture: string;
  /** File stem inside the folder, e.g. `pcap.s0` or `tap.c1`. */
  readonly stem: string;
  /** `capture/stem`, for test names. */
  readonly name: string;
  /** Every byte the MTA sent to the filter. */
  readonly toFilter: Uint8Array;
  /** Every byte the filter sent back. */
  readonly toMta: Uint8Array;
}

function read(url: URL): Uint8Array {
  return new Uint8Array(readFileSync(url));
}

/** Names of the capture folders, sorted. */
export function listCaptures(): string[] {
  return readdirSync(CAPTURES_ROOT, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
}

/** File stems of the sessions of one capture (`pcap.s0`, …), in capture order. */
export function listStems(capture: string): string[] {
  const dir = new URL(`${capture}/`, CAPTURES_ROOT);
  return readdirSync(dir)
    .filter((f) => f.endsWith(".to-filter.bin"))
    .map((f) => f.slice(0, -".to-filter.bin".length))
    .sort((a, b) => Number(a.replace(/\D/g, "")) - Number(b.replace(/\D/g, "")));
}

/** Loads both directions of one session. */
export function loadSession(capture: string, stem: string): CaptureSession {
  const dir = new URL(`${capture}/`, CAPTURES_ROOT);
  return {
    capture,
    stem,
    name: `${capture}/${stem}`,
    toFilter: read(new URL(`${stem}.to-filter.bin`, dir)),
    toMta: read(new URL(`${stem}.to-mta.bin`, dir)),
  };
}

/** Every session of every capture. */
export function allSessions(): CaptureSession[] {
  return listCaptures().flatMap((c) => listStems(c).map((s) => loadSession(c, s)));
}

/** The bytes of one direction of a session. */
export function streamOf(session: CaptureSession, dir: Direction): Uint8Array {
  return dir === "to-filter" ? session.toFilter : session.toMta;
}

/** The TCP segments of a session in capture order (both directions interleaved). */
export function loadSegments(session: CaptureSession): Segment[] {
  const url = new URL(`${session.capture}/${session.stem}.jsonl`, CAPTURES_ROOT);
  const out: Segment[] = [];
  for (const line of new TextDecoder().decode(read(url)).split("\n")) {
    if (line.trim() === "") continue;
    const rec = JSON.parse(line) as { t: number; dir: Direction; hex?: string };
    if (rec.hex === undefined) continue;
    out.push({ t: rec.t, dir: rec.dir, bytes: fromHex(rec.hex) });
  }
  return out;
}

/** The lines of the independent Python dump (`.txt`) of a session. */
export function loadDump(session: CaptureSession): string[] {
  const url = new URL(`${session.capture}/${session.stem}.txt`, CAPTURES_ROOT);
  return new TextDecoder().decode(read(url)).split("\n").filter((l) => l !== "");
}

/** Paths of the `.pcap` files copied next to the capture folders. */
export function listPcaps(): URL[] {
  return readdirSync(CAPTURES_ROOT)
    .filter((f) => f.endsWith(".pcap"))
    .sort()
    .map((f) => new URL(f, CAPTURES_ROOT));
}

/** Reads any file of a capture folder (e.g. `smtp-accept.txt`) as bytes. */
export function readCaptureFile(capture: string, file: string): Uint8Array {
  const url = new URL(`${capture}/${file}`, CAPTURES_ROOT);
  if (!existsSync(url)) throw new Error(`Capture file missing: ${capture}/${file}`);
  return read(url);
}

/** Parses spaced or unspaced hex (`"00 00 00 01 63"`) into bytes. */
export function fromHex(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, "");
  if (clean.length % 2 !== 0 || /[^0-9a-fA-F]/.test(clean)) {
    throw new Error(`Not a hex string: ${hex}`);
  }
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Formats bytes as lowercase hex pairs separated by spaces. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

export { concatBytes } from "../../lib/wire/concat.ts";
