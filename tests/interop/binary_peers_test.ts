/**
 * `milterkit send` (the compiled binary) against real filters nobody on the team wrote: the
 * libmilter C test filter (every verdict and every modification libmilter offers, several
 * messages on one connection, Postfix protocol 2, Sendmail's framing) and OpenDKIM (a signature
 * that OpenDKIM itself then verifies).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  ensurePeers,
  headerValues,
  type PeerProcess,
  startLibmilterFilter,
  startOpenDkim,
} from "./harness.ts";
import { ensureBinary, runBinary } from "./helpers_binary.ts";

interface JsonResult {
  negotiated: { version: number; actions: string[]; protocol: string[] };
  transactions: Array<{
    verdict: { type: string; stage: string; reply?: string };
    delivered: boolean;
    stages: Array<{ stage: string; outcome: string; reason?: string }>;
    modifications: Array<Record<string, unknown>>;
    envelope: { sender: string; recipients: Array<{ recipient: string; args: string[] }> };
    quarantine?: string;
    message?: string;
    queueId: string;
    session?: { how: string; after?: string };
  }>;
}

async function sendJson(
  spec: string,
  message: string,
  args: string[] = [],
): Promise<{ code: number; j: JsonResult }> {
  const r = await runBinary(["send", "-c", spec, "-", ...args, "--json"], { stdin: message });
  assert.ok(r.stdout.startsWith("{"), `send printed no JSON (exit ${r.code}): ${r.stderr}`);
  return { code: r.code, j: JSON.parse(r.stdout) };
}

function mail(subject: string, extra = "", body = "Hello from milterkit send.\n"): string {
  return `From: sender@example.test\nTo: user@example.test\nSubject: ${subject}\n${extra}\n${body}`;
}

/** The header names of a message in order. */
function headerNames(message: string): string[] {
  return message.split(/\r?\n\r?\n/)[0]!.split(/\r?\n/).filter((l) => /^\S/.test(l))
    .map((l) => l.slice(0, l.indexOf(":")));
}

function count(log: string, re: RegExp): number {
  return log.split("\n").filter((l) => re.test(l)).length;
}

/** Waits until the filter's log, after `before`, shows `closes` close callbacks. */
async function waitForLog(peer: PeerProcess, before: string, closes: number): Promise<string> {
  const deadline = Date.now() + 5000;
  let log = "";
  do {
    await new Promise((r) => setTimeout(r, 20));
    log = peer.log().slice(before.length);
  } while (count(log, /^testfilter close /) < closes && Date.now() < deadline);
  return log;
}

describe("milterkit send against the libmilter C test filter", () => {
  let filter: PeerProcess | undefined;

  before(async () => {
    ensurePeers();
    ensureBinary();
    filter = await startLibmilterFilter();
  });
  after(async () => {
    await filter?.stop();
  });

  const spec = () => `inet:${filter!.port}@127.0.0.1`;

  it("a plain message: version 6 negotiated, X-Libmilter-Test added, exit 0", async () => {
    const { code, j } = await sendJson(spec(), mail("plain"));
    assert.equal(code, 0);
    assert.equal(j.negotiated.version, 6);
    assert.deepEqual(j.negotiated.actions.sort(), [
      "ADDHDRS",
      "ADDRCPT",
      "ADDRCPT_PAR",
      "CHGBODY",
      "CHGFROM",
      "CHGHDRS",
      "DELRCPT",
      "QUARANTINE",
    ]);
    const t = j.transactions[0]!;
    assert.equal(t.delivered, true);
    assert.deepEqual(headerValues(t.message!, "X-Libmilter-Test"), ["yes"]);
    assert.deepEqual(t.modifications, [
      { type: "addheader", name: "X-Libmilter-Test", value: "yes" },
    ]);
  });

  it("REJECTME: exit 1 and the filter's exact 550 text at end of message", async () => {
    const r = await runBinary(["send", "-c", spec()], { stdin: mail("please REJECTME") });
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /^verdict: reject at eom "550 5\.7\.1 Message rejected by libmilter testfilter \(REJECTME\)"$/m,
    );
    const { j } = await sendJson(spec(), mail("please REJECTME"));
    assert.equal(
      j.transactions[0]!.verdict.reply,
      "550 5.7.1 Message rejected by libmilter testfilter (REJECTME)",
    );
  });

  it("TEMPFAILME: exit 3 and the 451 text", async () => {
    const { code, j } = await sendJson(spec(), mail("TEMPFAILME"));
    assert.equal(code, 3);
    assert.equal(j.transactions[0]!.verdict.type, "tempfail");
    assert.equal(j.transactions[0]!.verdict.reply, "451 4.7.1 Try again later (TEMPFAILME)");
  });

  it("DISCARDME: exit 1, discarded; QUARANTINEME: held in quarantine, exit 0", async () => {
    const discard = await sendJson(spec(), mail("DISCARDME"));
    assert.equal(discard.code, 1);
    assert.equal(discard.j.transactions[0]!.verdict.type, "discard");
    assert.equal(discard.j.transactions[0]!.delivered, false);
    const q = await runBinary(["send", "-c", spec()], { stdin: mail("QUARANTINEME") });
    assert.equal(q.code, 0);
    assert.match(q.stdout, /^held in quarantine: QUARANTINEME seen by libmilter testfilter$/m);
  });

  it("a sender refused at MAIL: exit 1 with the reply of that stage", async () => {
    const { code, j } = await sendJson(spec(), mail("x"), ["--from", "early-reject@example.test"]);
    assert.equal(code, 1);
    assert.equal(j.transactions[0]!.verdict.stage, "envfrom");
    assert.equal(
      j.transactions[0]!.verdict.reply,
      "550 5.7.1 sender refused by libmilter testfilter",
    );
  });

  it("MODIFYME: every modification listed and applied to envelope and message", async () => {
    const msg = mail("MODIFYME", "X-Delete-Me: gone\n");
    const { code, j } = await sendJson(spec(), msg, [
      "--rcpt",
      "user@example.test",
      "--rcpt",
      "removed@example.test",
    ]);
    assert.equal(code, 0);
    const t = j.transactions[0]!;
    assert.deepEqual(t.modifications, [
      { type: "addheader", name: "X-Libmilter-Test", value: "yes" },
      { type: "chgheader", index: 1, name: "Subject", value: "MODIFIED by libmilter testfilter" },
      { type: "insheader", index: 0, name: "X-Libmilter-First", value: "inserted at index 0" },
      { type: "chgheader", index: 1, name: "X-Delete-Me", value: "" },
      { type: "addrcpt", recipient: "<added@example.test>" },
      { type: "addrcpt_par", recipient: "<added-par@example.test>", args: "NOTIFY=NEVER" },
      { type: "delrcpt", recipient: "<removed@example.test>" },
      { type: "chgfrom", sender: "<changed-from@example.test>" },
      { type: "replbody", size: 53 },
    ]);
    assert.equal(t.envelope.sender, "<changed-from@example.test>");
    assert.deepEqual(t.envelope.recipients.map((r) => [r.recipient, r.args]), [
      ["<user@example.test>", []],
      ["<added@example.test>", []],
      ["<added-par@example.test>", ["NOTIFY=NEVER"]],
    ]);
    const m = t.message!;
    assert.equal(headerNames(m)[0], "X-Libmilter-First");
    assert.deepEqual(headerValues(m, "Subject"), ["MODIFIED by libmilter testfilter"]);
    assert.deepEqual(headerValues(m, "X-Delete-Me"), []);
    assert.deepEqual(headerValues(m, "X-Libmilter-Test"), ["yes"]);
    assert.equal(
      m.slice(m.search(/\r?\n\r?\n/)).trim(),
      "This body was replaced by the libmilter testfilter.",
    );

    const text = await runBinary(["send", "-c", spec(), "--rcpt", "user@example.test"], {
      stdin: msg,
    });
    for (
      const line of [
        "  modification: insert header X-Libmilter-First at #0: inserted at index 0",
        "  modification: delete header X-Delete-Me #1",
        "  modification: add recipient <added-par@example.test> NOTIFY=NEVER",
        "  modification: change sender to <changed-from@example.test>",
        "+X-Libmilter-First: inserted at index 0",
        "-Subject: MODIFYME",
        "+Subject: MODIFIED by libmilter testfilter",
        "-X-Delete-Me: gone",
        "+This body was replaced by the libmilter testfilter.",
      ]
    ) {
      assert.ok(text.stdout.split("\n").includes(line), `missing ${line} in:\n${text.stdout}`);
    }
  });

  it("--count 3 sends three messages on one connection", async () => {
    const before = filter!.log();
    const { code, j } = await sendJson(spec(), mail("three"), ["--count", "3"]);
    assert.equal(code, 0);
    assert.equal(j.transactions.length, 3);
    assert.ok(j.transactions.every((t) => t.delivered));
    assert.equal(new Set(j.transactions.map((t) => t.queueId)).size, 3, "distinct queue ids");
    // The first message has the whole dialogue; the next ones start at MAIL.
    assert.equal(j.transactions[0]!.stages[0]!.stage, "connect");
    assert.equal(j.transactions[1]!.stages[0]!.stage, "envfrom");
    const deadline = Date.now() + 5000;
    let log = "";
    do {
      await new Promise((r) => setTimeout(r, 20));
      log = filter!.log().slice(before.length);
    } while (count(log, /^testfilter close /) < 1 && Date.now() < deadline);
    assert.equal(count(log, /^testfilter connect /), 1, log);
    assert.equal(count(log, /^testfilter envfrom /), 3, log);
    assert.equal(count(log, /^testfilter eom /), 3, log);
  });

  it("--quit-nc: QUIT_NC after an EOM answered continue, a new connection after a reject", async () => {
    const before = filter!.log();
    const { code, j } = await sendJson(spec(), mail("quit-nc"), ["--count", "3", "--quit-nc"]);
    assert.equal(code, 0);
    assert.equal(j.transactions.length, 3);
    assert.ok(j.transactions.every((t) => t.delivered && t.stages[0]!.stage === "connect"));
    assert.deepEqual(j.transactions.map((t) => t.session?.how), [undefined, "quit_nc", "quit_nc"]);
    const log = await waitForLog(filter!, before, 3);
    assert.equal(count(log, /^testfilter connect /), 3, log);
    assert.equal(count(log, /^testfilter eom /), 3, log);

    // REJECTME: libmilter is back in its HELO state, where it would ignore QUIT_NC.
    const r = await sendJson(spec(), mail("REJECTME"), ["--count", "2", "--quit-nc"]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.j.transactions.map((t) => [t.verdict.type, t.session?.how]), [
      ["reject", undefined],
      ["reject", "reconnect"],
    ]);
  });

  it("--mta postfix-2: version 2 negotiated, no DATA stage, header still added", async () => {
    const { code, j } = await sendJson(spec(), mail("v2"), ["--mta", "postfix-2"]);
    assert.equal(code, 0);
    assert.equal(j.negotiated.version, 2);
    const t = j.transactions[0]!;
    assert.deepEqual(t.stages.find((s) => s.stage === "data"), {
      stage: "data",
      outcome: "not-sent",
      reason: "version",
      reply: { type: "continue" },
    });
    assert.deepEqual(headerValues(t.message!, "X-Libmilter-Test"), ["yes"]);
  });

  it("--mta sendmail: libmilter answers every stage and the message is modified", async () => {
    const { code, j } = await sendJson(spec(), mail("MODIFYME"), ["--mta", "sendmail"]);
    assert.equal(code, 0);
    assert.equal(j.negotiated.version, 6);
    const t = j.transactions[0]!;
    assert.deepEqual(
      t.stages.filter((s) => s.outcome === "replied").map((s) => s.stage),
      ["connect", "helo", "envfrom", "envrcpt", "header", "header", "header", "eoh", "body", "eom"],
    );
    assert.equal(t.envelope.sender, "<changed-from@example.test>");
    assert.deepEqual(headerValues(t.message!, "Subject"), ["MODIFIED by libmilter testfilter"]);
  });
});

describe("milterkit send against OpenDKIM", () => {
  let signer: PeerProcess | undefined;
  let verifier: PeerProcess | undefined;

  before(async () => {
    ensurePeers();
    ensureBinary();
    signer = await startOpenDkim(undefined, "sign");
    verifier = await startOpenDkim(undefined, "verify");
  });
  after(async () => {
    await signer?.stop();
    await verifier?.stop();
  });

  const message = "From: Alice <alice@example.test>\nTo: bob@example.test\n" +
    "Subject: signed by OpenDKIM\nDate: Sat, 21 Nov 2026 10:00:00 +0000\n" +
    "Message-Id: <dkim-1@example.test>\n\nHello,\n\nthis message is signed.\n";

  it("--quit-nc: three signed messages, each SMTP session started without a hang", async () => {
    const { code, j } = await sendJson(`inet:${signer!.port}@127.0.0.1`, message, [
      "--count",
      "3",
      "--quit-nc",
      "--timeout",
      "5000",
    ]);
    assert.equal(code, 0, signer!.log());
    assert.equal(j.transactions.length, 3);
    for (const t of j.transactions) {
      assert.equal(headerValues(t.message!, "DKIM-Signature").length, 1, t.message);
    }
    assert.ok(j.transactions.slice(1).every((t) => t.session !== undefined));
  });

  it("signs: the resulting message has a DKIM-Signature with d=example.test s=lab", async () => {
    const { code, j } = await sendJson(
      `inet:${signer!.port}@127.0.0.1`,
      message,
      ["--client-ip", "127.0.0.1"],
    );
    assert.equal(code, 0, signer!.log());
    const t = j.transactions[0]!;
    const [sig] = headerValues(t.message!, "DKIM-Signature");
    assert.ok(sig, `no DKIM-Signature in:\n${t.message}`);
    assert.match(sig, /(^|;)\s*d=example\.test;/);
    assert.match(sig, /(^|;)\s*s=lab;/);
    assert.equal(headerNames(t.message!)[0], "DKIM-Signature");

    // OpenDKIM itself verifies the message milterkit assembled: proof that headers (with
    // OpenDKIM's leading-space option) and body went to the filter byte-exact and the signature
    // was inserted as Postfix would.
    const v = await sendJson(`inet:${verifier!.port}@127.0.0.1`, t.message!, [
      "--client-ip",
      "192.0.2.99",
    ]);
    assert.equal(v.code, 0);
    const [ar] = headerValues(v.j.transactions[0]!.message!, "Authentication-Results");
    assert.match(ar ?? "", /dkim=pass .*header\.d=example\.test .*header\.s=lab/, ar);
  });
});
