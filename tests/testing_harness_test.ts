/**
 * The filter authors' harness (`./testing`): messages as .eml bytes, text or parts, with an
 * envelope and macros, run in process through the real filter engine and the real MTA engine;
 * each stage's answer, the modifications and the message as the MTA would deliver it.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { defineFilter, FilterHandlerError } from "../mod.ts";
import { FilterTest, testFilter } from "../lib/testing/mod.ts";

const PRIZE = readFileSync(new URL("./data/harness/prize.eml", import.meta.url));
/** The body as the MTA sends it: everything after the empty line. */
const PRIZE_BODY = PRIZE.subarray(PRIZE.indexOf("\r\n\r\n") + 4);

/** A filter that uses every modification, driven by the subject. */
const editor = defineFilter({
  actions: [
    "addHeader",
    "changeHeader",
    "replaceBody",
    "addRecipient",
    "deleteRecipient",
    "changeSender",
    "quarantine",
  ],
  bufferBody: true,
  eom(ctx) {
    if (!/prize/i.test(ctx.header("subject") ?? "")) return;
    ctx.changeHeader("Subject", 1, `[SUSPECT] ${ctx.header("subject")}`);
    ctx.deleteHeader("Received", 2);
    ctx.insertHeader("X-Top", 0, "first");
    ctx.addHeader("X-Body-Bytes", String(ctx.body.length));
    ctx.replaceBody("Removed a link.\n");
    ctx.addRecipient("<abuse@example.com>");
    ctx.deleteRecipient("<bob@example.com>");
    ctx.changeSender("<bounces@example.com>");
    ctx.quarantine("prize spam");
  },
});

describe("testFilter", () => {
  it("runs an .eml through the filter and shows the message the MTA would deliver", async () => {
    const r = await testFilter(editor, {
      message: PRIZE,
      from: "mallory@example.net",
      rcpts: ["bob@example.com", "carol@example.com"],
    });
    assert.equal(r.verdict, "continue");
    assert.equal(r.stage, "eom");
    assert.equal(r.delivered, true);
    assert.equal(r.header("subject"), "[SUSPECT] You won a prize");
    assert.deepEqual(r.headerValues("Received"), ["from relay1.example.net"]);
    assert.equal(r.message?.headers[0]?.name, "X-Top", "inserted at the top");
    assert.equal(r.header("X-Body-Bytes"), String(PRIZE_BODY.length), "the filter saw the body");
    assert.equal(r.text()?.endsWith("\r\n\r\nRemoved a link.\r\n"), true, r.text());
    assert.deepEqual(r.envelope?.recipients.map((x) => x.recipient), [
      "<carol@example.com>",
      "<abuse@example.com>",
    ]);
    assert.equal(r.envelope?.sender, "<bounces@example.com>");
    assert.equal(r.quarantine, "prize spam");
    assert.deepEqual(r.modifications.map((m) => m.type), [
      "chgheader",
      "chgheader",
      "insheader",
      "addheader",
      "replbody",
      "addrcpt",
      "delrcpt",
      "chgfrom",
      "quarantine",
    ]);
  });

  it("takes a message as text or as parts, and leaves an innocent one untouched", async () => {
    const text = await testFilter(editor, { message: "Subject: lunch?\n\nAt noon.\n" });
    assert.deepEqual(text.modifications, []);
    assert.equal(text.text(), "Subject: lunch?\r\n\r\nAt noon.\r\n", "LF became CRLF");
    const parts = await testFilter(editor, {
      message: { headers: [["Subject", "a prize"], ["X-A", "1"], ["X-A", "2"]], body: "x\n" },
    });
    assert.equal(parts.header("Subject"), "[SUSPECT] a prize");
    assert.deepEqual(parts.headerValues("x-a"), ["1", "2"]);
  });

  it("passes envelope, client and macros, and reports each stage's answer", async () => {
    const seen: Record<string, string | undefined> = {};
    const r = await testFilter(
      defineFilter({
        macros: { envfrom: ["{auth_authen}"] },
        connect(info, ctx) {
          seen.client = `${info.family} ${info.address} ${ctx.macro("j")}`;
        },
        helo: (name) => void (seen.helo = name),
        envfrom(sender, ctx) {
          seen.auth = ctx.macro("{auth_authen}");
          seen.size = sender.params.find((p) => p.name === "SIZE")?.value;
        },
        envrcpt: (rcpt) => rcpt.address.startsWith("nobody@") ? "reject" : undefined,
        eom: (ctx) => void (seen.queue = ctx.macro("i")),
      }),
      {
        client: "2001:db8::25",
        helo: "mx.example.net",
        from: "alice@example.net",
        fromArgs: ["SIZE=1234"],
        rcpts: ["nobody@example.com", "bob@example.com"],
        macros: { connect: { j: "mx.test" }, envfrom: { "{auth_authen}": "alice" } },
        queueId: "4QTEST1",
      },
    );
    assert.deepEqual(seen, {
      client: "inet6 2001:db8::25 mx.test",
      helo: "mx.example.net",
      auth: "alice",
      size: "1234",
      queue: "4QTEST1",
    });
    assert.deepEqual(r.stages.map((s) => `${s.stage}:${s.outcome}:${s.verdict}`), [
      "connect:replied:continue",
      "helo:replied:continue",
      "envfrom:replied:continue",
      "envrcpt:replied:reject",
      "envrcpt:replied:continue",
      "data:not-sent:continue",
      "header:no-reply:continue",
      "eoh:not-sent:continue",
      "body:not-sent:continue",
      "eom:replied:continue",
    ]);
    assert.equal(r.at("envrcpt", "<nobody@example.com>")?.verdict, "reject");
    assert.deepEqual(r.rejectedRecipients, [
      { recipient: "<nobody@example.com>", reply: "550 5.7.1 Command rejected" },
    ]);
    assert.deepEqual(r.envelope?.recipients.map((x) => x.recipient), ["<bob@example.com>"]);
  });

  it("stops where the filter decides, with the SMTP reply the client gets", async () => {
    const r = await testFilter(
      defineFilter({
        envfrom: (s) =>
          s.address.endsWith("@spam.example")
            ? { code: 550, enhanced: "5.7.1", text: "Not from you" }
            : undefined,
        eom: () => "accept",
      }),
      { from: "x@spam.example" },
    );
    assert.equal(r.verdict, "reject");
    assert.equal(r.stage, "envfrom");
    assert.equal(r.reply, "550 5.7.1 Not from you");
    assert.equal(r.delivered, false);
    assert.equal(r.message, undefined);
    assert.equal(r.at("envfrom")?.reply, "550 5.7.1 Not from you");
    assert.equal(r.at("eom"), undefined, "nothing after the decision");
  });

  it("fails the test with the handler's own error, or collects it on request", async () => {
    const broken = defineFilter({
      eom() {
        throw new Error("lookup service down");
      },
    });
    await assert.rejects(testFilter(broken), (e: unknown) => {
      assert.ok(e instanceof FilterHandlerError);
      assert.match(e.message, /eom handler failed: lookup service down/);
      assert.equal((e.cause as Error).message, "lookup service down");
      return true;
    });
    const r = await testFilter(broken, {}, {
      handlerErrors: "collect",
      session: { fallback: { code: 451, enhanced: "4.3.0", text: "Try later" } },
    });
    assert.equal(r.verdict, "tempfail");
    assert.equal(r.reply, "451 4.3.0 Try later");
    assert.equal(r.errors.length, 1);
  });

  it("does not count a body over maxBodyBytes as a handler failure", async () => {
    const r = await testFilter(
      defineFilter({ bufferBody: true, maxBodyBytes: 10, onBodyLimit: "reject", eom() {} }),
      { message: { headers: { Subject: "big" }, body: "0123456789abcdef\n" } },
    );
    assert.equal(r.verdict, "reject");
    assert.match(r.reply ?? "", /^552 5\.3\.4/);
    assert.equal(r.errors.length, 1);
  });

  it("refuses a macro stage that does not exist", async () => {
    await assert.rejects(
      // @ts-expect-error "mail" is not a stage name (envfrom is)
      testFilter(defineFilter({}), { macros: { mail: { x: "1" } } }),
      /Unknown stage "mail" in macros/,
    );
  });

  it("behaves as Sendmail on request: its macros, its way of applying header changes", async () => {
    let queueIdAtMail: string | undefined;
    const renumbering = defineFilter({
      actions: ["changeHeader"],
      envfrom: (_s, ctx) => void (queueIdAtMail = ctx.macro("i")),
      eom(ctx) {
        ctx.deleteHeader("Received", 1);
        ctx.changeHeader("Received", 2, "replaced");
      },
    });
    const sendmail = await testFilter(renumbering, { message: PRIZE }, { mta: "sendmail" });
    assert.notEqual(queueIdAtMail, undefined, "Sendmail has the queue id at MAIL already");
    // Sendmail keeps counting a deleted header: occurrence 2 is still relay2.
    assert.deepEqual(sendmail.headerValues("Received"), ["replaced"]);
    const postfix = await testFilter(renumbering, { message: PRIZE });
    assert.equal(queueIdAtMail, undefined, "Postfix assigns it after the first RCPT");
    // Postfix skips the deleted one: occurrence 2 no longer exists, the change is appended.
    assert.deepEqual(postfix.headerValues("Received"), ["from relay2.example.net", "replaced"]);
  });
});

describe("FilterTest", () => {
  it("keeps connection state across messages and runs the close handler at the end", async () => {
    const events: string[] = [];
    const t = await FilterTest.open(defineFilter({
      actions: ["addHeader"],
      connectionState: () => ({ count: 0 }),
      messageState: () => ({ rcpts: 0 }),
      envrcpt: (_r, ctx) => void ctx.message.rcpts++,
      eom(ctx) {
        ctx.connection.count++;
        ctx.addHeader("X-Count", `${ctx.connection.count}/${ctx.message.rcpts}`);
      },
      close: () => void events.push("close"),
    }));
    const first = await t.run({ rcpts: ["a@example.com", "b@example.com"] });
    const second = await t.run({});
    assert.equal(first.header("X-Count"), "1/2");
    assert.equal(second.header("X-Count"), "2/1", "message state is new, connection state kept");
    assert.deepEqual(events, []);
    const end = await t.close();
    assert.equal(end.end, "quit");
    assert.equal(end.messages, 2);
    assert.deepEqual(events, ["close"]);
  });
});

describe("the README's example test", () => {
  /** The filter the README's test is about. */
  const spamFilter = defineFilter({
    actions: ["changeHeader"],
    envrcpt: (rcpt) => rcpt.address.startsWith("honeypot@") ? "reject" : undefined,
    envfrom: (_s, ctx) => ctx.macro("{auth_authen}") === "mallory" ? undefined : "tempfail",
    eom(ctx) {
      const subject = ctx.header("Subject") ?? "";
      if (/prize/i.test(subject)) ctx.changeHeader("Subject", 1, `[SPAM] ${subject}`);
    },
  });

  it("tags a prize mail and drops the honeypot recipient", async () => {
    const r = await testFilter(spamFilter, {
      message: PRIZE,
      from: "mallory@example.net",
      rcpts: ["bob@example.com", "honeypot@example.com"],
      client: "203.0.113.9",
      macros: { envfrom: { "{auth_authen}": "mallory" } },
    });
    assert.equal(r.verdict, "continue");
    assert.equal(r.header("Subject"), "[SPAM] You won a prize");
    assert.equal(r.at("envrcpt", "<honeypot@example.com>")?.verdict, "reject");
    assert.deepEqual(r.envelope?.recipients.map((x) => x.recipient), ["<bob@example.com>"]);
  });
});
