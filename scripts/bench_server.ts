// deno-lint-ignore-file no-console
/**
 * Messages/s and per-message latency (p50/p99) of the milter server (`listen()`) with a no-op
 * filter, for each socket adapter of the running runtime (Deno: deno + node; Bun: bun + node),
 * with 1 and 32 concurrent MTA connections. Each connection sends Postfix-style transactions
 * one after another (connect once, then helo, mail, rcpt, data, ~14 headers, a 4 KiB body, end
 * of message) for the whole run; the load generator is `milterkit bench` run in this process.
 * The server runs in this process ("in-process") and in a child process of the same runtime
 * ("child"). One line per configuration, then a Markdown table.
 *
 *   deno run -A scripts/bench_server.ts [--seconds 5] [--concurrency 1,32] [--mode in-process,child]
 *   bun scripts/bench_server.ts [--adapters bun,node]
 *
 * @module
 */
import { spawn } from "node:child_process";
import process from "node:process";
import { parseArgs } from "node:util";
import type { AdapterName } from "../lib/server/adapters/types.ts";
import { benchCommand } from "../lib/cli/bench.ts";
import { runtimeAdapterName } from "../lib/server/net.ts";
import { listen } from "../lib/server/server.ts";
import { loadFilter } from "../lib/cli/script.ts";
import { fakeIo } from "../tests/helpers/fake_io.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    concurrency: { type: "string", default: "1,32" },
    mode: { type: "string", default: "in-process,child" },
    adapters: { type: "string" },
    child: { type: "string" },
  },
});

const runtime = runtimeAdapterName();
const noop = await loadFilter(new URL("./bench/noop_filter.js", import.meta.url).pathname);

if (values.child) {
  // Child mode: serve the no-op filter and print the port; stop on SIGTERM or stdin EOF.
  const server = await listen("inet:0@127.0.0.1", noop, {
    adapter: values.child as AdapterName,
  });
  const stop = () => void server.stop({ graceMs: 0 });
  process.on("SIGTERM", stop);
  process.stdin.on("end", stop).resume();
  console.log(server.address.transport === "tcp" ? server.address.port : 0);
  await server.finished;
  process.exit(0);
}

const seconds = Number(values.seconds);
const warmup = Number(values.warmup);
const levels = values.concurrency.split(",").map(Number);
const modes = values.mode.split(",");
const adapters = (values.adapters?.split(",") ??
  (runtime === "node" ? ["node"] : [runtime, "node"])) as AdapterName[];

interface Figures {
  messagesPerSecond: number;
  message: { p50: number; p99: number };
  errors: Record<string, number>;
}

async function load(spec: string, connections: number, duration: number): Promise<Figures> {
  const io = fakeIo();
  const code = await benchCommand.run([
    "--connect",
    spec,
    "--connections",
    String(connections),
    "--messages",
    "100000000",
    "--duration",
    String(duration),
    "--size",
    "4096",
    "--headers",
    "10",
    "--json",
  ], io);
  if (code !== 0) throw new Error(`bench failed (${code}): ${io.err()}`);
  return JSON.parse(io.out());
}

/** Starts the server in a child process of this runtime; resolves with its spec and a stop. */
async function childServer(adapter: AdapterName) {
  const self = new URL(import.meta.url).pathname;
  const argv = runtime === "deno"
    ? ["run", "-A", self, "--child", adapter]
    : [self, "--child", adapter];
  const proc = spawn(process.execPath, argv, { stdio: ["pipe", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("\n")) resolve(Number(out.trim()));
    });
    proc.once("exit", (c) => reject(new Error(`server child exited with ${c}`)));
  });
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  return {
    spec: `inet:${port}@127.0.0.1`,
    stop: async () => {
      proc.stdin!.end();
      await exited;
    },
  };
}

async function inProcessServer(adapter: AdapterName) {
  const server = await listen("inet:0@127.0.0.1", noop, { adapter });
  const port = server.address.transport === "tcp" ? server.address.port : 0;
  return { spec: `inet:${port}@127.0.0.1`, stop: () => server.stop({ graceMs: 0 }) };
}

const version = runtime === "deno"
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : runtime === "bun"
  ? `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `Node ${process.version}`;
const rows: string[] = [];
for (const mode of modes) {
  for (const adapter of adapters) {
    const server = mode === "child" ? await childServer(adapter) : await inProcessServer(adapter);
    try {
      for (const n of levels) {
        if (warmup > 0) await load(server.spec, n, warmup);
        const f = await load(server.spec, n, seconds);
        const errors = Object.entries(f.errors).map(([k, v]) => `${k}=${v}`).join(" ");
        console.log(
          `${version} adapter=${adapter} server=${mode} connections=${n}: ` +
            `${f.messagesPerSecond.toFixed(0)} msg/s, p50 ${f.message.p50.toFixed(3)} ms, ` +
            `p99 ${f.message.p99.toFixed(3)} ms${errors ? `, errors ${errors}` : ""}`,
        );
        rows.push(
          `| ${version} | ${adapter} | ${mode} | ${n} | ${f.messagesPerSecond.toFixed(0)} | ` +
            `${f.message.p50.toFixed(2)} | ${f.message.p99.toFixed(2)} |`,
        );
      }
    } finally {
      await server.stop();
    }
  }
}
console.log("\n| runtime | adapter | server | connections | msg/s | p50 ms | p99 ms |");
console.log("| --- | --- | --- | ---: | ---: | ---: | ---: |");
for (const r of rows) console.log(r);
