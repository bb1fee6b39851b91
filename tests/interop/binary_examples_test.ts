/**
 * Every example filter in examples/ served by the compiled binary (`milterkit serve`), with
 * messages sent through it by the binary (`milterkit send`): verdicts, modifications and the
 * resulting messages, as a user trying the examples would see them.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { ensureBinary, runBinary, type ServeProcess, startServe } from "./helpers_binary.ts";
import { concatBytes } from "../../lib/wire/concat.ts";

/** One transaction of `send --json`. */
interface JsonTransaction {
  verdict: { type: string; stage: string; reply?: string };
  delivered: boolean;
  modifications: Array<Record<string, unknown>>;
  rejectedRecipients: Array<{ recipient: string; reply: string }>;
  envelope: { sender: string; recipients: Array<{ recipient: string }> };
  quarantine?: string;
  message?: string;
  diff?: string;
}

/** Runs `milterkit send -c SPEC - ARGS --json` with `message` on stdin. */
async function sendJson(
  serve: ServeProcess,
  message: string,
  args: string[] = [],
): Promise<{ code: number; t: JsonTransaction; stderr: string }> {
  const r = await runBinary(["send", "-c", serve.spec, "-", ...args, "--json"], {
    stdin: message,
  });
  assert.ok(r.stdout.startsWith("{"), `send printed no JSON (exit ${r.code}): ${r.stderr}`);
  return { code: r.code, t: JSON.parse(r.stdout).transactions[0], stderr: r.stderr };
}

/** A message with LF line ends, as a user would write it. */
function mail(headers: Record<string, string>, body = "Hello.\n"): string {
  return Object.entries(headers).map(([k, v]) => `${k}: ${v}\n`).join("") + "\n" + body;
}

/** Header values of `name` in a message text (unfolded). */
function header(message: string, name: string): string[] {
  const head = message.split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]/g, " ");
  return head.split(/\r?\n/).filter((l) => l.toLowerCase().startsWith(name.toLowerCase() + ":"))
    .map((l) => l.slice(name.length + 1).trim());
}

function bodyOf(message: string): string {
  return message.slice(message.search(/\r?\n\r?\n/)).replace(/^\r?\n\r?\n/, "");
}

const PLAIN = mail({
  From: "Alice <alice@example.test>",
  To: "bob@example.test",
  Subject: "Lunch on Friday?",
  "Message-Id": "<lunch-1@example.test>",
});

describe("examples/reject_subject.ts through the binary", () => {
  let serve: ServeProcess | undefined;
  let custom: ServeProcess | undefined;
  before(async () => {
    ensureBinary();
    serve = await startServe("examples/reject_subject.ts");
    custom = await startServe("examples/reject_subject.ts", {
      env: { MILTERKIT_REJECT_SUBJECT: "lottery" },
    });
  });
  after(async () => {
    await serve?.stop();
    await custom?.stop();
  });

  it("refuses a matching Subject at the header with exit 1 and the exact 550 text", async () => {
    const msg = mail({ From: "a@example.test", To: "b@example.test", Subject: "VIAGRA deal" });
    const { code, t } = await sendJson(serve!, msg);
    assert.equal(code, 1);
    assert.equal(t.verdict.type, "reject");
    assert.equal(t.verdict.stage, "header");
    assert.equal(t.verdict.reply, "550 5.7.1 Message refused: subject matches a local rule");
    assert.equal(t.delivered, false);

    const text = await runBinary(["send", "-c", serve!.spec], { stdin: msg });
    assert.equal(text.code, 1);
    assert.match(
      text.stdout,
      /^verdict: reject at header "550 5\.7\.1 Message refused: subject matches a local rule"$/m,
    );
  });

  it("lets other mail through unchanged with exit 0", async () => {
    const { code, t } = await sendJson(serve!, PLAIN);
    assert.equal(code, 0);
    assert.equal(t.delivered, true);
    assert.deepEqual(t.modifications, []);
    assert.equal(t.diff, "");
  });

  it("follows MILTERKIT_REJECT_SUBJECT from the environment", async () => {
    const lottery = mail({ From: "a@example.test", To: "b@example.test", Subject: "Lottery!" });
    assert.equal((await sendJson(custom!, lottery)).code, 1);
    const viagra = mail({ From: "a@example.test", To: "b@example.test", Subject: "viagra" });
    assert.equal((await sendJson(custom!, viagra)).code, 0);
  });
});

describe("examples/tag_suspicious.ts through the binary", () => {
  let serve: ServeProcess | undefined;
  before(async () => {
    serve = await startServe("examples/tag_suspicious.ts");
  });
  after(async () => {
    await serve?.stop();
  });

  it("shows the added header and the prefixed Subject as diff lines (text output)", async () => {
    const r = await runBinary(["send", "-c", serve!.spec, "examples/messages/suspicious.eml"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    for (
      const want of [
        "  modification: add header X-Suspicious: yes (no-message-id, shouting)",
        "  modification: change header Subject #1: [SUSPICIOUS] URGENT ACCOUNT NOTICE",
        "verdict: continue at eom (would be delivered)",
        "envelope: from <service@paypal.example> to <user@example.test>",
        "--- received",
        "+++ delivered",
        "-Subject: URGENT ACCOUNT NOTICE",
        "+Subject: [SUSPICIOUS] URGENT ACCOUNT NOTICE",
        "+X-Suspicious: yes (no-message-id, shouting)",
      ]
    ) {
      assert.ok(lines.includes(want), `missing line ${JSON.stringify(want)} in:\n${r.stdout}`);
    }
    assert.match(r.stdout, /^negotiated: version 6, actions ADDHDRS CHGHDRS, protocol /);
  });

  it("tags a From/envelope domain mismatch (JSON output)", async () => {
    const { code, t } = await sendJson(serve!, PLAIN, ["--from", "mallory@evil.example"]);
    assert.equal(code, 0);
    assert.deepEqual(header(t.message!, "X-Suspicious"), ["yes (from-mismatch)"]);
    assert.deepEqual(header(t.message!, "Subject"), ["[SUSPICIOUS] Lunch on Friday?"]);
  });

  it("leaves an ordinary message unchanged", async () => {
    const r = await runBinary(["send", "-c", serve!.spec, "examples/messages/plain.eml"]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^message unchanged$/m);
  });
});

describe("examples/recipient_allowlist.ts through the binary", () => {
  let serve: ServeProcess | undefined;
  before(async () => {
    serve = await startServe("examples/recipient_allowlist.ts", {
      env: { MILTERKIT_ALLOW: "bob@example.test,@example.org" },
    });
  });
  after(async () => {
    await serve?.stop();
  });

  it("refuses the unlisted recipient only and delivers to the others", async () => {
    const { code, t } = await sendJson(serve!, PLAIN, [
      "--rcpt",
      "bob@example.test",
      "--rcpt",
      "eve@example.test",
      "--rcpt",
      "carol@example.org",
    ]);
    assert.equal(code, 0);
    assert.deepEqual(t.rejectedRecipients, [{
      recipient: "<eve@example.test>",
      reply: "550 5.1.1 <eve@example.test>: recipient not accepted here",
    }]);
    assert.deepEqual(t.envelope.recipients.map((r) => r.recipient), [
      "<bob@example.test>",
      "<carol@example.org>",
    ]);
    assert.equal(t.delivered, true);
  });

  it("refuses a message whose only recipient is unlisted (exit 1)", async () => {
    const { code, t } = await sendJson(serve!, PLAIN, ["--rcpt", "eve@example.test"]);
    assert.equal(code, 1);
    assert.equal(t.verdict.stage, "envrcpt");
    assert.equal(t.verdict.reply, "550 5.1.1 <eve@example.test>: recipient not accepted here");
  });
});

describe("examples/disclaimer.ts through the binary", () => {
  let serve: ServeProcess | undefined;
  before(async () => {
    serve = await startServe("examples/disclaimer.ts", {
      env: { MILTERKIT_DISCLAIMER: "Confidential – for the addressee only." },
    });
  });
  after(async () => {
    await serve?.stop();
  });

  it("appends the disclaimer (from the environment, non-ASCII intact) to a plain-text body", async () => {
    const { code, t } = await sendJson(serve!, PLAIN);
    assert.equal(code, 0);
    assert.equal(t.modifications[0]?.type, "replbody");
    assert.equal(
      bodyOf(t.message!).replaceAll("\r\n", "\n"),
      "Hello.\n-- \nConfidential – for the addressee only.\n",
    );
  });

  it("adds a header instead to a multipart message", async () => {
    const msg = mail({
      From: "a@example.test",
      To: "b@example.test",
      "Content-Type": 'multipart/mixed; boundary="b1"',
    }, "--b1\nContent-Type: text/plain\n\nhi\n--b1--\n");
    const { t } = await sendJson(serve!, msg);
    assert.deepEqual(t.modifications, [{
      type: "addheader",
      name: "X-Disclaimer",
      value: "skipped (not a plain-text message)",
    }]);
  });
});

describe("examples/rewrite_sender.ts through the binary", () => {
  let serve: ServeProcess | undefined;
  before(async () => {
    serve = await startServe("examples/rewrite_sender.ts");
  });
  after(async () => {
    await serve?.stop();
  });

  it("changes an internal envelope sender to the bounce address", async () => {
    const { code, t } = await sendJson(serve!, PLAIN, ["--from", "joe@internal.example.test"]);
    assert.equal(code, 0);
    assert.equal(t.envelope.sender, "<bounces@example.test>");
    assert.deepEqual(header(t.message!, "X-Original-Sender"), ["joe@internal.example.test"]);
    const text = await runBinary([
      "send",
      "-c",
      serve!.spec,
      "--from",
      "joe@internal.example.test",
    ], { stdin: PLAIN });
    assert.match(text.stdout, /^ {2}modification: change sender to <bounces@example\.test>$/m);
    assert.match(text.stdout, /^envelope: from <bounces@example\.test> to <bob@example\.test>$/m);
  });

  it("keeps other senders", async () => {
    const { t } = await sendJson(serve!, PLAIN);
    assert.equal(t.envelope.sender, "<alice@example.test>");
    assert.deepEqual(t.modifications, []);
  });
});

describe("examples/quarantine.ts through the binary", () => {
  let serve: ServeProcess | undefined;
  before(async () => {
    serve = await startServe("examples/quarantine.ts");
  });
  after(async () => {
    await serve?.stop();
  });

  const risky = mail(
    {
      From: "a@example.test",
      To: "b@example.test",
      Subject: "invoice",
      "Content-Type": 'multipart/mixed; boundary="b1"',
    },
    '--b1\nContent-Type: text/plain\n\nsee attached\n--b1\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename="invoice.exe"\n\nTVqQAAMAAAAEAAAA\n--b1--\n',
  );

  it('holds a message with an .exe attachment: "held in quarantine" and the reason', async () => {
    const r = await runBinary(["send", "-c", serve!.spec], { stdin: risky });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^held in quarantine: risky attachment type \.exe$/m);
    const { t } = await sendJson(serve!, risky);
    assert.equal(t.quarantine, "risky attachment type .exe");
    assert.deepEqual(header(t.message!, "X-Quarantined"), ["risky attachment type .exe"]);
  });

  it("does not hold an ordinary message", async () => {
    const r = await runBinary(["send", "-c", serve!.spec], { stdin: PLAIN });
    assert.equal(r.code, 0);
    assert.doesNotMatch(r.stdout, /quarantine/);
  });
});

describe("examples/http_check.ts through the binary", () => {
  let policy: Server | undefined;
  let policyPort = 0;
  const asked: Array<Record<string, unknown>> = [];
  let serve: ServeProcess | undefined;
  let closedFail: ServeProcess | undefined;
  let down: ServeProcess | undefined;

  before(async () => {
    policy = createServer((req: IncomingMessage, res) => {
      const chunks: Uint8Array[] = [];
      req.on("data", (c: Uint8Array) => chunks.push(c));
      req.on("end", () => {
        const q = JSON.parse(new TextDecoder().decode(concatBytes(chunks)));
        asked.push(q);
        const subject = String(q.subject);
        const answer = subject.includes("bad")
          ? { action: "reject", reason: "known bad\r\nsender" }
          : subject.includes("later")
          ? { action: "tempfail", reason: "busy" }
          : { action: "accept" };
        if (subject.includes("slow")) setTimeout(() => res.end(JSON.stringify(answer)), 3000);
        else res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
      });
    });
    await new Promise<void>((ok) => policy!.listen(0, "127.0.0.1", () => ok()));
    policyPort = (policy.address() as { port: number }).port;
    const url = `http://127.0.0.1:${policyPort}/check`;
    serve = await startServe("examples/http_check.ts", {
      env: { MILTERKIT_CHECK_URL: url, MILTERKIT_CHECK_TIMEOUT_MS: "500" },
    });
    // A policy service nobody listens on: port 1 on loopback refuses connections.
    down = await startServe("examples/http_check.ts", {
      env: { MILTERKIT_CHECK_URL: "http://127.0.0.1:1/check" },
    });
    closedFail = await startServe("examples/http_check.ts", {
      env: { MILTERKIT_CHECK_URL: "http://127.0.0.1:1/check", MILTERKIT_CHECK_FAIL: "tempfail" },
    });
  });
  after(async () => {
    await serve?.stop();
    await down?.stop();
    await closedFail?.stop();
    policy?.closeAllConnections();
    await new Promise<void>((ok) => policy ? policy.close(() => ok()) : ok());
  });

  it("asks the service with sender, recipients, subject and client, and marks a pass", async () => {
    const msg = mail({
      From: "a@example.test",
      To: "b@example.test, c@example.test",
      Subject: "hi",
    });
    const { code, t } = await sendJson(serve!, msg, ["--client-ip", "192.0.2.7"]);
    assert.equal(code, 0);
    assert.deepEqual(header(t.message!, "X-Check"), ["pass"]);
    assert.deepEqual(asked.at(-1), {
      client: "192.0.2.7",
      from: "a@example.test",
      to: ["b@example.test", "c@example.test"],
      subject: "hi",
    });
  });

  it("rejects (exit 1) and tempfails (exit 3) as the service says, reason on one line", async () => {
    const bad = await sendJson(serve!, mail({ From: "a@x.test", To: "b@x.test", Subject: "bad" }));
    assert.equal(bad.code, 1);
    assert.equal(bad.t.verdict.reply, "550 5.7.1 Rejected: known bad  sender");
    const later = await sendJson(
      serve!,
      mail({ From: "a@x.test", To: "b@x.test", Subject: "later" }),
    );
    assert.equal(later.code, 3);
    assert.equal(later.t.verdict.reply, "451 4.7.1 Deferred: busy");
  });

  it("fails open after its timeout when the service is slow", async () => {
    const { code, t } = await sendJson(
      serve!,
      mail({ From: "a@x.test", To: "b@x.test", Subject: "slow" }),
    );
    assert.equal(code, 0);
    assert.deepEqual(header(t.message!, "X-Check"), ["unavailable"]);
  });

  it("fails open when the service is down: delivered with X-Check: unavailable", async () => {
    const { code, t } = await sendJson(down!, PLAIN);
    assert.equal(code, 0);
    assert.equal(t.delivered, true);
    assert.deepEqual(header(t.message!, "X-Check"), ["unavailable"]);
  });

  it("fails closed with MILTERKIT_CHECK_FAIL=tempfail (exit 3, 451)", async () => {
    const { code, t } = await sendJson(closedFail!, PLAIN);
    assert.equal(code, 3);
    assert.equal(t.verdict.reply, "451 4.7.1 Policy service unavailable");
  });
});
