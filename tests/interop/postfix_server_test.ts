/**
 * A real Postfix on loopback sends mail through a milterkit filter served by this runtime's
 * socket adapter (and by the node:net adapter): delivered mail carries the filter's changes,
 * refused mail gets the filter's exact reply text.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter } from "../../lib/filter/filter.ts";
import { listen, type MilterServer } from "../../lib/server/server.ts";
import {
  ensurePeers,
  headerValues,
  type MaildirMessage,
  type PostfixInstance,
  readMaildir,
  sendMail,
  startPostfix,
} from "./harness.ts";

const filter = defineFilter<Record<string, never>, { subject?: string }>({
  name: "interop",
  actions: ["addHeader", "changeHeader", "replaceBody", "addRecipient", "deleteRecipient"],
  envrcpt(rcpt) {
    if (rcpt.address.startsWith("nobody@")) {
      return { code: 550, enhanced: "5.1.1", text: `No mailbox for ${rcpt.address}, 100% sure` };
    }
  },
  header({ name, value }, ctx) {
    if (name.toLowerCase() === "subject") ctx.message.subject = value;
  },
  eom(ctx) {
    const subject = ctx.message.subject ?? "";
    if (subject.includes("REJECTME")) {
      return { code: 550, enhanced: "5.7.1", text: "Rejected by milterkit (REJECTME)" };
    }
    if (subject.includes("TEMPFAILME")) return { code: 451, enhanced: "4.7.1", text: "Later" };
    ctx.addHeader("X-Milterkit", `seen; client=${ctx.client?.address}`);
    if (subject.includes("MODIFYME")) {
      ctx.changeHeader("Subject", 1, "MODIFIED by milterkit");
      ctx.insertHeader("X-Milterkit-First", 0, "at the top");
      ctx.addRecipient("<added@example.test>");
      ctx.replaceBody("Replaced by milterkit.\r\n");
    }
  },
});

let seq = 0;
function message(subject: string) {
  const marker = `k${Date.now()}-${++seq}`;
  return {
    marker,
    data: `From: sender@example.test\nTo: user@example.test\nSubject: ${subject}\n` +
      `X-Test-Marker: ${marker}\n\nOriginal body.\n`,
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

const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";

for (const adapter of [runtime, "node"] as const) {
  describe(`Postfix through a milterkit filter (${adapter} adapter under ${runtime})`, () => {
    let server: MilterServer;
    let mta: PostfixInstance;

    before(async () => {
      ensurePeers();
      server = await listen("inet:0@127.0.0.1", filter, { adapter });
      const port = (server.address as { port: number }).port;
      mta = await startPostfix({ milters: `inet:127.0.0.1:${port}` });
    });

    /** Sends one message from sender@ to user@example.test through this Postfix. */
    const send = (data: string, to = ["user@example.test"]) =>
      sendMail({ port: mta.port, from: "sender@example.test", to, data });

    after(async () => {
      await mta?.stop();
      await server?.stop({ graceMs: 1000 });
    });

    it("delivers accepted mail with the added header", async () => {
      const m = message("hello");
      const r = await send(m.data);
      assert.equal(r.code, 250, r.transcript);
      const [got] = await copies(mta.maildir, m.marker, 1);
      assert.ok(got, "delivered");
      assert.deepEqual(headerValues(got.text, "X-Milterkit"), ["seen; client=127.0.0.1"]);
    });

    it("applies every change of a MODIFYME message in the delivered mail", async () => {
      const m = message("please MODIFYME");
      const r = await send(m.data);
      assert.equal(r.code, 250, r.transcript);
      const got = await copies(mta.maildir, m.marker, 2);
      assert.equal(got.length, 2, "original and added recipient");
      const to = got.map((g) => headerValues(g.text, "Delivered-To")[0]).sort();
      assert.deepEqual(to, ["added@example.test", "user@example.test"]);
      for (const g of got) {
        assert.deepEqual(headerValues(g.text, "Subject"), ["MODIFIED by milterkit"]);
        assert.match(g.text, /\n\nReplaced by milterkit\.\n?$/);
        // Inserted at index 0: above Postfix's own Received header.
        const names = g.text.split("\n\n")[0]!.split("\n").filter((l) => /^\S/.test(l)).map((l) =>
          l.split(":")[0]
        );
        assert.ok(names.indexOf("X-Milterkit-First") < names.indexOf("Received"), names.join(","));
      }
    });

    it("refuses a message with the filter's exact reply after DATA", async () => {
      const m = message("x REJECTME");
      const r = await send(m.data);
      assert.equal(r.stage, "eom");
      assert.equal(r.code, 550);
      assert.equal(r.text, "5.7.1 Rejected by milterkit (REJECTME)");
    });

    it("tempfails with the filter's 451 text", async () => {
      const m = message("TEMPFAILME");
      const r = await send(m.data);
      assert.equal(r.code, 451);
      assert.equal(r.text, "4.7.1 Later");
    });

    it("refuses one recipient at RCPT with the escaped % intact and delivers to the other", async () => {
      const m = message("two rcpts");
      const r = await send(m.data, ["nobody@example.test", "user@example.test"]);
      assert.equal(r.rcpts[0]?.code, 550);
      assert.equal(r.rcpts[0]?.text, "5.1.1 No mailbox for nobody@example.test, 100% sure");
      assert.equal(r.code, 250);
      const got = await copies(mta.maildir, m.marker, 1);
      assert.equal(got.length, 1);
    });
  });
}
