/**
 * Interop matrix, second MTA: a real Sendmail 8.17 (unpacked from Debian's sendmail-bin, run by
 * scripts/peers/sendmail.sh in a private mount namespace) in front of a milterkit filter
 * (`listen()` in this process). Every stage x verdict ends the way Sendmail reports it, and each
 * modification is checked in the mail Sendmail delivered (one mbox per local user).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Verdict } from "../../lib/filter/verdict.ts";
import { listen, type MilterServer } from "../../lib/server/server.ts";
import { ensurePeers, headerValues, SmtpSession } from "./harness.ts";
import {
  attempt,
  bodyOf,
  headerNames,
  marked,
  type MatrixStage,
  mboxWait,
  type Plan,
  resetPlan,
  scriptedFilter,
  type SendmailInstance,
  type SmtpOutcome,
  STAGES,
  startSendmail,
} from "./helpers_matrix.ts";

const FROM = "sender@example.test";
const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

type VerdictName =
  | "accept"
  | "reject"
  | "tempfail"
  | "discard"
  | "custom 5xx"
  | "custom 4xx"
  | "421";

const VERDICTS: Record<VerdictName, Verdict> = {
  accept: "accept",
  reject: "reject",
  tempfail: "tempfail",
  discard: "discard",
  "custom 5xx": { code: 554, enhanced: "5.7.0", text: "Custom refusal, 100% milterkit" },
  "custom 4xx": { code: 452, enhanced: "4.3.1", text: "Custom deferral" },
  "421": { code: 421, enhanced: "4.7.0", text: "Closing this session" },
};

interface Expect {
  where: SmtpOutcome["where"];
  code: number;
  text: string;
  delivered: boolean;
}

const TEMPFAIL = "4.3.2 Please try again later";

/** Sendmail 8.17's reaction (srvrsmtp.c; milter-protocol.md §3.2), per stage and verdict. */
function expected(stage: MatrixStage, verdict: VerdictName): Expect {
  const content = ["header", "eoh", "body", "eom"].includes(stage);
  const early = stage === "connect" || stage === "helo";
  const where: Expect["where"] = early ? "mail" : content ? "eom" : (stage as Expect["where"]);
  const refusedGreeting = {
    where: "greeting" as const,
    code: 554,
    text: "mta.example.test ESMTP not accepting messages",
    delivered: false,
  };
  switch (verdict) {
    case "accept":
      return { where: "eom", code: 250, text: "", delivered: true };
    case "discard":
      // not allowed at CONNECT/HELO: milterkit answers its fallback (tempfail) instead
      if (early) return { where, code: 451, text: TEMPFAIL, delivered: false };
      return { where: "eom", code: 250, text: "", delivered: false };
    case "tempfail":
      return { where, code: 451, text: TEMPFAIL, delivered: false };
    case "reject": {
      if (stage === "connect") return refusedGreeting;
      const text = stage === "helo"
        ? "5.0.0 Command rejected"
        : stage === "mail"
        ? `5.7.1 <${FROM}>... Command rejected`
        : stage === "rcpt"
        ? "5.7.1 <user@example.test>... Command rejected"
        : "5.7.1 Command rejected";
      return { where, code: content ? 554 : 550, text, delivered: false };
    }
    case "custom 5xx":
      // Sendmail keeps its own text at CONNECT (no _FFR_MILTER_CONNECT_REPLYCODE)
      if (stage === "connect") return refusedGreeting;
      return { where, code: 554, text: "5.7.0 Custom refusal, 100% milterkit", delivered: false };
    case "custom 4xx":
      if (stage === "connect") return { where, code: 451, text: TEMPFAIL, delivered: false };
      return { where, code: 452, text: "4.3.1 Custom deferral", delivered: false };
    case "421":
      if (stage === "connect") {
        return {
          where: "greeting",
          code: 421,
          text: "4.7.0 mta.example.test closing connection",
          delivered: false,
        };
      }
      return {
        where: stage === "helo" ? "helo" : where,
        code: 421,
        text: "4.7.0 Closing this session",
        delivered: false,
      };
  }
}

describe("matrix: sendmail <- milterkit filter", () => {
  const plan: Plan = { seen: [] };
  let server: MilterServer | undefined;
  let mta: SendmailInstance | undefined;

  before(async () => {
    ensurePeers();
    server = await listen("inet:0@127.0.0.1", scriptedFilter(plan));
    const port = (server.address as { port: number }).port;
    mta = await startSendmail(`inet:${port}@127.0.0.1`);
  });

  after(async () => {
    await mta?.stop();
    await server?.stop({ graceMs: 500 });
  });

  const user = () => mta!.mailbox("user");

  /** Sends a probe and waits for it: mail sent before it would have been delivered by then. */
  async function probe(): Promise<void> {
    resetPlan(plan);
    const m = marked("probe");
    const r = await attempt(mta!.port, { from: FROM, to: ["user@example.test"], data: m.data });
    assert.equal(r.code, 250, r.transcript);
    assert.equal((await mboxWait(user, m.marker, 1)).length, 1, "probe delivered");
  }

  for (const stage of STAGES) {
    for (const name of Object.keys(VERDICTS) as VerdictName[]) {
      it(`verdict ${name} at ${stage}`, async () => {
        resetPlan(plan, { stage, verdict: VERDICTS[name] });
        const m = marked(`verdict ${name} at ${stage}`);
        const got = await attempt(mta!.port, {
          from: FROM,
          to: ["user@example.test"],
          data: m.data,
        });
        const want = expected(stage, name);
        assert.equal(got.where, want.where, got.transcript);
        assert.equal(got.code, want.code, got.transcript);
        if (want.text) assert.equal(got.text, want.text, got.transcript);
        assert.equal(plan.seen.at(-1), stage, `the filter's last event: ${plan.seen.join(",")}`);
        if (want.delivered) {
          assert.equal((await mboxWait(user, m.marker, 1)).length, 1, "delivered");
        } else {
          if (name === "discard" && want.code === 250) await probe();
          assert.equal((await mboxWait(user, m.marker, 0)).length, 0, "not delivered");
        }
      });
    }
  }

  /** Sends one marked message through the plan and returns the copies in `box`'s mbox. */
  async function through(
    eom: Plan["eom"],
    opts: { headers?: string; body?: string; to?: string[]; box?: string } = {},
  ) {
    resetPlan(plan, { eom });
    const m = marked("modify me", opts.headers ?? "", opts.body);
    const r = await attempt(mta!.port, {
      from: FROM,
      to: opts.to ?? ["user@example.test"],
      data: m.data,
    });
    assert.equal(r.code, 250, r.transcript);
    const copies = await mboxWait(() => mta!.mailbox(opts.box ?? "user"), m.marker, 1);
    assert.equal(copies.length, 1, "delivered copies");
    return { text: copies[0]!, marker: m.marker };
  }

  it("header add appends the header at the end", async () => {
    const { text } = await through((ctx) => ctx.addHeader("X-Added", "added value"));
    assert.deepEqual(headerValues(text, "X-Added"), ["added value"]);
    assert.equal(headerNames(text).at(-1), "X-Added");
  });

  it("header insert at index 0 lands above the MTA's Received", async () => {
    const { text } = await through((ctx) => ctx.insertHeader("X-Top", 0, "first"));
    const names = headerNames(text);
    assert.deepEqual(headerValues(text, "X-Top"), ["first"]);
    assert.ok(names.indexOf("X-Top") < names.indexOf("Received"), names.join(","));
  });

  it("header change replaces the value in place", async () => {
    const { text } = await through((ctx) => ctx.changeHeader("Subject", 1, "changed subject"));
    assert.deepEqual(headerValues(text, "Subject"), ["changed subject"]);
  });

  it("header delete removes the first header of the message", async () => {
    const { text } = await through((ctx) => {
      assert.equal(ctx.headers[0]?.name, "From");
      ctx.deleteHeader("From", 1);
    });
    // Sendmail adds a From: of its own when the message has none; the one sent is gone
    assert.deepEqual(headerValues(text, "From").filter((v) => v === FROM), []);
    assert.deepEqual(headerValues(text, "To"), ["user@example.test"]);
  });

  it("repeated names: delete the 2nd of three X-Dup, change the 1st", async () => {
    const { text } = await through(
      (ctx) => {
        ctx.deleteHeader("X-Dup", 2);
        ctx.changeHeader("X-Dup", 1, "one changed");
      },
      { headers: "X-Dup: one\nX-Dup: two\nX-Dup: three\n" },
    );
    assert.deepEqual(headerValues(text, "X-Dup"), ["one changed", "three"]);
  });

  it("recipient add delivers a copy to the added recipient", async () => {
    const { marker } = await through((ctx) => ctx.addRecipient("<added@example.test>"));
    assert.equal((await mboxWait(() => mta!.mailbox("added"), marker, 1)).length, 1);
  });

  it("recipient add with args (NOTIFY=NEVER) delivers to the added recipient", async () => {
    const { marker } = await through((ctx) =>
      ctx.addRecipient("<added-par@example.test>", "NOTIFY=NEVER")
    );
    assert.equal((await mboxWait(() => mta!.mailbox("added-par"), marker, 1)).length, 1);
  });

  it("recipient delete drops that recipient only", async () => {
    const { marker } = await through((ctx) => ctx.deleteRecipient("<removed@example.test>"), {
      to: ["user@example.test", "removed@example.test"],
    });
    await probe();
    assert.equal((await mboxWait(() => mta!.mailbox("removed"), marker, 0)).length, 0);
  });

  it("sender change sets the envelope sender (Return-Path)", async () => {
    const { text } = await through((ctx) => ctx.changeSender("<changed-from@example.test>"));
    assert.deepEqual(headerValues(text, "Return-Path"), ["<changed-from@example.test>"]);
  });

  it("body replace with a 1.5 MB body arrives byte-exact", async () => {
    const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-replaced\r\n";
    const big = line.repeat(Math.ceil(1_500_000 / line.length));
    const { text } = await through((ctx) => ctx.replaceBody(big));
    const body = bodyOf(text);
    // no deepEqual: a 1.5 MB diff would drown the report
    assert.equal(body.length, big.length - big.split("\r\n").length + 1, "body length");
    assert.ok(body === big.replace(/\r\n/g, "\n"), "body differs");
  });

  it("quarantine holds the message instead of delivering it", async () => {
    resetPlan(plan, { eom: (ctx) => ctx.quarantine("held by milterkit matrix") });
    const m = marked("quarantine me");
    const r = await attempt(mta!.port, { from: FROM, to: ["user@example.test"], data: m.data });
    assert.equal(r.code, 250, r.transcript);
    const qf = mta!.queueFiles().find((f) => f.includes(`X-Test-Marker: ${m.marker}`));
    assert.ok(qf, "the message stays in the queue (hf file: quarantined)");
    assert.match(qf, /^qheld by milterkit matrix$/m);
    assert.equal((await mboxWait(user, m.marker, 0)).length, 0);
  });

  it("per-recipient reject refuses one recipient and delivers to the other", async () => {
    resetPlan(plan, {
      stage: "rcpt",
      rcptPrefix: "nobody@",
      verdict: { code: 550, enhanced: "5.1.1", text: "No such user here" },
    });
    const m = marked("two recipients");
    const r = await attempt(mta!.port, {
      from: FROM,
      to: ["nobody@example.test", "user@example.test"],
      data: m.data,
    });
    assert.deepEqual(r.rcpts.map((x) => `${x.code} ${x.text}`), [
      "550 5.1.1 <nobody@example.test>... No such user here",
      "250 2.1.5 <user@example.test>... Recipient ok",
    ]);
    assert.equal(r.code, 250, r.transcript);
    assert.equal((await mboxWait(user, m.marker, 1)).length, 1);
  });

  it("several messages on one connection with RSET each get their own changes", async () => {
    resetPlan(plan, {
      eom: (ctx) => ctx.addHeader("X-Message-Number", String(ctx.messageNumber)),
    });
    const session = await SmtpSession.open(mta!.port);
    try {
      const a = marked("first");
      const b = marked("second");
      const ra = await session.send({ from: FROM, to: ["user@example.test"], data: a.data });
      assert.equal(ra.code, 250, session.transcript);
      assert.equal((await session.command(`MAIL FROM:<${FROM}>`)).code, 250);
      assert.equal((await session.command("RCPT TO:<user@example.test>")).code, 250);
      assert.equal((await session.command("RSET")).code, 250);
      const rb = await session.send({ from: FROM, to: ["user@example.test"], data: b.data });
      assert.equal(rb.code, 250, session.transcript);
      const [ca] = await mboxWait(user, a.marker, 1);
      const [cb] = await mboxWait(user, b.marker, 1);
      const na = Number(headerValues(ca!, "X-Message-Number")[0]);
      const nb = Number(headerValues(cb!, "X-Message-Number")[0]);
      assert.equal(na, 1);
      assert.ok(nb > na, `${na} then ${nb}`);
      assert.equal(plan.seen.filter((s) => s === "connect").length, 1, plan.seen.join(","));
    } finally {
      await session.close();
    }
  });

  it("8-bit latin1 header bytes survive a header change and a copy by the filter", async () => {
    resetPlan(plan, {
      eom: (ctx) => {
        ctx.changeHeader("Subject", 1, "changed by milterkit");
        ctx.addHeader("X-Echo", ctx.headers.find((h) => h.name === "X-Latin1")?.value ?? "");
      },
    });
    const m = marked("latin1 subject");
    const data = latin1(
      m.data.replace("\n\n", "\nX-Latin1: caf\xe9 cr\xe8me\n\n").replace(/\n/g, "\r\n"),
    );
    const r = await attempt(mta!.port, {
      from: FROM,
      to: ["user@example.test"],
      data,
      mailParams: "BODY=8BITMIME",
    });
    assert.equal(r.code, 250, r.transcript);
    const [text] = await mboxWait(user, m.marker, 1);
    assert.ok(text?.includes("\nX-Latin1: caf\xe9 cr\xe8me\n"), text);
    assert.ok(text?.includes("\nX-Echo: caf\xe9 cr\xe8me\n"), text);
    assert.deepEqual(headerValues(text!, "Subject"), ["changed by milterkit"]);
  });
});
