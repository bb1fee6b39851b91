/**
 * The two engines against each other over in-memory streams: a milterkit filter using every
 * handler and every modification, driven by milterkit's MTA engine through several messages on
 * one connection (with aborts), and the error cases as the MTA sees them.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter } from "../lib/filter/filter.ts";
import { serveConnection, type SessionOptions } from "../lib/filter/session.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { duplexPair } from "../lib/testing/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const tx = (subject: string, extra = "") => ({
  connect: {
    hostname: "mail.client.test",
    family: "inet6" as const,
    address: "2001:db8::7",
    port: 2525,
  },
  helo: "mail.client.test",
  from: "alice@example.test",
  fromArgs: ["SIZE=200", "BODY=8BITMIME"],
  rcpts: ["bob@example.test", { recipient: "carol@example.test", args: ["NOTIFY=NEVER"] }],
  message: enc.encode(
    `From: alice@example.test\r\nTo: bob@example.test\r\nSubject: ${subject}\r\n` +
      `X-Old: one\r\nX-Old: two\r\n${extra}\r\nLine 1\r\n.dot line\r\n`,
  ),
});

function everything(events: string[]) {
  return defineFilter<{ messages: number }, { subject?: string; bytes: number }>({
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
    macros: { envfrom: ["{mail_addr}"] },
    connectionState: () => ({ messages: 0 }),
    messageState: () => ({ bytes: 0 }),
    connect: (info) => void events.push(`connect ${info.family} ${info.address}`),
    helo: (name) => void events.push(`helo ${name}`),
    envfrom: (s, ctx) => {
      ctx.connection.messages++;
      events.push(`mail ${s.address} ${s.params.map((p) => `${p.name}=${p.value}`).join(",")}`);
    },
    envrcpt: (r) =>
      void events.push(`rcpt ${r.address}${r.args.length ? " " + r.args.join(" ") : ""}`),
    data: () => void events.push("data"),
    header: ({ name, value }, ctx) => {
      if (name === "Subject") ctx.message.subject = value;
    },
    eoh: (ctx) => void events.push(`eoh ${ctx.headers.length}`),
    body: (chunk, ctx) => void (ctx.message.bytes += chunk.length),
    unknown: (line) => {
      events.push(`unknown ${line}`);
      return { code: 421, enhanced: "4.7.0", text: "No such verb here" };
    },
    abort: (ctx) => void events.push(`abort ${ctx.messageNumber}`),
    close: (ctx) => void events.push(`close after ${ctx.connection.messages}`),
    eom(ctx) {
      events.push(`eom ${ctx.message.subject} ${ctx.message.bytes}B ${ctx.macro("{mail_addr}")}`);
      if (ctx.message.subject === "REJECT") {
        return { code: 550, enhanced: "5.7.1", text: ["No", "thanks"] };
      }
      ctx.addHeader("X-Added", "yes");
      ctx.insertHeader("X-Top", 0, "first");
      ctx.changeHeader("Subject", 1, `[${ctx.connection.messages}] ${ctx.message.subject}`);
      ctx.deleteHeader("X-Old", 2);
      ctx.addRecipient("<dave@example.test>");
      ctx.addRecipient("<erin@example.test>", "NOTIFY=SUCCESS");
      ctx.deleteRecipient("<bob@example.test>");
      ctx.changeSender("<bounce@example.test>");
      ctx.replaceBody("New body\r\n");
      ctx.quarantine("check me");
    },
  });
}

describe("filter engine driven by the MTA engine", () => {
  it("runs every handler and every modification over several messages with aborts", async () => {
    const events: string[] = [];
    const [mta, filterSide] = duplexPair();
    const served = serveConnection(filterSide, everything(events));
    const client = await MilterClient.open(mta);
    assert.deepEqual(client.negotiated.symlists, [{ stage: 2, macros: "{mail_addr}" }]);

    const r1 = await runTransaction(client, tx("first"));
    assert.equal(r1.verdict.type, "continue");
    const m = r1.result!;
    const headers = m.message.headers.map((h) => `${h.name}:${h.value}`);
    assert.deepEqual(headers, [
      "X-Top: first",
      "From: alice@example.test",
      "To: bob@example.test",
      "Subject: [1] first",
      "X-Old: one",
      "X-Added: yes",
    ]);
    assert.equal(dec.decode(m.message.body), "New body\r\n");
    assert.equal(m.envelope.sender, "<bounce@example.test>");
    assert.deepEqual(
      m.envelope.recipients.map((r) =>
        `${r.recipient}${r.args.length ? " " + r.args.join(" ") : ""}`
      ),
      [
        "<carol@example.test> NOTIFY=NEVER",
        "<dave@example.test>",
        "<erin@example.test> NOTIFY=SUCCESS",
      ],
    );
    assert.equal(m.quarantine, "check me");

    // An abandoned transaction (RSET): MAIL and RCPT, then ABORT.
    await client.mail("<x@example.test>");
    await client.rcpt("<bob@example.test>");
    await client.abort();
    // An unknown SMTP command gets the filter's 4xx.
    const u = await client.unknown("XYZZY now");
    assert.deepEqual(u.verdict, { type: "replycode", text: "421 4.7.0 No such verb here" });

    const r2 = await runTransaction(client, tx("REJECT"));
    assert.equal(r2.verdict.type, "reject");
    assert.equal(r2.verdict.reply, "550-5.7.1 No\r\n550 5.7.1 thanks");
    const r3 = await runTransaction(client, tx("third"));
    assert.match(
      r3.result!.message.headers.find((h) => h.name === "Subject")!.value,
      /\[4\] third/,
    );

    await endSession(client);
    const s = await served;
    assert.equal(s.end, "quit");
    assert.equal(s.messages, 3);
    assert.deepEqual(events.filter((e) => /^(abort|close|unknown|eom)/.test(e)), [
      "eom first 19B alice@example.test",
      "abort 2",
      "unknown XYZZY now",
      "eom REJECT 19B alice@example.test",
      "eom third 19B alice@example.test",
      "close after 4",
    ]);
    assert.deepEqual(events.slice(0, 7), [
      "connect inet6 2001:db8::7",
      "helo mail.client.test",
      "mail alice@example.test SIZE=200,BODY=8BITMIME",
      "rcpt bob@example.test",
      "rcpt carol@example.test NOTIFY=NEVER",
      "data",
      "eoh 5",
    ]);
  });
});

describe("failures as the MTA sees them", () => {
  async function one(filter: Parameters<typeof serveConnection>[1], options: SessionOptions = {}) {
    const [mta, filterSide] = duplexPair();
    const served = serveConnection(filterSide, filter, options);
    const client = await MilterClient.open(mta);
    const r = await runTransaction(client, tx("x"));
    await endSession(client);
    await served;
    return r;
  }

  it("a throwing handler gives the MTA a tempfail and the message is not delivered", async () => {
    const r = await one({
      eom() {
        throw new Error("database down");
      },
    });
    assert.equal(r.verdict.type, "tempfail");
    assert.equal(r.delivered, false);
  });

  it("an illegal verdict gives the configured fallback reply", async () => {
    const r = await one(
      { envrcpt: () => ({ code: 250, text: "fine" }) },
      { fallback: { code: 451, enhanced: "4.3.0", text: "Filter misconfigured" } },
    );
    assert.deepEqual(r.rejectedRecipients.map((x) => x.reply), [
      "451 4.3.0 Filter misconfigured",
      "451 4.3.0 Filter misconfigured",
    ]);
  });

  it("a hanging handler is cut at handlerTimeoutMs and the MTA gets the fallback", async () => {
    const r = await one({ eom: () => new Promise(() => {}) }, {
      handlerTimeoutMs: 50,
      fallback: "reject",
    });
    assert.equal(r.verdict.type, "reject");
  });

  it("a modification outside negotiation never reaches the MTA", async () => {
    const r = await one({ actions: ["addHeader"], eom: (ctx) => ctx.changeSender("<x@y>") });
    assert.equal(r.verdict.type, "tempfail");
    assert.deepEqual(r.modifications, []);
  });
});
