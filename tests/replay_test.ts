/**
 * Replaying a recorded session (`replaySession`, `milterkit dump --replay`) against milterkit
 * filters: the same filter answers the same, a changed one shows where and how.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import type { Filter } from "../lib/filter/filter.ts";
import { serveConnection } from "../lib/filter/session.ts";
import { annotateStreams } from "../lib/inspect/annotate/feed.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import type { Direction, Duplex } from "../lib/wire/types.ts";
import { renderReplay, replaySession } from "../lib/inspect/replay.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { dumpCommand } from "../lib/cli/dump.ts";
import { fakeIo } from "./helpers/fake_io.ts";
import { relayTransaction } from "./helpers/recordings.ts";

/** Adds a header naming the queue id macro, refuses <nobody@…>, rejects "spam" at EOM. */
const original: Filter = {
  actions: ["addHeader", "changeHeader"],
  envrcpt: (r) => r.address.startsWith("nobody@") ? "reject" : undefined,
  eom(ctx) {
    ctx.addHeader("X-Queue", ctx.macro("i") ?? "none");
    ctx.changeHeader("Subject", 1, "checked");
  },
};

/** The same filter after a change: other header, no subject change, tempfails nobody@. */
const changed: Filter = {
  actions: ["addHeader", "changeHeader"],
  envrcpt: (r) => r.address.startsWith("nobody@") ? "tempfail" : undefined,
  eom(ctx) {
    ctx.addHeader("X-Queue", ctx.macro("i") ?? "none");
    ctx.addHeader("X-New", "yes");
  },
};

/** Records one Postfix-style session of the MTA engine with `filter`, through the proxy core. */
async function record(filter: Filter): Promise<{ toFilter: Uint8Array; toMta: Uint8Array }> {
  const chunks: Record<Direction, Uint8Array[]> = { "to-filter": [], "to-mta": [] };
  await relayTransaction(filter, {
    from: "<a@example.test>",
    rcpts: ["<b@example.test>", "<nobody@example.test>"],
    queueId: "4XQ1",
    message: new TextEncoder().encode("Subject: hi\r\nFrom: a@example.test\r\n\r\nHello\r\n"),
  }, (d, b) => chunks[d].push(b));
  const cat = (xs: Uint8Array[]) => new Uint8Array(Buffer.concat(xs));
  return { toFilter: cat(chunks["to-filter"]), toMta: cat(chunks["to-mta"]) };
}

function against(filter: Filter): Duplex {
  const [mta, filterSide] = duplexPair();
  void serveConnection(filterSide, filter);
  return mta;
}

describe("replaySession", () => {
  let recorded: { toFilter: Uint8Array; toMta: Uint8Array };
  before(async () => {
    recorded = await record(original);
  });

  it("finds no difference against the filter that was recorded", async () => {
    const events = annotateStreams(recorded).events;
    const r = await replaySession(events, against(original));
    assert.equal(r.error, undefined);
    assert.equal(r.identical, true, renderReplay(r, "replay"));
    assert.equal(r.style, "postfix");
    // OPTNEG, CONNECT, HELO, MAIL, 2 RCPT, DATA (its D frame only), 2 HEADER, EOM
    assert.equal(r.steps.length, 10, renderReplay(r, "replay"));
    const data = r.steps.find((s) => s.command === "DATA")!;
    assert.deepEqual([data.recorded, data.replayed], [["(not sent: disabled)"], [
      "(not sent: disabled)",
    ]]);
    const eom = r.steps.find((s) => s.command === "EOM")!;
    // The queue id came from the recorded macros, not from the replaying engine.
    assert.deepEqual(eom.replayed, [
      'ADDHEADER X-Queue: "4XQ1"',
      'CHGHEADER Subject[1] = "checked"',
      "CONTINUE",
    ]);
  });

  it("shows per command where a changed filter answers differently", async () => {
    const r = await replaySession(annotateStreams(recorded).events, against(changed));
    assert.equal(r.identical, false);
    assert.equal(r.differences, 2, renderReplay(r, "replay"));
    const diff = r.steps.filter((s) => !s.same);
    assert.deepEqual(diff.map((s) => [s.command, s.recorded, s.replayed]), [
      ["RCPT <nobody@example.test>", ["REJECT"], ["TEMPFAIL"]],
      ["EOM", [
        'ADDHEADER X-Queue: "4XQ1"',
        'CHGHEADER Subject[1] = "checked"',
        "CONTINUE",
      ], ['ADDHEADER X-Queue: "4XQ1"', 'ADDHEADER X-New: "yes"', "CONTINUE"]],
    ]);
    const text = renderReplay(r, "replay");
    assert.match(
      text,
      /≠ EOM\n {6}ADDHEADER X-Queue: "4XQ1"\n {4}- CHGHEADER Subject\[1\] = "checked"\n {4}\+ ADDHEADER X-New: "yes"\n {6}CONTINUE\n/,
    );
    assert.match(text, /result: 2 of \d+ answers differ\n$/);
  });

  it("honours what the new filter negotiates: events it switches off are not sent", async () => {
    const quiet: Filter = { ...original, ignore: ["helo", "header"] };
    const r = await replaySession(annotateStreams(recorded).events, against(quiet));
    const helo = r.steps.find((s) => s.command.startsWith("HELO"))!;
    assert.deepEqual([helo.recorded, helo.replayed], [["(no reply)"], ["(not sent: disabled)"]]);
    const headers = r.steps.filter((s) => s.command.startsWith("HEADER"));
    assert.deepEqual(headers.map((s) => s.replayed), [
      ["(not sent: disabled)"],
      ["(not sent: disabled)"],
    ]);
    assert.equal(r.steps.find((s) => s.command === "EOM")!.same, true);
    // OPTNEG (other protocol bits), HELO and both headers.
    assert.equal(r.differences, 4, renderReplay(r, "replay"));
  });

  it("reports a filter that hangs up as an incomplete replay", async () => {
    const [mta, filterSide] = duplexPair();
    void (async () => {
      const reader = filterSide.readable.getReader();
      await reader.read(); // the OPTNEG
      const writer = filterSide.writable.getWriter();
      await writer.write(encodeReply({ type: "optneg", version: 6, actions: 0, protocol: 0 }));
      await writer.close();
      await reader.cancel();
    })();
    const r = await replaySession(annotateStreams(recorded).events, mta, { timeoutMs: 2000 });
    assert.equal(r.identical, false);
    assert.match(r.error ?? "", /ConnectionClosedError/);
    assert.match(
      renderReplay(r, "replay"),
      /stopped: ConnectionClosedError.*\nresult: .*replay incomplete\n$/,
    );
  });
});

describe("milterkit dump --replay", () => {
  let dir: string;
  let same: MilterServer;
  let other: MilterServer;
  const spec = (s: MilterServer) => `inet:${(s.address as { port: number }).port}@127.0.0.1`;
  before(async () => {
    dir = mkdtempSync(`${tmpdir()}/milterkit-replay-`);
    const r = await record(original);
    writeFileSync(`${dir}/sess.to-filter.bin`, r.toFilter);
    writeFileSync(`${dir}/sess.to-mta.bin`, r.toMta);
    same = await listen("inet:0@127.0.0.1", original);
    other = await listen("inet:0@127.0.0.1", changed);
  });
  after(async () => {
    await same?.stop({ graceMs: 200 });
    await other?.stop({ graceMs: 200 });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("exits 0 when every answer is the same", async () => {
    const io = fakeIo();
    const code = await dumpCommand.run(
      [`${dir}/sess.to-filter.bin`, "--replay", "sess", "--connect", spec(same)],
      io,
    );
    assert.equal(code, 0, io.out() + io.err());
    assert.match(io.out(), /^replay of sess against inet:\d+@127\.0\.0\.1 \(postfix macros\)\n/);
    assert.match(io.out(), /result: identical/);
  });

  it("exits 1 and prints JSON steps when answers differ", async () => {
    const io = fakeIo();
    const code = await dumpCommand.run(
      [`${dir}/sess.to-filter.bin`, "--replay", "sess", "-c", spec(other), "--json"],
      io,
    );
    assert.equal(code, 1);
    const j = JSON.parse(io.out());
    assert.equal(j.session, "sess");
    assert.equal(j.differences, 2);
    assert.deepEqual(
      j.steps.filter((s: { same: boolean }) => !s.same).map((s: { command: string }) => s.command),
      [
        "RCPT <nobody@example.test>",
        "EOM",
      ],
    );
  });

  it("refuses --replay without --connect and an unknown session", async () => {
    await assert.rejects(
      dumpCommand.run([`${dir}/sess.to-filter.bin`, "--replay", "sess"], fakeIo()),
      /--replay needs --connect SPEC/,
    );
    const io = fakeIo();
    const code = await dumpCommand.run(
      [`${dir}/sess.to-filter.bin`, "--replay", "nope", "-c", spec(same)],
      io,
    );
    assert.equal(code, 1);
    assert.match(io.err(), /--replay nope matches 0 sessions/);
  });
});
