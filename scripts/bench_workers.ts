// deno-lint-ignore-file no-console
/**
 * Scaling with `serve --workers`: the no-op filter (scripts/bench/noop_filter.js) served by 1 and
 * by 2 worker processes, under Bun and Deno, loaded by the C load generator (`mload`, built from
 * ../shared/tools/mload.c or `--mload PATH`) with 32 connections; rounds interleaved, medians.
 * CPU per message is summed over every worker process, read from /proc before and after each
 * run (mload's `-p` counts only its first PID).
 *
 *   bun scripts/bench_workers.ts [--rounds 3] [--seconds 10] [--connections 32] [--write]
 *
 * `--write` replaces the `bench_workers.ts` section of docs/benchmarks.md with the table.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { promisify } from "node:util";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { freePort, replaceSection, waitPort } from "./bench/util.ts";

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "3" },
    seconds: { type: "string", default: "10" },
    warmup: { type: "string", default: "2" },
    connections: { type: "string", default: "32" },
    workers: { type: "string", default: "1,2" },
    runtimes: { type: "string", default: "bun,deno" },
    mload: { type: "string" },
    write: { type: "boolean", default: false },
  },
});

const root = new URL("../", import.meta.url).pathname;
const work = mkdtempSync(join(tmpdir(), "bench-workers-"));
let mload = values.mload;
if (!mload) {
  const src = join(root, "../shared/tools/mload.c");
  if (!existsSync(src)) {
    console.error(`bench_workers: ${src} is missing; pass --mload PATH`);
    process.exit(2);
  }
  mload = join(work, "mload");
  execFileSync("cc", ["-O2", "-o", mload, src]);
}
const bin = (name: string) => join(root, "node_modules/.bin", name);
const runtimes: Record<string, string[]> = {
  bun: [bin("bun"), join(root, "cli.ts")],
  deno: [bin("deno"), "run", "-A", join(root, "cli.ts")],
};

const children: ChildProcess[] = [];
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
});

interface Target {
  key: string;
  runtime: string;
  workers: number;
  port: number;
  pids: number[];
}

async function start(runtime: string, workers: number): Promise<Target> {
  const port = await freePort();
  const [cmd, ...pre] = runtimes[runtime]!;
  const child = spawn(cmd!, [
    ...pre,
    "serve",
    join(root, "scripts/bench/noop_filter.js"),
    "--listen",
    `inet:${port}@127.0.0.1`,
    "--workers",
    String(workers),
    "--log-format",
    "json",
    "--log-level",
    "warn",
  ], { stdio: "ignore" });
  children.push(child);
  await waitPort(port);
  // The workers are the supervisor's children.
  let pids: number[] = [child.pid!];
  while (workers > 1 && pids.length < workers) {
    await new Promise((r) => setTimeout(r, 50));
    pids = execFileSync("pgrep", ["-P", String(child.pid)], { encoding: "utf8" }).trim().split("\n")
      .filter(Boolean).map(Number);
  }
  return { key: `${runtime} ×${workers}`, runtime, workers, port, pids };
}

/** User + system CPU seconds of processes, from /proc (clock ticks of 1/100 s). */
function cpuOf(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      total += (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      // Gone.
    }
  }
  return total;
}

interface Result {
  "msg_per_s": number;
  "p50_ms": number;
  "p99_ms": number;
  "filter_cpu_us_per_msg": number;
}

const targets: Target[] = [];
for (const runtime of values.runtimes!.split(",")) {
  for (const w of values.workers!.split(",").map(Number)) targets.push(await start(runtime, w));
}
const results = new Map<string, Result[]>();
for (let round = 1; round <= Number(values.rounds); round++) {
  for (const t of targets) {
    const run = promisify(execFile)(mload!, [
      "-c",
      values.connections!,
      "-d",
      values.seconds!,
      "-w",
      values.warmup!,
      "-j",
      `127.0.0.1:${t.port}`,
    ], { encoding: "utf8" });
    // Worker CPU over the measured part of the run (after mload's warm-up), per message.
    await new Promise((r) => setTimeout(r, 1000 * Number(values.warmup)));
    const cpu0 = cpuOf(t.pids);
    const r = JSON.parse((await run).stdout) as Result & { messages: number };
    r.filter_cpu_us_per_msg = (cpuOf(t.pids) - cpu0) * 1e6 / Math.max(1, r.messages);
    results.set(t.key, [...(results.get(t.key) ?? []), r]);
    console.log(
      `round ${round} ${t.key.padEnd(8)} ${r.msg_per_s.toFixed(0).padStart(6)} msg/s  p50 ${
        r.p50_ms.toFixed(2)
      } ms  p99 ${r.p99_ms.toFixed(2)} ms  cpu ${r.filter_cpu_us_per_msg.toFixed(0)} µs/msg`,
    );
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rows = targets.map((t) => {
  const rs = results.get(t.key)!;
  const m = (f: (r: Result) => number) => median(rs.map(f));
  const one = targets.find((x) => x.runtime === t.runtime && x.workers === 1);
  const base = one ? median(results.get(one.key)!.map((r) => r.msg_per_s)) : undefined;
  const ratio = base ? ` (${(m((r) => r.msg_per_s) / base).toFixed(2)}×)` : "";
  return `| ${t.runtime} | ${t.workers} | ${m((r) => r.msg_per_s).toFixed(0)}${ratio} | ${
    m((r) => r.p50_ms).toFixed(2)
  } | ${m((r) => r.p99_ms).toFixed(2)} | ${m((r) => r.filter_cpu_us_per_msg).toFixed(0)} |`;
});
const table = [
  `\`bun scripts/bench_workers.ts\`: mload, ${values.connections} connections, ${values.seconds} s ` +
  `after ${values.warmup} s warm-up, ${values.rounds} interleaved rounds, medians; ` +
  `${new Date().toISOString().slice(0, 10)}, ${navigator.hardwareConcurrency} cores.`,
  "",
  "| runtime | workers | msg/s | p50 ms | p99 ms | filter CPU µs/msg (all workers) |",
  "| ------- | ------: | ----: | -----: | -----: | ------------------------------: |",
  ...rows,
].join("\n");
console.log("\n" + table);
if (values.write) replaceSection(join(root, "docs/benchmarks.md"), "bench_workers.ts", table);
process.exit(0);
