/**
 * Packet captures as TCP segments: classic pcap (both byte orders, micro- and nanosecond
 * timestamps) and pcapng (SHB, IDB with per-interface link type and `if_tsresol`, EPB, SPB,
 * both byte orders; other blocks skipped). Link types: Ethernet (1, with 802.1Q/802.1ad tags),
 * BSD/Linux loopback (0 and 108), raw IP (101, 228, 229, 12, 14), Linux cooked SLL (113) and
 * SLL2 (276). IPv4 (options; fragments skipped with a note), IPv6 (extension headers
 * skipped) and TCP are decoded; everything else is skipped quietly.
 *
 * Streaming: {@link CaptureReader} takes the file in chunks of any size and hands out each TCP
 * segment as soon as its record is complete, holding at most one record; {@link readCapture}
 * does the same for bytes in memory. A bad file header or a record header that cannot be right
 * throws {@link CaptureFormatError} naming the offset; a capture cut short at the end (tcpdump
 * killed) keeps the packets read so far and adds a note.
 *
 * @module
 */

import { MilterError } from "../../wire/errors.ts";
import { PacketDecoder, type TcpPacket } from "./packet.ts";

export { TCP_FLAGS, type TcpPacket } from "./packet.ts";

/**
 * A capture or recording file that cannot be read: unknown magic, a header or record that
 * does not fit. `offset` is the byte offset (or line number for line formats) of the problem.
 *
 * @example
 * ```ts
 * import { CaptureFormatError, readCapture } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.throws(() => readCapture(new Uint8Array(3)), CaptureFormatError);
 * ```
 */
export class CaptureFormatError extends MilterError {
  /** Byte offset (or line number) where reading failed. */
  readonly offset: number;

  /**
   * Creates the error.
   *
   * @param message What is wrong, naming the field and offset.
   * @param offset Byte offset (or line number) of the problem.
   * @param options Standard `ErrorOptions`.
   */
  constructor(message: string, offset: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "CaptureFormatError";
    this.offset = offset;
  }
}

/** What {@link readCapture} found. */
export interface CaptureContents {
  /** `pcap` or `pcapng`. */
  readonly format: "pcap" | "pcapng";
  /** The TCP segments, in capture order. */
  readonly packets: TcpPacket[];
  /** Things skipped or cut short (fragments, truncated records, unknown link types). */
  readonly notes: string[];
}

/**
 * Tells whether bytes start like a pcap or pcapng file.
 *
 * @param bytes The start of a file (4 bytes are enough).
 * @returns `pcap`, `pcapng` or `undefined`.
 *
 * @example
 * ```ts
 * import { captureKind } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.equal(captureKind(new Uint8Array([0xd4, 0xc3, 0xb2, 0xa1])), "pcap");
 * ```
 */
export function captureKind(bytes: Uint8Array): "pcap" | "pcapng" | undefined {
  if (bytes.length < 4) return undefined;
  const be = ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
  const le = ((bytes[3]! << 24) | (bytes[2]! << 16) | (bytes[1]! << 8) | bytes[0]!) >>> 0;
  if (be === 0x0a0d0d0a) return "pcapng";
  for (const m of [be, le]) if (m === 0xa1b2c3d4 || m === 0xa1b23c4d) return "pcap";
  return undefined;
}

/**
 * Reads a pcap or pcapng capture and returns its TCP segments.
 *
 * @param bytes The whole capture file.
 * @returns The segments in capture order, with notes about skipped or truncated data.
 * @throws {CaptureFormatError} for an unknown magic number or an impossible header.
 *
 * @example
 * ```ts
 * import { readCapture } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * const empty = new Uint8Array(24);
 * new DataView(empty.buffer).setUint32(0, 0xa1b2c3d4);
 * new DataView(empty.buffer).setUint32(20, 1);
 * assert.deepEqual(readCapture(empty).packets, []);
 * ```
 */
export function readCapture(bytes: Uint8Array): CaptureContents {
  const packets: TcpPacket[] = [];
  const reader = new CaptureReader((p) => packets.push(p));
  reader.push(bytes);
  const { format, notes } = reader.finish();
  return { format, packets, notes };
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ") || "empty";
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Chunks of a file waiting to be parsed; hands out contiguous views, copying only across chunks. */
class ByteQueue {
  #chunks: Uint8Array[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The first chunk (empty when the queue is). */
  front(): Uint8Array {
    return this.#chunks[0] ?? new Uint8Array(0);
  }

  /** The first `n` bytes (n <= length) as one view, joining chunks when they are split. */
  peek(n: number): Uint8Array {
    const first = this.#chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const joined = new Uint8Array(Math.max(n, Math.min(this.#length, n + 65536)));
    let filled = 0;
    while (filled < joined.length) {
      const c = this.#chunks.shift()!;
      const take = Math.min(c.length, joined.length - filled);
      joined.set(c.subarray(0, take), filled);
      filled += take;
      if (take < c.length) this.#chunks.unshift(c.subarray(take));
    }
    this.#chunks.unshift(joined);
    return joined.subarray(0, n);
  }

  skip(n: number): void {
    this.#length -= n;
    while (n > 0) {
      const c = this.#chunks[0]!;
      if (c.length > n) {
        this.#chunks[0] = c.subarray(n);
        return;
      }
      n -= c.length;
      this.#chunks.shift();
    }
  }
}

interface Interface {
  readonly linkType: number;
  /** Timestamp units per second. */
  readonly unitsPerSecond: number;
}

/** Largest pcap record believed (bigger lengths mean the file is damaged). */
const MAX_RECORD = 0x4000000;

/**
 * Reads a pcap or pcapng capture pushed in chunks and hands out its TCP segments as soon as
 * each record is complete. Memory: the current record and the chunk being read.
 *
 * @example
 * ```ts
 * import { CaptureReader } from "./pcap.ts";
 * import assert from "node:assert/strict";
 * const header = new Uint8Array(24);
 * new DataView(header.buffer).setUint32(0, 0xa1b2c3d4);
 * new DataView(header.buffer).setUint32(20, 1);
 * let segments = 0;
 * const reader = new CaptureReader(() => segments++);
 * reader.push(header.subarray(0, 10));
 * reader.push(header.subarray(10));
 * assert.equal(reader.finish().format, "pcap");
 * assert.equal(segments, 0);
 * ```
 */
export class CaptureReader {
  readonly #queue = new ByteQueue();
  readonly #decoder: PacketDecoder;
  readonly #notes: string[] = [];
  #format: "pcap" | "pcapng" | undefined;
  /** File offset of the queue's first byte. */
  #offset = 0;
  // pcap
  #little = false;
  #nano = false;
  #linkType = -1;
  // pcapng
  #ifaces: Interface[] = [];
  #stopped = false;

  /**
   * Creates a reader expecting the file's first bytes.
   *
   * @param onPacket Called with each TCP segment in capture order.
   */
  constructor(onPacket: (p: TcpPacket) => void) {
    this.#decoder = new PacketDecoder(onPacket);
  }

  /**
   * Adds the next bytes of the file.
   *
   * @param chunk Bytes; the reader keeps views into it until they are parsed.
   * @throws {CaptureFormatError} for an unknown magic number or an impossible header.
   */
  push(chunk: Uint8Array): void {
    if (this.#stopped) return;
    this.#queue.push(chunk);
    if (this.#format === undefined) {
      if (this.#queue.length < 4) return;
      const kind = captureKind(this.#queue.peek(4));
      if (kind === undefined) {
        throw new CaptureFormatError(
          `Not a pcap or pcapng file: unknown magic number at offset 0 (${
            hex(this.#queue.peek(4))
          })`,
          0,
        );
      }
      this.#format = kind;
    }
    if (this.#format === "pcap") this.#pcap();
    else this.#pcapng();
  }

  /**
   * Ends the input.
   *
   * @returns The format and the notes (skipped packets, a record cut short at the end).
   * @throws {CaptureFormatError} when the input is too short to have a file header.
   */
  finish(): { format: "pcap" | "pcapng"; notes: string[] } {
    const q = this.#queue;
    if (this.#format === undefined) {
      throw new CaptureFormatError(
        `Not a pcap or pcapng file: unknown magic number at offset 0 (${
          hex(q.length > 0 ? q.peek(q.length) : new Uint8Array(0))
        })`,
        0,
      );
    }
    if (this.#format === "pcap" && this.#linkType < 0) {
      throw new CaptureFormatError(
        `Truncated pcap file header: ${q.length} of 24 bytes at offset 0`,
        0,
      );
    }
    if (!this.#stopped && q.length > 0) this.#truncated(q.length);
    return { format: this.#format, notes: [...this.#decoder.notes.list(), ...this.#notes] };
  }

  #truncated(have: number): void {
    const p = this.#offset;
    const q = this.#queue;
    if (this.#format === "pcap") {
      if (have < 16) {
        this.#notes.push(`Capture truncated at offset ${p}: incomplete record header`);
      } else {
        const incl = view(q.peek(16)).getUint32(8, this.#little);
        this.#notes.push(
          `Capture truncated at offset ${p}: record of ${incl} bytes, ${have - 16} present`,
        );
      }
    } else if (have < 12) {
      this.#notes.push(`Capture truncated at offset ${p}: incomplete block header`);
    } else {
      const len = view(q.peek(8)).getUint32(4, this.#little);
      this.#notes.push(
        `Capture truncated at offset ${p}: block of ${len} bytes, ${have} present`,
      );
    }
  }

  #take(n: number): void {
    this.#queue.skip(n);
    this.#offset += n;
  }

  #pcap(): void {
    const q = this.#queue;
    if (this.#linkType < 0) {
      if (q.length < 24) return;
      const dv = view(q.peek(24));
      this.#little = dv.getUint32(0, false) === 0xd4c3b2a1 ||
        dv.getUint32(0, false) === 0x4d3cb2a1;
      this.#nano = dv.getUint32(0, this.#little) === 0xa1b23c4d;
      this.#linkType = dv.getUint32(20, this.#little) & 0x0fffffff;
      this.#take(24);
    }
    const little = this.#little;
    while (q.length >= 16) {
      // records that lie whole in the first chunk are read in place, one DataView for all
      const buf = q.front();
      const dv = view(buf);
      let p = 0;
      while (p + 16 <= buf.length) {
        const incl = dv.getUint32(p + 8, little);
        this.#checkRecord(incl, this.#offset + p);
        if (p + 16 + incl > buf.length) break;
        this.#record(dv, p, buf.subarray(p + 16, p + 16 + incl));
        p += 16 + incl;
      }
      if (p > 0) {
        this.#take(p);
        continue;
      }
      // a record split across chunks: join just that record
      const incl = view(q.peek(16)).getUint32(8, little);
      this.#checkRecord(incl, this.#offset);
      if (q.length < 16 + incl) return;
      const rec = q.peek(16 + incl);
      this.#record(view(rec), 0, rec.subarray(16));
      this.#take(16 + incl);
    }
  }

  #checkRecord(incl: number, offset: number): void {
    if (incl > MAX_RECORD) {
      throw new CaptureFormatError(
        `Record at offset ${offset} claims ${incl} captured bytes, over the limit of ${MAX_RECORD}`,
        offset,
      );
    }
  }

  #record(dv: DataView, p: number, frame: Uint8Array): void {
    const little = this.#little;
    const sec = dv.getUint32(p, little);
    const frac = dv.getUint32(p + 4, little);
    const time = sec * 1000 + (this.#nano ? frac / 1e6 : frac / 1e3);
    this.#decoder.add(this.#linkType, time, frame, dv.getUint32(p + 12, little));
  }

  #pcapng(): void {
    const q = this.#queue;
    while (q.length >= 12) {
      const p = this.#offset;
      const head = q.peek(12);
      const hv = view(head);
      let little = this.#little;
      const type = hv.getUint32(0, little);
      if (type === 0x0a0d0d0a) {
        const bom = hv.getUint32(8, true);
        if (bom === 0x1a2b3c4d) little = true;
        else if (bom === 0x4d3c2b1a) little = false;
        else {
          throw new CaptureFormatError(
            `Bad pcapng byte-order magic at offset ${p + 8} (${hex(head.subarray(8, 12))})`,
            p + 8,
          );
        }
        this.#little = little;
        this.#ifaces = [];
      }
      const len = hv.getUint32(4, little);
      if (len < 12 || len % 4 !== 0) {
        throw new CaptureFormatError(
          `Bad pcapng block length ${len} at offset ${
            p + 4
          } (must be a multiple of 4, at least 12)`,
          p + 4,
        );
      }
      if (len > MAX_RECORD + 64) {
        throw new CaptureFormatError(
          `Block at offset ${p} claims ${len} bytes, over the limit of ${MAX_RECORD + 64}`,
          p,
        );
      }
      if (q.length < len) return;
      this.#block(type, q.peek(len).subarray(8, len - 4), p);
      this.#take(len);
    }
  }

  #block(type: number, body: Uint8Array, p: number): void {
    const little = this.#little;
    const bv = view(body);
    if (type === 1 && body.length >= 8) {
      this.#ifaces.push({
        linkType: bv.getUint16(0, little),
        unitsPerSecond: tsresol(body.subarray(8), little),
      });
    } else if (type === 6 && body.length >= 20) {
      const iface = this.#ifaces[bv.getUint32(0, little)];
      const incl = bv.getUint32(12, little);
      if (iface === undefined || 20 + incl > body.length) {
        throw new CaptureFormatError(
          iface === undefined
            ? `Enhanced packet block at offset ${p} names an undeclared interface`
            : `Enhanced packet block at offset ${p} claims ${incl} bytes, block holds ${
              body.length - 20
            }`,
          p,
        );
      }
      const units = bv.getUint32(4, little) * 4294967296 + bv.getUint32(8, little);
      this.#decoder.add(
        iface.linkType,
        (units / iface.unitsPerSecond) * 1000,
        body.subarray(20, 20 + incl),
        bv.getUint32(16, little),
      );
    } else if (type === 3 && body.length >= 4) {
      const iface = this.#ifaces[0];
      const orig = bv.getUint32(0, little);
      if (iface !== undefined) {
        this.#decoder.add(
          iface.linkType,
          NaN,
          body.subarray(4, 4 + Math.min(orig, body.length - 4)),
          orig,
        );
      }
    }
  }
}

function tsresol(options: Uint8Array, little: boolean): number {
  const dv = view(options);
  let p = 0;
  while (p + 4 <= options.length) {
    const code = dv.getUint16(p, little);
    const len = dv.getUint16(p + 2, little);
    if (code === 0) break;
    if (code === 9 && len >= 1 && p + 4 < options.length) {
      const r = options[p + 4]!;
      return r & 0x80 ? 2 ** (r & 0x7f) : 10 ** r;
    }
    p += 4 + ((len + 3) & ~3);
  }
  return 1e6;
}
