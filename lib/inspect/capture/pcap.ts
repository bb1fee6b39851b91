/**
 * Packet captures as TCP segments: classic pcap (both byte orders, micro- and nanosecond
 * timestamps) and pcapng (SHB, IDB with per-interface link type and `if_tsresol`, EPB, SPB,
 * both byte orders; other blocks skipped). Link types: Ethernet (1, with 802.1Q/802.1ad tags),
 * BSD/Linux loopback (0 and 108), raw IP (101, 228, 229, 12, 14), Linux cooked SLL (113) and
 * SLL2 (276). IPv4 (options; fragments skipped with a note), IPv6 (extension headers
 * skipped) and TCP are decoded; everything else is skipped quietly.
 *
 * Pure: input is a `Uint8Array`. A bad file header or a record header that cannot be right
 * throws {@link CaptureFormatError} naming the offset; a capture cut short at the end (tcpdump
 * killed) keeps the packets read so far and adds a note.
 *
 * @module
 */

import { MilterError } from "../../wire/errors.ts";

/**
 * A capture or recording file that cannot be read: unknown magic, a header or record that
 * does not fit. `offset` is the byte offset (or line number for line formats) of the problem.
 *
 * @example
 * ```ts
 * import { CaptureFormatError, readCapture } from "@milterkit/milterkit";
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

/** TCP header flag bits, as in the TCP header's flags byte. */
export const TCP_FLAGS = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

/** One TCP segment read from a capture. */
export interface TcpPacket {
  /** Position of the packet in the capture (0-based, counting every record). */
  readonly index: number;
  /** Capture time in milliseconds since the Unix epoch (fractional). */
  readonly time: number;
  /** Source IP address as text (`127.0.0.1`, `::1`). */
  readonly src: string;
  /** Destination IP address as text. */
  readonly dst: string;
  /** Source TCP port. */
  readonly srcPort: number;
  /** Destination TCP port. */
  readonly dstPort: number;
  /** Sequence number. */
  readonly seq: number;
  /** Acknowledgement number. */
  readonly ack: number;
  /** TCP flags byte ({@link TCP_FLAGS}). */
  readonly flags: number;
  /** TCP payload (a view into the capture). */
  readonly payload: Uint8Array;
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
 * import { captureKind } from "@milterkit/milterkit";
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
 * import { readCapture } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const empty = new Uint8Array(24);
 * new DataView(empty.buffer).setUint32(0, 0xa1b2c3d4);
 * new DataView(empty.buffer).setUint32(20, 1);
 * assert.deepEqual(readCapture(empty).packets, []);
 * ```
 */
export function readCapture(bytes: Uint8Array): CaptureContents {
  const kind = captureKind(bytes);
  if (kind === "pcap") return readPcap(bytes);
  if (kind === "pcapng") return readPcapng(bytes);
  throw new CaptureFormatError(
    `Not a pcap or pcapng file: unknown magic number at offset 0 (${hex(bytes.subarray(0, 4))})`,
    0,
  );
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ") || "empty";
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

class Collector {
  readonly packets: TcpPacket[] = [];
  readonly notes: string[] = [];
  readonly #unknownLinks = new Set<number>();
  #lastTime = 0;
  index = 0;

  /** Adds one link-layer frame; a `NaN` time (simple packet block) repeats the last one. */
  add(linkType: number, time: number, frame: Uint8Array, origLen: number): void {
    const index = this.index++;
    if (Number.isNaN(time)) time = this.#lastTime;
    this.#lastTime = time;
    if (frame.length < origLen) {
      this.notes.push(
        `Packet ${index} was captured with ${frame.length} of ${origLen} bytes (snap length)`,
      );
    }
    const ip = linkPayload(linkType, frame);
    if (ip === undefined) {
      if (!LINK_TYPES.has(linkType) && !this.#unknownLinks.has(linkType)) {
        this.#unknownLinks.add(linkType);
        this.notes.push(`Link type ${linkType} is not supported; its packets were skipped`);
      }
      return;
    }
    const p = decodeIp(ip, index, time, this.notes);
    if (p !== undefined) this.packets.push(p);
  }
}

function readPcap(bytes: Uint8Array): CaptureContents {
  if (bytes.length < 24) {
    throw new CaptureFormatError(
      `Truncated pcap file header: ${bytes.length} of 24 bytes at offset 0`,
      0,
    );
  }
  const dv = view(bytes);
  const little = dv.getUint32(0, false) === 0xd4c3b2a1 || dv.getUint32(0, false) === 0x4d3cb2a1;
  const nano = dv.getUint32(0, little) === 0xa1b23c4d;
  const linkType = dv.getUint32(20, little) & 0x0fffffff;
  const out = new Collector();
  let p = 24;
  while (p < bytes.length) {
    if (bytes.length - p < 16) {
      out.notes.push(`Capture truncated at offset ${p}: incomplete record header`);
      break;
    }
    const sec = dv.getUint32(p, little);
    const frac = dv.getUint32(p + 4, little);
    const incl = dv.getUint32(p + 8, little);
    const orig = dv.getUint32(p + 12, little);
    if (incl > 0x4000000) {
      throw new CaptureFormatError(
        `Record at offset ${p} claims ${incl} captured bytes, over the limit of 67108864`,
        p,
      );
    }
    if (p + 16 + incl > bytes.length) {
      out.notes.push(
        `Capture truncated at offset ${p}: record of ${incl} bytes, ${
          bytes.length - p - 16
        } present`,
      );
      break;
    }
    const time = sec * 1000 + (nano ? frac / 1e6 : frac / 1e3);
    out.add(linkType, time, bytes.subarray(p + 16, p + 16 + incl), orig);
    p += 16 + incl;
  }
  return { format: "pcap", packets: out.packets, notes: out.notes };
}

interface Interface {
  readonly linkType: number;
  /** Timestamp units per second. */
  readonly unitsPerSecond: number;
}

function readPcapng(bytes: Uint8Array): CaptureContents {
  const dv = view(bytes);
  const out = new Collector();
  let little = true;
  let ifaces: Interface[] = [];
  let p = 0;
  while (p < bytes.length) {
    if (bytes.length - p < 12) {
      out.notes.push(`Capture truncated at offset ${p}: incomplete block header`);
      break;
    }
    const type = dv.getUint32(p, little);
    if (type === 0x0a0d0d0a) {
      const bom = dv.getUint32(p + 8, true);
      if (bom === 0x1a2b3c4d) little = true;
      else if (bom === 0x4d3c2b1a) little = false;
      else {
        throw new CaptureFormatError(
          `Bad pcapng byte-order magic at offset ${p + 8} (${hex(bytes.subarray(p + 8, p + 12))})`,
          p + 8,
        );
      }
      ifaces = [];
    }
    const len = dv.getUint32(p + 4, little);
    if (len < 12 || len % 4 !== 0) {
      throw new CaptureFormatError(
        `Bad pcapng block length ${len} at offset ${p + 4} (must be a multiple of 4, at least 12)`,
        p + 4,
      );
    }
    if (p + len > bytes.length) {
      out.notes.push(
        `Capture truncated at offset ${p}: block of ${len} bytes, ${bytes.length - p} present`,
      );
      break;
    }
    const body = bytes.subarray(p + 8, p + len - 4);
    const bv = view(body);
    if (type === 1 && body.length >= 8) {
      ifaces.push({
        linkType: bv.getUint16(0, little),
        unitsPerSecond: tsresol(body.subarray(8), little),
      });
    } else if (type === 6 && body.length >= 20) {
      const iface = ifaces[bv.getUint32(0, little)];
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
      out.add(
        iface.linkType,
        (units / iface.unitsPerSecond) * 1000,
        body.subarray(20, 20 + incl),
        bv.getUint32(16, little),
      );
    } else if (type === 3 && body.length >= 4) {
      const iface = ifaces[0];
      const orig = bv.getUint32(0, little);
      if (iface !== undefined) {
        out.add(iface.linkType, NaN, body.subarray(4, 4 + Math.min(orig, body.length - 4)), orig);
      }
    }
    p += len;
  }
  return { format: "pcapng", packets: out.packets, notes: out.notes };
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

const LINK_TYPES = new Set([0, 1, 12, 14, 101, 108, 113, 228, 229, 276]);

/** Returns the IP packet inside a link-layer frame, or `undefined` when it is not IP. */
function linkPayload(linkType: number, f: Uint8Array): Uint8Array | undefined {
  switch (linkType) {
    case 0:
    case 108: {
      if (f.length < 4) return undefined;
      const be = ((f[0]! << 24) | (f[1]! << 16) | (f[2]! << 8) | f[3]!) >>> 0;
      const le = ((f[3]! << 24) | (f[2]! << 16) | (f[1]! << 8) | f[0]!) >>> 0;
      const family = be < 256 ? be : le;
      return [2, 24, 28, 30].includes(family) ? f.subarray(4) : undefined;
    }
    case 1: {
      let p = 12;
      while (p + 2 <= f.length) {
        const type = (f[p]! << 8) | f[p + 1]!;
        if (type === 0x8100 || type === 0x88a8 || type === 0x9100) {
          p += 4;
          continue;
        }
        return type === 0x0800 || type === 0x86dd ? f.subarray(p + 2) : undefined;
      }
      return undefined;
    }
    case 12:
    case 14:
    case 101:
    case 228:
    case 229:
      return f;
    case 113:
    case 276: {
      const at = linkType === 113 ? 14 : 0;
      const head = linkType === 113 ? 16 : 20;
      if (f.length < head) return undefined;
      const type = (f[at]! << 8) | f[at + 1]!;
      return type === 0x0800 || type === 0x86dd ? f.subarray(head) : undefined;
    }
    default:
      return undefined;
  }
}

function decodeIp(
  ip: Uint8Array,
  index: number,
  time: number,
  notes: string[],
): TcpPacket | undefined {
  if (ip.length < 1) return undefined;
  const version = ip[0]! >> 4;
  let src: string;
  let dst: string;
  let proto: number;
  let seg: Uint8Array;
  if (version === 4) {
    const ihl = (ip[0]! & 0x0f) * 4;
    if (ip.length < 20 || ihl < 20 || ip.length < ihl) return undefined;
    const total = (ip[2]! << 8) | ip[3]!;
    const frag = ((ip[6]! << 8) | ip[7]!) & 0x3fff;
    proto = ip[9]!;
    if (frag !== 0) {
      if (proto === 6) notes.push(`Packet ${index} is an IPv4 fragment; fragments are skipped`);
      return undefined;
    }
    src = ip.subarray(12, 16).join(".");
    dst = ip.subarray(16, 20).join(".");
    // total 0 happens with TCP segmentation offload; trust the captured length then
    seg = ip.subarray(ihl, total >= ihl ? Math.min(total, ip.length) : ip.length);
  } else if (version === 6) {
    if (ip.length < 40) return undefined;
    const plen = (ip[4]! << 8) | ip[5]!;
    src = ipv6(ip.subarray(8, 24));
    dst = ipv6(ip.subarray(24, 40));
    let next = ip[6]!;
    let rest = ip.subarray(40, plen > 0 ? Math.min(40 + plen, ip.length) : ip.length);
    for (;;) {
      if (next === 0 || next === 43 || next === 60 || next === 51) {
        if (rest.length < 2) return undefined;
        const len = next === 51 ? (rest[1]! + 2) * 4 : (rest[1]! + 1) * 8;
        next = rest[0]!;
        rest = rest.subarray(len);
      } else if (next === 44) {
        if (rest.length < 8) return undefined;
        const off = ((rest[2]! << 8) | rest[3]!) & 0xfff9;
        if (off !== 0) {
          notes.push(`Packet ${index} is an IPv6 fragment; fragments are skipped`);
          return undefined;
        }
        next = rest[0]!;
        rest = rest.subarray(8);
      } else break;
    }
    proto = next;
    seg = rest;
  } else return undefined;
  if (proto !== 6 || seg.length < 20) return undefined;
  const off = (seg[12]! >> 4) * 4;
  if (off < 20 || off > seg.length) return undefined;
  const u32 = (p: number) =>
    ((seg[p]! << 24) | (seg[p + 1]! << 16) | (seg[p + 2]! << 8) | seg[p + 3]!) >>> 0;
  return {
    index,
    time,
    src,
    dst,
    srcPort: (seg[0]! << 8) | seg[1]!,
    dstPort: (seg[2]! << 8) | seg[3]!,
    seq: u32(4),
    ack: u32(8),
    flags: seg[13]!,
    payload: seg.subarray(off),
  };
}

function ipv6(b: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && words[j] === "0") j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
  }
  if (best < 0) return words.join(":");
  return `${words.slice(0, best).join(":")}::${words.slice(best + bestLen).join(":")}`;
}
