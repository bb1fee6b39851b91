// deno-lint-ignore-file no-console
/**
 * Memory of `milterkit serve` under Bun: RSS per idle negotiated connection with N connections
 * open at once, and the peak RSS while a large body streams through a filter.
 *
 *   bun scripts/bench_memory.ts [--idle 10000] [--body-mb 50] [--write]
 *
 * `--write` replaces the memory section of docs/benchmarks.md (between its markers).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import process from "node:process";
import { parseArgs } from "node:util";
import { sendCommand } from "../lib/cli/send.ts";
import { fakeIo } from "../tests/helpers/fake_io.ts";
import { freePort, replaceSection, waitPort } from "./bench/util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    write: { type: "boolean", default: false },
    idle: { type: "string", default: "10000" },
    "body-mb": { type: "string", default: "50" },
  },
});
const root = new URL("..", import.meta.url).pathname;
const bin = (n: string) => `${root}node_modules/.bin/${n}`;
const noop = `${root}scripts/bench/noop_filter.js`;
const quietServe = (port: number) => [
  `${root}cli.ts`,
  "serve",
  noop,
  "--listen",
  `inet:${port}@127.0.0.1`,
  "--log-level",
  "error",
];

function rssKiB(pid: number, field = "VmRSS"): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) : NaN;
}

const children: ChildProcess[] = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")));

// Memory per idle connection: N connections that negotiated and then wait.
const idleCount = Number(values.idle);
let idleLine = "";
{
  const port = await freePort();
  const server = spawn(bin("bun"), [
    ...quietServe(port),
    "--max-connections",
    String(idleCount + 10),
  ]);
  children.push(server);
  await waitPort(port);
  await new Promise((r) => setTimeout(r, 500));
  const before = rssKiB(server.pid!);
  // OPTNEG v6, every action and protocol step offered
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
  const server = spawn(bin("bun"), quietServe(port));
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
  rmSync(file, { force: true });
  const peak = rssKiB(server.pid!, "VmHWM");
  bodyLine = `${mb} MB body through a milterkit filter (Bun) in ${
    (ms / 1000).toFixed(2)
  } s (send exit ${code}): server RSS ${(base / 1024).toFixed(1)} MiB at rest, peak ${
    (peak / 1024).toFixed(1)
  } MiB`;
  console.log(bodyLine);
  server.kill("SIGKILL");
}

const text = [
  "## Memory",
  "",
  `- ${idleLine}.`,
  `- ${bodyLine}.`,
  "",
  "Reproduce: `bun scripts/bench_memory.ts --write`.",
].join("\n");
if (values.write) {
  replaceSection(`${root}docs/benchmarks.md`, "bench_memory.ts", text);
  console.log("updated docs/benchmarks.md");
}
process.exit(0);
