/**
 * `milterkit bench --connect SPEC`: a load generator acting as many MTAs at once.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { MilterClient } from "../mta/client.ts";
import { endSession, runTransaction } from "../mta/transaction.ts";
import { connect } from "../server/net.ts";
import { parseSocketSpec } from "../server/socket_spec.ts";
import { COLOR_OPTIONS, wantColor } from "./color.ts";
import type { Command } from "../wire/types.ts";
import { FINAL_REPLIES, stageOf } from "../wire/command_bits.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type BenchResult,
  histogramRows,
  renderBenchHtml,
  renderBenchText,
  round3,
  Samples,
} from "./bench_report.ts";

const USAGE = `Usage: milterkit bench --connect SPEC [options]

Load a filter as many MTAs would: open --connections connections at once, each
sending Postfix-style transactions (connect, helo, mail, rcpt, data, headers,
body, end of message), and report messages/s and latency per stage (p50, p90,
p99), measured from sending a command to the filter's final answer, with a
histogram of the per-message latency.

Options:
  -c, --connect SPEC       the filter (inet:PORT@HOST, inet:HOST:PORT, unix:PATH)
  -n, --connections N      concurrent MTA connections (default 8)
  -m, --messages N         messages per connection before it reconnects (default 100)
  -d, --duration SECONDS   how long to run (default 10)
      --total N            stop after N messages in all (default: no limit)
      --rate R             messages per second in all (default: as fast as possible)
      --message FILE       send this message (RFC 5322, .eml) instead of a generated
                           one; repeat it, or give a directory for every file in
                           it; messages are sent in turn
      --size BYTES         body size of generated messages (default 4096)
      --headers N          extra headers of generated messages (default 10)
      --recipients N       recipients per message (default 1)
      --senders N          a random sender per message out of N addresses, and
                           random recipients out of 100 local users (default:
                           one fixed sender and recipients)
      --clients N          a random client IP per connection out of N addresses
                           in 10.0.0.0/8 (default: 127.0.0.1)
      --seed N             seed of the random choices (default 1: runs repeat)
      --mta PRESET         postfix (default), postfix-2, postfix-3, postfix-4, sendmail
      --json               print the result as one JSON document (milliseconds
                           rounded to the microsecond)
      --html FILE          also write the result as a self-contained HTML page
                           with a latency histogram per stage
      --color WHEN         colour the verdicts: auto (on a terminal, unless NO_COLOR
                           is set), always, never
      --no-color           same as --color never
  -h, --help               show this help

Examples:
  milterkit bench -c inet:8890@127.0.0.1 -n 32 -d 30
  milterkit bench -c unix:/run/opendkim/opendkim.sock --rate 200 --size 20000 --json
  milterkit bench -c inet:8890@127.0.0.1 --message samples/ --senders 500 --clients 50 --html bench.html
`;

/** Reads --message arguments: files, or directories of files. */
async function readMessages(paths: readonly string[], io: CliIo): Promise<Uint8Array[]> {
  const read = io.readFile ?? (async (p: string) => new Uint8Array(await readFile(p)));
  const out: Uint8Array[] = [];
  for (const p of paths) {
    let files = [p];
    try {
      if ((await stat(p)).isDirectory()) {
        const entries = await readdir(p, { withFileTypes: true });
        files = entries.filter((e) => e.isFile()).map((e) => join(p, e.name)).sort();
        if (files.length === 0) throw new UsageError(`--message ${p}: no files in the directory`);
      }
      for (const f of files) out.push(await read(f));
    } catch (e) {
      if (e instanceof UsageError) throw e;
      const code = (e as { code?: string }).code;
      throw new UsageError(
        `--message ${p}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`,
      );
    }
  }
  return out;
}

/** A small seeded generator (xorshift32): the same seed, the same choices. */
function random(seed: number): (n: number) => number {
  let x = (seed >>> 0) || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** The stage a command's reply latency is reported under (optneg too; unknown is not timed). */
function timedStage(type: Command["type"]): string | undefined {
  if (type === "optneg") return "optneg";
  const stage = stageOf(type);
  return stage === "unknown" ? undefined : stage;
}
function makeMessage(size: number, headers: number, n: number): Uint8Array {
  const extra = Array.from(
    { length: headers },
    (_, i) => `X-Bench-${i}: value ${i} of message ${n}\r\n`,
  )
    .join("");
  const line = "The quick brown fox jumps over the lazy dog 0123456789.\r\n";
  const body = line.repeat(Math.ceil(size / line.length)).slice(0, Math.max(0, size - 2)) + "\r\n";
  return new TextEncoder().encode(
    `From: bench@example.test\r\nTo: sink@example.test\r\nSubject: bench ${n}\r\n` +
      `Message-Id: <bench-${n}@example.test>\r\n${extra}\r\n${body}`,
  );
}

/** `milterkit bench`. */
export const benchCommand: Subcommand = {
  name: "bench",
  stopsOnSignal: true,
  summary: "load a filter as many MTAs at once, report messages/s and latency per stage",
  usage: USAGE,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        connect: { type: "string", short: "c" },
        connections: { type: "string", short: "n", default: "8" },
        messages: { type: "string", short: "m", default: "100" },
        duration: { type: "string", short: "d", default: "10" },
        total: { type: "string" },
        rate: { type: "string" },
        size: { type: "string", default: "4096" },
        headers: { type: "string", default: "10" },
        recipients: { type: "string", default: "1" },
        message: { type: "string", multiple: true, default: [] },
        senders: { type: "string" },
        clients: { type: "string" },
        seed: { type: "string", default: "1" },
        html: { type: "string" },
        mta: { type: "string", default: "postfix" },
        json: { type: "boolean", default: false },
        ...COLOR_OPTIONS,
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.stdout(USAGE);
      return EXIT.OK;
    }
    if (positionals.length > 0) throw new UsageError(`Unexpected argument ${positionals[0]}`);
    const color = wantColor(io, values);
    if (!values.connect) throw new UsageError("--connect SPEC is required");
    const filterAt = parseSocketSpec(values.connect);
    const num = (name: string, v: string | undefined, min: number) => {
      if (v === undefined) return undefined;
      const n = Number(v);
      if (!Number.isFinite(n) || n < min) throw new UsageError(`--${name} needs a number ≥ ${min}`);
      return n;
    };
    const connections = Math.floor(num("connections", values.connections, 1)!);
    const perConnection = Math.floor(num("messages", values.messages, 1)!);
    const duration = num("duration", values.duration, 0.1)!;
    const total = num("total", values.total, 1);
    const rate = num("rate", values.rate, 0.1);
    const size = Math.floor(num("size", values.size, 0)!);
    const headerCount = Math.floor(num("headers", values.headers, 0)!);
    const recipientCount = Math.floor(num("recipients", values.recipients, 1)!);
    const senders = num("senders", values.senders, 1);
    const clients = num("clients", values.clients, 1);
    if (clients !== undefined && clients > 16_777_216) {
      throw new UsageError("--clients needs a number ≤ 16777216 (10.0.0.0/8)");
    }
    const pick = random(Math.floor(num("seed", values.seed, 0)!));
    const files = await readMessages(values.message, io);
    const spec = filterAt;

    const stages = new Map<string, Samples>();
    /** The envelope of message `n`: a fixed one, or random senders and recipients. */
    const envelope = (n: number) => {
      if (senders === undefined) return { from: "bench@example.test", rcpts };
      const k = pick(Math.floor(senders));
      const local = new Set<string>();
      while (local.size < Math.min(recipientCount, 100)) local.add(`user${pick(100)}@example.test`);
      return { from: `sender${k}@domain${k % 97}.example`, rcpts: [...local], n };
    };
    /** The SMTP client of a new connection: 127.0.0.1, or one of --clients addresses. */
    const client = () => {
      if (clients === undefined) {
        return { hostname: "[127.0.0.1]", family: "inet" as const, address: "127.0.0.1" };
      }
      const k = pick(Math.floor(clients));
      const address = `10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}`;
      return { hostname: `client${k}.example.test`, family: "inet" as const, address };
    };
    const perMessage = new Samples();
    const verdicts: Record<string, number> = {};
    const errors: Record<string, number> = {};
    let done = 0;
    let started = 0;
    const t0 = performance.now();
    const deadline = t0 + duration * 1000;
    /** The filter could not be reached before any message went through: stop, say why. */
    let unreachable: Error | undefined;
    const more = () =>
      performance.now() < deadline && (total === undefined || started < total) &&
      !io.signal.aborted && unreachable === undefined;
    const pace = async () => {
      if (rate === undefined) return;
      const due = t0 + (started / rate) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    };
    const rcpts = Array.from({ length: recipientCount }, (_, i) => `sink${i}@example.test`);

    let progressTimer: ReturnType<typeof setInterval> | undefined;
    if (io.isTty && !values.json) {
      progressTimer = setInterval(() => {
        const s = (performance.now() - t0) / 1000;
        io.stderr(
          `\r${done} messages, ${(done / s).toFixed(0)} msg/s, ${
            Object.values(errors).reduce((a, b) => a + b, 0)
          } errors   `,
        );
      }, 500);
    }

    const worker = async () => {
      while (more()) {
        let milter: MilterClient | undefined;
        let conn: Awaited<ReturnType<typeof connect>> | undefined;
        // Commands go one at a time: a final reply answers the last command sent.
        let last: { stage: string; t: number } | undefined;
        try {
          conn = await connect(spec, { timeoutMs: 10_000 });
          milter = await MilterClient.open(conn, {
            preset: values.mta as "postfix",
            onCommand: (c) => {
              const stage = timedStage(c.type);
              last = stage ? { stage, t: performance.now() } : undefined;
            },
            onReply: (r) => {
              if ((r.type !== "optneg" && !FINAL_REPLIES.has(r.type)) || last === undefined) return;
              let s = stages.get(last.stage);
              if (!s) stages.set(last.stage, s = new Samples());
              s.add(performance.now() - last.t);
              last = undefined;
            },
          });
          const from = client();
          for (let i = 0; i < perConnection && more(); i++) {
            await pace();
            const n = ++started;
            const { from: sender, rcpts: to } = envelope(n);
            const t = performance.now();
            const r = await runTransaction(milter!, {
              connect: { ...from, port: 40000 + (n % 20000) },
              helo: from.hostname.startsWith("[") ? "bench.example.test" : from.hostname,
              from: sender,
              rcpts: to,
              message: files.length > 0
                ? files[(n - 1) % files.length]!
                : makeMessage(size, headerCount, n),
            });
            perMessage.add(performance.now() - t);
            verdicts[r.verdict.type] = (verdicts[r.verdict.type] ?? 0) + 1;
            done++;
            if (r.verdict.scope === "session") break;
          }
          await endSession(milter);
        } catch (e) {
          const name = e instanceof Error ? e.name : "Error";
          errors[name] = (errors[name] ?? 0) + 1;
          if (conn === undefined && done === 0) unreachable ??= e as Error;
          else if (errors[name] === 1) io.stderr(`milterkit bench: ${(e as Error).message}\n`);
          await new Promise((r) => setTimeout(r, 50));
        } finally {
          await milter?.close();
          conn?.close();
        }
      }
    };
    await Promise.all(Array.from({ length: connections }, worker));
    if (progressTimer) {
      clearInterval(progressTimer);
      io.stderr("\n");
    }
    if (unreachable !== undefined) {
      io.stderr(`milterkit bench: ${unreachable.message}\n`);
      return EXIT.FAILURE;
    }
    const seconds = (performance.now() - t0) / 1000;
    const messageHistogram = perMessage.histogram();
    const result: BenchResult & { size: number; headers: number; files: number } = {
      connect: spec,
      connections,
      seconds: round3(seconds),
      messages: done,
      messagesPerSecond: Math.round((done / seconds) * 10) / 10,
      message: perMessage.quantiles(),
      stages: Object.fromEntries([...stages].map(([k, s]) => [k, s.quantiles()])),
      histogram: histogramRows(messageHistogram),
      verdicts,
      errors,
      size,
      headers: headerCount,
      files: files.length,
    };
    if (values.json) io.stdout(JSON.stringify(result, null, 2) + "\n");
    else io.stdout(renderBenchText(result, messageHistogram, color));
    if (values.html !== undefined) {
      const histograms = new Map([["message", messageHistogram]]);
      for (const [k, s] of stages) histograms.set(k, s.histogram());
      try {
        await writeFile(values.html, renderBenchHtml(result, histograms));
      } catch (e) {
        io.stderr(`milterkit bench: cannot write ${values.html}: ${(e as Error).message}\n`);
        return EXIT.FAILURE;
      }
    }
    return done > 0 && Object.keys(errors).length === 0 ? EXIT.OK : EXIT.FAILURE;
  },
};
