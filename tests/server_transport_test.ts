/**
 * The milter server over real loopback sockets, for the runtime's native adapter and node:net:
 * TCP on 127.0.0.1 and ::1, Unix sockets, a client in a separate process, 200 concurrent
 * sessions without cross-talk, per-connection isolation, metrics and JSON logs.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineFilter } from "../lib/filter/filter.ts";
import { Metrics } from "../lib/server/metrics.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import {
  ADAPTERS,
  added,
  cliArgs,
  memoryLog,
  message,
  ROOT,
  sendOne,
  TIMEOUT,
  tx,
  waitFor,
} from "./helpers/server_kit.ts";

/**
 * Decides on the message's own number N (`Subject: msg N`): even N gets `X-Echo: N`, odd N is
 * rejected with "550 5.7.1 odd N"; N = 13 throws.
 */
const echoFilter = defineFilter({
  actions: ["addHeader"],
  eom(ctx) {
    const subject = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
    const n = Number(/msg (\d+)/.exec(subject)?.[1]);
    if (n === 13) throw new Error("unlucky message");
    if (n % 2 === 1) return { code: 550, enhanced: "5.7.1", text: `odd ${n}` };
    ctx.addHeader("X-Echo", String(n));
    return "continue";
  },
});

/** Runs cli.ts with the running runtime; resolves with exit code and output. */
function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const [cmd, argv] = cliArgs(args);
  return new Promise((resolve) => {
    execFile(cmd, argv, { cwd: ROOT, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

for (const adapter of ADAPTERS) {
  describe(`server over ${adapter} sockets`, () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), `milterkit-server-${adapter}-`));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it("serves a transaction over TCP on 127.0.0.1", TIMEOUT, async () => {
      const server = await listen("inet:0@127.0.0.1", echoFilter, { adapter });
      try {
        assert.ok(server.address.transport === "tcp" && server.address.port > 0);
        const even = await sendOne(server.address, tx(42));
        assert.equal(even.verdict.type, "continue");
        assert.equal(added(even, "X-Echo"), "42");
        const odd = await sendOne(server.address, tx(7));
        assert.equal(odd.verdict.type, "reject");
        assert.equal(odd.verdict.reply, "550 5.7.1 odd 7");
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });

    it("serves a transaction over TCP on ::1 (inet6:0@::1)", TIMEOUT, async () => {
      const server = await listen("inet6:0@::1", echoFilter, { adapter });
      try {
        assert.ok(server.address.transport === "tcp");
        assert.equal(server.address.hostname, "::1");
        const r = await sendOne(`inet6:${server.address.port}@::1`, tx(8));
        assert.equal(added(r, "X-Echo"), "8");
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });

    it(
      "serves a Unix socket: mode 0660, stale file replaced, file removed on stop",
      TIMEOUT,
      async () => {
        const path = join(dir, "stale.sock");
        const first = await listen(`unix:${path}`, echoFilter, { adapter });
        assert.equal(statSync(path).mode & 0o777, 0o660);
        const r1 = await sendOne(`unix:${path}`, tx(2));
        assert.equal(added(r1, "X-Echo"), "2");
        await first.stop({ graceMs: 0 });
        assert.equal(existsSync(path), false, "socket file removed on stop");

        // A stale socket file (no listener behind it) is removed before listening.
        writeStaleSocket(path);
        const second = await listen(`unix:${path}`, echoFilter, { adapter });
        try {
          assert.ok(statSync(path).isSocket());
          const r2 = await sendOne(`unix:${path}`, tx(4));
          assert.equal(added(r2, "X-Echo"), "4");
        } finally {
          await second.stop({ graceMs: 0 });
        }
        assert.equal(existsSync(path), false);
      },
    );

    it("answers a client in a separate process (cli.ts send --json)", TIMEOUT, async () => {
      const server = await listen("inet:0@127.0.0.1", echoFilter, { adapter });
      try {
        assert.ok(server.address.transport === "tcp");
        const spec = `inet:${server.address.port}@127.0.0.1`;
        const eml = join(dir, "m.eml");
        writeFileSync(eml, message(10));
        const ok = await runCli(["send", "--connect", spec, eml, "--json"]);
        assert.equal(ok.code, 0, ok.stderr);
        const doc = JSON.parse(ok.stdout);
        const t = doc.transactions[0];
        assert.equal(t.verdict.type, "continue");
        assert.equal(t.delivered, true);
        assert.deepEqual(
          t.modifications.filter((m: { type: string }) => m.type === "addheader")
            .map((m: { name: string; value: string }) => [m.name, m.value.trim()]),
          [["X-Echo", "10"]],
        );
        writeFileSync(eml, message(11));
        const rejected = await runCli(["send", "--connect", spec, eml, "--json"]);
        assert.equal(rejected.code, 1, rejected.stderr);
        assert.equal(JSON.parse(rejected.stdout).transactions[0].verdict.type, "reject");
        assert.equal(server.metrics.messages, 2);
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });

    it("serves 200 concurrent connections, each decided on its own message", TIMEOUT, async () => {
      const server = await listen("inet:0@127.0.0.1", echoFilter, { adapter });
      try {
        const ns = Array.from({ length: 200 }, (_, i) => i + 100);
        const results = await Promise.all(ns.map((n) => sendOne(server.address, tx(n))));
        results.forEach((r, i) => {
          const n = ns[i]!;
          if (n % 2 === 1) {
            assert.equal(r.verdict.type, "reject", `message ${n}`);
            assert.equal(r.verdict.reply, `550 5.7.1 odd ${n}`, `message ${n} got another's reply`);
            assert.equal(r.modifications.length, 0);
          } else {
            assert.equal(r.verdict.type, "continue", `message ${n}`);
            assert.equal(added(r, "X-Echo"), String(n), `message ${n} got another's header`);
          }
        });
        await waitFor(() => server.connections === 0, "all sessions to end");
        const m = server.metrics.snapshot();
        assert.equal(m.connections, 200);
        assert.equal(m.messages, 200);
        assert.equal(m.verdicts.replycode, 100);
        assert.equal(m.active, 0);
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });

    it("isolates a handler failure to its own connection", TIMEOUT, async () => {
      const server = await listen("inet:0@127.0.0.1", echoFilter, { adapter });
      try {
        const [bad, good, good2] = await Promise.all([
          sendOne(server.address, tx(13)),
          sendOne(server.address, tx(14)),
          sendOne(server.address, tx(16)),
        ]);
        assert.equal(bad!.verdict.type, "tempfail");
        assert.equal(added(bad!, "X-Echo"), undefined);
        assert.equal(good!.verdict.type, "continue");
        assert.equal(added(good!, "X-Echo"), "14");
        assert.equal(added(good2!, "X-Echo"), "16");
        assert.equal(server.metrics.errors.handler, 1);
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });

    it(
      "counts a known workload and exposes it as Prometheus text and JSON logs",
      TIMEOUT,
      async () => {
        const log = memoryLog();
        const metrics = new Metrics();
        const server: MilterServer = await listen("inet:0@127.0.0.1", echoFilter, {
          adapter,
          logger: log.logger,
          metrics,
        });
        try {
          assert.equal(server.metrics, metrics);
          // 3 accepted (even), 2 rejected (odd), 1 handler error (13 → tempfail).
          for (const n of [2, 3, 4, 5, 6, 13]) await sendOne(server.address, tx(n));
          await waitFor(() => server.connections === 0, "sessions to end");
        } finally {
          await server.stop({ graceMs: 0 });
        }
        const s = metrics.snapshot();
        assert.equal(s.connections, 6);
        assert.equal(s.active, 0);
        assert.equal(s.refused, 0);
        assert.equal(s.messages, 6);
        assert.equal(s.verdicts.replycode, 2);
        assert.equal(s.verdicts.tempfail, 1);
        assert.equal(s.errors.handler, 1);
        assert.equal(s.handlerLatency.eom?.count, 6);
        const text = metrics.prometheus();
        assert.match(text, /^milterkit_connections_total 6$/m);
        assert.match(text, /^milterkit_connections_active 0$/m);
        assert.match(text, /^milterkit_messages_total 6$/m);
        assert.match(text, /^milterkit_verdicts_total\{verdict="replycode"\} 2$/m);
        assert.match(text, /^milterkit_verdicts_total\{verdict="tempfail"\} 1$/m);
        assert.match(text, /^milterkit_errors_total\{kind="handler"\} 1$/m);
        assert.match(text, /^milterkit_handler_seconds_count\{stage="eom"\} 6$/m);

        const records = log.records();
        assert.equal(records.length, log.lines.length);
        const events = records.map((r) => r.event);
        assert.equal(events[0], "listening");
        assert.equal(events.at(-1), "stopped");
        const ends = records.filter((r) => r.event === "session end");
        assert.equal(ends.length, 6);
        for (const e of ends) {
          assert.equal(e.end, "quit");
          assert.equal(e.messages, 1);
          assert.equal(typeof e.session, "number");
          assert.match(String(e.peer), /^inet:\d+@127\.0\.0\.1$/);
        }
        const err = records.find((r) => r.event === "session error");
        assert.ok(err, "the handler error is logged");
        assert.equal(err.kind, "handler");
        assert.equal(err.stage, "eom");
        assert.match(String(err.error), /unlucky message/);
      },
    );
  });
}

/** Leaves a Unix socket file with no listener behind it (a crashed server's leftover). */
function writeStaleSocket(path: string): void {
  const script = `require("node:net").createServer().listen(${
    JSON.stringify(path)
  }, () => process.kill(process.pid, "SIGKILL"));`;
  try {
    execFileSync("node", ["-e", script], { stdio: "ignore", timeout: 10_000 });
  } catch {
    // Killed by SIGKILL on purpose.
  }
  assert.ok(statSync(path).isSocket(), "a stale socket file exists");
}
