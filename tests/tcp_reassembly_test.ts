import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import type { TcpPacket } from "../lib/inspect/capture/pcap.ts";
import { findMilterConversations, looksLikeMtaStream } from "../lib/inspect/capture/tcp.ts";
import { conversationSegments, type LogSeg, type Seg } from "./helpers/pcap_build.ts";

const root = new URL("./data/captures/", import.meta.url);
const read = (rel: string) => new Uint8Array(readFileSync(new URL(rel, root)));
const log: LogSeg[] = new TextDecoder().decode(read("postfix-libmilter-multi/pcap.s0.jsonl"))
  .trim().split("\n").map((l) => JSON.parse(l));
const toFilter = read("postfix-libmilter-multi/pcap.s0.to-filter.bin");
const toMta = read("postfix-libmilter-multi/pcap.s0.to-mta.bin");

function asPackets(segs: readonly Seg[]): TcpPacket[] {
  return segs.map((s, index) => ({
    index,
    time: s.time,
    src: s.src,
    dst: s.dst,
    srcPort: s.sport,
    dstPort: s.dport,
    seq: s.seq,
    ack: s.ack ?? 0,
    flags: s.flags ?? 0x18,
    payload: s.payload ?? new Uint8Array(0),
  }));
}

function only(packets: TcpPacket[]) {
  const convs = findMilterConversations(packets);
  assert.equal(convs.length, 1);
  return convs[0]!;
}

/** Deterministic shuffle. */
function shuffle<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const j = seed % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Splits every data segment in two at `at` bytes. */
function split(segs: Seg[], at: number): Seg[] {
  return segs.flatMap((s) => {
    const p = s.payload;
    if (!p || p.length <= at) return [s];
    return [
      { ...s, payload: p.subarray(0, at) },
      { ...s, seq: (s.seq + at) >>> 0, payload: p.subarray(at), time: s.time + 0.001 },
    ];
  });
}

describe("findMilterConversations()", () => {
  it("reassembles an in-order conversation and reports its endpoints and FIN", () => {
    const c = only(asPackets(conversationSegments(log)));
    assert.deepEqual(c.toFilter, toFilter);
    assert.deepEqual(c.toMta, toMta);
    assert.deepEqual(c.mta, { address: "127.0.0.1", port: 40000 });
    assert.deepEqual(c.filter, { address: "127.0.0.1", port: 9601 });
    assert.equal(c.end, "fin");
    assert.equal(c.segments.reduce((n, s) => n + s.length, 0), toFilter.length + toMta.length);
  });

  it("puts shuffled segments back in sequence order", () => {
    for (const seed of [1, 2, 3]) {
      const segs = split(conversationSegments(log), 7);
      const c = only(asPackets(shuffle(segs, seed)));
      assert.deepEqual(c.toFilter, toFilter);
      assert.deepEqual(c.toMta, toMta);
    }
  });

  it("ignores retransmitted and duplicated segments, counting their bytes once", () => {
    const segs = conversationSegments(log);
    const dup = segs.flatMap((s, i) => (i % 3 === 0 ? [s, { ...s, time: s.time + 200 }] : [s]));
    const c = only(asPackets(dup));
    assert.deepEqual(c.toFilter, toFilter);
    assert.deepEqual(c.toMta, toMta);
    assert.equal(c.segments.reduce((n, s) => n + s.length, 0), toFilter.length + toMta.length);
  });

  it("handles overlapping segments (a retransmission that covers old and new bytes)", () => {
    const segs = split(conversationSegments(log), 10);
    const over = segs.flatMap((s) => {
      const p = s.payload;
      if (!p || p.length < 20) return [s];
      // a retransmission of the first 20 bytes comes first, then the full segment
      return [{ ...s, payload: p.subarray(0, 20) }, s];
    });
    const c = only(asPackets(over));
    assert.deepEqual(c.toFilter, toFilter);
    assert.deepEqual(c.toMta, toMta);
  });

  it("follows sequence numbers across the 2^32 wrap-around", () => {
    const segs = conversationSegments(log, { isnMta: 0xffffff00, isnFilter: 0xfffffff0 });
    const c = only(asPackets(shuffle(segs, 9)));
    assert.deepEqual(c.toFilter, toFilter);
    assert.deepEqual(c.toMta, toMta);
  });

  it("without a handshake, takes the side that sends OPTNEG as the MTA", () => {
    const segs = conversationSegments(log, { handshake: false });
    // the capture starts with a bare ACK from the filter
    const ack: Seg = { ...segs[1]!, flags: 0x10, payload: new Uint8Array(0), time: 0 };
    const c = only(asPackets([ack, ...segs]));
    assert.deepEqual(c.toFilter, toFilter);
    assert.equal(c.mta.port, 40000);
  });

  it("finds milter on any port and ignores other TCP traffic", () => {
    const milter = conversationSegments(log, { filter: ["10.0.0.2", 12345] });
    const http: Seg[] = [{
      src: "10.0.0.9",
      dst: "10.0.0.2",
      sport: 5555,
      dport: 80,
      seq: 1,
      time: 1,
      payload: new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"),
    }];
    const convs = findMilterConversations(asPackets([...http, ...milter]));
    assert.equal(convs.length, 1);
    assert.equal(convs[0]!.filter.port, 12345);
  });

  it("keeps the bytes before a gap and notes what is missing", () => {
    const segs = conversationSegments(log);
    const mtaData = segs.filter((s) => s.sport === 40000 && s.payload?.length);
    const lost = mtaData[3]!;
    const c = only(asPackets(segs.filter((s) => s !== lost)));
    const before = mtaData.slice(0, 3).reduce((n, s) => n + s.payload!.length, 0);
    assert.deepEqual(c.toFilter, toFilter.subarray(0, before));
    assert.match(
      c.notes.join(),
      new RegExp(`MTA to filter: ${lost.payload!.length} bytes missing`),
    );
  });

  it("splits two connections that reuse the same ports", () => {
    const a = conversationSegments(log, { isnMta: 100 });
    const b = conversationSegments(log, { isnMta: 900000, t0: 1_700_000_100_000 });
    const convs = findMilterConversations(asPackets([...a, ...b]));
    assert.equal(convs.length, 2);
    for (const c of convs) assert.deepEqual(c.toFilter, toFilter);
  });

  it("reports RST as the end", () => {
    const segs = conversationSegments(log);
    segs.push({ ...segs.at(-1)!, flags: 0x04, payload: new Uint8Array(0) });
    assert.equal(only(asPackets(segs)).end, "rst");
  });
});

describe("looksLikeMtaStream()", () => {
  it("accepts OPTNEG of versions 2..6 only", () => {
    assert.ok(looksLikeMtaStream(toFilter));
    assert.ok(!looksLikeMtaStream(toMta.subarray(0, 4)));
    const v7 = toFilter.slice(0, 17);
    v7[8] = 7;
    assert.ok(!looksLikeMtaStream(v7));
  });
});
