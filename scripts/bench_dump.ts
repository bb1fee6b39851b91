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
import { readCapture } from "../lib/inspect/capture/pcap.ts";
import { findMilterConversations } from "../lib/inspect/capture/tcp.ts";
import {
  mailSession,
  packet,
  pcapFile,
  type Rec,
  sessionSegments,
} from "../tests/helpers/pcap_build.ts";

const MB = 1e6;
const targetMb = Number(process.argv[2] ?? process.argv.at(-1)) || 100;
const RUNS = 3;

function runtimeName(): string {
  const v = process.versions as Record<string, string | undefined>;
  if (v.bun !== undefined) return `bun ${v.bun}`;
  if (v.deno !== undefined) return `deno ${v.deno}`;
  return `node ${process.version}`;
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

function build(): { bytes: Uint8Array; sessions: number } {
  const recs: Rec[] = [];
  let size = 24;
  let n = 0;
  const t0 = 1_780_000_000_000;
  while (size < targetMb * MB) {
    // bodies from 2 KB to ~400 KB, so both per-frame and per-byte costs show
    const body = 2000 + ((n * 7919) % 400_000);
    for (const s of sessionSegments(n, mailSession(n, body), t0 + n * 50)) {
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
