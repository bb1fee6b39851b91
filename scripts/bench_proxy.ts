// deno-lint-ignore-file no-console
/**
 * Proxy overhead: the same load (milterkit's MTA engine, `milterkit bench` in-process) against a
 * no-op milterkit filter (`milterkit serve scripts/bench/noop_filter.js`, Bun) directly, and
 * through `milterkit proxy` (its own process) in three set-ups: `--quiet`, `--quiet --record`,
 * and the full live view (one line per frame, to /dev/null). 1 and 32 MTA connections.
 * Reports messages/s and the median time per message, and what the proxy adds to both.
 *
 *   bun scripts/bench_proxy.ts [--seconds 5] [--proxy-runtime bun|deno]
 *   deno run -A scripts/bench_proxy.ts
 *
 * Every process runs on the same machine (2 cores here): the proxy competes with the MTA
 * engine and the filter for CPU, as it would on a mail server running all three.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { parseArgs } from "node:util";
import { benchCommand } from "../lib/cli/bench.ts";
import { fakeIo } from "../tests/helpers/fake_io.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "5" },
    "proxy-runtime": { type: "string", default: "bun" },
  },
});
const seconds = values.seconds!;
const root = new URL("..", import.meta.url).pathname;
const bin = (n: string) => `${root}node_modules/.bin/${n}`;
const cli = `${root}cli.ts`;
const runCliArgs = (runtime: string, args: string[]): [string, string[]] =>
  runtime === "deno" ? [bin("deno"), ["run", "-A", cli, ...args]] : [bin("bun"), [cli, ...args]];

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitPort(port: number): Promise<void> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")} `;
  const { readFileSync } = await import("node:fs");
  for (let i = 0; i < 500; i++) {
    const listening = readFileSync("/proc/net/tcp", "latin1").split("\n").some((l) =>
      l.includes(hex) && / 0A /.test(l)
    );
    if (listening) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`Nothing listens on ${port}`);
}

const children: ChildProcess[] = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));
function start(cmd: [string, string[]]): ChildProcess {
  const c = spawn(cmd[0], cmd[1], { stdio: ["ignore", "ignore", "ignore"] });
  children.push(c);
  return c;
}

async function load(port: number, connections: number, secs: string) {
  const io = fakeIo();
  const code = await benchCommand.run(
    ["-c", `inet:${port}@127.0.0.1`, "-n", String(connections), "-d", secs, "-m", "1000", "--json"],
    io,
  );
  if (code !== 0) throw new Error(`bench failed: ${io.err()}`);
  return JSON.parse(io.out()) as {
    messagesPerSecond: number;
    message: { p50: number; p99: number };
  };
}

interface Row {
  name: string;
  connections: number;
  mps: number;
  p50: number;
  p99: number;
}
const rows: Row[] = [];
async function measure(name: string, port: number): Promise<void> {
  for (const n of [1, 32]) {
    await load(port, n, "1"); // warm-up
    const r = await load(port, n, seconds);
    rows.push({ name, connections: n, mps: r.messagesPerSecond, ...r.message });
    console.log(
      `${name.padEnd(34)} ${String(n).padStart(3)} conn ${
        r.messagesPerSecond.toFixed(0).padStart(7)
      } msg/s  p50 ${r.message.p50.toFixed(3)} ms  p99 ${r.message.p99.toFixed(3)} ms`,
    );
  }
}

const filterPort = await freePort();
start(runCliArgs("bun", [
  "serve",
  `${root}scripts/bench/noop_filter.js`,
  "--listen",
  `inet:${filterPort}@127.0.0.1`,
  "--log-level",
  "error",
]));
await waitPort(filterPort);
await measure("direct", filterPort);

const dir = mkdtempSync(`${tmpdir()}/milterkit-bench-proxy-`);
const rt = values["proxy-runtime"]!;
const variants: [string, string[]][] = [
  [`proxy --quiet (${rt})`, ["--quiet"]],
  [`proxy --quiet --record (${rt})`, ["--quiet", "--record", `${dir}/rec.jsonl`]],
  [`proxy, live view (${rt})`, []],
];
for (const [name, extra] of variants) {
  const port = await freePort();
  const p = start(runCliArgs(rt, [
    "proxy",
    "-l",
    `inet:${port}@127.0.0.1`,
    "-u",
    `inet:${filterPort}@127.0.0.1`,
    ...extra,
  ]));
  await waitPort(port);
  await measure(name, port);
  p.kill("SIGKILL");
}
let recorded = 0;
try {
  recorded = statSync(`${dir}/rec.jsonl`).size;
} catch { /* none */ }
rmSync(dir, { recursive: true, force: true });

const direct = (n: number) => rows.find((r) => r.name === "direct" && r.connections === n)!;
const table = [
  "| set-up | MTA connections | messages/s | vs direct | p50 ms/message | added p50 | p99 ms |",
  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ...rows.map((r) => {
    const d = direct(r.connections);
    const same = r.name === "direct";
    return `| ${r.name} | ${r.connections} | ${r.mps.toFixed(0)} | ${
      same ? "" : `${((r.mps / d.mps) * 100).toFixed(0)} %`
    } | ${r.p50.toFixed(3)} | ${same ? "" : `+${(r.p50 - d.p50).toFixed(3)} ms`} | ${
      r.p99.toFixed(3)
    } |`;
  }),
];
console.log("\n" + table.join("\n"));
console.log(`\nrecording written during the --record runs: ${(recorded / 1e6).toFixed(1)} MB`);
process.exit(0);
