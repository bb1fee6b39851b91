// deno-lint-ignore-file no-console
/**
 * Sessions per second of the filter engine driven by the MTA engine over in-memory streams
 * (no sockets): each session negotiates, sends one Postfix-style transaction (connect, helo,
 * mail, 2 rcpt, 10 headers, a body, eom with one added header) and quits.
 *
 *   deno run -A scripts/bench_engine.ts [--seconds 5] [--body 4096] [--parallel 1]
 *   bun scripts/bench_engine.ts
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { defineFilter } from "../lib/filter/filter.ts";
import { serveConnection } from "../lib/filter/session.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { duplexPair } from "../lib/testing/mod.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "5" },
    body: { type: "string", default: "4096" },
    parallel: { type: "string", default: "1" },
  },
});
const seconds = Number(values.seconds);
const parallel = Number(values.parallel);
const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";

const filter = defineFilter({
  actions: ["addHeader"],
  header() {},
  eom: (ctx) => ctx.addHeader("X-Bench", String(ctx.headers.length)),
});
const headers = Array.from({ length: 10 }, (_, i) => `X-H${i}: value ${i}\r\n`).join("");
const message = new TextEncoder().encode(
  `From: a@example.com\r\nTo: b@example.com\r\nSubject: bench\r\n${headers}\r\n` +
    "x".repeat(Number(values.body) - 2) + "\r\n",
);

async function session(): Promise<void> {
  const [mta, filterSide] = duplexPair();
  const served = serveConnection(filterSide, filter);
  const client = await MilterClient.open(mta);
  const r = await runTransaction(client, {
    connect: { hostname: "[192.0.2.1]", family: "inet", address: "192.0.2.1", port: 4000 },
    helo: "client.example",
    from: "a@example.com",
    rcpts: ["b@example.com", "c@example.com"],
    message,
  });
  if (r.modifications.length !== 1) throw new Error("unexpected result");
  await endSession(client);
  await served;
}

// Warm-up, then measure.
for (let i = 0; i < 200; i++) await session();
const latencies: number[] = [];
const end = performance.now() + seconds * 1000;
let count = 0;
await Promise.all(Array.from({ length: parallel }, async () => {
  while (performance.now() < end) {
    const t = performance.now();
    await session();
    latencies.push(performance.now() - t);
    count++;
  }
}));
latencies.sort((a, b) => a - b);
const q = (p: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!;
console.log(
  `${runtime} engine: ${
    (count / seconds).toFixed(0)
  } sessions/s (parallel ${parallel}, body ${values.body} B), ` +
    `p50 ${q(0.5).toFixed(3)} ms, p99 ${q(0.99).toFixed(3)} ms`,
);
