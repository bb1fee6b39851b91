import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { annotateStreams } from "../lib/inspect/annotate/feed.ts";
import { decodeCommand } from "../lib/wire/command_codec.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { CaptureFormatError } from "../lib/inspect/capture/pcap.ts";
import { readRecording, readSegmentLog, RecordingWriter } from "../lib/inspect/recording.ts";
import { decodeReply } from "../lib/wire/reply_codec.ts";
import type { Direction } from "../lib/wire/types.ts";

const root = new URL("./data/captures/", import.meta.url);
const read = (rel: string) => new Uint8Array(readFileSync(new URL(rel, root)));
const text = (rel: string) => new TextDecoder().decode(read(rel));

const NAME = "postfix-libmilter-actions/pcap.s0";
const log = readSegmentLog(text(`${NAME}.jsonl`));
const toFilter = read(`${NAME}.to-filter.bin`);
const toMta = read(`${NAME}.to-mta.bin`);
const T0 = 1_780_000_000_000;

/** Writes the logged session through a RecordingWriter, optionally re-chunked. */
function record(opts: { redact?: boolean; chunk?: number } = {}): string[] {
  const lines: string[] = [];
  let now = T0;
  const w = new RecordingWriter((l) => lines.push(l), {
    redact: opts.redact ?? false,
    now: () => now,
    header: { tool: "test" },
  });
  w.start("c1", { mta: "127.0.0.1:45518", filter: "127.0.0.1:9601", time: T0 });
  for (const s of log.segments) {
    const src = s.direction === "to-filter" ? toFilter : toMta;
    const bytes = src.subarray(s.offset, s.offset + s.length);
    const step = opts.chunk ?? bytes.length;
    for (let p = 0; p < bytes.length; p += step) {
      now = T0 + s.time;
      w.data("c1", s.direction, bytes.subarray(p, p + step), now);
    }
  }
  w.end("c1", { time: now + 1, reason: "quit" });
  return lines;
}

function frames(bytes: Uint8Array) {
  return new FrameDecoder().push(bytes);
}

describe("readSegmentLog()", () => {
  it("rebuilds the .bin streams from a capture's per-segment log", () => {
    assert.deepEqual(log.toFilter, toFilter);
    assert.deepEqual(log.toMta, toMta);
    assert.equal(log.segments[0]!.time, 0);
    assert.equal(log.segments[1]!.direction, "to-mta");
  });
  it("skips the eof lines of the relay's logs", () => {
    const tap = readSegmentLog(text("postfix-tap-libmilter/tap.c1.jsonl"));
    assert.deepEqual(tap.toFilter, read("postfix-tap-libmilter/tap.c1.to-filter.bin"));
  });
  it("throws CaptureFormatError naming the line for a bad line", () => {
    assert.throws(
      () => readSegmentLog('{"dir":"sideways","hex":""}\n{"dir":"to-mta","hex":"00"}\n'),
      (e) => e instanceof CaptureFormatError && e.offset === 1,
    );
  });
});

describe("RecordingWriter and readRecording() round trip", () => {
  it("writes a header line, start, data, event and end lines", () => {
    const lines = record();
    const parsed = lines.map((l) => JSON.parse(l));
    assert.deepEqual(parsed[0], {
      format: "milterkit-recording",
      version: 1,
      created: new Date(T0).toISOString(),
      redacted: false,
      tool: "test",
    });
    assert.equal(parsed[1].type, "start");
    assert.equal(parsed.at(-1).type, "end");
    const events = parsed.filter((o) => o.type === "event");
    assert.equal(events.length, frames(toFilter).length + frames(toMta).length);
    assert.match(events[0].summary, /^OPTNEG v6/);
    const eom = events.find((e) => e.summary === "EOM");
    const rb = events.find((e) => e.stage === "eom" && /^REPLBODY/.test(e.summary));
    assert.equal(rb.answers, eom.seq);
    assert.deepEqual(rb.decoded, { type: "replbody", chunk: { size: 53 } });
  });

  it("reads back both streams byte for byte, with timing and peers", () => {
    const rec = readRecording(record({ chunk: 3 }).join("\n") + "\n");
    const s = rec.sessions[0]!;
    assert.equal(rec.sessions.length, 1);
    assert.deepEqual(s.toFilter, toFilter);
    assert.deepEqual(s.toMta, toMta);
    assert.equal(s.mta, "127.0.0.1:45518");
    assert.equal(s.endReason, "quit");
    assert.equal(s.segments[0]!.time, T0);
    const summary = annotateStreams(s).summary();
    const direct = annotateStreams(log).summary();
    assert.deepEqual(summary.issues, []);
    assert.deepEqual(
      summary.messages.map((m) => m.latency),
      direct.messages.map((m) => m.latency),
    );
  });

  it("reads a recording from before the one stage vocabulary (events said mail, rcpt)", () => {
    const lines = record();
    assert.ok(lines.some((l) => l.includes('"stage":"envfrom"')), "events say envfrom now");
    const old = lines.map((l) =>
      l.replaceAll('"stage":"envfrom"', '"stage":"mail"').replaceAll(
        '"stage":"envrcpt"',
        '"stage":"rcpt"',
      )
    );
    assert.ok(old.some((l) => l.includes('"stage":"mail"')));
    const then = annotateStreams(readRecording(old.join("\n") + "\n").sessions[0]!).summary();
    const now = annotateStreams(readRecording(lines.join("\n") + "\n").sessions[0]!).summary();
    assert.deepEqual(then, now);
    const stages = Object.keys(then.messages[0]!.latency);
    assert.ok(stages.includes("envfrom") && !stages.includes("mail"), stages.join(" "));
  });

  it("loses at most the last line when the writer was killed mid-line", () => {
    const lines = record();
    const cut = lines.slice(0, -2).join("\n") + "\n" + lines.at(-2)!.slice(0, 10);
    const rec = readRecording(cut);
    assert.equal(rec.sessions[0]!.endReason, undefined);
    assert.match(rec.notes[0]!, /not complete JSON/);
    assert.ok(rec.sessions[0]!.toFilter.length > 0);
  });

  it("refuses a file that is not a recording, or a newer version", () => {
    assert.throws(() => readRecording('{"hello":1}\n'), CaptureFormatError);
    assert.throws(() => readRecording("garbage"), /line 1 is not a JSON header/);
    assert.throws(
      () => readRecording('{"format":"milterkit-recording","version":2}\n'),
      /version 2 is not supported/,
    );
  });

  it("refuses data for a session that was not started", () => {
    const w = new RecordingWriter(() => {});
    assert.throws(() => w.data("nope", "to-filter", new Uint8Array(1)), RangeError);
  });
});

describe("RecordingWriter redaction", () => {
  const secrets = [
    "MODIFYME",
    "original body line",
    "swaks v2020",
    "MODIFIED by libmilter",
    "inserted at index 0",
  ];

  for (const chunk of [undefined, 1]) {
    it(`removes header values and body bytes from data and events (chunks of ${chunk ?? "segment"} bytes)`, () => {
      const lines = record({ redact: true, ...(chunk ? { chunk } : {}) });
      const all = lines.join("\n");
      assert.equal(JSON.parse(lines[0]!).redacted, true);
      const rec = readRecording(lines);
      const s = rec.sessions[0]!;
      const raw = new TextDecoder().decode(s.toFilter) + new TextDecoder().decode(s.toMta);
      for (const secret of secrets) {
        assert.ok(!all.includes(secret), `${secret} in the lines`);
        assert.ok(!raw.includes(secret), `${secret} in the raw bytes`);
      }
      for (const [dir, bytes] of [["to-filter", s.toFilter], ["to-mta", s.toMta]] as const) {
        for (const f of frames(bytes)) {
          const d = dir === "to-filter" ? decodeCommand(f) : decodeReply(f);
          if ("value" in d) assert.equal(d.value, "");
          if (d.type === "body" || d.type === "replbody") {
            assert.ok(d.chunk.every((b) => b === 0x78));
          }
        }
      }
      // what is kept: envelope, macros, sizes, frame count, the verdict
      assert.ok(all.includes("<sender@example.test>"));
      assert.ok(all.includes("3713A16C0A7"));
      const summary = annotateStreams(s).summary();
      const m = summary.messages[0]!;
      assert.equal(m.bodySize, 48);
      assert.equal(m.headers.length, 6);
      assert.equal(m.headers[3]!.name, "Subject");
      assert.equal(m.outcome.kind, "accept");
      assert.equal(m.modifications.length, 5);
      assert.equal(frames(s.toFilter).length, frames(toFilter).length);
      assert.deepEqual(summary.issues, []);
    });
  }

  it("writes a note and stops a direction after a framing error", () => {
    const lines: string[] = [];
    const w = new RecordingWriter((l) => lines.push(l), { redact: true });
    w.start("x");
    const dir: Direction = "to-mta";
    w.data("x", dir, new TextEncoder().encode("GET / HTTP/1.1\r\n"));
    w.data("x", dir, new Uint8Array([0, 0, 0, 1, 0x63]));
    w.end("x");
    const kinds = lines.slice(1).map((l) => JSON.parse(l).type);
    assert.deepEqual(kinds, ["start", "note", "end"]);
    assert.match(JSON.parse(lines[2]!).text, /not recorded/);
  });
});
