/**
 * Interop matrix, transports and bytes: a real Postfix 3.7 in front of a milterkit filter over
 * IPv6 (SMTP on [::1], milter on inet6 ::1) and over a Unix socket; 8-bit and SMTPUTF8 mail
 * arrives byte-exact (UTF-8 subject, body and address; latin1 header bytes untouched by a header
 * change, and copied by the filter without loss).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import type { ConnectInfo } from "../../lib/mail/envelope.ts";
import { listen, type MilterServer } from "../../lib/server/server.ts";
import { ensurePeers, LAB_DIR, type PostfixInstance, sendMail, startPostfix } from "./harness.ts";
import {
  addIpv6Smtpd,
  attempt,
  copiesIn,
  deliveredTo,
  marked,
  type Plan,
  resetPlan,
  scriptedFilter,
} from "./helpers_matrix.ts";
import { headerValues } from "./harness.ts";

const FROM = "sender@example.test";
const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

describe("matrix: postfix <- milterkit filter (IPv6, 8-bit, SMTPUTF8)", () => {
  const plan: Plan = { seen: [] };
  let server: MilterServer | undefined;
  let mta: PostfixInstance | undefined;
  let port6 = 0;

  before(async () => {
    ensurePeers();
    server = await listen("inet6:0@::1", scriptedFilter(plan));
    const port = (server.address as { port: number }).port;
    mta = await startPostfix({
      milters: `inet:[::1]:${port}`,
      extraMainCf: ["inet_protocols = all", "smtputf8_enable = yes"],
    });
    port6 = await addIpv6Smtpd(mta);
  });

  after(async () => {
    await mta?.stop();
    await server?.stop({ graceMs: 500 });
  });

  it("IPv6: SMTP on [::1] through a milter on inet6 ::1", async () => {
    let client: ConnectInfo | undefined;
    resetPlan(plan, {
      eom: (ctx) => {
        client = ctx.client;
        ctx.addHeader("X-Milter-Family", ctx.client?.family ?? "?");
      },
    });
    const m = marked("over ipv6");
    const r = await attempt(port6, { from: FROM, to: ["user@example.test"], data: m.data }, {
      host: "::1",
    });
    assert.deepEqual([r.where, r.code], ["eom", 250], r.transcript);
    assert.match(r.transcript, /^S: 220 mta\.example\.test/m);
    const [copy] = await copiesIn(mta!.maildir, m.marker, 1);
    assert.ok(copy);
    assert.deepEqual(headerValues(copy.latin1, "X-Milter-Family"), ["inet6"]);
    assert.equal(client?.family, "inet6");
    assert.equal(client?.address, "::1");
  });

  it("SMTPUTF8: UTF-8 address, subject and body arrive byte-exact", async () => {
    const rcpt = "üser.名前@example.test";
    const subject = "Grüße — ✓ 日本語";
    const body = "Zeile mit Umlauten: äöü ß\nemoji: 📨\n";
    let seenRcpt = "";
    let seenSubject = "";
    resetPlan(plan, {
      eom: (ctx) => {
        seenRcpt = ctx.recipients[0]?.address ?? "";
        seenSubject = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
        ctx.addHeader("X-Seen-Rcpt", seenRcpt);
      },
    });
    const m = marked(subject, "", body);
    const r = await sendMail({
      port: mta!.port,
      from: FROM,
      to: [rcpt],
      data: m.data,
      mailParams: "SMTPUTF8 BODY=8BITMIME",
    });
    assert.equal(r.code, 250, r.transcript);
    const [copy] = await copiesIn(mta!.maildir, m.marker, 1);
    assert.ok(copy);
    const text = Buffer.from(copy.bytes).toString("utf8");
    assert.equal(seenRcpt, rcpt);
    assert.equal(seenSubject, subject);
    assert.deepEqual(headerValues(text, "Subject"), [subject]);
    assert.deepEqual(headerValues(text, "X-Seen-Rcpt"), [rcpt]);
    assert.equal(deliveredTo(text), rcpt);
    assert.ok(text.endsWith("\n\n" + body), text);
  });

  it("8-bit latin1 header bytes survive a header change and a copy by the filter", async () => {
    resetPlan(plan, {
      eom: (ctx) => {
        ctx.changeHeader("Subject", 1, "changed by milterkit");
        const raw = ctx.headers.find((h) => h.name === "X-Latin1")?.value ?? "";
        ctx.addHeader("X-Echo", raw);
      },
    });
    const m = marked("latin1 subject");
    const data = latin1(
      m.data.replace("\n\n", "\nX-Latin1: caf\xe9 cr\xe8me br\xfbl\xe9e\n\n")
        .replace(/\n/g, "\r\n") + "body caf\xe9\r\n",
    );
    const r = await sendMail({
      port: mta!.port,
      from: FROM,
      to: ["user@example.test"],
      data,
      mailParams: "BODY=8BITMIME",
    });
    assert.equal(r.code, 250, r.transcript);
    const [copy] = await copiesIn(mta!.maildir, m.marker, 1);
    assert.ok(copy);
    assert.ok(copy.latin1.includes("\nX-Latin1: caf\xe9 cr\xe8me br\xfbl\xe9e\n"), copy.latin1);
    assert.ok(copy.latin1.includes("\nX-Echo: caf\xe9 cr\xe8me br\xfbl\xe9e\n"), copy.latin1);
    assert.deepEqual(headerValues(copy.latin1, "Subject"), ["changed by milterkit"]);
    assert.ok(copy.latin1.endsWith("\n\nOriginal body.\nbody caf\xe9\n"), copy.latin1);
  });
});

describe("matrix: postfix <- milterkit filter (Unix socket)", () => {
  const plan: Plan = { seen: [] };
  let server: MilterServer | undefined;
  let mta: PostfixInstance | undefined;
  let dir = "";

  before(async () => {
    ensurePeers();
    dir = mkdtempSync(`${LAB_DIR}/unix-`);
    chmodSync(dir, 0o755); // Postfix's smtpd runs as user postfix
    server = await listen(`unix:${dir}/milter.sock`, scriptedFilter(plan), { unixMode: 0o666 });
    mta = await startPostfix({ milters: `unix:${dir}/milter.sock` });
  });

  after(async () => {
    await mta?.stop();
    await server?.stop({ graceMs: 500 });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("Unix socket: a milter on unix: modifies and refuses mail", async () => {
    resetPlan(plan, { eom: (ctx) => ctx.addHeader("X-Over", "unix socket") });
    const m = marked("over unix");
    const r = await sendMail({
      port: mta!.port,
      from: FROM,
      to: ["user@example.test"],
      data: m.data,
    });
    assert.equal(r.code, 250, r.transcript);
    const [copy] = await copiesIn(mta!.maildir, m.marker, 1);
    assert.deepEqual(headerValues(copy!.latin1, "X-Over"), ["unix socket"]);

    resetPlan(plan, {
      stage: "mail",
      verdict: { code: 550, enhanced: "5.7.1", text: "Not over unix" },
    });
    const refused = await sendMail({
      port: mta!.port,
      from: FROM,
      to: ["user@example.test"],
      data: marked("refused").data,
    });
    assert.deepEqual([refused.stage, refused.code, refused.text], [
      "mail",
      550,
      "5.7.1 Not over unix",
    ]);
  });
});
