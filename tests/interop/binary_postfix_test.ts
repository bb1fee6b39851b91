/**
 * A real Postfix on loopback delivers mail through example filters served by the compiled
 * binary (`milterkit serve examples/...`): accepted mail carries the changes in the Maildir,
 * refused mail gets the filter's exact reply text, as an admin trying the binary would see.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  ensurePeers,
  headerValues,
  type MaildirMessage,
  type PostfixInstance,
  readMaildir,
  sendMail,
  startPostfix,
} from "./harness.ts";
import { ensureBinary, type ServeProcess, startServe } from "./helpers_binary.ts";

let seq = 0;
function message(subject: string, from = "sender@example.test") {
  const marker = `b${Date.now()}-${++seq}`;
  return {
    marker,
    data: `From: ${from}\nTo: user@example.test\nSubject: ${subject}\n` +
      `Message-Id: <${marker}@example.test>\nX-Test-Marker: ${marker}\n\nOriginal body.\n`,
  };
}

async function copies(maildir: string, marker: string, count: number): Promise<MaildirMessage[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const mine = (await readMaildir(maildir, { count: 0 })).filter((m) =>
      headerValues(m.text, "X-Test-Marker").includes(marker)
    );
    if (mine.length >= count || Date.now() > deadline) return mine;
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("Postfix through filters served by the milterkit binary", () => {
  let tag: ServeProcess | undefined;
  let reject: ServeProcess | undefined;
  let mta: PostfixInstance | undefined;

  before(async () => {
    ensurePeers();
    ensureBinary();
    tag = await startServe("examples/tag_suspicious.ts");
    reject = await startServe("examples/reject_subject.ts");
    // Both filters in a row, as an admin would chain them in smtpd_milters.
    mta = await startPostfix({ milters: `${reject.postfix}, ${tag.postfix}` });
  });

  /** Sends `m` through Postfix from `from` to user@example.test. */
  const submit = (from: string, m: { data: string }) =>
    sendMail({ port: mta!.port, from, to: ["user@example.test"], data: m.data });

  after(async () => {
    await mta?.stop();
    await tag?.stop();
    await reject?.stop();
  });

  it("delivers a suspicious message with the X-Suspicious header and the Subject prefix", async () => {
    const m = message("URGENT ACCOUNT NOTICE", "service@paypal.example");
    const r = await submit("bounce@other.example", m);
    assert.equal(r.code, 250, r.transcript);
    const [got] = await copies(mta!.maildir, m.marker, 1);
    assert.ok(got, `not delivered; Postfix log:\n${mta!.log()}`);
    assert.deepEqual(headerValues(got.text, "X-Suspicious"), ["yes (from-mismatch, shouting)"]);
    assert.deepEqual(headerValues(got.text, "Subject"), ["[SUSPICIOUS] URGENT ACCOUNT NOTICE"]);
    assert.match(got.text, /\n\nOriginal body\.\n?$/);
  });

  it("delivers an ordinary message unchanged", async () => {
    const m = message("Lunch on Friday?");
    const r = await submit("sender@example.test", m);
    assert.equal(r.code, 250, r.transcript);
    const [got] = await copies(mta!.maildir, m.marker, 1);
    assert.ok(got);
    assert.deepEqual(headerValues(got.text, "X-Suspicious"), []);
    assert.deepEqual(headerValues(got.text, "Subject"), ["Lunch on Friday?"]);
  });

  it("refuses a matching Subject with the exact reply text", async () => {
    const m = message("Casino Bonus for you");
    const r = await submit("sender@example.test", m);
    assert.equal(r.stage, "eom", r.transcript);
    assert.equal(r.code, 550);
    assert.equal(r.text, "5.7.1 Message refused: subject matches a local rule");
  });

  it("logs one line per message with Postfix's own queue id, envelope, verdict and reply", async () => {
    /** The first "message" line of `s` that `match` accepts, waiting up to 5 s for it. */
    const waitMessage = async (s: ServeProcess, match: (e: Record<string, unknown>) => boolean) => {
      const deadline = Date.now() + 5000;
      for (;;) {
        const e = s.events().find((x) => x.event === "message" && match(x));
        if (e || Date.now() > deadline) return e;
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    const queuedAs = (transcript: string) => /queued as ([0-9A-Za-z]+)/.exec(transcript)?.[1];

    const ok = message("URGENT ACCOUNT NOTICE", "service@paypal.example");
    const sent = await submit("bounce@other.example", ok);
    const queue = queuedAs(sent.transcript);
    assert.ok(queue, sent.transcript);
    const line = await waitMessage(tag!, (x) => x.queue === queue);
    assert.ok(line, `no message line for ${queue}:\n${tag!.stderr()}`);
    assert.equal(line.from, "<bounce@other.example>");
    assert.deepEqual(line.to, ["<user@example.test>"]);
    assert.equal(line.verdict, "continue");
    assert.equal(line.stage, "eom");
    assert.deepEqual(line.changes, ["addheader:X-Suspicious", "chgheader:Subject[1]"]);
    assert.match(String(line.client), /\[127\.0\.0\.1\]$/);

    // The refusing filter's line carries the reply text the SMTP client got.
    const bad = message("Casino Bonus tonight");
    const refused = await submit("sender@example.test", bad);
    assert.equal(refused.code, 550);
    const rejected = await waitMessage(
      reject!,
      (x) => x.verdict === "reject" && String(x.reply).includes(refused.text),
    );
    assert.ok(rejected, reject!.stderr());
    assert.match(String(rejected.queue), /^[0-9A-Za-z]+$/, "Postfix's queue id");
  });

  it("logged each Postfix session in the servers' JSON logs", async () => {
    const ends = (s: ServeProcess) => s.events().filter((e) => e.event === "session end").length;
    const deadline = Date.now() + 5000;
    while ((ends(reject!) < 3 || ends(tag!) < 2) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(ends(reject!) >= 3, reject!.stderr());
    assert.ok(ends(tag!) >= 2, tag!.stderr());
  });
});
