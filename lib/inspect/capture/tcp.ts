/**
 * TCP reassembly for captures, streaming: segments are grouped into connections by their
 * 4-tuple as they come, each direction is put back in sequence order ({@link StreamReorder}:
 * out-of-order segments, retransmissions, overlaps and sequence wrap-around handled), and
 * milter conversations are picked out by content on any port: the MTA's first bytes are an
 * OPTNEG frame `00 00 00 0D 4F` with version 2..6. {@link TcpReassembler} hands out each
 * conversation's bytes as soon as they are in order and forgets a connection once it has
 * closed, so memory follows the connections open at one time, not the capture's size.
 * {@link findMilterConversations} collects everything for captures held in memory.
 *
 * @module
 */

import { TCP_FLAGS, type TcpPacket } from "./packet.ts";
import { StreamReorder } from "./reorder.ts";
import { concatBytes } from "../../wire/concat.ts";
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
 * import { looksLikeMtaStream } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.ok(looksLikeMtaStream(new Uint8Array([0, 0, 0, 13, 0x4f, 0, 0, 0, 6])));
 * ```
 */
export function looksLikeMtaStream(bytes: Uint8Array): boolean {
  return bytes.length >= 9 && bytes[0] === 0 && bytes[1] === 0 && bytes[2] === 0 &&
    bytes[3] === 13 && bytes[4] === 0x4f && bytes[5] === 0 && bytes[6] === 0 &&
    bytes[7] === 0 && bytes[8]! >= 2 && bytes[8]! <= 6;
}

/**
 * Collects the bytes of both directions of a session as they come, with where each run came
 * from: the in-memory form that {@link findMilterConversations} and the recording readers
 * return.
 *
 * @example
 * ```ts
 * import { StreamCollector } from "./tcp.ts";
 * import assert from "node:assert/strict";
 * const c = new StreamCollector();
 * c.push("to-filter", new Uint8Array([1, 2]), 10);
 * c.push("to-filter", new Uint8Array([3]), 11);
 * assert.deepEqual([...c.result().toFilter], [1, 2, 3]);
 * assert.equal(c.result().segments[1]?.offset, 2);
 * ```
 */
export class StreamCollector {
  readonly #chunks: Record<Direction, Uint8Array[]> = { "to-filter": [], "to-mta": [] };
  readonly #sizes: Record<Direction, number> = { "to-filter": 0, "to-mta": 0 };
  readonly #segments: StreamSegment[] = [];

  /**
   * Adds bytes of one direction.
   *
   * @param direction Which way they went.
   * @param bytes The bytes (kept by reference).
   * @param time When they arrived (ms since the epoch; `NaN` when unknown).
   */
  push(direction: Direction, bytes: Uint8Array, time: number): void {
    this.#segments.push({
      time,
      direction,
      offset: this.#sizes[direction],
      length: bytes.length,
    });
    this.#chunks[direction].push(bytes);
    this.#sizes[direction] += bytes.length;
  }

  /**
   * Both streams joined, and the runs in arrival order.
   *
   * @returns The session's bytes and segments.
   */
  result(): { toFilter: Uint8Array; toMta: Uint8Array; segments: StreamSegment[] } {
    return {
      toFilter: concatBytes(this.#chunks["to-filter"]),
      toMta: concatBytes(this.#chunks["to-mta"]),
      segments: this.#segments,
    };
  }
}

/** A milter conversation as {@link TcpReassembler} announces it. */
export interface ConversationStart {
  /** Position among the milter conversations of the capture (0-based, as recognised). */
  readonly index: number;
  /** The MTA's end (it sends OPTNEG). */
  readonly mta: Endpoint;
  /** The filter's end. */
  readonly filter: Endpoint;
  /** Time of the connection's first packet (ms since the epoch). */
  readonly startTime: number;
}

/** How a conversation ended, as {@link TcpReassembler} reports it. */
export interface ConversationEnd {
  /** FIN from both sides, RST, or not seen before the capture ended. */
  readonly end: "fin" | "rst" | "open";
  /** Time of the connection's last packet. */
  readonly endTime: number;
  /** Gaps, port reuse and other oddities met while reassembling. */
  readonly notes: string[];
}

/** Where {@link TcpReassembler} sends what it finds. */
export interface ConversationSink {
  /** A connection was recognised as milter. */
  open(c: ConversationStart): void;
  /** New in-order bytes of one direction, at the time of the packet that completed them. */
  data(c: ConversationStart, direction: Direction, bytes: Uint8Array, time: number): void;
  /** The connection ended (or the capture did); nothing more comes for it. */
  close(c: ConversationStart, end: ConversationEnd): void;
}

/** Limits of {@link TcpReassembler}. */
export interface ReassemblyOptions {
  /**
   * Bytes one direction may hold waiting for a missing segment before it counts as lost
   * (default 8 MiB with the per-segment overhead counted; more than a TCP window holds).
   */
  readonly maxWaiting?: number;
}

/** Segments held per connection until both directions' first sequence numbers are known. */
const PREBASE_PACKETS = 64;
/** Bytes held per connection while deciding whether it is milter. */
const MAX_SNIFF = 1024 * 1024;
/** Closed port pairs remembered, so that late retransmissions do not open a new connection. */
const MAX_CLOSED = 4096;
/** Packets a connection with both FINs in stays open for a final RST or retransmission. */
const CLOSE_AFTER = 64;

interface Half {
  readonly from: Endpoint;
  syn: number | undefined;
  /** Sequence number after the last byte, from the FIN. */
  finSeq: number | undefined;
  readonly reorder: StreamReorder;
  /** The first bytes delivered (up to 9), to recognise OPTNEG. */
  head: Uint8Array;
}

interface Connection {
  readonly halves: [Half, Half];
  clientHalf: 0 | 1 | undefined;
  readonly first: number;
  last: number;
  rst: boolean;
  closing: boolean;
  now: number;
  state: "prebase" | "sniff" | "milter" | "ignored";
  prebuf: TcpPacket[];
  sniffed: { half: 0 | 1; bytes: Uint8Array; time: number }[];
  sniffBytes: number;
  mtaHalf: 0 | 1;
  info: ConversationStart | undefined;
  readonly notes: string[];
}

function key(a: string, ap: number, b: string, bp: number): string {
  return `${a}|${ap}|${b}|${bp}`;
}

function same(e: Endpoint, address: string, port: number): boolean {
  return e.address === address && e.port === port;
}

/**
 * Streaming TCP reassembly: push segments in capture order, get milter conversations' bytes
 * in order through a {@link ConversationSink}.
 *
 * @example
 * ```ts
 * import { TcpReassembler } from "./tcp.ts";
 * const r = new TcpReassembler({
 *   open: (c) => console.log("milter", c.mta, "->", c.filter),
 *   data: (_c, dir, bytes) => console.log(dir, bytes.length),
 *   close: (c, end) => console.log(c.index, end.end),
 * });
 * r.finish();
 * ```
 */
export class TcpReassembler {
  readonly #sink: ConversationSink;
  readonly #maxWaiting: number;
  readonly #open = new Map<string, Connection>();
  readonly #closed = new Map<string, true>();
  readonly #closing: { k: string; c: Connection; at: number }[] = [];
  #count = 0;
  #packets = 0;

  /**
   * Creates a reassembler with no connections.
   *
   * @param sink Receives conversations and their bytes.
   * @param options Limits.
   */
  constructor(sink: ConversationSink, options: ReassemblyOptions = {}) {
    this.#sink = sink;
    this.#maxWaiting = options.maxWaiting ?? 8 * 1024 * 1024;
  }

  /** Connections currently tracked. */
  get openConnections(): number {
    return this.#open.size;
  }

  /** Adds the next TCP segment of the capture. */
  push(p: TcpPacket): void {
    const fwd = key(p.src, p.srcPort, p.dst, p.dstPort);
    const rev = key(p.dst, p.dstPort, p.src, p.srcPort);
    let k = this.#open.has(fwd) ? fwd : this.#open.has(rev) ? rev : undefined;
    let c = k === undefined ? undefined : this.#open.get(k);
    const syn = (p.flags & TCP_FLAGS.SYN) !== 0;
    const synOnly = syn && (p.flags & TCP_FLAGS.ACK) === 0;
    if (c !== undefined && synOnly) {
      const h = same(c.halves[0].from, p.src, p.srcPort) ? c.halves[0] : c.halves[1];
      const ended = c.rst || c.halves[0].finSeq !== undefined || c.halves[1].finSeq !== undefined;
      if (h.syn !== undefined && h.syn !== p.seq && ended) {
        c.notes.push(`Port pair reused by a new connection at packet ${p.index}`);
        this.#close(k!, c);
        c = undefined;
      }
    }
    if (c === undefined) {
      const closed = this.#closed.has(fwd) ? fwd : this.#closed.has(rev) ? rev : undefined;
      if (closed !== undefined) {
        if (!synOnly) return; // a straggler of a connection already closed
        this.#closed.delete(closed);
      }
      k = fwd;
      c = this.#create(p);
      this.#open.set(k, c);
    }
    const i = same(c.halves[0].from, p.src, p.srcPort) ? 0 : 1;
    const h = c.halves[i];
    c.last = Math.max(c.last, p.time);
    if (syn) {
      h.syn = p.seq;
      if (c.clientHalf === undefined) c.clientHalf = synOnly ? i : i === 0 ? 1 : 0;
      if (c.state === "prebase") h.reorder.setBase((p.seq + 1) >>> 0);
    }
    if (p.flags & TCP_FLAGS.FIN) h.finSeq = (p.seq + p.payload.length) >>> 0;
    if (p.flags & TCP_FLAGS.RST) c.rst = true;
    if (c.state === "prebase") {
      if (p.payload.length > 0) c.prebuf.push(p);
      const both = c.halves[0].syn !== undefined && c.halves[1].syn !== undefined;
      if (both || c.prebuf.length >= PREBASE_PACKETS) this.#leavePrebase(c);
    } else this.#payload(c, i, p);
    if (c.rst) this.#close(k!, c);
    else if (!c.closing && this.#finished(c)) {
      // both FINs in: close after a few more packets, so that a final RST still counts
      c.closing = true;
      this.#closing.push({ k: k!, c, at: this.#packets });
    }
    this.#packets++;
    while (this.#closing.length > 0 && this.#closing[0]!.at + CLOSE_AFTER <= this.#packets) {
      const { k, c } = this.#closing.shift()!;
      if (this.#open.get(k) === c) this.#close(k, c);
    }
  }

  /** Ends the capture: every connection still open is closed, in order of its first packet. */
  finish(): void {
    for (const [k, c] of [...this.#open]) this.#close(k, c);
  }

  #create(p: TcpPacket): Connection {
    const c: Connection = {
      halves: [undefined!, undefined!] as unknown as [Half, Half],
      clientHalf: undefined,
      first: p.time,
      last: p.time,
      rst: false,
      closing: false,
      now: p.time,
      state: "prebase",
      prebuf: [],
      sniffed: [],
      sniffBytes: 0,
      mtaHalf: 0,
      info: undefined,
      notes: [],
    };
    const make = (i: 0 | 1, address: string, port: number): Half => ({
      from: { address, port },
      syn: undefined,
      finSeq: undefined,
      reorder: new StreamReorder((b) => this.#delivered(c, i, b), this.#maxWaiting),
      head: new Uint8Array(0),
    });
    c.halves[0] = make(0, p.src, p.srcPort);
    c.halves[1] = make(1, p.dst, p.dstPort);
    return c;
  }

  #leavePrebase(c: Connection): void {
    for (const [i, h] of c.halves.entries()) {
      if (h.reorder.hasBase) continue;
      const mine = c.prebuf.filter((p) => same(h.from, p.src, p.srcPort));
      if (mine.length === 0) continue;
      const ref = mine[0]!.seq;
      let min = 0;
      for (const p of mine) min = Math.min(min, (p.seq - ref) | 0);
      c.halves[i]!.reorder.setBase((ref + min) >>> 0);
    }
    c.state = "sniff";
    const held = c.prebuf;
    c.prebuf = [];
    for (const p of held) {
      if ((c.state as Connection["state"]) === "ignored") break;
      this.#payload(c, same(c.halves[0].from, p.src, p.srcPort) ? 0 : 1, p);
    }
  }

  #payload(c: Connection, i: 0 | 1, p: TcpPacket): void {
    if (c.state === "ignored" || p.payload.length === 0) return;
    c.now = p.time;
    c.halves[i].reorder.push(p.seq, p.payload);
  }

  #delivered(c: Connection, i: 0 | 1, bytes: Uint8Array): void {
    if (c.state === "milter") {
      this.#sink.data(c.info!, i === c.mtaHalf ? "to-filter" : "to-mta", bytes, c.now);
      return;
    }
    if (c.state !== "sniff") return;
    const h = c.halves[i];
    if (h.head.length < 9) {
      const head = new Uint8Array(Math.min(9, h.head.length + bytes.length));
      head.set(h.head);
      head.set(bytes.subarray(0, head.length - h.head.length), h.head.length);
      h.head = head;
    }
    c.sniffed.push({ half: i, bytes, time: c.now });
    c.sniffBytes += bytes.length;
    this.#decide(c, c.sniffBytes > MAX_SNIFF);
  }

  /** Decides whether a connection is milter and which side is the MTA, once it can. */
  #decide(c: Connection, final: boolean): void {
    const known = (i: 0 | 1) => c.halves[i].head.length >= 9;
    const ok = (i: 0 | 1) => looksLikeMtaStream(c.halves[i].head);
    let mta: 0 | 1 | "none" | undefined;
    const client = c.clientHalf;
    if (client !== undefined) {
      const other = client === 0 ? 1 : 0;
      if (known(client) && ok(client)) mta = client;
      else if ((known(client) || final) && (known(other) || final)) {
        mta = ok(other) ? other : "none";
      }
    } else {
      const first = c.sniffed.find((s) => known(s.half))?.half;
      if (first !== undefined && ok(first)) mta = first;
      else if (first !== undefined) {
        const other = first === 0 ? 1 : 0;
        if (known(other) || final) mta = ok(other) ? other : "none";
      } else if (final) mta = "none";
    }
    if (mta === undefined) return;
    const sniffed = c.sniffed;
    c.sniffed = [];
    if (mta === "none") {
      c.state = "ignored";
      return;
    }
    c.state = "milter";
    c.mtaHalf = mta;
    if (c.clientHalf !== undefined && c.clientHalf !== mta) {
      c.notes.push("The side that sent OPTNEG did not open the TCP connection");
    }
    c.info = {
      index: this.#count++,
      mta: c.halves[mta].from,
      filter: c.halves[mta === 0 ? 1 : 0].from,
      startTime: c.first,
    };
    this.#sink.open(c.info);
    for (const s of sniffed) {
      this.#sink.data(c.info, s.half === mta ? "to-filter" : "to-mta", s.bytes, s.time);
    }
  }

  #finished(c: Connection): boolean {
    return c.halves.every((h) =>
      h.finSeq !== undefined && (h.reorder.gap !== undefined ||
        (h.reorder.hasBase ? h.reorder.offset >= h.reorder.offsetOf(h.finSeq) : true))
    ) && c.state !== "prebase";
  }

  #close(k: string, c: Connection): void {
    this.#open.delete(k);
    this.#closed.set(k, true);
    if (this.#closed.size > MAX_CLOSED) this.#closed.delete(this.#closed.keys().next().value!);
    if (c.state === "prebase") this.#leavePrebase(c);
    for (const h of c.halves) h.reorder.finish();
    if (c.state === "sniff") this.#decide(c, true);
    if (c.state !== "milter") return;
    const label = (i: number) => i === c.mtaHalf ? "MTA to filter" : "filter to MTA";
    for (const [i, h] of c.halves.entries()) {
      const gap = h.reorder.gap;
      if (gap === undefined) continue;
      c.notes.push(
        `${label(i)}: ${gap.missing} bytes missing from the capture at stream offset ${gap.at};` +
          ` the ${gap.lost} bytes after the gap are left out`,
      );
    }
    this.#sink.close(c.info!, {
      end: c.rst
        ? "rst"
        : c.halves[0].finSeq !== undefined && c.halves[1].finSeq !== undefined
        ? "fin"
        : "open",
      endTime: c.last,
      notes: c.notes,
    });
  }
}

/**
 * Reassembles the TCP connections of a capture held in memory and returns those that carry
 * milter traffic, on any port. The MTA is the side whose stream starts with OPTNEG (the TCP
 * client when both do; without a SYN in the capture, the side that spoke first).
 *
 * @param packets TCP segments in capture order (from {@link readCapture}).
 * @returns The milter conversations in the order they were recognised.
 *
 * @example
 * ```ts
 * import { findMilterConversations, readCapture } from "@milterkit/milterkit/inspect";
 * const capture = new Uint8Array(24);
 * new DataView(capture.buffer).setUint32(0, 0xa1b2c3d4);
 * const conversations = findMilterConversations(readCapture(capture).packets);
 * console.log(conversations.length); // 0
 * ```
 */
export function findMilterConversations(packets: readonly TcpPacket[]): MilterConversation[] {
  const building = new Map<number, StreamCollector>();
  const out: MilterConversation[] = [];
  const r = new TcpReassembler({
    open: (c) => void building.set(c.index, new StreamCollector()),
    data: (c, direction, bytes, time) => building.get(c.index)!.push(direction, bytes, time),
    close(c, end) {
      const b = building.get(c.index)!;
      building.delete(c.index);
      out.push({ ...c, ...b.result(), endTime: end.endTime, end: end.end, notes: end.notes });
    },
  });
  for (const p of packets) r.push(p);
  r.finish();
  return out.sort((a, b) => a.index - b.index);
}
