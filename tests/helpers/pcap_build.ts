/**
 * Builders of synthetic captures for the pcap, reassembly and dump tests and the dump
 * benchmark: TCP segments wrapped in IPv4/IPv6 and several link layers, written as classic pcap
 * or pcapng.
 */

import { encodeCommand } from "../../lib/wire/command_codec.ts";
import { encodeReply } from "../../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../../lib/wire/types.ts";

/** One TCP segment to synthesise. */
export interface Seg {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack?: number;
  flags?: number;
  payload?: Uint8Array;
  /** ms since the epoch */
  time: number;
}

export const SYN = 0x02;
export const ACK = 0x10;
export const FIN = 0x01;
export const PSH = 0x08;

function u16(b: Uint8Array, p: number, v: number): void {
  b[p] = (v >> 8) & 0xff;
  b[p + 1] = v & 0xff;
}
function u32(b: Uint8Array, p: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setUint32(p, v >>> 0);
}

export function tcpBytes(s: Seg): Uint8Array {
  const payload = s.payload ?? new Uint8Array(0);
  const b = new Uint8Array(20 + payload.length);
  u16(b, 0, s.sport);
  u16(b, 2, s.dport);
  u32(b, 4, s.seq);
  u32(b, 8, s.ack ?? 0);
  b[12] = 5 << 4;
  b[13] = s.flags ?? (ACK | PSH);
  u16(b, 14, 65535);
  b.set(payload, 20);
  return b;
}

function v4(a: string): number[] {
  return a.split(".").map(Number);
}

export function ipv4(src: string, dst: string, l4: Uint8Array, options = 0): Uint8Array {
  const ihl = 20 + options;
  const b = new Uint8Array(ihl + l4.length);
  b[0] = 0x40 | (ihl / 4);
  u16(b, 2, b.length);
  b[6] = 0x40; // DF
  b[8] = 64;
  b[9] = 6;
  b.set(v4(src), 12);
  b.set(v4(dst), 16);
  for (let i = 20; i < ihl; i++) b[i] = 1; // NOP options
  b.set(l4, ihl);
  return b;
}

function v6(a: string): Uint8Array {
  const [head, tail] = a.split("::");
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const words = [...h, ...Array(8 - h.length - t.length).fill("0"), ...t].map((w) =>
    parseInt(w, 16)
  );
  const b = new Uint8Array(16);
  words.forEach((w, i) => u16(b, i * 2, w));
  return b;
}

/** IPv6 with one hop-by-hop extension header when `ext` is true. */
export function ipv6(src: string, dst: string, l4: Uint8Array, ext = false): Uint8Array {
  const extLen = ext ? 8 : 0;
  const b = new Uint8Array(40 + extLen + l4.length);
  b[0] = 0x60;
  u16(b, 4, extLen + l4.length);
  b[6] = ext ? 0 : 6;
  b[7] = 64;
  b.set(v6(src), 8);
  b.set(v6(dst), 24);
  if (ext) {
    b[40] = 6; // next: TCP
    b[41] = 0; // 8 bytes
  }
  b.set(l4, 40 + extLen);
  return b;
}

/** Wraps an IP packet for a link type (1 with an optional VLAN tag, 0, 101, 113, 276). */
export function link(linkType: number, ip: Uint8Array, vlan = false): Uint8Array {
  const v6p = ip[0]! >> 4 === 6;
  const ethType = v6p ? 0x86dd : 0x0800;
  switch (linkType) {
    case 1: {
      const head = vlan ? 18 : 14;
      const b = new Uint8Array(head + ip.length + (ip.length < 46 ? 46 - ip.length : 0));
      if (vlan) {
        u16(b, 12, 0x8100);
        u16(b, 14, 42);
        u16(b, 16, ethType);
      } else u16(b, 12, ethType);
      b.set(ip, head); // trailing zero padding like a real short Ethernet frame
      return b;
    }
    case 0: {
      const b = new Uint8Array(4 + ip.length);
      b[0] = v6p ? 30 : 2; // host (little-endian) byte order
      b.set(ip, 4);
      return b;
    }
    case 101:
      return ip;
    case 113: {
      const b = new Uint8Array(16 + ip.length);
      u16(b, 14, ethType);
      b.set(ip, 16);
      return b;
    }
    case 276: {
      const b = new Uint8Array(20 + ip.length);
      u16(b, 0, ethType);
      b.set(ip, 20);
      return b;
    }
    default:
      throw new RangeError(`link type ${linkType} not supported by the builder`);
  }
}

/** A segment as a link-layer frame. */
export function packet(
  s: Seg,
  linkType = 1,
  opts: { v6?: boolean; vlan?: boolean } = {},
): Uint8Array {
  const t = tcpBytes(s);
  const ip = opts.v6 ? ipv6(s.src, s.dst, t, true) : ipv4(s.src, s.dst, t, 4);
  return link(linkType, ip, opts.vlan);
}

export interface Rec {
  time: number;
  data: Uint8Array;
}

/** Classic pcap. */
export function pcapFile(
  recs: readonly Rec[],
  opts: { linkType?: number; little?: boolean; nano?: boolean } = {},
): Uint8Array {
  const little = opts.little ?? true;
  const size = 24 + recs.reduce((n, r) => n + 16 + r.data.length, 0);
  const b = new Uint8Array(size);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, opts.nano ? 0xa1b23c4d : 0xa1b2c3d4, little);
  dv.setUint16(4, 2, little);
  dv.setUint16(6, 4, little);
  dv.setUint32(16, 262144, little);
  dv.setUint32(20, opts.linkType ?? 1, little);
  let p = 24;
  for (const r of recs) {
    const sec = Math.floor(r.time / 1000);
    const frac = opts.nano
      ? Math.round((r.time - sec * 1000) * 1e6)
      : Math.round((r.time - sec * 1000) * 1e3);
    dv.setUint32(p, sec, little);
    dv.setUint32(p + 4, frac, little);
    dv.setUint32(p + 8, r.data.length, little);
    dv.setUint32(p + 12, r.data.length, little);
    b.set(r.data, p + 16);
    p += 16 + r.data.length;
  }
  return b;
}

/** pcapng with one SHB, one IDB (tsresol 10^-`tsresol`), EPBs (or SPBs), an unknown block. */
export function pcapngFile(
  recs: readonly Rec[],
  opts: { linkType?: number; little?: boolean; tsresol?: number; simple?: boolean } = {},
): Uint8Array {
  const little = opts.little ?? true;
  const blocks: Uint8Array[] = [];
  const block = (type: number, body: Uint8Array) => {
    const padded = (body.length + 3) & ~3;
    const b = new Uint8Array(12 + padded);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, type, little);
    dv.setUint32(4, b.length, little);
    b.set(body, 8);
    dv.setUint32(b.length - 4, b.length, little);
    blocks.push(b);
  };
  const shb = new Uint8Array(16);
  const sv = new DataView(shb.buffer);
  sv.setUint32(0, 0x1a2b3c4d, little);
  sv.setUint16(4, 1, little);
  sv.setInt32(8, -1, little);
  sv.setInt32(12, -1, little);
  block(0x0a0d0d0a, shb);
  const res = opts.tsresol ?? 6;
  const idb = new Uint8Array(8 + 8 + 4);
  const iv = new DataView(idb.buffer);
  iv.setUint16(0, opts.linkType ?? 1, little);
  iv.setUint32(4, 262144, little);
  iv.setUint16(8, 9, little); // if_tsresol
  iv.setUint16(10, 1, little);
  idb[12] = res;
  // opt_endofopt at 16..19 stays zero
  block(1, idb);
  block(0x0bad, new Uint8Array([1, 2, 3, 4])); // unknown block, must be skipped
  for (const r of recs) {
    if (opts.simple) {
      const body = new Uint8Array(4 + r.data.length);
      new DataView(body.buffer).setUint32(0, r.data.length, little);
      body.set(r.data, 4);
      block(3, body);
      continue;
    }
    const body = new Uint8Array(20 + r.data.length);
    const dv = new DataView(body.buffer);
    const units = BigInt(Math.round(r.time * 10 ** (res - 3)));
    dv.setUint32(4, Number(units >> 32n), little);
    dv.setUint32(8, Number(units & 0xffffffffn), little);
    dv.setUint32(12, r.data.length, little);
    dv.setUint32(16, r.data.length, little);
    body.set(r.data, 20);
    block(6, body);
  }
  const out = new Uint8Array(blocks.reduce((n, b) => n + b.length, 0));
  let p = 0;
  for (const b of blocks) {
    out.set(b, p);
    p += b.length;
  }
  return out;
}

/** A per-segment log line as in tests/data/captures/NAME/pcap.sK.jsonl. */
export interface LogSeg {
  t: number;
  dir: "to-filter" | "to-mta";
  hex: string;
}

export function fromHex(h: string): Uint8Array {
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.slice(i * 2, i * 2 + 2), 16);
  return b;
}

/**
 * Turns a logged conversation into TCP segments (handshake, data, FIN) between `mta` and
 * `filter`, starting the sequence numbers at the given ISNs.
 */
export function conversationSegments(
  log: readonly LogSeg[],
  opts: {
    mta?: [string, number];
    filter?: [string, number];
    isnMta?: number;
    isnFilter?: number;
    t0?: number;
    handshake?: boolean;
  } = {},
): Seg[] {
  const [ma, mp] = opts.mta ?? ["127.0.0.1", 40000];
  const [fa, fp] = opts.filter ?? ["127.0.0.1", 9601];
  let sm = (opts.isnMta ?? 1000) >>> 0;
  let sf = (opts.isnFilter ?? 5000) >>> 0;
  const t0 = opts.t0 ?? 1_700_000_000_000;
  const out: Seg[] = [];
  const m = (seq: number, flags: number, time: number, payload?: Uint8Array): Seg => ({
    src: ma,
    dst: fa,
    sport: mp,
    dport: fp,
    seq,
    flags,
    time,
    ...(payload ? { payload } : {}),
  });
  const f = (seq: number, flags: number, time: number, payload?: Uint8Array): Seg => ({
    src: fa,
    dst: ma,
    sport: fp,
    dport: mp,
    seq,
    flags,
    time,
    ...(payload ? { payload } : {}),
  });
  if (opts.handshake ?? true) {
    out.push(m(sm, SYN, t0 - 1));
    out.push(f(sf, SYN | ACK, t0 - 0.9));
    out.push(m((sm + 1) >>> 0, ACK, t0 - 0.8));
    sm = (sm + 1) >>> 0;
    sf = (sf + 1) >>> 0;
  }
  for (const s of log) {
    const payload = fromHex(s.hex);
    if (s.dir === "to-filter") {
      out.push(m(sm, ACK | PSH, t0 + s.t * 1000, payload));
      sm = (sm + payload.length) >>> 0;
    } else {
      out.push(f(sf, ACK | PSH, t0 + s.t * 1000, payload));
      sf = (sf + payload.length) >>> 0;
    }
  }
  const end = t0 + (log.at(-1)?.t ?? 0) * 1000 + 1;
  out.push(m(sm, FIN | ACK, end), f(sf, FIN | ACK, end + 0.1));
  return out;
}

/** The frames of a Postfix-like session (macros, 12 headers, BODY frames, EOM with changes). */
export function mailSession(n: number, bodyBytes: number): [boolean, Uint8Array][] {
  const out: [boolean, Uint8Array][] = [];
  const c = (cmd: Command) => out.push([true, encodeCommand(cmd)]);
  const r = (rep: Reply) => out.push([false, encodeReply(rep)]);
  const ok = () => r({ type: "continue" });
  c({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff });
  r({ type: "optneg", version: 6, actions: 0x17, protocol: 0x300 });
  c({ type: "macro", stage: "C", macros: [["j", "mx.example.test"], ["_", "client [192.0.2.7]"]] });
  c({
    type: "connect",
    hostname: "client.example.test",
    family: "inet",
    port: 40000 + n,
    address: "192.0.2.7",
  });
  ok();
  c({ type: "helo", name: "client.example.test" });
  ok();
  c({ type: "mail", sender: `<sender${n}@example.test>`, args: ["SIZE=1000"] });
  ok();
  c({ type: "rcpt", recipient: "<user@example.test>", args: [] });
  ok();
  for (let h = 0; h < 12; h++) {
    c({ type: "macro", stage: "L", macros: [["i", `Q${n}`]] });
    c({ type: "header", name: `X-Header-${h}`, value: `value ${h} of message ${n}` });
    ok();
  }
  c({ type: "eoh" });
  ok();
  const chunk = new Uint8Array(65535).fill(0x61);
  for (let left = bodyBytes; left > 0; left -= 65535) {
    c({ type: "body", chunk: left >= 65535 ? chunk : chunk.subarray(0, left) });
    ok();
  }
  c({ type: "eom" });
  r({ type: "addheader", name: "X-Scanned", value: "yes" });
  r({ type: "chgheader", index: 1, name: "Subject", value: "[tagged]" });
  ok();
  c({ type: "abort" });
  c({ type: "quit" });
  return out;
}

/** How {@link sessionSegments} cuts and disorders a session. */
export interface SegmentOptions {
  /** Largest payload per segment (default: loopback's 65483). */
  mss?: number;
  /** Swap every other pair of data segments of a direction (out of order, each a brief gap). */
  swap?: boolean;
  /** Leave out every Nth data segment (a capture with real gaps). */
  dropEvery?: number;
  /** Filter port (default 9601). */
  port?: number;
}

/**
 * TCP segments of session `n`, with handshake and FINs: each frame is sent as it happens, cut
 * at the MSS, optionally swapped or thinned out.
 */
export function sessionSegments(
  n: number,
  frames: [boolean, Uint8Array][],
  t0: number,
  opts: SegmentOptions = {},
): Seg[] {
  const MSS = opts.mss ?? 65483; // loopback MTU 65536 − IP − TCP(+options)
  const fport = opts.port ?? 9601;
  const mta = "127.0.0.1";
  const sport = 20000 + (n % 40000);
  let sm = 1000 + n;
  let sf = 9000 + n;
  let t = t0;
  const segs: Seg[] = [
    { src: mta, dst: mta, sport, dport: fport, seq: sm - 1, flags: 0x02, time: t },
    { src: mta, dst: mta, sport: fport, dport: sport, seq: sf - 1, flags: 0x12, time: t },
  ];
  let data = 0;
  for (const [toFilter, bytes] of frames) {
    const burst: Seg[] = [];
    for (let p = 0; p < bytes.length; p += MSS) {
      const payload = bytes.subarray(p, p + MSS);
      t += 0.01;
      data++;
      if (toFilter) {
        burst.push({ src: mta, dst: mta, sport, dport: fport, seq: sm, time: t, payload });
        sm += payload.length;
      } else {
        burst.push({ src: mta, dst: mta, sport: fport, dport: sport, seq: sf, time: t, payload });
        sf += payload.length;
      }
      if (opts.dropEvery !== undefined && data % opts.dropEvery === 0) burst.pop();
    }
    if (opts.swap) {
      for (let i = 0; i + 1 < burst.length; i += 4) {
        [burst[i], burst[i + 1]] = [burst[i + 1]!, burst[i]!];
      }
    }
    segs.push(...burst);
  }
  segs.push({ src: mta, dst: mta, sport, dport: fport, seq: sm, flags: 0x11, time: t + 0.01 });
  segs.push({
    src: mta,
    dst: mta,
    sport: fport,
    dport: sport,
    seq: sf,
    flags: 0x11,
    time: t + 0.02,
  });
  return segs;
}
