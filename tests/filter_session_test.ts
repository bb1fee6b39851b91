import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter, type Filter } from "../lib/filter/filter.ts";
import {
  serveConnection,
  type ServedSession,
  type SessionEvent,
  type SessionOptions,
} from "../lib/filter/session.ts";
import { SMFIF, SMFIP } from "../lib/wire/constants.ts";
import { FilterHandlerError, MilterNegotiationError } from "../lib/wire/errors.ts";
import type { Reply } from "../lib/wire/types.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { RawMta } from "./helpers/raw_mta.ts";

// deno-lint-ignore no-explicit-any
function start(filter: Filter<any, any>, options: SessionOptions = {}) {
  const [mtaSide, filterSide] = duplexPair();
  const events: SessionEvent[] = [];
  const done: Promise<ServedSession> = serveConnection(filterSide, filter, {
    ...options,
    onEvent: (e) => events.push(e),
  });
  return { mta: new RawMta(mtaSide), done, events };
}

const enc = new TextEncoder();
const C = { type: "continue" } as const;

/** CONNECT and HELO; `replies` false when the filter has no handlers for them (no-reply). */
async function connectHelo(mta: RawMta, replies = true) {
  await mta.send({ type: "macro", stage: "C", macros: [["j", "mx.example.com"]] });
  const connect = {
    type: "connect",
    hostname: "[192.0.2.1]",
    family: "inet",
    port: 4000,
    address: "192.0.2.1",
  } as const;
  const helo = { type: "helo", name: "client.example" } as const;
  if (!replies) return void (await mta.send(connect, helo));
  assert.deepEqual(await mta.ask(connect), C);
  assert.deepEqual(await mta.ask(helo), C);
}

describe("serveConnection negotiation", () => {
  it("observes envelope and headers without replies, switches off the rest", async () => {
    const { mta, done } = start({ actions: ["addHeader"], eom() {} });
    const r = await mta.negotiate();
    assert.equal(r?.type, "optneg");
    if (r?.type !== "optneg") return;
    assert.equal(r.version, 6);
    assert.equal(r.actions, SMFIF.ADDHDRS);
    const off = SMFIP.NOBODY | SMFIP.NOEOH | SMFIP.NOUNKNOWN | SMFIP.NODATA;
    const noReply = SMFIP.NR_CONN | SMFIP.NR_HELO | SMFIP.NR_MAIL | SMFIP.NR_RCPT | SMFIP.NR_HDR;
    assert.equal(r.protocol, off | noReply);
    await mta.send({ type: "quit" });
    assert.equal((await done).end, "quit");
  });

  it("serves a version 2 MTA within its abilities", async () => {
    const { mta, done } = start({ eom() {} });
    const r = await mta.negotiate(2, 0x3f, 0x7f);
    assert.ok(r?.type === "optneg");
    assert.equal(r.version, 2);
    assert.equal(r.protocol, SMFIP.NOBODY | SMFIP.NOEOH, "no v3/v4/v6 bits to a v2 MTA");
    // NR_* does not exist in v2: the engine answers the observed events itself.
    assert.deepEqual(await mta.ask({ type: "connect", hostname: "h", family: "unknown" }), C);
    assert.deepEqual(await mta.ask({ type: "header", name: "A", value: "b" }), C);
    await mta.send({ type: "quit" });
    await done;
  });

  it("closes without a reply and names the actions the MTA lacks", async () => {
    const { mta, done, events } = start({ actions: ["replaceBody", "quarantine"], eom() {} });
    assert.equal(await mta.negotiate(6, SMFIF.ADDHDRS, 0x1fffff), undefined);
    const s = await done;
    assert.equal(s.end, "error");
    assert.ok(s.error instanceof MilterNegotiationError);
    assert.deepEqual(s.error.missing, ["CHGBODY", "QUARANTINE"]);
    assert.match(s.error.message, /CHGBODY, QUARANTINE/);
    assert.ok(events.some((e) => e.type === "error"));
  });

  it("switches off ignored events entirely", async () => {
    const { mta, done } = start({ ignore: ["connect", "helo", "envfrom", "envrcpt", "header"] });
    const r = await mta.negotiate();
    assert.ok(r?.type === "optneg");
    assert.equal(r.protocol, 0x37f);
    await mta.send({ type: "quit" });
    await done;
  });

  it("declares no-reply handlers and never answers them", async () => {
    const seen: string[] = [];
    const { mta, done } = start({
      noReply: ["header"],
      header: ({ name }) => void seen.push(name),
      eoh: () => "continue",
    });
    const r = await mta.negotiate();
    assert.ok(r?.type === "optneg");
    assert.ok(r.protocol & SMFIP.NR_HDR);
    await mta.send({ type: "mail", sender: "<a@b>", args: [] });
    await mta.send({ type: "header", name: "Subject", value: "x" });
    await mta.send({ type: "header", name: "To", value: "y" });
    // The first reply after the headers must be the answer to EOH.
    assert.deepEqual(await mta.ask({ type: "eoh" }), C);
    assert.deepEqual(seen, ["Subject", "To"]);
    await mta.send({ type: "quit" });
    await done;
  });

  it("asks for macros per stage with SETSYMLIST", async () => {
    const { mta, done } = start({
      macros: { envfrom: ["{auth_authen}", "{mail_addr}"], connect: ["j"] },
      eom() {},
    });
    const r = await mta.negotiate();
    assert.ok(r?.type === "optneg");
    assert.ok(r.actions & SMFIF.SETSYMLIST);
    assert.deepEqual(r.symlists, [{ stage: 0, macros: "j" }, {
      stage: 2,
      macros: "{auth_authen} {mail_addr}",
    }]);
    await mta.send({ type: "quit" });
    await done;
  });
});

describe("serveConnection transactions", () => {
  it("runs a whole message with every modification, in call order", async () => {
    const filter = defineFilter({
      actions: [
        "addHeader",
        "changeHeader",
        "replaceBody",
        "addRecipient",
        "addRecipientWithArgs",
        "deleteRecipient",
        "changeSender",
        "quarantine",
      ],
      connect: () => "continue",
      helo: () => undefined,
      envfrom: () => undefined,
      envrcpt: () => undefined,
      header: () => undefined,
      eom(ctx) {
        ctx.addHeader("X-A", "1");
        ctx.insertHeader("X-Top", 0, "folded\r\n\tline");
        ctx.changeHeader("Subject", 1, "[tag] hi");
        ctx.deleteHeader("X-Old", 2);
        ctx.addRecipient("<c@example.com>");
        ctx.addRecipient("<d@example.com>", "NOTIFY=NEVER");
        ctx.deleteRecipient(ctx.recipients[0]!.raw);
        ctx.changeSender("<bounce@example.com>", "RET=HDRS");
        ctx.replaceBody("new\nbody\n");
        ctx.quarantine("held for review");
        return "accept";
      },
    });
    const { mta, done } = start(filter);
    await mta.negotiate();
    await connectHelo(mta);
    assert.deepEqual(await mta.ask({ type: "mail", sender: "<a@b>", args: ["SIZE=10"] }), C);
    assert.deepEqual(await mta.ask({ type: "rcpt", recipient: "<r@example.com>", args: [] }), C);
    assert.deepEqual(await mta.ask({ type: "header", name: "Subject", value: "hi" }), C);
    await mta.send({ type: "eom" });
    const replies = await mta.untilFinal();
    assert.deepEqual(replies, [
      { type: "addheader", name: "X-A", value: "1" },
      { type: "insheader", index: 0, name: "X-Top", value: "folded\n\tline" },
      { type: "chgheader", index: 1, name: "Subject", value: "[tag] hi" },
      { type: "chgheader", index: 2, name: "X-Old", value: "" },
      { type: "addrcpt", recipient: "<c@example.com>" },
      { type: "addrcpt_par", recipient: "<d@example.com>", args: "NOTIFY=NEVER" },
      { type: "delrcpt", recipient: "<r@example.com>" },
      { type: "chgfrom", sender: "<bounce@example.com>", args: "RET=HDRS" },
      { type: "replbody", chunk: enc.encode("new\r\nbody\r\n") },
      { type: "quarantine", reason: "held for review" },
      { type: "accept" },
    ]);
    await mta.send({ type: "quit" });
    assert.equal((await done).messages, 1);
  });

  it("splits a large replacement body into 65535-byte chunks", async () => {
    const big = new Uint8Array(150_000).map((_, i) => i % 251);
    const { mta, done } = start({
      actions: ["replaceBody"],
      eom: (ctx) =>
        ctx.replaceBody(ReadableStream.from([big.subarray(0, 70_000), big.subarray(70_000)])),
    });
    await mta.negotiate();
    await mta.send({ type: "eom" });
    const replies = await mta.untilFinal();
    const chunks = replies.filter((r) => r.type === "replbody").map((r) =>
      (r as { chunk: Uint8Array }).chunk
    );
    assert.ok(chunks.every((c) => c.length <= 65535 && c.length > 0));
    const joined = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let p = 0;
    for (const c of chunks) joined.set(c, p), p += c.length;
    assert.deepEqual(joined, big);
    assert.deepEqual(replies.at(-1), C);
    await mta.send({ type: "quit" });
    await done;
  });

  it("rejects one recipient only and keeps the others", async () => {
    const { mta, done } = start({
      actions: ["addHeader"],
      envrcpt: (r) =>
        r.address.startsWith("bad")
          ? { code: 550, enhanced: "5.1.1", text: "No such user" }
          : undefined,
      eom: (ctx) => ctx.addHeader("X-Rcpts", ctx.recipients.map((r) => r.address).join(",")),
    });
    await mta.negotiate();
    await mta.send({ type: "mail", sender: "<a@b>", args: [] }); // observed, no reply
    assert.deepEqual(await mta.ask({ type: "rcpt", recipient: "<good@x>", args: [] }), C);
    assert.deepEqual(await mta.ask({ type: "rcpt", recipient: "<bad@x>", args: [] }), {
      type: "replycode",
      text: "550 5.1.1 No such user",
    });
    assert.deepEqual(await mta.ask({ type: "rcpt", recipient: "<good2@x>", args: [] }), C);
    await mta.send({ type: "eom" });
    assert.deepEqual(await mta.untilFinal(), [
      { type: "addheader", name: "X-Rcpts", value: "good@x,good2@x" },
      C,
    ]);
    await mta.send({ type: "quit" });
    await done;
  });

  it("keeps connection state across messages and resets message state on abort", async () => {
    const aborts: number[] = [];
    const filter = defineFilter<{ count: number; helo?: string }, { tag?: string }>({
      actions: ["addHeader"],
      connectionState: () => ({ count: 0 }),
      envfrom(sender, ctx) {
        ctx.connection.count++;
        assert.equal(ctx.message.tag, undefined, "message state is fresh");
        ctx.message.tag = sender.address;
      },
      abort(ctx) {
        aborts.push(ctx.messageNumber);
      },
      eom(ctx) {
        ctx.addHeader("X-N", `${ctx.connection.count}:${ctx.message.tag}:${ctx.client?.address}`);
      },
    });
    const { mta, done } = start(filter, {});
    await mta.negotiate();
    await connectHelo(mta, false);
    // Message 1, completed; Postfix then sends ABORT (outside a message: no abort call).
    await mta.ask({ type: "mail", sender: "<one@x>", args: [] });
    await mta.send({ type: "eom" });
    assert.deepEqual(await mta.untilFinal(), [
      { type: "addheader", name: "X-N", value: "1:one@x:192.0.2.1" },
      C,
    ]);
    await mta.send({ type: "abort" }, { type: "abort" });
    // Message 2, aborted by RSET.
    await mta.ask({ type: "mail", sender: "<two@x>", args: [] });
    await mta.send({ type: "abort" });
    // Repeated HELO, then message 3.
    await mta.send({ type: "helo", name: "again" });
    await mta.send({ type: "abort" });
    await mta.ask({ type: "mail", sender: "<three@x>", args: [] });
    await mta.send({ type: "eom" });
    assert.deepEqual(await mta.untilFinal(), [
      { type: "addheader", name: "X-N", value: "3:three@x:192.0.2.1" },
      C,
    ]);
    await mta.send({ type: "abort" }, { type: "abort" }, { type: "quit" });
    const s = await done;
    assert.deepEqual(aborts, [2], "abort handler only for the open message");
    assert.equal(s.messages, 2);
  });

  it("sees macros of this stage and earlier ones, forgets later stages", async () => {
    const seen: Record<string, string | undefined>[] = [];
    const { mta, done } = start({
      envfrom: (_s, ctx) =>
        void seen.push({ j: ctx.macro("{j}"), auth: ctx.macro("{auth_authen}") }),
      envrcpt: (_r, ctx) => void seen.push({ rcpt: ctx.macro("{rcpt_addr}"), i: ctx.macro("i") }),
    });
    await mta.negotiate();
    await mta.send({ type: "macro", stage: "C", macros: [["j", "mx"]] });
    await mta.send({ type: "macro", stage: "H", macros: [] }); // Postfix's empty frame
    await mta.send({ type: "macro", stage: "M", macros: [["{auth_authen}", "joe"]] });
    await mta.ask({ type: "mail", sender: "<a@b>", args: [] });
    await mta.send({ type: "macro", stage: "R", macros: [["{rcpt_addr}", "r@x"], ["i", "Q1"]] });
    await mta.ask({ type: "rcpt", recipient: "<r@x>", args: [] });
    await mta.send({ type: "abort" });
    await mta.send({ type: "macro", stage: "M", macros: [] });
    await mta.ask({ type: "mail", sender: "<a@b>", args: [] });
    await mta.ask({ type: "rcpt", recipient: "<r@x>", args: [] });
    await mta.send({ type: "quit" });
    await done;
    assert.deepEqual(seen, [
      { j: "mx", auth: "joe" },
      { rcpt: "r@x", i: "Q1" },
      { j: "mx", auth: undefined },
      { rcpt: undefined, i: undefined },
    ]);
  });

  it("takes macros for switched-off events and QUIT_NC reuse without a new OPTNEG", async () => {
    const closes: number[] = [];
    let n = 0;
    const { mta, done } = start({
      connectionState: () => ({ id: ++n }),
      connect: (info, ctx) => {
        assert.equal((ctx.connection as { id: number }).id, n);
        return info.hostname === "blocked" ? "reject" : undefined;
      },
      close: (ctx) => void closes.push((ctx.connection as { id: number }).id),
    });
    await mta.negotiate();
    await mta.send({ type: "macro", stage: "T", macros: [["i", "X"]] }); // DATA is off
    assert.deepEqual(await mta.ask({ type: "connect", hostname: "ok", family: "unknown" }), C);
    await mta.send({ type: "quit_nc" });
    assert.deepEqual(await mta.ask({ type: "connect", hostname: "blocked", family: "unknown" }), {
      type: "reject",
    });
    await mta.send({ type: "quit" });
    await done;
    assert.deepEqual(closes, [1, 2]);
  });

  it("offers the body as a stream and answers each chunk after the stream took it", async () => {
    let total = 0;
    const { mta, done } = start({
      actions: ["addHeader"],
      async bodyStream(body) {
        for await (const c of body) total += c.length;
      },
      eom: (ctx) => ctx.addHeader("X-Size", String(total)),
    });
    await mta.negotiate();
    await mta.send({ type: "mail", sender: "<a@b>", args: [] });
    for (let i = 0; i < 10; i++) {
      assert.deepEqual(await mta.ask({ type: "body", chunk: new Uint8Array(65535) }), C);
    }
    await mta.send({ type: "eom" });
    assert.deepEqual(await mta.untilFinal(), [{
      type: "addheader",
      name: "X-Size",
      value: "655350",
    }, C]);
    await mta.send({ type: "quit" });
    await done;
  });

  it("buffers the body for eom and tempfails past the byte limit", async () => {
    const { mta, done, events } = start({
      bufferBody: true,
      maxBodyBytes: 100,
      eom: () => "accept",
    });
    const r = await mta.negotiate();
    assert.ok(r?.type === "optneg" && (r.protocol & SMFIP.NR_BODY), "body without replies");
    await mta.send({ type: "mail", sender: "<a@b>", args: [] });
    await mta.send({ type: "body", chunk: new Uint8Array(80) }, {
      type: "body",
      chunk: new Uint8Array(80),
    });
    await mta.send({ type: "eom" });
    assert.deepEqual(await mta.untilFinal(), [{
      type: "replycode",
      text: "452 4.3.4 Message body over 100 bytes",
    }]);
    assert.ok(
      events.some((e) => e.type === "error" && /maxBodyBytes/.test(e.error.message)),
    );
    await mta.send({ type: "quit" });
    await done;
  });
});

describe("serveConnection failures", () => {
  async function eomVerdict(filter: Filter, options: SessionOptions = {}) {
    const { mta, done, events } = start(filter, options);
    await mta.negotiate();
    await mta.ask({ type: "mail", sender: "<a@b>", args: [] });
    await mta.send({ type: "eom" });
    const replies = await mta.untilFinal();
    await mta.send({ type: "quit" });
    await done;
    return { replies, errors: events.filter((e) => e.type === "error") };
  }

  it("answers the fallback (tempfail by default) when a handler throws", async () => {
    const { replies, errors } = await eomVerdict({
      envfrom() {},
      eom() {
        throw new Error("boom");
      },
    });
    assert.deepEqual(replies, [{ type: "tempfail" }]);
    assert.ok(errors[0]?.type === "error" && errors[0].error instanceof FilterHandlerError);
    assert.match(errors[0].error.message, /boom/);
  });

  it("uses a configured custom fallback reply", async () => {
    const { replies } = await eomVerdict(
      {
        envfrom() {},
        eom() {
          throw new Error("boom");
        },
      },
      { fallback: { code: 421, enhanced: "4.3.0", text: "Filter broken" } },
    );
    assert.deepEqual(replies, [{ type: "replycode", text: "421 4.3.0 Filter broken" }]);
  });

  it("refuses a modification that was not negotiated, with no modification sent", async () => {
    const { replies, errors } = await eomVerdict({
      actions: ["addHeader"],
      envfrom() {},
      eom(ctx) {
        ctx.addHeader("X-Ok", "1");
        ctx.replaceBody("nope");
      },
    });
    assert.deepEqual(replies, [{ type: "tempfail" }]);
    assert.match(errors[0]!.error.message, /needs the action "replaceBody"/);
  });

  it("refuses an illegal verdict for the stage or a malformed reply code", async () => {
    const { mta, done, events } = start({
      connect: () => "discard" as never, // as a JS filter could: the engine refuses it
      helo: () => ({ code: 250, text: "fine" }),
    });
    await mta.negotiate();
    assert.deepEqual(await mta.ask({ type: "connect", hostname: "h", family: "unknown" }), {
      type: "tempfail",
    });
    await mta.send({ type: "quit" });
    await done;
    const msgs = events.filter((e) => e.type === "error").map((e) =>
      (e as { error: Error }).error.message
    );
    assert.match(msgs[0]!, /"discard" is not allowed at connect/);
  });

  it("validates reply codes: class mismatch of the enhanced code", async () => {
    const { replies, errors } = await eomVerdict({
      envfrom() {},
      eom: () => ({ code: 550, enhanced: "4.7.1", text: "mismatch" }),
    });
    assert.deepEqual(replies, [{ type: "tempfail" }]);
    assert.match(errors[0]!.error.message, /does not match the class/);
  });

  it("answers the fallback when a handler hangs past handlerTimeoutMs, keeping MTA alive with PROGRESS", async () => {
    const { replies, errors } = await eomVerdict(
      { envfrom() {}, eom: () => new Promise(() => {}) },
      { handlerTimeoutMs: 120, progressIntervalMs: 30 },
    );
    assert.equal(replies.at(-1)?.type, "tempfail");
    assert.ok(replies.filter((r: Reply) => r.type === "progress").length >= 1);
    assert.match(errors[0]!.error.message, /within 120 ms \(handlerTimeoutMs\)/);
  });

  it("ends the session with a typed error on garbage and closes the connection", async () => {
    const { mta, done } = start({ eom() {} });
    await mta.sendBytes(enc.encode("GET / HTTP/1.1\r\n\r\n"));
    assert.equal(await mta.next(), undefined);
    const s = await done;
    assert.equal(s.end, "error");
    assert.match(s.error!.message, /HTTP request/);
  });

  it("treats EOF mid-message as abort then close", async () => {
    const calls: string[] = [];
    const { mta, done } = start({
      envfrom: () => void calls.push("envfrom"),
      abort: () => void calls.push("abort"),
      close: () => void calls.push("close"),
    });
    await mta.negotiate();
    await mta.ask({ type: "mail", sender: "<a@b>", args: [] });
    await mta.close();
    const s = await done;
    assert.equal(s.end, "eof");
    assert.deepEqual(calls, ["envfrom", "abort", "close"]);
  });

  it("ends an idle connection after idleTimeoutMs", async () => {
    const { mta, done } = start({ eom() {} }, { idleTimeoutMs: 50 });
    await mta.negotiate();
    const s = await done;
    assert.equal(s.end, "idle");
    assert.match(s.error!.message, /idleTimeoutMs/);
    assert.equal(await mta.next(), undefined);
  });

  it("stops a running handler with the fallback when the signal fires", async () => {
    const ac = new AbortController();
    const { mta, done } = start({ envfrom() {}, eom: () => new Promise(() => {}) }, {
      signal: ac.signal,
    });
    await mta.negotiate();
    await mta.ask({ type: "mail", sender: "<a@b>", args: [] });
    await mta.send({ type: "eom" });
    setTimeout(() => ac.abort(), 20);
    assert.deepEqual(await mta.untilFinal(), [{ type: "tempfail" }]);
    assert.equal((await done).end, "signal");
  });
});
