// deno-lint-ignore-file no-console
/**
 * Soak test (minutes long, not in CI): sends many messages through a milterkit server running in
 * a child process, over many MTA connections that reconnect now and then, checks every answer
 * against its own message (nothing lost, nothing misattributed), and prints the server's RSS
 * every few seconds: it must stay flat.
 *
 *   bun scripts/soak.ts [--messages 1000000] [--connections 32] [--per-connection 2000]
 *   deno run -A scripts/soak.ts --messages 100000 --interval 5 --json
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { defineFilter } from "../lib/filter/filter.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import type { TransactionResult } from "../lib/mta/types.ts";
import { connect as connectSocket } from "../lib/server/net.ts";
import { listen } from "../lib/server/server.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    serve: { type: "boolean", default: false },
    messages: { type: "string", default: "1000000" },
    connections: { type: "string", default: "32" },
    "per-connection": { type: "string", default: "2000" },
    interval: { type: "string", default: "5" },
    body: { type: "string", default: "2048" },
    json: { type: "boolean", default: false },
  },
});
const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";

/** The server side: every decision depends on the message's own number. */
async function serve(): Promise<void> {
  const server = await listen(
    "inet:0@127.0.0.1",
    defineFilter({
      actions: ["addHeader", "changeSender"],
      envrcpt: (rcpt) => (rcpt.address.startsWith("nobody@") ? "reject" : "continue"),
      eom(ctx) {
        const n = Number(ctx.headers.find((h) => h.name === "Subject")?.value.trim().slice(4));
        if (ctx.sender?.address !== `s${n}@example.net`) {
          return { code: 554, text: `5.3.0 Cross-talk in message ${n}` };
        }
        if (n % 7 === 0) return { code: 550, text: `5.7.1 Rejected ${n}` };
        ctx.addHeader("X-Echo", String(n));
        if (n % 5 === 0) ctx.changeSender(`<bounce-${n}@example.net>`);
        return "accept";
      },
    }),
    { maxConnections: 4096 },
  );
  const a = server.address;
  console.log(JSON.stringify({ port: a.transport === "tcp" ? a.port : 0, pid: process.pid }));
  const stop = () => void server.stop({ graceMs: 1000 }).then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  await server.finished;
}

/** The child's resident set size in MiB, from /proc. */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

function check(n: number, r: TransactionResult): string | undefined {
  if (n % 7 === 0) {
    return r.verdict.reply === `550 5.7.1 Rejected ${n}`
      ? undefined
      : `message ${n}: ${r.verdict.reply}`;
  }
  if (!r.delivered) return `message ${n} not delivered: ${r.verdict.type} ${r.verdict.reply ?? ""}`;
  const echo = r.modifications.find((m) => m.type === "addheader" && m.name === "X-Echo");
  if (!echo || echo.type !== "addheader" || echo.value !== String(n)) {
    return `message ${n}: X-Echo is ${echo && "value" in echo ? echo.value : "missing"}`;
  }
  if (r.rejectedRecipients.length !== 1) return `message ${n}: the RCPT reject was lost`;
  const sender = r.result?.envelope.sender;
  const want = n % 5 === 0 ? `<bounce-${n}@example.net>` : `<s${n}@example.net>`;
  return sender === want ? undefined : `message ${n}: sender ${sender}, expected ${want}`;
}

async function drive(): Promise<void> {
  const total = Number(values.messages);
  const connections = Number(values.connections);
  const perConnection = Number(values["per-connection"]);
  const interval = Number(values.interval) * 1000;
  const body = "x".repeat(Math.max(0, Number(values.body) - 2)) + "\r\n";
  const script = new URL(import.meta.url).pathname;
  const args = runtime === "deno" ? ["run", "-A", script, "--serve"] : [script, "--serve"];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  const first = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once("line", resolve);
    child.once("exit", (code) => reject(new Error(`The server exited with ${code}`)));
  });
  const { port, pid } = JSON.parse(first) as { port: number; pid: number };
  const address = `inet:${port}@127.0.0.1`;
  const started = performance.now();
  let next = 0;
  let done = 0;
  let reconnects = 0;
  const wrong: string[] = [];
  const samples: { s: number; messages: number; rssMiB: number }[] = [];
  const sample = () => {
    const s = { s: (performance.now() - started) / 1000, messages: done, rssMiB: rssMiB(pid) };
    samples.push(s);
    if (!values.json) {
      const rate = samples.length > 1
        ? (s.messages - samples.at(-2)!.messages) / (s.s - samples.at(-2)!.s)
        : 0;
      console.log(
        `t=${s.s.toFixed(0).padStart(4)} s  messages=${String(s.messages).padStart(8)}  ` +
          `rate=${rate.toFixed(0).padStart(6)}/s  server rss=${s.rssMiB.toFixed(1)} MiB`,
      );
    }
  };
  sample();
  const timer = setInterval(sample, interval);

  const worker = async () => {
    while (next < total) {
      const conn = await connectSocket(address, { timeoutMs: 10_000 });
      const client = await MilterClient.open(conn, { commandTimeoutMs: 30_000 });
      reconnects++;
      try {
        for (let k = 0; k < perConnection && next < total; k++) {
          const n = next++;
          const r = await runTransaction(client, {
            connect: { hostname: "c.example.net", family: "inet", address: "192.0.2.1", port: 1 },
            helo: "c.example.net",
            from: `s${n}@example.net`,
            rcpts: [`r${n}@example.com`, `nobody@example.com`],
            message: new TextEncoder().encode(
              `From: <s${n}@example.net>\r\nTo: <r${n}@example.com>\r\nSubject: msg ${n}\r\n` +
                `Message-Id: <${n}@soak>\r\n\r\n${body}`,
            ),
          });
          const problem = check(n, r);
          if (problem) wrong.push(problem);
          done++;
        }
      } finally {
        await endSession(client);
        conn.close();
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: connections }, worker));
  } finally {
    clearInterval(timer);
    sample();
    child.kill("SIGTERM");
  }
  const seconds = (performance.now() - started) / 1000;
  // Flatness: RSS once warmed up (the sample nearest 10% of the run) against the end.
  const warm = samples.find((s) => s.messages >= total * 0.1) ?? samples[0]!;
  const last = samples.at(-1)!;
  const peak = Math.max(...samples.map((s) => s.rssMiB));
  const summary = {
    runtime,
    messages: done,
    connections,
    sessions: reconnects,
    seconds: Number(seconds.toFixed(1)),
    perSecond: Math.round(done / seconds),
    wrong: wrong.length,
    rss: {
      startMiB: Number(samples[0]!.rssMiB.toFixed(1)),
      warmMiB: Number(warm.rssMiB.toFixed(1)),
      peakMiB: Number(peak.toFixed(1)),
      endMiB: Number(last.rssMiB.toFixed(1)),
      growthAfterWarmupMiB: Number((last.rssMiB - warm.rssMiB).toFixed(1)),
    },
    samples,
  };
  if (values.json) console.log(JSON.stringify(summary, null, 2));
  else {
    console.log(
      `${runtime}: ${done} messages over ${reconnects} sessions (${connections} at once) in ` +
        `${summary.seconds} s (${summary.perSecond}/s); wrong or lost: ${wrong.length}; server rss ` +
        `start ${summary.rss.startMiB} MiB, after warm-up ${summary.rss.warmMiB}, peak ` +
        `${summary.rss.peakMiB}, end ${summary.rss.endMiB} (${summary.rss.growthAfterWarmupMiB} MiB ` +
        `after warm-up)`,
    );
    for (const w of wrong.slice(0, 10)) console.log(`  ${w}`);
  }
  process.exitCode = wrong.length > 0 || done !== total ? 1 : 0;
}

if (values.serve) await serve();
else await drive();
