/**
 * Every example filter, driven by the MTA engine the way Postfix sends mail: verdicts,
 * modifications and the resulting message.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import process from "node:process";
import type { Filter } from "../lib/filter/filter.ts";
import { deliveredText, drive } from "./helpers/drive.ts";

// deno-lint-ignore no-explicit-any
async function example(name: string): Promise<Filter<any, any>> {
  return (await import(`../examples/${name}.ts`)).default;
}

const plain = (subject: string, extra = "") =>
  `From: Sender <sender@example.test>\r\nTo: user@example.test\r\nSubject: ${subject}\r\n` +
  `Message-Id: <1@example.test>\r\n${extra}\r\nHello there.\r\n`;

describe("examples/reject_subject.ts", () => {
  it("rejects a matching subject with the custom reply at the header", async () => {
    const r = await drive(await example("reject_subject"), { message: plain("Cheap VIAGRA now") });
    assert.equal(r.verdict.type, "reject");
    assert.equal(r.verdict.stage, "header");
    assert.equal(r.verdict.reply, "550 5.7.1 Message refused: subject matches a local rule");
    assert.equal(r.delivered, false);
  });
  it("lets other mail through unchanged", async () => {
    const r = await drive(await example("reject_subject"), { message: plain("Lunch?") });
    assert.equal(r.delivered, true);
    assert.deepEqual(r.modifications, []);
  });
});

describe("examples/tag_suspicious.ts", () => {
  it("tags a From/envelope mismatch with a header and a subject prefix", async () => {
    const r = await drive(await example("tag_suspicious"), {
      from: "bounce@elsewhere.example",
      message: plain("Invoice"),
    });
    assert.equal(r.delivered, true);
    const text = deliveredText(r)!;
    assert.match(text, /\r\nX-Suspicious: yes \(from-mismatch\)\r\n/);
    assert.match(text, /\r\nSubject: \[SUSPICIOUS\] Invoice\r\n/);
  });
  it("leaves a consistent message alone", async () => {
    const r = await drive(await example("tag_suspicious"), { message: plain("Invoice") });
    assert.deepEqual(r.modifications, []);
  });
});

describe("examples/recipient_allowlist.ts", () => {
  it("refuses unlisted recipients one by one and delivers to the rest", async () => {
    const r = await drive(await example("recipient_allowlist"), {
      rcpts: ["user@example.test", "stranger@other.example", "postmaster@example.test"],
      message: plain("hi"),
    });
    assert.equal(r.delivered, true);
    assert.deepEqual(r.rejectedRecipients.map((x) => x.recipient), ["<stranger@other.example>"]);
    assert.match(
      r.rejectedRecipients[0]!.reply,
      /^550 5\.1\.1 <stranger@other\.example>: recipient not accepted here$/,
    );
    assert.deepEqual(r.result?.envelope.recipients.map((x) => x.recipient), [
      "<user@example.test>",
      "<postmaster@example.test>",
    ]);
  });
});

describe("examples/disclaimer.ts", () => {
  it("appends the disclaimer to a plain-text body", async () => {
    const r = await drive(await example("disclaimer"), { message: plain("Report") });
    assert.equal(r.delivered, true);
    assert.equal(
      new TextDecoder().decode(r.result!.message.body),
      "Hello there.\r\n-- \r\nThis e-mail and any attachments are confidential.\r\n",
    );
  });
  it("leaves multipart messages alone and says so", async () => {
    const r = await drive(await example("disclaimer"), {
      message: plain("Report", 'Content-Type: multipart/mixed; boundary="b"\r\n'),
    });
    assert.equal(r.result?.bodyReplaced, false);
    assert.match(deliveredText(r)!, /X-Disclaimer: skipped/);
  });
});

describe("examples/rewrite_sender.ts", () => {
  it("rewrites an internal sender to the bounce address", async () => {
    const r = await drive(await example("rewrite_sender"), {
      from: "joe@internal.example.test",
      message: plain("x"),
    });
    assert.equal(r.result?.envelope.sender, "<bounces@example.test>");
    assert.match(deliveredText(r)!, /X-Original-Sender: joe@internal\.example\.test/);
  });
  it("keeps other senders", async () => {
    const r = await drive(await example("rewrite_sender"), { message: plain("x") });
    assert.equal(r.result?.envelope.sender, "<sender@example.test>");
  });
});

describe("examples/quarantine.ts", () => {
  it("holds a message with an executable attachment", async () => {
    const body = 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' +
      'Content-Disposition: attachment; filename="invoice.exe"\r\n\r\nMZ\r\n--b--\r\n';
    const r = await drive(await example("quarantine"), {
      message: "From: a@example.test\r\nTo: user@example.test\r\nSubject: x\r\n" + body,
    });
    assert.equal(r.delivered, true);
    assert.equal(r.result?.quarantine, "risky attachment type .exe");
  });
  it("does not hold a harmless one", async () => {
    const r = await drive(await example("quarantine"), { message: plain("x") });
    assert.equal(r.result?.quarantine, undefined);
  });
});

describe("examples/http_check.ts", () => {
  let server: Server;
  let answer: unknown = { action: "accept" };
  let delayMs = 0;
  const seen: unknown[] = [];
  before(async () => {
    server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        seen.push(JSON.parse(body));
        setTimeout(() => {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify(answer));
        }, delayMs);
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    process.env.MILTERKIT_CHECK_URL = `http://127.0.0.1:${port}/check`;
    process.env.MILTERKIT_CHECK_TIMEOUT_MS = "300";
  });
  after(() => {
    server.closeAllConnections?.();
    server.close();
  });

  it("follows the service's reject with its reason, having sent it the envelope", async () => {
    answer = { action: "reject", reason: "listed" };
    const r = await drive(await example("http_check"), { message: plain("hello") });
    assert.equal(r.verdict.reply, "550 5.7.1 Rejected: listed");
    assert.deepEqual(seen.at(-1), {
      client: "192.0.2.10",
      from: "sender@example.test",
      to: ["user@example.test"],
      subject: "hello",
    });
  });
  it("fails open with a header when the service is too slow", async () => {
    answer = { action: "reject" };
    delayMs = 1000;
    const r = await drive(await example("http_check"), { message: plain("hello") });
    delayMs = 0;
    assert.equal(r.delivered, true);
    assert.match(deliveredText(r)!, /X-Check: unavailable/);
  });
});
