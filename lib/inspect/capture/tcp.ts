/**
 * TCP reassembly for captures: segments are grouped into connections by their 4-tuple, each
 * direction is put back in sequence order (out-of-order segments, retransmissions, overlaps and
 * sequence wrap-around handled), and milter conversations are picked out by content on any
 * port: the MTA's first bytes are an OPTNEG frame `00 00 00 0D 4F` with version 2..6.
 *
 * @module
 */

import { TCP_FLAGS, type TcpPacket } from "./pcap.ts";
import type { Direction } from "../../wire/types.ts";

/**
 * Bytes that arrived in one segment: `length` new bytes at `offset` of the direction's stream.
 * Lists of these are in arrival order, so frame timestamps and the interleaving of both
 * directions can be recovered.
 */
export interface StreamSegment {
  /** Arrival time in milliseconds since the Unix epoch. */
  readonly time: number;
  /** Direction of the bytes. */
  readonly direction: Direction;
  /** Offset of the first new byte in that direction's stream. */
  readonly offset: number;
  /** Number of new bytes (retransmitted bytes are not counted again). */
  readonly length: number;
}

/** One end of a TCP connection. */
export interface Endpoint {
  /** IP address as text. */
  readonly address: string;
  /** TCP port. */
  readonly port: number;
}

/** A reassembled TCP connection carrying a milter conversation. */
export interface MilterConversation {
  /** Position among the milter conversations of the capture (0-based, by first packet). */
  readonly index: number;
  /** The MTA's end (it sends OPTNEG). */
  readonly mta: Endpoint;
  /** The filter's end. */
  readonly filter: Endpoint;
  /** Every byte the MTA sent, in order. */
  readonly toFilter: Uint8Array;
  /** Every byte the filter sent, in order. */
  readonly toMta: Uint8Array;
  /** Where the bytes came from, in arrival order. */
  readonly segments: StreamSegment[];
  /** Time of the connection's first packet (ms since the epoch). */
  readonly startTime: number;
  /** Time of its last packet. */
  readonly endTime: number;
  /** How the connection ended in the capture: FIN from both sides, RST, or not seen. */
  readonly end: "fin" | "rst" | "open";
  /** Gaps, port reuse and other oddities met while reassembling. */
  readonly notes: string[];
}

/**
 * Tells whether a stream starts like the MTA side of a milter conversation.
 *
 * @param bytes The first bytes of a stream (17 are enough).
 * @returns True for an OPTNEG frame of 13 bytes with version 2..6.
 *
 * @example
 * ```ts
 * import { looksLikeMtaStream } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * assert.ok(looksLikeMtaStream(new Uint8Array([0, 0, 0, 13, 0x4f, 0, 0, 0, 6])));
 * ```
 */
export function looksLikeMtaStream(bytes: Uint8Array): boolean {
  return bytes.length >= 9 && bytes[0] === 0 && bytes[1] === 0 && bytes[2] === 0 &&
    bytes[3] === 13 && bytes[4] === 0x4f && bytes[5] === 0 && bytes[6] === 0 &&
    bytes[7] === 0 && bytes[8]! >= 2 && bytes[8]! <= 6;
}

interface Half {
  readonly from: Endpoint;
  syn: number | undefined;
  fin: boolean;
  readonly packets: { p: TcpPacket; order: number }[];
}

interface Connection {
  readonly halves: [Half, Half];
  clientHalf: 0 | 1 | undefined;
  first: number;
  last: number;
  rst: boolean;
  order: number;
  readonly notes: string[];
}

function key(a: string, ap: number, b: string, bp: number): string {
  return `${a}|${ap}|${b}|${bp}`;
}

function group(packets: readonly TcpPacket[]): Connection[] {
  const open = new Map<string, Connection>();
  const all: Connection[] = [];
  let order = 0;
  for (const p of packets) {
    const fwd = key(p.src, p.srcPort, p.dst, p.dstPort);
    const rev = key(p.dst, p.dstPort, p.src, p.srcPort);
    let c = open.get(fwd) ?? open.get(rev);
    const syn = (p.flags & TCP_FLAGS.SYN) !== 0;
    const synOnly = syn && (p.flags & TCP_FLAGS.ACK) === 0;
    if (c !== undefined && synOnly) {
      const h = c.halves[0].from.address === p.src && c.halves[0].from.port === p.srcPort
        ? c.halves[0]
        : c.halves[1];
      const ended = c.rst || c.halves[0].fin || c.halves[1].fin;
      if (h.syn !== undefined && h.syn !== p.seq && ended) {
        open.delete(fwd);
        open.delete(rev);
        c.notes.push(`Port pair reused by a new connection at packet ${p.index}`);
        c = undefined;
      }
    }
    if (c === undefined) {
      c = {
        halves: [
          { from: { address: p.src, port: p.srcPort }, syn: undefined, fin: false, packets: [] },
          { from: { address: p.dst, port: p.dstPort }, syn: undefined, fin: false, packets: [] },
        ],
        clientHalf: undefined,
        first: p.time,
        last: p.time,
        rst: false,
        order: all.length,
        notes: [],
      };
      open.set(fwd, c);
      all.push(c);
    }
    const i = c.halves[0].from.address === p.src && c.halves[0].from.port === p.srcPort ? 0 : 1;
    const h = c.halves[i];
    c.last = Math.max(c.last, p.time);
    if (syn) {
      h.syn = p.seq;
      if (c.clientHalf === undefined) c.clientHalf = synOnly ? i : i === 0 ? 1 : 0;
    }
    if (p.flags & TCP_FLAGS.FIN) h.fin = true;
    if (p.flags & TCP_FLAGS.RST) c.rst = true;
    if (p.payload.length > 0) h.packets.push({ p, order: order++ });
  }
  return all;
}

interface Piece {
  readonly order: number;
  readonly time: number;
  readonly offset: number;
  readonly bytes: Uint8Array;
}

/** Puts one direction back together; returns the stream and the new bytes per packet. */
function assemble(
  h: Half,
  notes: string[],
  label: string,
): { stream: Uint8Array; pieces: Piece[] } {
  if (h.packets.length === 0) return { stream: new Uint8Array(0), pieces: [] };
  let base: number;
  if (h.syn !== undefined) base = (h.syn + 1) >>> 0;
  else {
    const ref = h.packets[0]!.p.seq;
    let min = 0;
    for (const { p } of h.packets) min = Math.min(min, (p.seq - ref) | 0);
    base = (ref + min) >>> 0;
  }
  // covered intervals [start, end), sorted and disjoint
  const covered: [number, number][] = [];
  const pieces: Piece[] = [];
  for (const { p, order } of h.packets) {
    let start = (p.seq - base) | 0;
    let bytes = p.payload;
    if (start < 0) {
      bytes = bytes.subarray(-start);
      start = 0;
    }
    const end = start + bytes.length;
    let cur = start;
    for (const [s, e] of covered) {
      if (e <= cur) continue;
      if (s >= end) break;
      if (s > cur) {
        pieces.push({
          order,
          time: p.time,
          offset: cur,
          bytes: bytes.subarray(cur - start, s - start),
        });
      }
      cur = Math.max(cur, e);
      if (cur >= end) break;
    }
    if (cur < end) {
      pieces.push({ order, time: p.time, offset: cur, bytes: bytes.subarray(cur - start) });
    }
    if (end > start) addInterval(covered, start, end);
  }
  const contiguous = covered.length > 0 && covered[0]![0] === 0 ? covered[0]![1] : 0;
  if (covered.length > 1 || contiguous === 0) {
    const first = covered[0]!;
    const gapAt = contiguous;
    const gapEnd = covered.length > 1 ? covered[1]![0] : first[0];
    const lost = covered.slice(contiguous === 0 ? 0 : 1).reduce((n, [s, e]) => n + e - s, 0);
    notes.push(
      `${label}: ${gapEnd - gapAt} bytes missing from the capture at stream offset ${gapAt};` +
        ` the ${lost} bytes after the gap are left out`,
    );
  }
  const stream = new Uint8Array(contiguous);
  const kept: Piece[] = [];
  for (const piece of pieces) {
    if (piece.offset >= contiguous) continue;
    const b = piece.bytes.subarray(0, contiguous - piece.offset);
    stream.set(b, piece.offset);
    kept.push(b.length === piece.bytes.length ? piece : { ...piece, bytes: b });
  }
  return { stream, pieces: kept };
}

function addInterval(list: [number, number][], s: number, e: number): void {
  let i = 0;
  while (i < list.length && list[i]![1] < s) i++;
  let j = i;
  while (j < list.length && list[j]![0] <= e) {
    s = Math.min(s, list[j]![0]);
    e = Math.max(e, list[j]![1]);
    j++;
  }
  list.splice(i, j - i, [s, e]);
}

/**
 * Reassembles the TCP connections of a capture and returns those that carry milter traffic,
 * on any port. The MTA is the side whose stream starts with OPTNEG (without a SYN in the
 * capture, content alone decides).
 *
 * @param packets TCP segments in capture order (from {@link readCapture}).
 * @returns The milter conversations in order of their first packet.
 *
 * @example
 * ```ts
 * import { findMilterConversations, readCapture } from "@milterkit/milterkit";
 * const capture = new Uint8Array(24);
 * new DataView(capture.buffer).setUint32(0, 0xa1b2c3d4);
 * const conversations = findMilterConversations(readCapture(capture).packets);
 * console.log(conversations.length); // 0
 * ```
 */
export function findMilterConversations(packets: readonly TcpPacket[]): MilterConversation[] {
  const out: MilterConversation[] = [];
  for (const c of group(packets)) {
    const notes = [...c.notes];
    const a = assemble(c.halves[0], notes, "first direction");
    const b = assemble(c.halves[1], notes, "second direction");
    // both sides start with a 13-byte OPTNEG: the TCP client, else the one that spoke first
    const okA = looksLikeMtaStream(a.stream);
    const okB = looksLikeMtaStream(b.stream);
    if (!okA && !okB) continue;
    const firstA = c.halves[0].packets[0]?.order ?? Infinity;
    const firstB = c.halves[1].packets[0]?.order ?? Infinity;
    const mtaHalf: 0 | 1 = okA && okB ? (c.clientHalf ?? (firstA <= firstB ? 0 : 1)) : okA ? 0 : 1;
    if (c.clientHalf !== undefined && c.clientHalf !== mtaHalf) {
      notes.push("The side that sent OPTNEG did not open the TCP connection");
    }
    const toF = mtaHalf === 0 ? a : b;
    const toM = mtaHalf === 0 ? b : a;
    const labelled = [
      ...toF.pieces.map((p) => ({ ...p, direction: "to-filter" as const })),
      ...toM.pieces.map((p) => ({ ...p, direction: "to-mta" as const })),
    ].sort((x, y) => x.order - y.order || x.offset - y.offset);
    const fix = (n: string) =>
      n.replace(
        mtaHalf === 0 ? "first direction" : "second direction",
        "MTA to filter",
      ).replace(mtaHalf === 0 ? "second direction" : "first direction", "filter to MTA");
    out.push({
      index: out.length,
      mta: c.halves[mtaHalf].from,
      filter: c.halves[mtaHalf === 0 ? 1 : 0].from,
      toFilter: toF.stream,
      toMta: toM.stream,
      segments: labelled.map((p) => ({
        time: p.time,
        direction: p.direction,
        offset: p.offset,
        length: p.bytes.length,
      })),
      startTime: c.first,
      endTime: c.last,
      end: c.rst ? "rst" : c.halves[0].fin && c.halves[1].fin ? "fin" : "open",
      notes: notes.map(fix),
    });
  }
  return out;
}
