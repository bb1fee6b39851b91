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
import { paint, verdictColor } from "../server/colors.ts";
import { COLOR_OPTIONS, wantColor } from "./color.ts";
import type { Command } from "../wire/types.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";

const USAGE = `Usage: milterkit bench --connect SPEC [options]

Load a filter as many MTAs would: open --connections connections at once, each
sending Postfix-style transactions (connect, helo, mail, rcpt, data, headers,
body, end of message), and report messages/s and latency per stage (p50, p90,
p99), measured from sending a command to the filter's final answer.

Options:
  -c, --connect SPEC       the filter (inet:PORT@HOST, inet:HOST:PORT, unix:PATH)
  -n, --connections N      concurrent MTA connections (default 8)
  -m, --messages N         messages per connection before it reconnects (default 100)
  -d, --duration SECONDS   how long to run (default 10)
      --total N            stop after N messages in all (default: no limit)
      --rate R             messages per second in all (default: as fast as possible)
      --size BYTES         body size (default 4096)
      --headers N          extra headers per message (default 10)
      --recipients N       recipients per message (default 1)
      --mta PRESET         postfix (default), postfix-2, postfix-3, postfix-4, sendmail
      --json               print the result as one JSON document
      --color WHEN         colour the verdicts: auto (on a terminal, unless NO_COLOR
                           is set), always, never
      --no-color           same as --color never
  -h, --help               show this help

Examples:
  milterkit bench -c inet:8890@127.0.0.1 -n 32 -d 30
  milterkit bench -c unix:/run/opendkim/opendkim.sock --rate 200 --size 20000 --json
`;

/** Latency samples of one stage, in milliseconds. */
class Samples {
  readonly values: number[] = [];
  add(ms: number): void {
    this.values.push(ms);
  }
  quantiles(): { count: number; p50: number; p90: number; p99: number; max: number } {
    const v = this.values.sort((a, b) => a - b);
    const q = (p: number) => v.length ? v[Math.min(v.length - 1, Math.floor(p * v.length))]! : 0;
    return { count: v.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: v.at(-1) ?? 0 };
  }
}

const STAGE_OF: Readonly<Partial<Record<Command["type"], string>>> = {
  optneg: "optneg",
  connect: "connect",
  helo: "helo",
  mail: "mail",
  rcpt: "rcpt",
  data: "data",
  header: "header",
  eoh: "eoh",
  body: "body",
  eom: "eom",
};
const FINAL = new Set([
  "continue",
  "accept",
  "reject",
  "tempfail",
  "discard",
  "replycode",
  "skip",
  "optneg",
]);

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
    const spec = filterAt;

    const stages = new Map<string, Samples>();
    const perMessage = new Samples();
    const verdicts: Record<string, number> = {};
    const errors: Record<string, number> = {};
    let done = 0;
    let started = 0;
    const t0 = performance.now();
    const deadline = t0 + duration * 1000;
    const more = () =>
      performance.now() < deadline && (total === undefined || started < total) &&
      !io.signal.aborted;
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
        let client: MilterClient | undefined;
        let conn: Awaited<ReturnType<typeof connect>> | undefined;
        // Commands go one at a time: a final reply answers the last command sent.
        let last: { stage: string; t: number } | undefined;
        try {
          conn = await connect(spec, { timeoutMs: 10_000 });
          client = await MilterClient.open(conn, {
            preset: values.mta as "postfix",
            onCommand: (c) => {
              const stage = STAGE_OF[c.type];
              last = stage ? { stage, t: performance.now() } : undefined;
            },
            onReply: (r) => {
              if (!FINAL.has(r.type) || last === undefined) return;
              let s = stages.get(last.stage);
              if (!s) stages.set(last.stage, s = new Samples());
              s.add(performance.now() - last.t);
              last = undefined;
            },
          });
          for (let i = 0; i < perConnection && more(); i++) {
            await pace();
            const n = ++started;
            const t = performance.now();
            const r = await runTransaction(client, {
              connect: {
                hostname: "[127.0.0.1]",
                family: "inet",
                address: "127.0.0.1",
                port: 40000 + (n % 20000),
              },
              helo: "bench.example.test",
              from: "bench@example.test",
              rcpts,
              message: makeMessage(size, headerCount, n),
            });
            perMessage.add(performance.now() - t);
            verdicts[r.verdict.type] = (verdicts[r.verdict.type] ?? 0) + 1;
            done++;
            if (r.verdict.scope === "session") break;
          }
          await endSession(client);
        } catch (e) {
          const name = e instanceof Error ? e.name : "Error";
          errors[name] = (errors[name] ?? 0) + 1;
          if (errors[name] === 1) io.stderr(`bench: ${name}: ${(e as Error).message}\n`);
          await new Promise((r) => setTimeout(r, 50));
        } finally {
          await client?.close();
          conn?.close();
        }
      }
    };
    await Promise.all(Array.from({ length: connections }, worker));
    if (progressTimer) {
      clearInterval(progressTimer);
      io.stderr("\n");
    }
    const seconds = (performance.now() - t0) / 1000;
    const result = {
      connect: spec,
      connections,
      seconds: Number(seconds.toFixed(3)),
      messages: done,
      messagesPerSecond: Number((done / seconds).toFixed(1)),
      message: perMessage.quantiles(),
      stages: Object.fromEntries([...stages].map(([k, s]) => [k, s.quantiles()])),
      verdicts,
      errors,
      size,
      headers: headerCount,
    };
    if (values.json) io.stdout(JSON.stringify(result, null, 2) + "\n");
    else {
      const f = (x: number) => x.toFixed(2).padStart(8);
      const lines = [
        `${done} messages in ${
          seconds.toFixed(1)
        } s over ${connections} connections: ${result.messagesPerSecond} msg/s`,
        `verdicts: ${
          Object.entries(verdicts).map(([k, v]) => `${paint(verdictColor(k), k, color)} ${v}`).join(
            ", ",
          ) || "none"
        }` +
        (Object.keys(errors).length
          ? `; errors: ${Object.entries(errors).map(([k, v]) => `${k} ${v}`).join(", ")}`
          : ""),
        `latency ms      count      p50      p90      p99      max`,
        ...[["message", result.message] as const, ...Object.entries(result.stages)].map(([k, q]) =>
          `${k.padEnd(10)} ${String(q.count).padStart(9)} ${f(q.p50)} ${f(q.p90)} ${f(q.p99)} ${
            f(q.max)
          }`
        ),
      ];
      io.stdout(lines.join("\n") + "\n");
    }
    return done > 0 && Object.keys(errors).length === 0 ? EXIT.OK : EXIT.FAILURE;
  },
};
