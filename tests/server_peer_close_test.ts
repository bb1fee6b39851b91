/**
 * An MTA that goes away at every stage of a session (after OPTNEG, after CONNECT, mid-MAIL,
 * mid-headers, mid-body, mid-EOM with a slow handler), over real loopback sockets with the
 * runtime's native adapter and node:net: the server logs the session end, runs the abort and
 * close handlers, nothing hangs, and a healthy session served at the same time is unaffected.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Context, defineFilter } from "../lib/filter/filter.ts";
import { endSession } from "../lib/mta/transaction.ts";
import { connect as connectSocket } from "../lib/server/net.ts";
import { listen } from "../lib/server/server.ts";
import { RawMta } from "./helpers/raw_mta.ts";
import {
  ADAPTERS,
  added,
  gate,
  memoryLog,
  openClient,
  runTransactionIn,
  sleep,
  TIMEOUT,
  tx,
  waitFor,
  within,
} from "./helpers/server_kit.ts";

const enc = new TextEncoder();

interface Stage {
  readonly name: string;
  /** Whether a message is open when the MTA leaves (so the abort handler must run). */
  readonly inMessage: boolean;
  /** Drives the victim session up to the point where it closes. */
  drive(mta: RawMta): Promise<void>;
}

const connect = {
  type: "connect",
  hostname: "victim",
  family: "inet",
  address: "192.0.2.9",
  port: 1,
} as const;

async function toMail(mta: RawMta): Promise<void> {
  assert.equal((await mta.ask(connect))?.type, "continue");
  assert.equal((await mta.ask({ type: "helo", name: "victim.example" }))?.type, "continue");
}

async function toHeaders(mta: RawMta): Promise<void> {
  await toMail(mta);
  assert.equal((await mta.ask({ type: "mail", sender: "<a@victim>", args: [] }))?.type, "continue");
  assert.equal((await mta.ask({ type: "rcpt", recipient: "<b@x>", args: [] }))?.type, "continue");
  assert.equal((await mta.ask({ type: "data" }))?.type, "continue");
  assert.equal(
    (await mta.ask({ type: "header", name: "Subject", value: " slow" }))?.type,
    "continue",
  );
}

const STAGES: readonly Stage[] = [
  { name: "after OPTNEG", inMessage: false, drive: async () => {} },
  {
    name: "after CONNECT",
    inMessage: false,
    drive: async (mta) => void assert.equal((await mta.ask(connect))?.type, "continue"),
  },
  {
    name: "mid-MAIL (envfrom handler running)",
    inMessage: true,
    drive: async (mta) => {
      await toMail(mta);
      await mta.send({ type: "mail", sender: "<slow@victim>", args: [] });
    },
  },
  {
    name: "mid-headers",
    inMessage: true,
    drive: async (mta) => {
      await toHeaders(mta);
      await mta.send({ type: "header", name: "To", value: " <b@x>" });
    },
  },
  {
    name: "mid-body",
    inMessage: true,
    drive: async (mta) => {
      await toHeaders(mta);
      assert.equal((await mta.ask({ type: "eoh" }))?.type, "continue");
      assert.equal(
        (await mta.ask({ type: "body", chunk: enc.encode("part 1\r\n") }))?.type,
        "continue",
      );
      await mta.send({ type: "body", chunk: enc.encode("part 2\r\n") });
    },
  },
  {
    name: "mid-EOM (slow eom handler)",
    inMessage: false,
    drive: async (mta) => {
      await toHeaders(mta);
      assert.equal((await mta.ask({ type: "eoh" }))?.type, "continue");
      await mta.send({ type: "eom" });
      await sleep(30);
    },
  },
];

for (const adapter of ADAPTERS) {
  describe(`server when the MTA leaves, over ${adapter} sockets`, () => {
    for (const stage of STAGES) {
      it(`ends the session cleanly when the MTA closes ${stage.name}`, TIMEOUT, async () => {
        const calls: string[] = [];
        const healthyGate = gate();
        const who = (ctx: Context) => ctx.client?.hostname ?? "victim";
        const note = (ctx: Context, what: string) => calls.push(`${who(ctx)}:${what}`);
        const log = memoryLog();
        const server = await listen(
          "inet:0@127.0.0.1",
          defineFilter({
            actions: ["addHeader"],
            connect: (_i, ctx) => void note(ctx, "connect"),
            helo: (_h, ctx) => void note(ctx, "helo"),
            envrcpt: (_r, ctx) => void note(ctx, "envrcpt"),
            data: (ctx) => void note(ctx, "data"),
            eoh: (ctx) => void note(ctx, "eoh"),
            async envfrom(s, ctx) {
              if (s.address.startsWith("slow@")) await sleep(150);
              note(ctx, "envfrom");
            },
            header: (_h, ctx) => void note(ctx, "header"),
            body: (_c, ctx) => void note(ctx, "body"),
            async eom(ctx) {
              note(ctx, "eom");
              if (who(ctx) === "victim") await sleep(200);
              else await healthyGate.promise;
              ctx.addHeader("X-Seen", who(ctx));
            },
            abort: (ctx) => void note(ctx, "abort"),
            close: (ctx) => void note(ctx, "close"),
          }),
          { adapter, logger: log.logger },
        );
        try {
          // The healthy session runs to its eom handler and waits there.
          const healthy = await openClient(server.address);
          const healthyTx = runTransactionIn(
            healthy,
            tx(1, {
              connect: { hostname: "healthy", family: "inet", address: "192.0.2.1", port: 2 },
            }),
          );
          await waitFor(() => calls.includes("healthy:eom"), "the healthy session's eom");

          const mta = new RawMta(await connectSocket(server.address));
          assert.equal((await mta.negotiate())?.type, "optneg");
          await within(stage.drive(mta), 10_000, "the victim's commands");
          await mta.cancel();

          await waitFor(() => server.connections === 1, "the victim's session to end", 10_000);
          const ends = log.records().filter((r) => r.event === "session end");
          assert.equal(ends.length, 1);
          assert.ok(["eof", "error"].includes(String(ends[0]!.end)), String(ends[0]!.end));
          const victim = calls.filter((c) => c.startsWith("victim:"));
          assert.equal(victim.at(-1), "victim:close", victim.join(" "));
          assert.equal(victim.filter((c) => c === "victim:close").length, 1);
          if (stage.inMessage) assert.ok(victim.includes("victim:abort"), victim.join(" "));

          healthyGate.open();
          const r = await within(healthyTx, 10_000, "the healthy transaction");
          assert.equal(r.verdict.type, "continue");
          assert.equal(added(r, "X-Seen"), "healthy");
          await endSession(healthy);
          await waitFor(() => server.connections === 0, "the healthy session to end");
          assert.ok(!calls.includes("healthy:abort"), calls.join(" "));
        } finally {
          healthyGate.open();
          await within(server.stop({ graceMs: 1_000 }), 10_000, "stop()");
        }
      });
    }
  });
}
