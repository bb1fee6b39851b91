/**
 * From link-layer frames to TCP segments: the link types of pcap and pcapng (Ethernet with
 * VLAN tags, BSD/Linux loopback, raw IP, Linux cooked SLL/SLL2), IPv4 (fragments skipped with
 * a note), IPv6 (extension headers skipped) and TCP. Used by the capture readers in
 * `pcap.ts`; knows nothing about files.
 *
 * @module
 */

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
  /** TCP payload (a copy, owned by the packet). */
  readonly payload: Uint8Array;
}

/**
 * Notes about skipped or damaged packets, bounded: the first note of each kind is kept word for
 * word, later ones of that kind are only counted (a capture of a million fragments yields two
 * lines, not a million).
 */
export class PacketNotes {
  readonly #first = new Map<string, string>();
  readonly #more = new Map<string, number>();
  readonly #order: string[] = [];

  /** Adds a note of `kind`. */
  add(kind: string, text: string): void {
    if (!this.#first.has(kind)) {
      this.#first.set(kind, text);
      this.#order.push(kind);
    } else this.#more.set(kind, (this.#more.get(kind) ?? 0) + 1);
  }

  /** The notes so far, one line per kind. */
  list(): string[] {
    return this.#order.map((k) => {
      const n = this.#more.get(k) ?? 0;
      return n === 0 ? this.#first.get(k)! : `${this.#first.get(k)} (and ${n} more like it)`;
    });
  }
}

/**
 * Turns link-layer frames into TCP segments, numbering every frame. The segments' payloads are
 * copies, so the buffer a frame was read from may be reused.
 */
export class PacketDecoder {
  readonly notes = new PacketNotes();
  readonly #unknownLinks = new Set<number>();
  readonly #onPacket: (p: TcpPacket) => void;
  #lastTime = 0;
  /** Number of frames seen (the index of the next one). */
  index = 0;

  /** @param onPacket Called with each TCP segment, in capture order. */
  constructor(onPacket: (p: TcpPacket) => void) {
    this.#onPacket = onPacket;
  }

  /** Adds one link-layer frame; a `NaN` time (simple packet block) repeats the last one. */
  add(linkType: number, time: number, frame: Uint8Array, origLen: number): void {
    const index = this.index++;
    if (Number.isNaN(time)) time = this.#lastTime;
    this.#lastTime = time;
    if (frame.length < origLen) {
      this.notes.add(
        "snap",
        `Packet ${index} was captured with ${frame.length} of ${origLen} bytes (snap length)`,
      );
    }
    const ip = linkPayload(linkType, frame);
    if (ip === undefined) {
      if (!LINK_TYPES.has(linkType) && !this.#unknownLinks.has(linkType)) {
        this.#unknownLinks.add(linkType);
        this.notes.add(
          `link ${linkType}`,
          `Link type ${linkType} is not supported; its packets were skipped`,
        );
      }
      return;
    }
    const p = decodeIp(ip, index, time, this.notes);
    if (p !== undefined) this.#onPacket(p);
  }
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
  notes: PacketNotes,
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
      if (proto === 6) {
        notes.add("frag4", `Packet ${index} is an IPv4 fragment; fragments are skipped`);
      }
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
          notes.add("frag6", `Packet ${index} is an IPv6 fragment; fragments are skipped`);
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
    payload: seg.slice(off),
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
