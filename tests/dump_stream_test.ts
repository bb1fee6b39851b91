import { after, describe, it } from "node:test";
import { spawn, spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dumpCommand } from "../lib/cli/dump.ts";
import type { CliIo } from "../lib/cli/types.ts";
import { annotateStreams } from "../lib/inspect/annotate/feed.ts";
import { readCapture } from "../lib/inspect/capture/pcap.ts";
import { StreamReorder } from "../lib/inspect/capture/reorder.ts";
import { findMilterConversations, TcpReassembler } from "../lib/inspect/capture/tcp.ts";
import { readSessions } from "../lib/inspect/sources.ts";
import type { SessionReport } from "../lib/inspect/timeline.ts";
import { concatBytes } from "../lib/wire/concat.ts";
import { mailRecording } from "./helpers/recordings.ts";
import {
  mailSession,
  packet,
  pcapFile,
  pcapngFile,
  type Seg,
  type SegmentOptions,
  sessionSegments,
} from "./helpers/pcap_build.ts";

const tmp = mkdtempSync(join(tmpdir(), "milterkit-dump-stream-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const T0 = 1_780_000_000_000;

function capture(segs: Seg[]): Uint8Array {
  return pcapFile(segs.map((s) => ({ time: s.time, data: packet(s, 1) })));
}

function streams(frames: [boolean, Uint8Array][]) {
  return {
    toFilter: concatBytes(frames.filter(([f]) => f).map(([, b]) => b)),
    toMta: concatBytes(frames.filter(([f]) => !f).map(([, b]) => b)),
  };
}

async function sessionsOf(file: string, chunkSize?: number): Promise<SessionReport[]> {
  const out: SessionReport[] = [];
  await readSessions(file, (r) => void out.push(r), chunkSize ? { chunkSize } : {});
  return out;
}

/** The parts of a summary that do not depend on packet timing. */
function decisions(r: SessionReport) {
  return r.summary.messages.map((m) => ({
    sender: m.sender,
    recipients: m.recipients.map((x) => x.address),
    headers: m.headers.length,
    bodySize: m.bodySize,
    outcome: m.outcome.kind,
    modifications: m.modifications.map((x) => x.type),
  }));
}

function write(name: string, bytes: Uint8Array): string {
  const f = join(tmp, name);
  writeFileSync(f, bytes);
  return f;
}

describe("streaming reassembly of gappy and out-of-order captures", () => {
  const frames = mailSession(1, 30_000);
  const original = streams(frames);
  const expected = annotateStreams(original).summary();

  for (
    const [label, opts] of [
      ["in order, 100-byte segments", { mss: 100 }],
      ["every other pair swapped, 100-byte segments", { mss: 100, swap: true }],
      ["every other pair swapped, 7-byte segments", { mss: 7, swap: true }],
    ] as [string, SegmentOptions][]
  ) {
    it(`${label}: both streams byte for byte, the same decisions as the original`, async () => {
      const segs = sessionSegments(1, frames, T0, opts);
      const [c] = findMilterConversations(readCapture(capture(segs)).packets);
      assert.deepEqual(c!.toFilter, original.toFilter);
      assert.deepEqual(c!.toMta, original.toMta);
      assert.deepEqual(c!.notes, []);
      const [s] = await sessionsOf(write(`gappy-${opts.mss}-${opts.swap}.pcap`, capture(segs)));
      assert.equal(s!.summary.messages[0]!.bodySize, 30_000);
      assert.deepEqual(s!.summary.issues, []);
      assert.deepEqual(decisions(s!), decisions({ ...s!, summary: expected }));
    });
  }

  it("real gaps: the bytes before the first one are kept and the loss is noted", () => {
    const segs = sessionSegments(1, frames, T0, { mss: 100, dropEvery: 40 });
    const [c] = findMilterConversations(readCapture(capture(segs)).packets);
    assert.ok(c!.toFilter.length > 0 && c!.toFilter.length < original.toFilter.length);
    assert.deepEqual(c!.toFilter, original.toFilter.subarray(0, c!.toFilter.length));
    assert.deepEqual(c!.toMta, original.toMta.subarray(0, c!.toMta.length));
    assert.match(
      c!.notes.join("\n"),
      new RegExp(
        `MTA to filter: \\d+ bytes missing from the capture at stream offset ${
          c!.toFilter.length
        };` +
          " the \\d+ bytes after the gap are left out",
      ),
    );
  });

  it("StreamReorder hands out a shuffled, duplicated stream of 1-byte segments in order", () => {
    const n = 5000;
    const order = Array.from({ length: n * 2 }, (_, i) => i % n);
    let seed = 42;
    for (let i = order.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      const j = seed % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const out: number[] = [];
    const r = new StreamReorder((b) => out.push(...b), 1 << 24);
    r.setBase(0xfffff000); // crosses the 2^32 wrap-around
    for (const i of order) r.push((0xfffff000 + i) >>> 0, new Uint8Array([i & 0xff]));
    r.finish();
    assert.equal(r.gap, undefined);
    assert.equal(r.waiting, 0);
    assert.deepEqual(out, Array.from({ length: n }, (_, i) => i & 0xff));
  });

  it("declares a gap once the bytes waiting pass the limit, and counts what it leaves out", () => {
    const out: number[] = [];
    const r = new StreamReorder((b) => out.push(...b), 1000);
    r.setBase(0);
    r.push(0, new Uint8Array(10));
    for (let i = 0; i < 30; i++) r.push(20 + i * 50, new Uint8Array(50));
    // 4 segments wait (4 × (50 + 256) > 1000), then 26 more arrive after the gap was declared
    assert.deepEqual(r.gap, { at: 10, missing: 10, lost: 1500 });
    assert.equal(r.waiting, 0);
    assert.equal(out.length, 10);
  });
});

describe("dump reads files as streams", () => {
  it("interleaved connections: each session whole and in order of its start", async () => {
    const n = 30;
    const per = Array.from(
      { length: n },
      (_, i) => sessionSegments(i, mailSession(i, 3000 + i * 100), T0 + i, { mss: 500 }),
    );
    const mixed: Seg[] = [];
    for (let k = 0; per.some((s) => k < s.length); k++) {
      for (const s of per) if (k < s.length) mixed.push(s[k]!);
    }
    const file = write("interleaved.pcap", capture(mixed));
    const got = await sessionsOf(file);
    assert.equal(got.length, n);
    got.forEach((s, i) => {
      assert.equal(s.id, `interleaved.pcap#s${i + 1}`);
      const m = s.summary.messages[0]!;
      assert.equal(m.sender, `<sender${i}@example.test>`);
      assert.equal(m.bodySize, 3000 + i * 100);
      assert.deepEqual(s.summary.issues, []);
    });
  });

  it("the chunk size of reading changes nothing (records and lines split anywhere)", async () => {
    const segs = [0, 1, 2].flatMap((i) =>
      sessionSegments(i, mailSession(i, 2500), T0 + i * 1000, { mss: 300 })
    );
    const pcap = write("chunks.pcap", capture(segs));
    const pcapng = write(
      "chunks.pcapng",
      pcapngFile(segs.map((x) => ({ time: x.time, data: packet(x, 1) })), { little: false }),
    );
    const rec = write(
      "chunks.jsonl",
      new TextEncoder().encode(
        ["a", "b"].flatMap((id, i) =>
          mailRecording(id, {}, [{ type: "replycode", text: `55${i} 5.7.1 no` }]).slice(i ? 1 : 0)
        ).join("\n") + "\n",
      ),
    );
    for (const file of [pcap, pcapng, rec]) {
      const whole = await sessionsOf(file);
      assert.ok(whole.length >= 2);
      for (const size of [3, 17, 1000]) {
        const chunked = await sessionsOf(file, size);
        assert.deepEqual(
          chunked.map((s) => s.summary),
          whole.map((s) => s.summary),
          `${file} in chunks of ${size}`,
        );
      }
    }
  });

  it("a FIFO or pipe (no size, cannot be read twice) reads like the file itself", async () => {
    const segs = [0, 1].flatMap((i) =>
      sessionSegments(i, mailSession(i, 70_000), T0 + i * 1000, { mss: 1400 })
    );
    const pcap = write("fifo-src.pcap", capture(segs));
    const rec = write(
      "fifo-src.jsonl",
      new TextEncoder().encode(mailRecording("f", {}, []).join("\n") + "\n"),
    );
    for (const file of [pcap, rec]) {
      const fifo = join(tmp, `in-${Math.random().toString(36).slice(2)}.fifo`);
      assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
      // a real writer process, as `zcat day.pcap.gz > fifo` would be
      const writer = spawn("sh", ["-c", 'sleep 0.1; cat "$1" > "$2"', "sh", file, fifo]);
      const written = new Promise((r) => writer.once("close", r));
      const viaFifo = await sessionsOf(fifo, 4096);
      await written;
      const whole = await sessionsOf(file);
      assert.ok(whole.length >= 1);
      assert.deepEqual(viaFifo.map((s) => s.summary), whole.map((s) => s.summary), file);
    }
    const empty = join(tmp, "empty.fifo");
    assert.equal(spawnSync("mkfifo", [empty]).status, 0);
    const writer = spawn("sh", ["-c", ': > "$1"', "sh", empty]);
    const written = new Promise((r) => writer.once("close", r));
    await assert.rejects(sessionsOf(empty), /The file is empty/);
    await written;
  });

  it("the reassembler forgets a connection once it has closed", () => {
    const r = new TcpReassembler({ open() {}, data() {}, close() {} });
    let most = 0;
    let closed = 0;
    const counting = new TcpReassembler({
      open() {},
      data() {},
      close: () => void closed++,
    });
    const segs = Array.from(
      { length: 300 },
      (_, i) => sessionSegments(i, mailSession(i, 1000), T0 + i * 10),
    ).flat();
    for (const p of readCapture(capture(segs)).packets) {
      r.push(p);
      counting.push(p);
      most = Math.max(most, r.openConnections);
    }
    // sessions follow one another: this one, plus closed ones waiting a few packets for a RST
    assert.ok(most <= 4, `${most} connections tracked at once`);
    assert.ok(closed >= 298, `${closed} closed before the end of the capture`);
    r.finish();
    assert.equal(r.openConnections, 0);
  });

  it("random bytes after a valid pcap or pcapng header: exit 1, one line, no output", async () => {
    let seed = 99;
    const rnd = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
    for (let i = 0; i < 40; i++) {
      const head = i % 2 ? pcapFile([]) : pcapngFile([]);
      const bytes = new Uint8Array(head.length + 100 + i * 997);
      bytes.set(head);
      for (let k = head.length; k < bytes.length; k++) bytes[k] = rnd();
      const file = write(`garbage-${i}`, bytes);
      let err = "";
      let out = "";
      const io: CliIo = {
        stdout: (s) => void (out += s),
        stderr: (s) => void (err += s),
        isTty: false,
        env: {},
        signal: new AbortController().signal,
        stdin: () => new ReadableStream(),
      };
      assert.equal(await dumpCommand.run([file], io), 1, `input ${i}`);
      assert.equal(out, "");
      // the format error, or a note about the cut-off record and "no milter session found"
      assert.ok(err.split("\n").length <= 3, err);
      assert.match(err, new RegExp(`^milterkit dump: \\S+garbage-${i}: `));
      assert.doesNotMatch(err, /Error:|\n\s+at /);
    }
  });

  it("a pcap of nothing but empty records: no session, exit 1, one line", async () => {
    const recs = Array.from(
      { length: 20000 },
      (_, i) => ({ time: T0 + i, data: new Uint8Array(0) }),
    );
    const file = write("empty-records.pcap", pcapFile(recs));
    let err = "";
    const io: CliIo = {
      stdout: (s) => assert.fail(`unexpected output ${s}`),
      stderr: (s) => void (err += s),
      isTty: false,
      env: {},
      signal: new AbortController().signal,
      stdin: () => new ReadableStream(),
    };
    assert.equal(await dumpCommand.run([file], io), 1);
    assert.match(err, /empty-records\.pcap: no milter session found \(pcap\)\n/);
  });
});
