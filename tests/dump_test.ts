import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dumpCommand } from "../lib/cli/dump.ts";
import { type CliIo, EXIT, UsageError } from "../lib/cli/types.ts";
import { mailRecording } from "./helpers/recordings.ts";
import { conversationSegments, type LogSeg, packet, pcapngFile } from "./helpers/pcap_build.ts";

const rootUrl = new URL("./data/captures/", import.meta.url);
const root = rootUrl.pathname;
const tmp = mkdtempSync(join(tmpdir(), "milterkit-dump-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function dump(args: string[], opts: { tty?: boolean } = {}) {
  let out = "";
  let err = "";
  const io: CliIo = {
    stdout: (s) => void (out += s),
    stderr: (s) => void (err += s),
    isTty: opts.tty ?? false,
    env: {},
    signal: new AbortController().signal,
    stdin: () => new ReadableStream(),
  };
  const code = await dumpCommand.run(args, io);
  return { code, out, err };
}

// deno-lint-ignore no-explicit-any
type J = any;
async function json(args: string[]): Promise<J[]> {
  const r = await dump([...args, "--json"]);
  assert.equal(r.code, EXIT.OK, r.err);
  return r.out.trim().split("\n").map((l) => JSON.parse(l));
}

describe("milterkit dump on pcap captures", () => {
  it("postfix-libmilter-actions.pcap: 4 sessions with the README's verdicts and changes", async () => {
    const [s0, s1, s2, s3] = await json([`${root}postfix-libmilter-actions.pcap`]);
    assert.equal(s0.id, "postfix-libmilter-actions.pcap#s1");
    assert.equal(s0.filter, "127.0.0.1:9601");
    assert.equal(s0.connect.hostname, "[127.0.0.1]");
    assert.equal(s0.connect.address, "127.0.0.1");
    assert.deepEqual(s0.negotiation.filter.actionNames, [
      "ADDHDRS",
      "CHGBODY",
      "ADDRCPT",
      "CHGHDRS",
    ]);
    const m0 = s0.messages[0];
    assert.equal(s0.messages.length, 1);
    assert.equal(m0.sender, "<sender@example.test>");
    assert.deepEqual(m0.recipients.map((r: J) => r.address), ["<user@example.test>"]);
    assert.equal(m0.headers.find((h: J) => h.name === "Subject").value, "MODIFYME please");
    assert.equal(m0.bodySize, 48);
    assert.deepEqual(m0.modifications.map((x: J) => x.type), [
      "addheader",
      "chgheader",
      "insheader",
      "addrcpt",
      "replbody",
    ]);
    assert.deepEqual(m0.modifications[0], {
      type: "addheader",
      name: "X-Libmilter-Test",
      value: "yes",
    });
    assert.equal(m0.modifications[1].index, 1);
    assert.equal(m0.modifications[1].name, "Subject");
    assert.equal(m0.modifications[2].index, 0);
    assert.equal(m0.modifications[3].recipient, "<added@example.test>");
    assert.deepEqual(m0.modifications[4].chunk, { size: 53 });
    assert.equal(m0.outcome.kind, "accept");
    assert.equal(m0.outcome.reply, "continue");
    assert.equal(s1.messages[0].outcome.kind, "tempfail");
    assert.match(s1.messages[0].outcome.text, /^451 4\.7\.1 /);
    assert.equal(s2.messages[0].outcome.kind, "discard");
    assert.equal(s2.messages[0].outcome.reply, "discard");
    assert.equal(s3.messages.length, 1);
    assert.equal(s3.messages[0].sender, "<early-reject@example.test>");
    assert.equal(s3.messages[0].outcome.stage, "envfrom");
    assert.match(s3.messages[0].outcome.text, /^550 5\.7\.1 sender refused/);
    assert.deepEqual(s3.messages[0].headers, []);
    for (const s of [s0, s1, s2, s3]) {
      assert.deepEqual(s.issues, []);
      assert.equal(s.ended, "quit");
    }
  });

  it("postfix-libmilter.pcap: accept with ADDHEADER, then 550 at end of message", async () => {
    const [s0, s1] = await json([`${root}postfix-libmilter.pcap`]);
    assert.deepEqual(s0.messages[0].modifications.map((x: J) => x.type), ["addheader"]);
    assert.equal(s0.messages[0].outcome.kind, "accept");
    assert.equal(
      s1.messages[0].outcome.text,
      "550 5.7.1 Message rejected by libmilter testfilter (REJECTME)",
    );
    assert.equal(s1.messages[0].outcome.stage, "eom");
  });

  it("postfix-libmilter-multi.pcap: three transactions on one connection", async () => {
    const [s] = await json([`${root}postfix-libmilter-multi.pcap`]);
    const [a, b, c] = s.messages;
    assert.equal(s.messages.length, 3);
    assert.equal(a.outcome.kind, "accept");
    assert.equal(b.outcome.kind, "aborted");
    assert.deepEqual(b.headers, []);
    assert.deepEqual(c.senderArgs, ["size=86"]);
    assert.equal(c.recipients.length, 2);
    assert.equal(c.outcome.kind, "reject");
  });

  it("postfix-libmilter-proto2.pcap: version 2 negotiation", async () => {
    const [s] = await json([`${root}postfix-libmilter-proto2.pcap`]);
    assert.equal(s.negotiation.mta.version, 2);
    assert.equal(s.negotiation.mta.protocol, 0x7f);
    assert.equal(s.negotiation.filter.version, 2);
    assert.equal(s.negotiation.filter.protocol, 0);
    assert.deepEqual(s.messages[0].modifications.map((x: J) => x.type), ["addheader"]);
  });

  it("miltertest and sendmail captures: connect info and three sessions each", async () => {
    const mt = await json([`${root}miltertest-libmilter.pcap`]);
    assert.equal(mt.length, 3);
    assert.equal(mt[0].connect.port, 12345);
    assert.equal(mt[2].messages[0].modifications.length, 5);
    const sm = await json([`${root}sendmail-libmilter.pcap`]);
    assert.equal(sm.length, 3);
    assert.equal(sm[0].connect.hostname, "localhost");
    assert.equal(sm[1].messages[0].outcome.kind, "reject");
    assert.equal(sm[2].messages[0].modifications.length, 5);
  });

  it("every capture dumps with no checker issues (--check exits 0)", async () => {
    const pcaps = readdirSync(root).filter((f) => f.endsWith(".pcap")).map((f) => root + f);
    const r = await dump(["--check", ...pcaps]);
    assert.equal(r.code, EXIT.OK, r.out);
    // clean sessions are not listed: only the summary line
    assert.equal(r.out, "14 session(s) checked: no issues\n");
  });

  it("renders a text timeline with replies, latencies, modifications and verdicts", async () => {
    const r = await dump([`${root}postfix-libmilter-actions.pcap`, "--session", "s1"]);
    assert.equal(r.code, EXIT.OK);
    assert.match(
      r.out,
      /^== session postfix-libmilter-actions\.pcap#s1 {2}127\.0\.0\.1:\d+ -> 127\.0\.0\.1:9601/,
    );
    assert.match(
      r.out,
      /filter v6 actions=\[ADDHDRS CHGBODY ADDRCPT CHGHDRS\] protocol=\[NOUNKNOWN NODATA\]/,
    );
    assert.match(r.out, /MAIL <sender@example\.test> -> CONTINUE \(\d+\.\d+ ms\)/);
    assert.match(r.out, /<- CHGHEADER Subject\[1\] = "MODIFIED by libmilter testfilter"/);
    assert.match(r.out, /<- INSHEADER X-Libmilter-First at \[0\]/);
    assert.match(r.out, /body: 48 bytes in 1 chunk/);
    assert.match(r.out, /verdict: ACCEPT \(continue at eom\)/);
    assert.doesNotMatch(r.out, /MACRO/);
    assert.ok(!r.out.includes("\x1b["));
  });

  it("--raw shows macros and bytes; --color always paints", async () => {
    const raw = await dump([`${root}postfix-libmilter.pcap`, "--session", "s1", "--raw"]);
    assert.match(raw.out, /MACRO C j="mta\.example\.test"/);
    assert.match(raw.out, /00 00 00 06 00 00 01 ff/);
    const col = await dump([`${root}postfix-libmilter.pcap`, "--color", "always"]);
    assert.ok(col.out.includes("\x1b[32mACCEPT"));
    const auto = await dump([`${root}postfix-libmilter.pcap`], { tty: true });
    assert.ok(auto.out.includes("\x1b["));
  });

  it("reads a pcapng capture (detected by magic, not by name)", async () => {
    const log: LogSeg[] = readFileSync(`${root}postfix-libmilter/pcap.s1.jsonl`, "utf8").trim()
      .split("\n").map((l) => JSON.parse(l));
    const recs = conversationSegments(log).map((s) => ({ time: s.time, data: packet(s, 113) }));
    const file = join(tmp, "capture.bin.data");
    writeFileSync(file, pcapngFile(recs, { linkType: 113, tsresol: 9 }));
    const [s] = await json([file]);
    assert.equal(s.messages[0].outcome.kind, "reject");
  });

  it("a pcapng damaged mid-session (block length 0xfffffff0, 13, 0): what came before, a note, exit 1", async () => {
    const log: LogSeg[] = readFileSync(`${root}postfix-libmilter/pcap.s1.jsonl`, "utf8").trim()
      .split("\n").map((l) => JSON.parse(l));
    const recs = conversationSegments(log).map((s) => ({ time: s.time, data: packet(s, 113) }));
    const good = pcapngFile(recs, { linkType: 113, tsresol: 9 });
    const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
    const offsets: number[] = [];
    for (let o = 0; o + 8 <= good.length; o += dv(good).getUint32(o + 4, true)) offsets.push(o);
    const mid = offsets[Math.floor(offsets.length * 3 / 4)]!;
    for (const len of [0xfffffff0, 13, 0]) {
      const bad = good.slice();
      dv(bad).setUint32(mid + 4, len, true);
      const file = join(tmp, `damaged-${len}.pcapng`);
      writeFileSync(file, bad);
      const r = await dump([file]);
      // Before: exit 1 with the block's error alone; the session read up to there was lost.
      assert.equal(r.code, EXIT.FAILURE, r.err);
      assert.match(r.out, /MAIL|envfrom/i, "the session up to the damage is shown");
      const lines = r.err.trimEnd().split("\n");
      assert.equal(lines.length, 1, r.err);
      assert.match(lines[0]!, /note: Capture damaged: .*; the rest of the file was not read$/);
    }
  });
});

describe("milterkit dump filters", () => {
  const file = `${root}postfix-libmilter-actions.pcap`;
  it("--session picks by short or full id", async () => {
    assert.deepEqual((await json([file, "--session", "s2"])).map((s) => s.id), [
      "postfix-libmilter-actions.pcap#s2",
    ]);
    assert.equal((await json([file, "--session", "postfix-libmilter-actions.pcap#s3"])).length, 1);
  });
  it("--verdict, --from and --rcpt select sessions by their messages", async () => {
    assert.deepEqual((await json([file, "--verdict", "discard"])).map((s) => s.id.slice(-2)), [
      "s3",
    ]);
    assert.deepEqual((await json([file, "--from", "EARLY-reject@"])).map((s) => s.id.slice(-2)), [
      "s4",
    ]);
    // s4 was rejected at MAIL: no RCPT reached the filter
    assert.deepEqual(
      (await json([file, "--rcpt", "user@example.test"])).map((s) => s.id.slice(-2)),
      [
        "s1",
        "s2",
        "s3",
      ],
    );
  });
  it("exits 1 when no session matches", async () => {
    const r = await dump([file, "--rcpt", "nobody@"]);
    assert.equal(r.code, EXIT.FAILURE);
    assert.match(r.err, /no session matched/);
  });
});

describe("milterkit dump on other inputs", () => {
  it("pairs X.to-filter.bin with X.to-mta.bin, once even when both are given", async () => {
    const base = `${root}postfix-libmilter-actions/pcap.s0`;
    const one = await json([`${base}.to-filter.bin`]);
    const both = await json([`${base}.to-filter.bin`, `${base}.to-mta.bin`]);
    assert.equal(one.length, 1);
    assert.equal(both.length, 1);
    assert.equal(one[0].id, "pcap.s0");
    assert.deepEqual(one[0].notes, []);
    const [fromPcap] = await json([`${root}postfix-libmilter-actions.pcap`, "--session", "s1"]);
    const strip = (ms: J[]) => ms.map((m) => ({ ...m, latency: {}, startTime: 0, endTime: 0 }));
    assert.deepEqual(strip(one[0].messages), strip(fromPcap.messages));
  });

  it("guesses the direction of a lone stream file", async () => {
    const f = join(tmp, "lonely.dat");
    writeFileSync(f, readFileSync(`${root}postfix-libmilter/pcap.s0.to-mta.bin`));
    const [s] = await json([f]);
    assert.match(s.notes[0], /guessed filter to MTA/);
    assert.equal(s.frames.toFilter, 0);
    assert.equal(s.frames.toMta, 15);
  });

  it("reads a per-segment .jsonl log", async () => {
    const [s] = await json([`${root}postfix-tap-libmilter/tap.c2.jsonl`]);
    assert.equal(s.id, "tap.c2");
    assert.equal(s.messages[0].outcome.kind, "reject");
    assert.deepEqual(s.issues, []);
  });

  it("reads a proxy recording, and --check fails on a broken session", async () => {
    const lines = mailRecording("c7", { mta: "10.0.0.1:4000", filter: "10.0.0.2:9000" }, [
      { type: "addheader", name: "X", value: "1" },
      { type: "continue" },
    ]);
    const f = join(tmp, "rec.jsonl");
    writeFileSync(f, lines.join("\n") + "\n");
    const [s] = await json([f]);
    assert.equal(s.id, "rec.jsonl#c7");
    assert.equal(s.mta, "10.0.0.1:4000");
    const check = await dump(["--check", f, `${root}postfix-libmilter.pcap`]);
    assert.equal(check.code, EXIT.FAILURE);
    assert.match(check.out, /^rec\.jsonl#c7: 1 issue\(s\)\n {2}#\d+ modification-outside-eom: /);
    assert.doesNotMatch(check.out, /postfix-libmilter/);
    assert.match(check.out, /\n3 session\(s\) checked: 1 with 1 issue\(s\)\n$/);
  });

  it("reports an unreadable file on stderr with exit 1 and goes on with the others", async () => {
    const r = await dump([join(tmp, "missing.pcap"), `${root}postfix-libmilter.pcap`]);
    assert.equal(r.code, EXIT.FAILURE);
    assert.match(r.err, /missing\.pcap/);
    assert.match(r.out, /== session postfix-libmilter\.pcap#s1/);
  });

  it("reports a damaged capture with the offset", async () => {
    const f = join(tmp, "bad.pcap");
    writeFileSync(f, new Uint8Array([0xd4, 0xc3, 0xb2, 0xa1, 1, 2]));
    const r = await dump([f]);
    assert.equal(r.code, EXIT.FAILURE);
    assert.match(
      r.err,
      /^milterkit dump: \S+bad\.pcap: Truncated pcap file header: 6 of 24 bytes at offset 0\n$/,
    );
  });
});

/** Deterministic pseudo-random bytes (xorshift32). */
function noise(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

describe("milterkit dump refuses what is not a capture", () => {
  const pcap = readFileSync(`${root}postfix-libmilter.pcap`);
  const inputs: [string, Uint8Array | number][] = [
    ["README.md", readFileSync(new URL("../README.md", import.meta.url))],
    ["empty", new Uint8Array(0)],
    ["one-byte", new Uint8Array([0x4f])],
    ["zeros-64k", new Uint8Array(65536)],
    ["zeros-1g", 1024 ** 3],
    ["cut-3.pcap", pcap.subarray(0, 3)],
    ["json.jsonl", new TextEncoder().encode('{"hello":"world"}\n{"x":1}\n')],
    ["null.jsonl", new TextEncoder().encode("null\n")],
    ["html", new TextEncoder().encode("<!doctype html><title>x</title>")],
  ];
  for (let bit = 0; bit < 32; bit += 5) {
    const flipped = new Uint8Array(pcap);
    flipped[bit >> 3]! ^= 1 << (bit & 7);
    inputs.push([`flipped-bit-${bit}.pcap`, flipped]);
  }
  for (const [seed, size] of [[1, 1], [2, 7], [3, 100], [4, 4096], [5, 65536], [6, 300000]]) {
    inputs.push([`random-${seed}.bin`, noise(size!, seed!)]);
  }
  for (const [name, content] of inputs) {
    it(`${name}: exit 1, one line on stderr, nothing on stdout`, async () => {
      const f = join(tmp, `refuse-${name}`);
      if (typeof content === "number") {
        writeFileSync(f, "");
        truncateSync(f, content); // sparse: a gigabyte of zeros without writing one
      } else writeFileSync(f, content);
      const r = await dump([f]);
      assert.equal(r.code, EXIT.FAILURE);
      assert.equal(r.out, "");
      assert.match(r.err, /^milterkit dump: [^\n]+\n$/);
      assert.ok(r.err.startsWith(`milterkit dump: ${f}: `), r.err);
      assert.doesNotMatch(r.err, /Error:|at .*:\d+:\d+/);
      rmSync(f);
    });
  }

  it("a refused file does not stop the others", async () => {
    const f = join(tmp, "refuse-then-read");
    writeFileSync(f, noise(1000, 9));
    const r = await dump([f, `${root}postfix-libmilter.pcap`, "--json"]);
    assert.equal(r.code, EXIT.FAILURE);
    assert.equal(r.err.split("\n").length, 2);
    assert.equal(JSON.parse(r.out.split("\n")[0]!).id, "postfix-libmilter.pcap#s1");
  });

  it("skips damaged lines of a recording (null, arrays, numbers, cut JSON) with a note", async () => {
    const lines = mailRecording("c1", {}, [{ type: "replycode", text: "550 5.7.1 no" }]);
    const damaged = [lines[0]!, "null", lines[1]!, "[1,2]", "42", lines[2]!, '"text"']
      .concat(lines.slice(3), ['{"type":"data","session":"c1"'])
      .join("\n");
    const f = join(tmp, "damaged.jsonl");
    writeFileSync(f, damaged + "\n");
    const r = await dump([f, "--json"]);
    assert.equal(r.code, EXIT.OK);
    const s = JSON.parse(r.out);
    assert.equal(s.messages[0].outcome.kind, "reject");
    const notes = s.notes.join("\n");
    for (const n of [2, 4, 5, 7]) assert.match(notes, new RegExp(`Line ${n} is not a JSON object`));
    // the cut line comes after the session ended: its note goes to stderr
    assert.match(r.err, /damaged\.jsonl: note: Line \d+ is not complete JSON/);
  });
});

describe("milterkit dump usage", () => {
  it("--help prints the usage with examples", async () => {
    const r = await dump(["--help"]);
    assert.equal(r.code, EXIT.OK);
    assert.match(r.out, /^Usage: milterkit dump FILE\.\.\./);
    assert.match(r.out, /Examples:/);
  });
  it("throws UsageError without FILE or with a bad option value", async () => {
    await assert.rejects(dump([]), UsageError);
    await assert.rejects(dump(["x", "--verdict", "maybe"]), /--verdict must be one of/);
    await assert.rejects(dump(["x", "--color", "pink"]), /--color must be auto, always or never/);
  });
});
