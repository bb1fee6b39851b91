// deno-lint-ignore-file no-console
/**
 * The comparison benchmark: the same load, on the same machine, in one go, against
 *   - a no-op milterkit filter served by Bun, Deno and Node (`milterkit serve`),
 *   - a no-op libmilter C filter and a no-op pymilter filter (Debian's libmilter 8.17),
 *   - milterkit's proxy in front of the libmilter filter,
 * with 1 and 32 concurrent MTA connections (`milterkit bench`, run here in-process under Bun).
 * Also: memory per idle connection with 10,000 open connections, and peak memory while a
 * 50 MB body streams through a milterkit filter.
 *
 *   bun scripts/bench.ts [--seconds 5] [--write]      # --write updates docs/benchmarks.md
 *
 * Needs the peers (`scripts/peers/install.sh`, root) and `npm install`.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { connect as tcpConnect, createServer } from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";
import { benchCommand } from "../lib/cli/bench.ts";
import { sendCommand } from "../lib/cli/send.ts";
import { fakeIo } from "../tests/helpers/fake_io.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "5" },
    write: { type: "boolean", default: false },
    idle: { type: "string", default: "10000" },
    "body-mb": { type: "string", default: "50" },
  },
});
const seconds = values.seconds!;
const root = new URL("..", import.meta.url).pathname;
const bin = (n: string) => `${root}node_modules/.bin/${n}`;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitPort(port: number, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((r) => {
      const c = tcpConnect(port, "127.0.0.1");
      c.once("connect", () => (c.destroy(), r(true)));
      c.once("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

function rssKiB(pid: number, field = "VmRSS"): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

interface Target {
  name: string;
  start(port: number): ChildProcess;
  via?: string; // proxied targets start an upstream first
}

const noop = `${root}scripts/bench/noop_filter.js`;
const libmilterBin = execFileSync("bash", [`${root}scripts/peers/libmilter-filter.sh`, "build"])
  .toString().trim();
execFileSync(bin("bun"), [
  "build",
  "--target=node",
  `${root}cli.ts`,
  "--outfile",
  `${root}dist/milterkit.mjs`,
], {
  stdio: "ignore",
});
const quietServe = (
  port: number,
) => ["serve", noop, "--listen", `inet:${port}@127.0.0.1`, "--log-level", "error"];

const targets: Target[] = [
  { name: "milterkit (Bun)", start: (p) => spawn(bin("bun"), [`${root}cli.ts`, ...quietServe(p)]) },
  {
    name: "milterkit (Deno)",
    start: (p) => spawn(bin("deno"), ["run", "-A", `${root}cli.ts`, ...quietServe(p)]),
  },
  {
    name: "milterkit (Node)",
    start: (p) => spawn("node", [`${root}dist/milterkit.mjs`, ...quietServe(p)]),
  },
  { name: "libmilter (C)", start: (p) => spawn(libmilterBin, [`inet:${p}@127.0.0.1`, "noop"]) },
  {
    name: "pymilter",
    start: (p) => spawn("/usr/bin/python3", [`${root}scripts/bench/pymilter_noop.py`, String(p)]),
  },
];

async function runLoad(port: number, connections: number) {
  const io = fakeIo();
  const code = await benchCommand.run(
    [
      "-c",
      `inet:${port}@127.0.0.1`,
      "-n",
      String(connections),
      "-d",
      seconds,
      "-m",
      "1000",
      "--json",
    ],
    io,
  );
  if (code !== 0) throw new Error(`bench failed: ${io.err()}`);
  return JSON.parse(io.out()) as {
    messagesPerSecond: number;
    message: { p50: number; p99: number };
  };
}

const rows: { name: string; connections: number; mps: number; p50: number; p99: number }[] = [];
async function measure(name: string, port: number) {
  for (const n of [1, 32]) {
    await runLoad(port, n); // warm-up pass is the first second of a short run
    const r = await runLoad(port, n);
    rows.push({
      name,
      connections: n,
      mps: r.messagesPerSecond,
      p50: r.message.p50,
      p99: r.message.p99,
    });
    console.log(
      `${name.padEnd(28)} ${String(n).padStart(3)} conn  ${
        r.messagesPerSecond.toFixed(0).padStart(7)
      } msg/s  p50 ${r.message.p50.toFixed(2)} ms  p99 ${r.message.p99.toFixed(2)} ms`,
    );
  }
}

const children: ChildProcess[] = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));
for (const t of targets) {
  const port = await freePort();
  const child = t.start(port);
  children.push(child);
  await waitPort(port);
  await measure(t.name, port);
  child.kill("SIGKILL");
}
{
  // The proxy in front of libmilter.
  const up = await freePort();
  const lib = spawn(libmilterBin, [`inet:${up}@127.0.0.1`, "noop"]);
  children.push(lib);
  await waitPort(up);
  const port = await freePort();
  const proxy = spawn(bin("bun"), [
    `${root}cli.ts`,
    "proxy",
    "-l",
    `inet:${port}@127.0.0.1`,
    "-u",
    `inet:${up}@127.0.0.1`,
    "--quiet",
  ], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  children.push(proxy);
  await waitPort(port);
  await measure("milterkit proxy → libmilter", port);
  proxy.kill("SIGKILL");
  lib.kill("SIGKILL");
}

// Memory per idle connection: N connections that negotiated and then wait.
const idleCount = Number(values.idle);
let idleLine = "";
{
  const port = await freePort();
  const server = spawn(bin("bun"), [
    `${root}cli.ts`,
    ...quietServe(port),
    "--max-connections",
    String(idleCount + 10),
  ]);
  children.push(server);
  await waitPort(port);
  await new Promise((r) => setTimeout(r, 500));
  const before = rssKiB(server.pid!);
  const optneg = new Uint8Array([
    0,
    0,
    0,
    13,
    0x4f,
    0,
    0,
    0,
    6,
    0,
    0,
    1,
    0xff,
    0,
    0x1f,
    0xff,
    0xff,
  ]);
  const sockets: ReturnType<typeof tcpConnect>[] = [];
  let answered = 0;
  for (let i = 0; i < idleCount; i++) {
    const s = tcpConnect(port, "127.0.0.1");
    s.on("error", () => {});
    s.once("data", () => answered++);
    s.write(optneg);
    sockets.push(s);
    if (i % 500 === 499) await new Promise((r) => setTimeout(r, 20));
  }
  const end = Date.now() + 30000;
  while (answered < idleCount && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 1000));
  const after = rssKiB(server.pid!);
  idleLine = `${answered} of ${idleCount} idle negotiated connections: server RSS ${
    (before / 1024).toFixed(1)
  } → ${(after / 1024).toFixed(1)} MiB, ${
    ((after - before) / answered).toFixed(1)
  } KiB per connection (milterkit under Bun)`;
  console.log(idleLine);
  for (const s of sockets) s.destroy();
  server.kill("SIGKILL");
}

// Peak memory while a large body streams through (the filter reads the body as a stream).
let bodyLine = "";
{
  const port = await freePort();
  const server = spawn(bin("bun"), [`${root}cli.ts`, ...quietServe(port)]);
  children.push(server);
  await waitPort(port);
  await new Promise((r) => setTimeout(r, 300));
  const base = rssKiB(server.pid!);
  const mb = Number(values["body-mb"]);
  const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd\r\n";
  const file = `/tmp/milterkit-bench-${process.pid}.eml`;
  writeFileSync(
    file,
    "From: a@example.test\r\nTo: b@example.test\r\nSubject: big\r\n\r\n" +
      line.repeat(Math.ceil(mb * 1048576 / line.length)),
  );
  const io = fakeIo();
  const t = performance.now();
  const code = await sendCommand.run(["-c", `inet:${port}@127.0.0.1`, file, "--json"], io);
  const ms = performance.now() - t;
  const peak = rssKiB(server.pid!, "VmHWM");
  bodyLine =
    `${mb} MB body through a milterkit filter (Bun) in ${
      (ms / 1000).toFixed(2)
    } s (send exit ${code}): ` +
    `server RSS ${(base / 1024).toFixed(1)} MiB at rest, peak ${(peak / 1024).toFixed(1)} MiB`;
  console.log(bodyLine);
  server.kill("SIGKILL");
}

const lib = rows.filter((r) => r.name === "libmilter (C)");
const ratio = (r: (typeof rows)[number]) => {
  const base = lib.find((l) => l.connections === r.connections);
  return base ? (r.mps / base.mps).toFixed(2) : "-";
};
const cpu = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
const table = [
  `Measured ${new Date().toISOString().slice(0, 10)} on ${cpu}, ${
    (await import("node:os")).cpus().length
  } cores; ` +
  `load generator \`milterkit bench\` under Bun in this process, ${seconds} s per row after a warm-up run; ` +
  `each message is a Postfix-style transaction (connect, helo, mail, 1 rcpt, 14 headers, 4 KiB body, eom) ` +
  `against a filter that answers continue to every command.`,
  "",
  "| filter | connections | msg/s | p50 ms | p99 ms | vs libmilter |",
  "|---|---:|---:|---:|---:|---:|",
  ...rows.map((r) =>
    `| ${r.name} | ${r.connections} | ${r.mps.toFixed(0)} | ${r.p50.toFixed(2)} | ${
      r.p99.toFixed(2)
    } | ${ratio(r)} |`
  ),
  "",
  `- Memory: ${idleLine}.`,
  `- Memory: ${bodyLine}.`,
  "",
  "Reproduce: `scripts/peers/install.sh && npm install && bun scripts/bench.ts --write`.",
].join("\n");
console.log("\n" + table);
if (values.write) {
  const path = `${root}docs/benchmarks.md`;
  let doc = "";
  try {
    doc = readFileSync(path, "utf8");
  } catch { /* new file */ }
  const start = "<!-- bench.ts:start -->";
  const stop = "<!-- bench.ts:end -->";
  const section = `${start}\n## Comparison with libmilter and pymilter\n\n${table}\n${stop}`;
  doc = doc.includes(start)
    ? doc.replace(new RegExp(`${start}[\\s\\S]*${stop}`), section)
    : (doc.trimEnd() ? doc.trimEnd() + "\n\n" : "# Benchmarks\n\n") + section + "\n";
  writeFileSync(path, doc);
  console.log(`updated ${path}`);
}
process.exit(0);
