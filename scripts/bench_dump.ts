/**
 * Dump throughput: synthesises a large pcap of milter traffic (many sessions of Postfix-like
 * traffic: macros, 12 headers, a body in 65535-byte BODY frames, EOM with modifications)
 * and reports MB/s of capture for
 * - readCapture (pcap → TCP segments),
 * - + findMilterConversations (reassembly),
 * - + annotateStreams (decode, pair, check),
 * - the whole `milterkit dump --json` and text timeline over a file on disk.
 *
 * Run: `deno run -A scripts/bench_dump.ts` or `bun scripts/bench_dump.ts`
 * (optional argument: capture size in MB, default 100).
 */
import process from "node:process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { annotateStreams } from "../lib/inspect/annotate/feed.ts";
import { dumpCommand } from "../lib/cli/dump.ts";
import { encodeCommand } from "../lib/wire/command_codec.ts";
import { readCapture } from "../lib/inspect/capture/pcap.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import { findMilterConversations } from "../lib/inspect/capture/tcp.ts";
import type { Command, Reply } from "../lib/wire/types.ts";
import { packet, pcapFile, type Rec, type Seg } from "../tests/helpers/pcap_build.ts";

const MB = 1e6;
const targetMb = Number(process.argv[2] ?? process.argv.at(-1)) || 100;
const RUNS = 3;
const MSS = 65483; // loopback MTU 65536 − IP − TCP(+options)

function runtimeName(): string {
  const v = process.versions as Record<string, string | undefined>;
  if (v.bun !== undefined) return `bun ${v.bun}`;
  if (v.deno !== undefined) return `deno ${v.deno}`;
  return `node ${process.version}`;
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** The frames of one session, in order: [direction, bytes]. */
function session(n: number, bodyBytes: number): [boolean, Uint8Array][] {
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

/** TCP segments for one session; each frame group is sent as it happens, split at the MSS. */
function segments(n: number, frames: [boolean, Uint8Array][], t0: number): Seg[] {
  const mta = "127.0.0.1";
  const sport = 20000 + (n % 40000);
  let sm = 1000 + n;
  let sf = 9000 + n;
  let t = t0;
  const segs: Seg[] = [
    { src: mta, dst: mta, sport, dport: 9601, seq: sm - 1, flags: 0x02, time: t },
    { src: mta, dst: mta, sport: 9601, dport: sport, seq: sf - 1, flags: 0x12, time: t },
  ];
  for (const [toFilter, bytes] of frames) {
    for (let p = 0; p < bytes.length; p += MSS) {
      const payload = bytes.subarray(p, p + MSS);
      t += 0.01;
      if (toFilter) {
        segs.push({ src: mta, dst: mta, sport, dport: 9601, seq: sm, time: t, payload });
        sm += payload.length;
      } else {
        segs.push({ src: mta, dst: mta, sport: 9601, dport: sport, seq: sf, time: t, payload });
        sf += payload.length;
      }
    }
  }
  segs.push({ src: mta, dst: mta, sport, dport: 9601, seq: sm, flags: 0x11, time: t + 0.01 });
  segs.push({
    src: mta,
    dst: mta,
    sport: 9601,
    dport: sport,
    seq: sf,
    flags: 0x11,
    time: t + 0.02,
  });
  return segs;
}

function build(): { bytes: Uint8Array; sessions: number } {
  const recs: Rec[] = [];
  let size = 24;
  let n = 0;
  const t0 = 1_780_000_000_000;
  while (size < targetMb * MB) {
    // bodies from 2 KB to ~400 KB, so both per-frame and per-byte costs show
    const body = 2000 + ((n * 7919) % 400_000);
    for (const s of segments(n, session(n, body), t0 + n * 50)) {
      const data = packet(s, 1);
      recs.push({ time: s.time, data });
      size += 16 + data.length;
    }
    n++;
  }
  return { bytes: pcapFile(recs), sessions: n };
}

function measure(label: string, bytes: number, fn: () => void | Promise<void>): Promise<void> {
  return (async () => {
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = performance.now();
      await fn();
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    const med = times[Math.floor(RUNS / 2)]!;
    print(
      `  ${label.padEnd(44)} ${(bytes / MB / (med / 1000)).toFixed(0).padStart(6)} MB/s  (${
        med.toFixed(0)
      } ms median of ${RUNS})`,
    );
  })();
}

const t = performance.now();
const { bytes, sessions } = build();
print(
  `${runtimeName()}: capture of ${
    (bytes.length / MB).toFixed(1)
  } MB, ${sessions} sessions (built in ${((performance.now() - t) / 1000).toFixed(1)} s)`,
);
const dir = mkdtempSync(join(tmpdir(), "milterkit-bench-"));
const file = join(dir, "bench.pcap");
writeFileSync(file, bytes);
try {
  const io = {
    stdout: () => {},
    stderr: (s: string) => void process.stderr.write(s),
    isTty: false,
    env: {},
    signal: new AbortController().signal,
    stdin: () => new ReadableStream<Uint8Array>(),
  };
  await measure("readCapture", bytes.length, () => void readCapture(bytes));
  await measure("readCapture + reassembly", bytes.length, () => {
    findMilterConversations(readCapture(bytes).packets);
  });
  await measure("readCapture + reassembly + annotate", bytes.length, () => {
    for (const c of findMilterConversations(readCapture(bytes).packets)) {
      annotateStreams(c).summary();
    }
  });
  await measure("milterkit dump --json (file on disk)", bytes.length, async () => {
    const code = await dumpCommand.run([file, "--json"], io);
    if (code !== 0) throw new Error(`dump exited ${code}`);
  });
  await measure("milterkit dump (text timeline)", bytes.length, async () => {
    await dumpCommand.run([file], io);
  });
} finally {
  rmSync(dir, { recursive: true, force: true });
}
