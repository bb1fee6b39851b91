// The session state machine without any stream: bytes in, steps and encoded replies out.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type SessionEvent, SessionMachine, type Step } from "../lib/filter/session_machine.ts";
import { defineFilter, type Filter } from "../lib/filter/filter.ts";
import { concatBytes } from "../lib/wire/concat.ts";
import { encodeCommand } from "../lib/wire/command_codec.ts";
import { decodeReply } from "../lib/wire/reply_codec.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { SMFIF, SMFIP } from "../lib/wire/constants.ts";
import type { Command, Reply } from "../lib/wire/types.ts";

const OPTNEG: Command = {
  type: "optneg",
  version: 6,
  actions: 0x1ff,
  protocol: SMFIP.SKIP | SMFIP.NR_HDR,
};
const CONNECT: Command = {
  type: "connect",
  hostname: "[192.0.2.1]",
  family: "inet",
  port: 4000,
  address: "192.0.2.1",
};
const HELO: Command = { type: "helo", name: "client.example" };
const MAIL: Command = { type: "mail", sender: "<a@example.com>", args: [] };
const RCPT: Command = { type: "rcpt", recipient: "<b@example.com>", args: [] };

function bytes(...cmds: Command[]): Uint8Array {
  return concatBytes(cmds.map(encodeCommand));
}

// deno-lint-ignore no-explicit-any
function machine(filter: Filter<any, any>, extra: { budget?: number; outputLimit?: number } = {}) {
  const events: SessionEvent[] = [];
  const m = new SessionMachine(filter, {
    signal: new AbortController().signal,
    flush: () => Promise.resolve(),
    handlerTimeoutMs: 1234,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  const replies = (): Reply[] => {
    const out = m.takeOutput();
    return out === undefined ? [] : new FrameDecoder().push(out).map(decodeReply);
  };
  return { m, events, replies };
}

const kinds = (rs: Reply[]) => rs.map((r) => r.type);

describe("session machine (no streams)", () => {
  it("serves a whole chunk of commands synchronously, all replies in one output", () => {
    const { m, replies } = machine(defineFilter({
      connect: () => "continue",
      helo: () => "continue",
      envfrom: () => "continue",
      envrcpt: (r) => r.address === "b@example.com" ? "reject" : "continue",
    }));
    m.push(bytes(OPTNEG, CONNECT, HELO, MAIL, RCPT));
    const step = m.run();
    assert.equal(step.kind, "input");
    const out = replies();
    assert.deepEqual(kinds(out), ["optneg", "continue", "continue", "continue", "reject"]);
  });

  it("returns a wait step for a handler's promise and serves nothing after it until settled", () => {
    const { m, replies } = machine(defineFilter({
      envfrom: () => Promise.resolve("continue" as const),
      envrcpt: () => "continue",
    }));
    m.push(bytes(OPTNEG, CONNECT, HELO, MAIL, RCPT));
    const step = m.run();
    assert.equal(step.kind, "wait");
    if (step.kind !== "wait") return;
    assert.equal(step.stage, "envfrom");
    assert.equal(step.limitMs, 1234);
    assert.equal(step.limitName, "handlerTimeoutMs");
    assert.equal(step.keepAlive, false);
    assert.deepEqual(kinds(replies()), ["optneg", "continue", "continue"]);
    m.settle("reject");
    assert.equal(m.run().kind, "input");
    // RCPT after a rejected MAIL is answered continue without the handler.
    assert.deepEqual(kinds(replies()), ["reject", "continue"]);
  });

  it("turns a failed wait into the fallback and reports the error", () => {
    const { m, replies, events } = machine(defineFilter({
      envfrom: () => new Promise<never>(() => {}),
    }));
    m.push(bytes(OPTNEG, CONNECT, HELO, MAIL));
    assert.equal(m.run().kind, "wait");
    m.fail(new Error("too slow"));
    assert.equal(m.run().kind, "input");
    assert.deepEqual(kinds(replies()).slice(-1), ["tempfail"]);
    const err = events.find((e) => e.type === "error");
    assert.ok(err && err.type === "error" && /too slow/.test(err.error.message));
  });

  it("yields after its budget so one connection cannot hold the thread", () => {
    let aborts = 0;
    const { m, replies } = machine(
      defineFilter({ envfrom: () => "continue", abort: () => void aborts++ }),
      { budget: 100 },
    );
    const flood: Command[] = [];
    for (let i = 0; i < 250; i++) flood.push(MAIL, { type: "abort" });
    m.push(bytes(OPTNEG, CONNECT, HELO, ...flood, HELO));
    const steps: Step["kind"][] = [];
    for (let s = m.run(); s.kind !== "input"; s = m.run()) steps.push(s.kind);
    assert.deepEqual(steps, ["yield", "yield", "yield", "yield", "yield"]);
    assert.equal(aborts, 250);
    assert.equal(kinds(replies()).length, 1 + 2 + 250 + 1);
  });

  it("bounds its output: a large replacement body comes out in flush steps", () => {
    const body = new Uint8Array(1 << 20).fill(0x61);
    const { m } = machine(
      defineFilter({ actions: ["replaceBody"], eom: (ctx) => ctx.replaceBody(body) }),
      { outputLimit: 128 * 1024 },
    );
    m.push(bytes(OPTNEG, CONNECT, HELO, MAIL, RCPT, { type: "eom" }));
    let largest = 0;
    let total = 0;
    let flushes = 0;
    for (let s = m.run(); s.kind !== "input"; s = m.run()) {
      assert.equal(s.kind, "flush");
      flushes++;
      const out = m.takeOutput()!;
      largest = Math.max(largest, out.length);
      total += out.length;
    }
    total += m.takeOutput()?.length ?? 0;
    assert.ok(flushes >= 7, `${flushes} flushes`);
    assert.ok(largest < 128 * 1024 + 70_000, `an output of ${largest} bytes`);
    assert.ok(total > body.length);
  });

  it("stops the body stream of a handler that settled without reading", async () => {
    let stream: ReadableStream<Uint8Array> | undefined;
    const { m, replies } = machine(defineFilter({
      bodyStream: (s) => {
        stream = s;
        return "continue";
      },
    }));
    const chunk = new Uint8Array(65535);
    const body: Command[] = [];
    for (let i = 0; i < 64; i++) body.push({ type: "body", chunk });
    m.push(bytes(OPTNEG, CONNECT, HELO, MAIL, RCPT, ...body, { type: "eom" }));
    // 4 MiB for a handler that never reads: no wait for room, nothing queued.
    assert.equal(m.run().kind, "input");
    assert.deepEqual(kinds(replies()).slice(-2), ["continue", "continue"]);
    await assert.rejects(stream!.getReader().read(), /already returned/);
  });

  it("ends on QUIT, then runs the close handler on close()", async () => {
    const seen: string[] = [];
    const { m } = machine(defineFilter({
      abort: () => void seen.push("abort"),
      close: () => Promise.resolve().then(() => void seen.push("close")),
    }));
    m.push(bytes(OPTNEG, CONNECT, HELO, MAIL, { type: "quit" }, HELO));
    assert.equal(m.run().kind, "quit");
    m.close();
    const s = m.run();
    assert.equal(s.kind, "wait");
    if (s.kind === "wait") m.settle(await s.promise);
    assert.equal(m.run().kind, "closed");
    assert.deepEqual(seen, ["abort", "close"]);
  });

  it("throws a protocol error for a command before OPTNEG", () => {
    const { m } = machine(defineFilter({}));
    m.push(bytes(HELO));
    assert.throws(() => m.run(), /Expected SMFIC_OPTNEG first, got HELO/);
  });

  it("negotiates what the filter needs", () => {
    const { m, replies } = machine(defineFilter({ actions: ["addHeader"], eom: () => "accept" }));
    m.push(bytes(OPTNEG));
    m.run();
    const [r] = replies();
    assert.ok(r?.type === "optneg");
    assert.equal(r.actions & SMFIF.ADDHDRS, SMFIF.ADDHDRS);
    assert.equal(m.negotiated?.version, 6);
  });
});
