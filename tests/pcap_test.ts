import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { CaptureFormatError, captureKind, readCapture } from "../lib/inspect/capture/pcap.ts";
import { findMilterConversations } from "../lib/inspect/capture/tcp.ts";
import {
  conversationSegments,
  type LogSeg,
  packet,
  pcapFile,
  pcapngFile,
  type Rec,
} from "./helpers/pcap_build.ts";

const root = new URL("./data/captures/", import.meta.url);
const read = (rel: string) => new Uint8Array(readFileSync(new URL(rel, root)));
const log = (rel: string): LogSeg[] =>
  new TextDecoder().decode(read(rel)).trim().split("\n").map((l) => JSON.parse(l));

const pcaps = readdirSync(root).filter((f) => f.endsWith(".pcap")).sort();

describe("readCapture() on the recorded captures", () => {
  it("finds the pcap files", () => {
    assert.ok(pcaps.length >= 6, `only ${pcaps.length} pcap files under ${root}`);
  });
  for (const file of pcaps) {
    it(`${file}: every milter connection equals its .bin streams byte for byte`, () => {
      const name = file.slice(0, -5);
      const capture = readCapture(read(file));
      assert.equal(capture.format, "pcap");
      assert.deepEqual(capture.notes, []);
      const convs = findMilterConversations(capture.packets);
      const expected = readdirSync(new URL(`${name}/`, root))
        .filter((f) => /^pcap\.s\d+\.to-filter\.bin$/.test(f)).length;
      assert.equal(convs.length, expected);
      for (const c of convs) {
        assert.deepEqual(c.toFilter, read(`${name}/pcap.s${c.index}.to-filter.bin`));
        assert.deepEqual(c.toMta, read(`${name}/pcap.s${c.index}.to-mta.bin`));
        assert.equal(c.filter.port, 9601);
        assert.equal(c.mta.address, "127.0.0.1");
        assert.equal(c.end, "fin");
      }
    });
  }
});

const session = log("postfix-libmilter/pcap.s0.jsonl");
const toFilter = read("postfix-libmilter/pcap.s0.to-filter.bin");
const toMta = read("postfix-libmilter/pcap.s0.to-mta.bin");

function recs(linkType: number, opts: { v6?: boolean; vlan?: boolean } = {}): Rec[] {
  const segs = conversationSegments(
    session,
    {
      ...(opts.v6 ? { mta: ["2001:db8::1", 40000], filter: ["2001:db8::2", 9601] } : {}),
    } as Parameters<typeof conversationSegments>[1],
  );
  return segs.map((s) => ({ time: s.time, data: packet(s, linkType, opts) }));
}

function assertSession(bytes: Uint8Array): void {
  const convs = findMilterConversations(readCapture(bytes).packets);
  assert.equal(convs.length, 1);
  assert.deepEqual(convs[0]!.toFilter, toFilter);
  assert.deepEqual(convs[0]!.toMta, toMta);
}

describe("readCapture() formats and link types", () => {
  for (
    const [label, opts] of [
      ["little-endian microseconds", { little: true }],
      ["big-endian microseconds", { little: false }],
      ["little-endian nanoseconds", { little: true, nano: true }],
      ["big-endian nanoseconds", { little: false, nano: true }],
    ] as const
  ) {
    it(`reads classic pcap, ${label}, with exact timestamps`, () => {
      const r = recs(1);
      const cap = readCapture(pcapFile(r, opts));
      assert.equal(cap.packets.length, r.length);
      assert.ok(Math.abs(cap.packets[5]!.time - r[5]!.time) < 0.002);
      assertSession(pcapFile(r, opts));
    });
  }
  for (
    const [lt, name] of [[0, "BSD loopback"], [101, "raw IP"], [113, "Linux SLL"], [
      276,
      "Linux SLL2",
    ]] as const
  ) {
    it(`reads link type ${lt} (${name})`, () =>
      assertSession(pcapFile(recs(lt), { linkType: lt })));
  }
  it("reads Ethernet with an 802.1Q VLAN tag", () =>
    assertSession(pcapFile(recs(1, { vlan: true }))));
  it("reads IPv6 with an extension header", () => {
    const cap = readCapture(pcapFile(recs(1, { v6: true })));
    assert.equal(cap.packets[0]!.src, "2001:db8::1");
    assertSession(pcapFile(recs(1, { v6: true })));
  });
  it("reads pcapng (little and big endian, tsresol 10^-9) built in the test", () => {
    for (const little of [true, false]) {
      const r = recs(1);
      const bytes = pcapngFile(r, { little, tsresol: 9 });
      assert.equal(captureKind(bytes), "pcapng");
      const cap = readCapture(bytes);
      assert.equal(cap.format, "pcapng");
      assert.ok(Math.abs(cap.packets[7]!.time - r[7]!.time) < 0.001);
      assertSession(bytes);
    }
  });
  it("reads pcapng simple packet blocks", () => {
    assertSession(pcapngFile(recs(101), { linkType: 101, simple: true }));
  });
  it("skips IPv4 fragments with a note", () => {
    const r = recs(101);
    const frag = r[4]!.data.slice();
    frag[6] = 0x20; // more fragments
    const cap = readCapture(
      pcapFile([...r.slice(0, 4), { time: r[4]!.time, data: frag }], { linkType: 101 }),
    );
    assert.equal(cap.packets.length, 4);
    assert.match(cap.notes.join(), /fragment/);
  });
  it("notes an unsupported link type once and skips its packets", () => {
    const cap = readCapture(pcapFile(recs(1).slice(0, 3), { linkType: 147 }));
    assert.equal(cap.packets.length, 0);
    assert.deepEqual(cap.notes, ["Link type 147 is not supported; its packets were skipped"]);
  });
});

describe("readCapture() on damaged input", () => {
  it("throws CaptureFormatError for an unknown magic number", () => {
    assert.throws(
      () => readCapture(new TextEncoder().encode("GET / HTTP/1.1\r\n")),
      (e) => e instanceof CaptureFormatError && e.offset === 0 && /magic/.test(e.message),
    );
  });
  it("throws for a truncated file header, naming the sizes", () => {
    const bytes = pcapFile([]).subarray(0, 10);
    assert.throws(() => readCapture(bytes), /Truncated pcap file header: 10 of 24 bytes/);
  });
  it("keeps the packets before a truncated last record and notes the offset", () => {
    const full = pcapFile(recs(1));
    const cut = full.subarray(0, full.length - 7);
    const cap = readCapture(cut);
    assert.equal(cap.packets.length, recs(1).length - 1);
    assert.match(cap.notes[0]!, /^Capture truncated at offset \d+/);
  });
  it("throws for an absurd record length", () => {
    const bytes = pcapFile(recs(1).slice(0, 1));
    new DataView(bytes.buffer).setUint32(24 + 8, 0xfffffff0, true);
    assert.throws(
      () => readCapture(bytes),
      (e) => e instanceof CaptureFormatError && e.offset === 24,
    );
  });
  it("throws for a pcapng block length that is not a multiple of 4", () => {
    const bytes = pcapngFile(recs(1).slice(0, 2));
    new DataView(bytes.buffer).setUint32(4, 29, true);
    assert.throws(() => readCapture(bytes), /Bad pcapng block length 29 at offset 4/);
  });
  it("never throws anything but CaptureFormatError on random bytes after a valid magic", () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) & 0xff;
    for (let i = 0; i < 300; i++) {
      const b = new Uint8Array(40 + (i % 200)).map(rnd);
      b.set(i % 2 ? [0xd4, 0xc3, 0xb2, 0xa1] : [0x0a, 0x0d, 0x0d, 0x0a]);
      try {
        readCapture(b);
      } catch (e) {
        assert.ok(e instanceof CaptureFormatError, String(e));
      }
    }
  });
});
