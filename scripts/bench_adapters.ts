/**
 * Request/response frames per second over loopback TCP for each socket adapter the running
 * runtime offers, with 1 and 32 concurrent connections. Each client sends a small SMFIC_HELO
 * frame and waits for the server's SMFIR_CONTINUE before sending the next.
 *
 *   deno run -A scripts/bench_adapters.ts [--seconds 3] [--concurrency 1,32]
 *   bun scripts/bench_adapters.ts
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { AdapterName, Connection, NetworkAdapter } from "../lib/server/adapters/types.ts";
import { encodeFrame, FrameDecoder } from "../lib/wire/frame.ts";
import { adapterFor, runtimeAdapterName } from "../lib/server/net.ts";
import { SMFIC, SMFIR } from "../lib/wire/constants.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    concurrency: { type: "string", default: "1,32" },
  },
});
const seconds = Number(values.seconds);
const levels = values.concurrency.split(",").map(Number);

const request = encodeFrame(SMFIC.HELO, new TextEncoder().encode("client.example.net\0"));
const reply = encodeFrame(SMFIR.CONTINUE);

async function serveOne(conn: Connection): Promise<void> {
  const decoder = new FrameDecoder();
  const writer = conn.writable.getWriter();
  try {
    for await (const chunk of conn.readable) {
      for (const _ of decoder.push(chunk)) await writer.write(reply);
    }
    await writer.close();
  } catch {
    // The client went away.
  } finally {
    conn.close();
  }
}

interface Clock {
  counting: boolean;
  stop: boolean;
}

/** Sends a request, waits for the reply, again until stopped; returns the counted round trips. */
async function client(conn: Connection, clock: Clock): Promise<number> {
  const decoder = new FrameDecoder();
  const writer = conn.writable.getWriter();
  const reader = conn.readable.getReader();
  let count = 0;
  while (!clock.stop) {
    await writer.write(request);
    let got = 0;
    while (got === 0) {
      const { value, done } = await reader.read();
      if (done) throw new Error("Server closed the connection");
      got = decoder.push(value).length;
    }
    if (clock.counting) count++;
  }
  writer.releaseLock();
  reader.releaseLock();
  return count;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(adapter: NetworkAdapter, concurrency: number): Promise<number> {
  const listener = await adapter.listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
  const sessions: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) sessions.push(serveOne(conn));
  })();
  const conns = await Promise.all(
    Array.from({ length: concurrency }, () => adapter.connect(listener.address)),
  );
  const clock: Clock = { counting: false, stop: false };
  const clients = conns.map((conn) => client(conn, clock));
  await sleep(300); // warm-up
  clock.counting = true;
  const t0 = performance.now();
  await sleep(seconds * 1000);
  clock.stop = true;
  const elapsed = (performance.now() - t0) / 1000;
  const counts = await Promise.all(clients);
  for (const conn of conns) conn.close();
  await listener.close();
  await accepting;
  await Promise.allSettled(sessions);
  return counts.reduce((a, b) => a + b, 0) / elapsed;
}

const runtime = runtimeAdapterName();
const names: AdapterName[] = runtime === "node" ? ["node"] : [runtime, "node"];
const version = "Deno" in globalThis
  ? `deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : "Bun" in globalThis
  ? `bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`
  : `node ${process.version}`;
process.stdout.write(`# ${version}, ${seconds} s per run, small HELO/CONTINUE round trips\n`);
for (const name of names) {
  const adapter = await adapterFor(name);
  for (const concurrency of levels) {
    const rate = await run(adapter, concurrency);
    process.stdout.write(
      `${name.padEnd(5)} concurrency=${String(concurrency).padStart(3)}  ${
        Math.round(rate).toLocaleString("en-US").padStart(9)
      } frames/s\n`,
    );
  }
}
