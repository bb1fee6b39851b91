/**
 * `milterkit proxy` message summaries (a child process in front of a real filter over real
 * sockets): each carries the MTA's queue id and a timestamp; `--json` prints structured objects;
 * messages are numbered from 1 in text and JSON alike, and as `dump` numbers the recording.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter } from "../lib/filter/filter.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { connect as connectSocket } from "../lib/server/net.ts";
import { type ProxyChild, proxySuite, runCli, terminate } from "./helpers/proxy_child.ts";

const TIMEOUT = { timeout: 60_000 };

const filter = defineFilter({
  actions: ["addHeader"],
  envrcpt: (r) =>
    r.address.includes("nobody")
      ? { code: 550, enhanced: "5.1.1", text: "No such user" }
      : undefined,
  eom: (ctx) => {
    ctx.addHeader("X-Seen", "yes");
    return /spam/.test(ctx.sender?.address ?? "")
      ? { code: 554, enhanced: "5.7.1", text: "Go away" }
      : "accept";
  },
});

/** Two messages on one connection, with queue ids Q1AAA and Q2BBB. */
async function twoMessages(port: number): Promise<void> {
  const client = await MilterClient.open(await connectSocket(`inet:${port}@127.0.0.1`));
  const base = {
    connect: { hostname: "mx.example", family: "inet" as const, address: "192.0.2.7", port: 4000 },
    helo: "mx.example",
    message: new TextEncoder().encode("Subject: hi\r\n\r\nbody\r\n"),
  };
  await runTransaction(client, {
    ...base,
    queueId: "Q1AAA",
    from: "<alice@example.test>",
    rcpts: ["<bob@example.test>", "<nobody@example.test>"],
  });
  await runTransaction(client, {
    ...base,
    queueId: "Q2BBB",
    from: "<spam@example.test>",
    rcpts: ["<bob@example.test>"],
  });
  await endSession(client);
}

describe("proxy message summaries", () => {
  const suite = proxySuite(filter);

  const waitFor = async (p: ProxyChild, re: RegExp, count: number) => {
    const deadline = Date.now() + 10_000;
    while ((p.stdout().match(re) ?? []).length < count && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it("--json: structured objects with queue id, time, 1-based numbers", TIMEOUT, async () => {
    const p = await suite.start(["--json", "--quiet"]);
    const before = Date.now();
    await twoMessages(p.port);
    await waitFor(p, /"type":"message"/g, 2);
    const records = p.stdout().trim().split("\n").map((l) => JSON.parse(l))
      .filter((o) => o.type === "message");
    assert.equal(records.length, 2, p.stdout());
    const [m1, m2] = records;
    assert.deepEqual(
      [m1.session, m1.message, m1.queueId, m2.session, m2.message, m2.queueId],
      ["s1", 1, "Q1AAA", "s1", 2, "Q2BBB"],
    );
    for (const m of records) {
      const t = Date.parse(m.time);
      assert.ok(t >= before - 1000 && t <= Date.now() + 1000, m.time);
      assert.equal(m.client, "mx.example [192.0.2.7]");
    }
    assert.equal(m1.from, "<alice@example.test>");
    assert.deepEqual(m1.to, [
      { address: "<bob@example.test>" },
      { address: "<nobody@example.test>", verdict: "reject", text: "550 5.1.1 No such user" },
    ]);
    assert.equal(m1.verdict, "accept");
    assert.deepEqual(m1.changes, [{ type: "addheader", name: "X-Seen", value: "yes" }]);
    assert.equal(typeof m1.latencyMs.eom, "number");
    assert.deepEqual(
      [m2.verdict, m2.stage, m2.reply, m2.text],
      ["reject", "eom", "replycode", "554 5.7.1 Go away"],
    );
    assert.ok(await terminate(p));
  });

  it("--json without --quiet: each frame is a structured object too", TIMEOUT, async () => {
    const p = await suite.start(["--json"]);
    await twoMessages(p.port);
    await waitFor(p, /"type":"message"/g, 2);
    const objects = p.stdout().trim().split("\n").map((l) => JSON.parse(l));
    const frames = objects.filter((o) => o.type === "frame");
    assert.ok(frames.length > 20, p.stdout());
    assert.deepEqual(
      [frames[0].session, frames[0].dir, frames[0].decoded.type],
      ["s1", "to-filter", "optneg"],
    );
    const mails = frames.filter((f) => f.decoded.type === "mail").map((f) => f.decoded.sender);
    assert.deepEqual(mails, ["<alice@example.test>", "<spam@example.test>"]);
    assert.ok(frames.every((f) => typeof f.t === "number" && typeof f.frame === "string"));
    assert.ok(await terminate(p));
  });

  it(
    "text: the same numbers, queue ids and times, matching dump's numbering",
    TIMEOUT,
    async () => {
      const file = `${suite.dir}/r.jsonl`;
      const p = await suite.start(["--quiet", "-r", file]);
      await twoMessages(p.port);
      await waitFor(p, /\] message \d/g, 2);
      const lines = p.stdout().split("\n").filter((l) => / message \d/.test(l));
      assert.equal(lines.length, 2, p.stdout());
      assert.match(
        lines[0]!,
        /^\[s1\] message 1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z queue=Q1AAA: from=<alice@example\.test> to=<bob@example\.test>,<nobody@example\.test>\(reject\) verdict=ACCEPT/,
      );
      assert.match(
        lines[1]!,
        /^\[s1\] message 2 \S+Z queue=Q2BBB: from=<spam@example\.test> .*verdict=REJECT 554 5\.7\.1 Go away/,
      );
      assert.ok(await terminate(p));
      const dump = await runCli(["dump", file, "--color", "never"]);
      assert.equal(dump.code, 0, dump.stderr);
      assert.match(dump.stdout, /-- message 1 \(queue id Q1AAA\)/);
      assert.match(dump.stdout, /-- message 2 \(queue id Q2BBB\)/);
    },
  );
});
