/**
 * Dump scaling: time and peak memory of `milterkit dump --json` (a child process of the same
 * runtime, its peak RSS read from /proc) over generated captures that used to be slow or
 * greedy:
 * - one long session cut into 100-byte segments, (a) every other pair swapped (many brief
 *   gaps) and (b) every 40th segment lost (many real gaps), at 1.7 / 3.4 / 6.8 / 13.6 MB;
 * - contiguous captures of many sessions at 50 / 100 / 200 MB (memory should stay flat);
 * - a 256 MiB pcap of empty records and 1 GiB of zeros (refused or empty, quickly).
 * Linear time shows as a constant MB/s down each group; bounded memory as a flat RSS.
 *
 * Run: `deno run -A scripts/bench_dump_scaling.ts` or `bun scripts/bench_dump_scaling.ts`
 * (Linux: peak RSS comes from /proc/PID/status).
 */
import process from "node:process";
import { spawn } from "node:child_process";
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  mailSession,
  packet,
  pcapFile,
  type SegmentOptions,
  sessionSegments,
} from "../tests/helpers/pcap_build.ts";

const MB = 1e6;
const T0 = 1_780_000_000_000;
const dir = mkdtempSync(join(tmpdir(), "milterkit-bench-scaling-"));
const cli = new URL("../cli.ts", import.meta.url).pathname;
const isDeno = (process.versions as Record<string, string | undefined>).deno !== undefined;

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Writes a pcap piece by piece: `pieces` yields the record bytes of one session at a time. */
function writePcap(file: string, pieces: Iterable<Uint8Array>): number {
  const fd = openSync(file, "w");
  let size = 0;
  try {
    let first = true;
    for (const p of pieces) {
      const body = first ? p : p.subarray(24); // each piece is a whole pcap: keep one header
      first = false;
      writeSync(fd, body);
      size += body.length;
    }
  } finally {
    closeSync(fd);
  }
  return size;
}

function gappy(file: string, mb: number, opts: SegmentOptions): number {
  // one session whose body makes the capture about `mb` MB (100-byte segments: ~1.7x overhead)
  const body = Math.round((mb * MB) / 1.73);
  const segs = sessionSegments(0, mailSession(0, body), T0, { mss: 100, ...opts });
  return writePcap(file, [pcapFile(segs.map((s) => ({ time: s.time, data: packet(s, 1) })))]);
}

function* contiguous(mb: number): Generator<Uint8Array> {
  let size = 0;
  for (let n = 0; size < mb * MB; n++) {
    const segs = sessionSegments(n, mailSession(n, 2000 + ((n * 7919) % 400_000)), T0 + n * 50);
    const p = pcapFile(segs.map((s) => ({ time: s.time, data: packet(s, 1) })));
    size += p.length;
    yield p;
  }
}

function* emptyRecords(bytes: number): Generator<Uint8Array> {
  yield pcapFile([]);
  const block = new Uint8Array(16 * 65536); // 65536 records with no captured bytes
  const dv = new DataView(block.buffer);
  for (let i = 0; i < 65536; i++) dv.setUint32(i * 16, 1_780_000_000 + i, true);
  for (let left = bytes; left > 0; left -= block.length) {
    yield new Uint8Array([
      ...new Uint8Array(24),
      ...block.subarray(0, Math.min(left, block.length)),
    ]);
  }
}

/** Runs dump on `file`; returns wall time, peak RSS and exit code. */
function run(file: string): Promise<{ ms: number; rss: number; code: number }> {
  const args = isDeno ? ["run", "-A", cli, "dump", file, "--json"] : [cli, "dump", file, "--json"];
  const t = performance.now();
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "ignore"] });
  let rss = 0;
  const poll = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
      if (m) rss = Math.max(rss, Number(m[1]) * 1024);
    } catch {
      // exited
    }
  }, 5);
  return new Promise((resolve) => {
    child.on("exit", (code) => {
      clearInterval(poll);
      resolve({ ms: performance.now() - t, rss, code: code ?? -1 });
    });
  });
}

async function row(label: string, file: string, size: number): Promise<void> {
  const r = await run(file);
  print(
    `  ${label.padEnd(34)} ${(size / MB).toFixed(1).padStart(7)} MB ${
      (r.ms / 1000).toFixed(2).padStart(7)
    } s ${(size / MB / (r.ms / 1000)).toFixed(1).padStart(7)} MB/s ${
      (r.rss / 1024 / 1024).toFixed(0).padStart(6)
    } MiB peak RSS  exit ${r.code}`,
  );
}

const v = process.versions as Record<string, string | undefined>;
print(`milterkit dump --json, ${v.deno ? `deno ${v.deno}` : v.bun ? `bun ${v.bun}` : "node"}`);
try {
  for (
    const [name, opts] of [["pairs swapped", { swap: true }], ["every 40th lost", {
      dropEvery: 40,
    }]] as const
  ) {
    print(`gappy single session, 100-byte segments, ${name}:`);
    for (const mb of [1.7, 3.4, 6.8, 13.6, 27.2]) {
      const f = join(dir, `gappy-${mb}.pcap`);
      await row(`${mb} MB`, f, gappy(f, mb, opts));
      rmSync(f);
    }
  }
  print("contiguous captures of many sessions:");
  for (const mb of [50, 100, 200]) {
    const f = join(dir, `big-${mb}.pcap`);
    await row(`${mb} MB`, f, writePcap(f, contiguous(mb)));
    rmSync(f);
  }
  print("not captures, or nothing in them:");
  const empty = join(dir, "empty-records.pcap");
  await row(
    "256 MiB pcap of empty records",
    empty,
    writePcap(empty, emptyRecords(256 * 1024 ** 2)),
  );
  rmSync(empty);
  const zeros = join(dir, "zeros");
  writeSync(openSync(zeros, "w"), new Uint8Array(0));
  truncateSync(zeros, 1024 ** 3);
  await row("1 GiB of zeros", zeros, 1024 ** 3);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
