/**
 * The milter server's lifecycle and limits over real loopback sockets, for the runtime's native
 * adapter and node:net: graceful stop with sessions in flight, an impatient second stop,
 * maxConnections, idleTimeoutMs, handlerTimeoutMs, PROGRESS keep-alives and eomTimeoutMs.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Context, defineFilter } from "../lib/filter/filter.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { connect as connectSocket } from "../lib/server/net.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { ConnectionClosedError } from "../lib/wire/errors.ts";
import {
  ADAPTERS,
  added,
  CONNECT,
  memoryLog,
  openClient,
  sendOne,
  sleep,
  TIMEOUT,
  tx,
  waitFor,
  within,
} from "./helpers/server_kit.ts";

/** Waits `ms` or until the session ends (so no timer outlives a test). */
function nap(ms: number, ctx: Context): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    ctx.signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(t);
      ctx.signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** Never settles until the session ends. */
const forever = (ctx: Context) => nap(3_600_000, ctx);

/** Whether a connection attempt is refused or closed at once without a milter answer. */
async function refused(server: MilterServer): Promise<boolean> {
  try {
    const conn = await connectSocket(server.address, { timeoutMs: 5_000 });
    try {
      await MilterClient.open(conn, { commandTimeoutMs: 5_000 });
      return false;
    } catch (e) {
      assert.ok(e instanceof ConnectionClosedError, `expected ConnectionClosedError, got ${e}`);
      return true;
    }
  } catch (e) {
    assert.ok(e instanceof ConnectionClosedError, `expected ConnectionClosedError, got ${e}`);
    return true;
  }
}

for (const adapter of ADAPTERS) {
  describe(`server lifecycle over ${adapter} sockets`, () => {
    it(
      "stops gracefully: in-flight session finishes, stuck one gets the fallback",
      TIMEOUT,
      async () => {
        const log = memoryLog();
        const closes: string[] = [];
        const headers: string[] = [];
        let stuck = 0;
        const server = await listen(
          "inet:0@127.0.0.1",
          defineFilter({
            actions: ["addHeader"],
            header: (h) => void headers.push(h.value),
            async eom(ctx) {
              const subject = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
              if (subject.includes("stuck")) {
                stuck++;
                await forever(ctx);
              }
              ctx.addHeader("X-Done", subject);
            },
            close(ctx) {
              closes.push(ctx.helo ?? "");
            },
          }),
          { adapter, logger: log.logger, eomTimeoutMs: 600_000, progressIntervalMs: 0 },
        );
        let finished = false;
        void server.finished.then(() => (finished = true));
        // A: in the middle of a message when the stop begins.
        const a = await openClient(server.address);
        await a.connect(CONNECT);
        await a.helo("a.example");
        await a.mail("<alice@example.net>");
        await a.rcpt("<bob@example.com>");
        await a.data();
        await a.header("Subject", " msg A");
        // B: its eom handler never answers.
        const b = await openClient(server.address);
        const bDone = runTransaction(b, tx("stuck", { helo: "b.example" }));
        await waitFor(() => headers.some((h) => h.includes("msg A")), "A's header");
        await waitFor(() => stuck === 1, "B's EOM");
        const stopping = server.stop({ graceMs: 1_500 });
        await waitFor(() => log.records().some((r) => r.event === "stopping"), "stop to begin");
        assert.equal(await refused(server), true, "a new connection after stop() is refused");
        assert.equal(finished, false);

        await a.eoh();
        await a.body("Hello\r\n");
        const eomA = await a.eom();
        assert.equal(eomA.verdict.type, "continue");
        assert.deepEqual(eomA.modifications, [
          { type: "addheader", name: "X-Done", value: "msg A" },
        ]);
        await endSession(a);

        const rb = await within(bDone, 20_000, "B's transaction");
        assert.equal(rb.verdict.type, "tempfail", "the stuck session gets the fallback");
        await within(stopping, 20_000, "stop()");
        await within(server.finished, 1_000, "finished");
        assert.equal(server.connections, 0);
        await endSession(b);
        assert.deepEqual(closes.sort(), ["a.example", "b.example"]);
        const events = log.records().map((r) => r.event);
        assert.ok(events.includes("closing sessions at the deadline"), events.join(","));
        assert.equal(events.at(-1), "stopped");
        const ends = log.records().filter((r) => r.event === "session end");
        assert.deepEqual(ends.map((r) => r.end).sort(), ["quit", "signal"]);
      },
    );

    it("a second stop({ graceMs: 0 }) ends every session at once", TIMEOUT, async () => {
      let eoms = 0;
      const server = await listen(
        "inet:0@127.0.0.1",
        defineFilter({
          eom: async (ctx) => {
            eoms++;
            await forever(ctx);
          },
        }),
        { adapter, shutdownGraceMs: 600_000, eomTimeoutMs: 600_000, progressIntervalMs: 0 },
      );
      const clients = await Promise.all([1, 2, 3].map(() => openClient(server.address)));
      const txs = clients.map((c, i) => runTransaction(c, tx(i)));
      await waitFor(() => eoms === 3, "three EOMs");
      const first = server.stop();
      await sleep(50);
      assert.equal(server.connections, 3, "the first stop waits for the sessions");
      const second = server.stop({ graceMs: 0 });
      await within(Promise.all([first, second, server.finished]), 10_000, "both stops");
      const results = await within(Promise.all(txs), 10_000, "the transactions");
      for (const r of results) assert.equal(r.verdict.type, "tempfail");
      assert.equal(server.connections, 0);
      for (const c of clients) await endSession(c);
    });

    it(
      "closes a connection over maxConnections at once and serves the next one",
      TIMEOUT,
      async () => {
        const log = memoryLog();
        const server = await listen(
          "inet:0@127.0.0.1",
          defineFilter({ actions: ["addHeader"], eom: (ctx) => ctx.addHeader("X-Ok", "1") }),
          { adapter, maxConnections: 2, logger: log.logger },
        );
        try {
          const c1 = await openClient(server.address);
          const c2 = await openClient(server.address);
          await waitFor(() => server.connections === 2, "two sessions");
          assert.equal(await within(refused(server), 10_000, "the refused connection"), true);
          await waitFor(() => server.metrics.refused === 1, "the refusal to be counted");
          assert.equal(server.metrics.refused, 1);
          const warn = log.records().find((r) => r.event === "connection refused");
          assert.match(String(warn?.reason), /maxConnections/);
          // The two served sessions still work.
          assert.equal(added(await runTransaction(c1, tx(1)), "X-Ok"), "1");
          await endSession(c1);
          await waitFor(() => server.connections === 1, "c1 to end");
          const r3 = await sendOne(server.address, tx(3));
          assert.equal(added(r3, "X-Ok"), "1");
          assert.equal(added(await runTransaction(c2, tx(2)), "X-Ok"), "1");
          await endSession(c2);
          assert.equal(server.metrics.refused, 1);
          assert.equal(server.metrics.connections, 3);
        } finally {
          await server.stop({ graceMs: 0 });
        }
      },
    );

    it("closes a connection idle for idleTimeoutMs", TIMEOUT, async () => {
      const log = memoryLog();
      let closed = 0;
      const server = await listen(
        "inet:0@127.0.0.1",
        defineFilter({ helo: () => "continue", close: () => void closed++ }),
        { adapter, idleTimeoutMs: 150, logger: log.logger },
      );
      try {
        const client = await openClient(server.address);
        await client.connect(CONNECT);
        await waitFor(() => server.connections === 0, "the idle session to be closed", 10_000);
        await assert.rejects(client.helo("late.example"), ConnectionClosedError);
        await client.close();
        const end = log.records().find((r) => r.event === "session end");
        assert.equal(end?.end, "idle");
        assert.equal(closed, 1);
        assert.equal(server.metrics.errors.timeout, 1);
        // A busy session is not idle: 4 commands 100 ms apart outlive 150 ms in total.
        const busy = await openClient(server.address);
        await busy.connect(CONNECT);
        for (const name of ["a", "b", "c", "d"]) {
          await sleep(100);
          assert.equal((await busy.helo(name)).verdict.type, "continue");
        }
        await endSession(busy);
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });

    it(
      "answers a handler over handlerTimeoutMs with the fallback and goes on",
      TIMEOUT,
      async () => {
        const server = await listen(
          "inet:0@127.0.0.1",
          defineFilter({
            actions: ["addHeader"],
            async envrcpt(rcpt, ctx) {
              if (rcpt.address.startsWith("slow@")) await nap(5_000, ctx);
            },
            eom(ctx) {
              ctx.addHeader("X-Rcpts", ctx.recipients.map((r) => r.address).join(","));
            },
          }),
          { adapter, handlerTimeoutMs: 100, fallback: "tempfail" },
        );
        try {
          const r = await sendOne(
            server.address,
            tx(1, { rcpts: ["slow@example.com", "bob@example.com"] }),
          );
          assert.deepEqual(r.rejectedRecipients.map((x) => x.recipient), ["<slow@example.com>"]);
          assert.match(r.rejectedRecipients[0]!.reply, /^4/);
          assert.equal(r.verdict.type, "continue");
          assert.equal(added(r, "X-Rcpts"), "bob@example.com");
          assert.equal(server.metrics.errors.handler, 1);
        } finally {
          await server.stop({ graceMs: 0 });
        }
      },
    );

    it("sends PROGRESS while a slow eom handler runs, then the verdict", TIMEOUT, async () => {
      const server = await listen(
        "inet:0@127.0.0.1",
        defineFilter({
          actions: ["addHeader"],
          async eom(ctx) {
            await nap(400, ctx);
            ctx.addHeader("X-Slow", "done");
          },
        }),
        { adapter, progressIntervalMs: 50 },
      );
      try {
        const client = await openClient(server.address);
        const r = await runTransaction(client, tx(1));
        await endSession(client);
        const eom = r.replies.find((x) => x.stage === "eom");
        assert.ok(eom && eom.result.progress > 0, `PROGRESS frames: ${eom?.result.progress}`);
        assert.equal(r.verdict.type, "continue");
        assert.equal(added(r, "X-Slow"), "done");
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });

    it("answers an eom handler over eomTimeoutMs with the fallback", TIMEOUT, async () => {
      const server = await listen(
        "inet:0@127.0.0.1",
        defineFilter({
          actions: ["addHeader"],
          async eom(ctx) {
            await forever(ctx);
            ctx.addHeader("X-Never", "1");
          },
        }),
        { adapter, eomTimeoutMs: 150, handlerTimeoutMs: 10_000, fallback: "reject" },
      );
      try {
        const r = await sendOne(server.address, tx(1));
        assert.equal(r.verdict.type, "reject");
        assert.deepEqual(r.modifications, []);
        assert.equal(server.metrics.errors.handler, 1);
        // The session is still usable for the next message.
        const client = await openClient(server.address);
        const r2 = await runTransaction(client, tx(2));
        assert.equal(r2.verdict.type, "reject");
        await endSession(client);
      } finally {
        await server.stop({ graceMs: 0 });
      }
    });
  });
}
