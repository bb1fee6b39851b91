/**
 * Proves the interop harness against real software nobody on the team wrote: Postfix with the
 * libmilter C test filter, and OpenDKIM in front of Postfix. If these fail, interop failures of
 * the toolkit mean nothing.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  ensurePeers,
  headerValues,
  type MaildirMessage,
  parseMessage,
  type PeerProcess,
  type PostfixInstance,
  readMaildir,
  sendMail,
  SmtpSession,
  startLibmilterFilter,
  startOpenDkim,
  startPostfix,
} from "./harness.ts";

let seq = 0;
/** A message with a unique marker header, so tests sharing one Maildir find their own copies. */
function message(subject: string, extraHeaders = "", body = "Hello from milterkit.\n") {
  const marker = `m${Date.now()}-${++seq}`;
  const data = `From: sender@example.test\nTo: user@example.test\nSubject: ${subject}\n` +
    `X-Test-Marker: ${marker}\n${extraHeaders}\n${body}`;
  return { marker, data };
}

async function copiesOf(
  maildir: string,
  marker: string,
  count: number,
): Promise<MaildirMessage[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const all = await readMaildir(maildir, { count: 0 });
    const mine = all.filter((m) => headerValues(m.text, "X-Test-Marker").includes(marker));
    if (mine.length >= count || Date.now() > deadline) return mine;
    await new Promise((r) => setTimeout(r, 25));
  }
}

function deliveredTo(m: MaildirMessage): string {
  return headerValues(m.text, "Delivered-To")[0] ?? "";
}

describe("harness: Postfix with the libmilter C filter", () => {
  let filter: PeerProcess | undefined;
  let mta: PostfixInstance | undefined;

  before(async () => {
    ensurePeers();
    filter = await startLibmilterFilter();
    mta = await startPostfix({ milters: filter.address });
  });

  after(async () => {
    await mta?.stop();
    await filter?.stop();
  });

  it("delivers an accepted message with the filter's header and the body intact", async () => {
    const body = "first line\n.a line that starts with a dot\n..two dots\nlast\n";
    const { marker, data } = message("plain", "", body);
    const r = await sendMail({
      port: mta!.port,
      from: "sender@example.test",
      to: ["user@example.test"],
      data,
    });
    assert.equal(r.stage, "eom", r.transcript);
    assert.equal(r.code, 250, r.transcript);
    assert.ok(r.accepted);
    const [copy] = await copiesOf(mta!.maildir, marker, 1);
    assert.ok(copy, "message delivered");
    assert.deepEqual(headerValues(copy.text, "X-Libmilter-Test"), ["yes"]);
    assert.deepEqual(headerValues(copy.text, "Subject"), ["plain"]);
    assert.equal(parseMessage(copy.text).body, body);
    assert.equal(deliveredTo(copy), "user@example.test");
  });

  it("REJECTME is refused at end of DATA with the filter's exact 550 text", async () => {
    const { marker, data } = message("please REJECTME");
    const r = await sendMail({
      port: mta!.port,
      from: "sender@example.test",
      to: ["user@example.test"],
      data,
    });
    assert.equal(r.stage, "eom", r.transcript);
    assert.equal(r.code, 550);
    assert.equal(r.text, "5.7.1 Message rejected by libmilter testfilter (REJECTME)");
    assert.equal(r.accepted, false);
    assert.equal((await copiesOf(mta!.maildir, marker, 0)).length, 0);
  });

  it("TEMPFAILME gives 451 and a sender <early-reject@...> is refused at MAIL", async () => {
    const t = await sendMail({
      port: mta!.port,
      from: "sender@example.test",
      to: ["user@example.test"],
      data: message("x TEMPFAILME").data,
    });
    assert.deepEqual([t.stage, t.code, t.text], ["eom", 451, "4.7.1 Try again later (TEMPFAILME)"]);
    const e = await sendMail({
      port: mta!.port,
      from: "early-reject@example.test",
      to: ["user@example.test"],
      data: message("never sent").data,
    });
    assert.deepEqual(
      [e.stage, e.code, e.text],
      ["mail", 550, "5.7.1 sender refused by libmilter testfilter"],
    );
    assert.deepEqual(e.rcpts, []);
  });

  it("MODIFYME arrives with every modification applied", async () => {
    const { marker, data } = message(
      "please MODIFYME",
      "X-Delete-Me: this header must go\nX-Keep-Me: stays\n",
    );
    const r = await sendMail({
      port: mta!.port,
      from: "sender@example.test",
      to: ["user@example.test", "removed@example.test"],
      data,
    });
    assert.equal(r.code, 250, r.transcript);
    assert.deepEqual(r.rcpts.map((x) => x.code), [250, 250]);
    const copies = await copiesOf(mta!.maildir, marker, 3);
    // removed@ was deleted by smfi_delrcpt; added@ (smfi_addrcpt) and added-par@
    // (smfi_addrcpt_par with NOTIFY=NEVER) were added.
    assert.deepEqual(
      copies.map(deliveredTo).sort(),
      ["added-par@example.test", "added@example.test", "user@example.test"],
    );
    for (const copy of copies) {
      const names = parseMessage(copy.text).headers.map((h) => h.name);
      assert.deepEqual(headerValues(copy.text, "Subject"), ["MODIFIED by libmilter testfilter"]);
      assert.deepEqual(headerValues(copy.text, "X-Libmilter-First"), ["inserted at index 0"]);
      assert.ok(
        names.indexOf("X-Libmilter-First") < names.indexOf("Received"),
        "inserted at index 0, before Postfix's Received",
      );
      assert.deepEqual(headerValues(copy.text, "X-Delete-Me"), []);
      assert.deepEqual(headerValues(copy.text, "X-Keep-Me"), ["stays"]);
      assert.deepEqual(headerValues(copy.text, "X-Libmilter-Test"), ["yes"]);
      assert.deepEqual(headerValues(copy.text, "Return-Path"), ["<changed-from@example.test>"]);
      assert.equal(
        parseMessage(copy.text).body,
        "This body was replaced by the libmilter testfilter.\n",
      );
    }
  });

  it("DISCARDME and QUARANTINEME are accepted by SMTP but not delivered", async () => {
    const d = message("x DISCARDME");
    const q = message("x QUARANTINEME");
    for (const m of [d, q]) {
      const r = await sendMail({
        port: mta!.port,
        from: "sender@example.test",
        to: ["user@example.test"],
        data: m.data,
      });
      assert.equal(r.code, 250, r.transcript);
    }
    // a later message is delivered, so by then the earlier ones would have been too
    const probe = message("probe");
    await sendMail({
      port: mta!.port,
      from: "sender@example.test",
      to: ["user@example.test"],
      data: probe.data,
    });
    assert.equal((await copiesOf(mta!.maildir, probe.marker, 1)).length, 1);
    assert.equal((await copiesOf(mta!.maildir, d.marker, 0)).length, 0);
    assert.equal((await copiesOf(mta!.maildir, q.marker, 0)).length, 0);
    const log = mta!.log();
    assert.match(log, /milter triggers DISCARD action/);
    assert.match(log, /milter triggers HOLD action/);
  });

  it("sends several messages on one connection, resetting after a refusal", async () => {
    const session = await SmtpSession.open(mta!.port);
    try {
      const a = message("first of three");
      const b = message("second REJECTME");
      const c = message("third of three");
      const results = [];
      for (const m of [a, b, c]) {
        results.push(
          await session.send({
            from: "sender@example.test",
            to: ["user@example.test"],
            data: m.data,
          }),
        );
      }
      assert.deepEqual(results.map((r) => r.code), [250, 550, 250], session.transcript);
      assert.equal((await copiesOf(mta!.maildir, a.marker, 1)).length, 1);
      assert.equal((await copiesOf(mta!.maildir, c.marker, 1)).length, 1);
      assert.equal((await copiesOf(mta!.maildir, b.marker, 0)).length, 0);
    } finally {
      await session.close();
    }
  });
});

describe("harness: the libmilter filter in noop mode", () => {
  let filter: PeerProcess | undefined;
  let mta: PostfixInstance | undefined;

  before(async () => {
    filter = await startLibmilterFilter(undefined, "noop");
    mta = await startPostfix({ milters: filter.address });
  });

  after(async () => {
    await mta?.stop();
    await filter?.stop();
  });

  it("passes mail through unchanged, keywords included", async () => {
    const { marker, data } = message("x MODIFYME REJECTME", "X-Delete-Me: stays here\n");
    const r = await sendMail({
      port: mta!.port,
      from: "early-reject@example.test",
      to: ["user@example.test", "removed@example.test"],
      data,
    });
    assert.equal(r.code, 250, r.transcript);
    const copies = await copiesOf(mta!.maildir, marker, 2);
    assert.deepEqual(copies.map(deliveredTo).sort(), ["removed@example.test", "user@example.test"]);
    for (const copy of copies) {
      assert.deepEqual(headerValues(copy.text, "X-Libmilter-Test"), []);
      assert.deepEqual(headerValues(copy.text, "X-Delete-Me"), ["stays here"]);
      assert.deepEqual(headerValues(copy.text, "Subject"), ["x MODIFYME REJECTME"]);
    }
  });
});

describe("harness: OpenDKIM in front of Postfix", () => {
  let signer: PeerProcess | undefined;
  let verifier: PeerProcess | undefined;
  let signing: PostfixInstance | undefined;
  let verifying: PostfixInstance | undefined;

  before(async () => {
    ensurePeers();
    signer = await startOpenDkim(undefined, "sign");
    verifier = await startOpenDkim(undefined, "verify");
    signing = await startPostfix({ milters: signer.address });
    verifying = await startPostfix({ milters: verifier.address });
  });

  after(async () => {
    await signing?.stop();
    await verifying?.stop();
    await signer?.stop();
    await verifier?.stop();
  });

  it("signs mail From @example.test, and the signature verifies", async () => {
    const { marker, data } = message("sign me");
    const r = await sendMail({
      port: signing!.port,
      from: "sender@example.test",
      to: ["user@example.test"],
      data,
    });
    assert.equal(r.code, 250, r.transcript);
    const [signed] = await copiesOf(signing!.maildir, marker, 1);
    assert.ok(signed);
    const [sig] = headerValues(signed.text, "DKIM-Signature");
    assert.ok(sig, "DKIM-Signature added");
    assert.match(sig, /\bd=example\.test;/);
    assert.match(sig, /\bs=lab;/);

    // Resend what was delivered (minus the delivery headers) through the verifying instance.
    const resent = signed.text.replace(/^(Return-Path|X-Original-To|Delivered-To):.*\n/gm, "");
    const v = await sendMail({
      port: verifying!.port,
      from: "sender@example.test",
      to: ["user@example.test"],
      data: resent,
    });
    assert.equal(v.code, 250, v.transcript);
    const [verified] = await copiesOf(verifying!.maildir, marker, 1);
    assert.ok(verified);
    const results = headerValues(verified.text, "Authentication-Results").join("\n");
    assert.match(results, /dkim=pass/);
  });
});
