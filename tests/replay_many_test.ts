/**
 * `milterkit dump --replay all|LIST [--compare verdicts]`: every recorded session replayed
 * against a real filter server over TCP, with a summary table; `--compare verdicts` sees only
 * changed decisions and modifications, not negotiation, macros or reply wording.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import type { Filter } from "../lib/filter/filter.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { RecordingWriter } from "../lib/inspect/recording.ts";
import { dumpCommand } from "../lib/cli/dump.ts";
import { fakeIo } from "./helpers/fake_io.ts";
import { relayTransaction } from "./helpers/recordings.ts";

/** Rejects <nobody@…> with 550 5.7.1, tags every message it accepts. */
const original: Filter = {
  actions: ["addHeader"],
  envrcpt: (r) =>
    r.address.startsWith("nobody@")
      ? { code: 550, enhanced: "5.7.1", text: "No such user" }
      : undefined,
  eom: (ctx) => void ctx.addHeader("X-Checked", "yes"),
};

/** The same decisions, negotiated and worded differently (other macros, no header replies). */
const reworded: Filter = {
  actions: ["addHeader", "changeHeader", "quarantine"],
  macros: { envfrom: ["{auth_authen}"], connect: ["j"] },
  noReply: ["header"],
  envrcpt: (r) =>
    r.address.startsWith("nobody@")
      ? { code: 550, enhanced: "5.7.1", text: "Unknown recipient, go away" }
      : undefined,
  eom: (ctx) => void ctx.addHeader("X-Checked", "yes"),
};

/** A new version that changed its mind: tempfails nobody@, adds another header. */
const changed: Filter = {
  actions: ["addHeader"],
  envrcpt: (r) => r.address.startsWith("nobody@") ? "tempfail" : undefined,
  eom: (ctx) => {
    ctx.addHeader("X-Checked", "yes");
    ctx.addHeader("X-Version", "2");
  },
};

const SESSIONS = [
  { from: "<a@example.test>", rcpts: ["<b@example.test>", "<nobody@example.test>"] },
  { from: "<c@example.test>", rcpts: ["<d@example.test>"] },
  { from: "<e@example.test>", rcpts: ["<f@example.test>"] },
];

/** Records the sessions through the proxy core against `filter`, as `proxy --record` would. */
async function recording(filter: Filter): Promise<string> {
  const lines: string[] = [];
  const w = new RecordingWriter((l) => lines.push(l));
  for (const [i, s] of SESSIONS.entries()) {
    const id = `c${i + 1}`;
    w.start(id, { mta: "127.0.0.1:4000", filter: "127.0.0.1:9000" });
    await relayTransaction(filter, {
      from: s.from,
      rcpts: s.rcpts,
      queueId: `Q${i}`,
      message: new TextEncoder().encode("Subject: hi\r\nFrom: a@example.test\r\n\r\nHello\r\n"),
    }, (d, b) => w.data(id, d, b));
    w.end(id);
  }
  return lines.join("\n") + "\n";
}

describe("milterkit dump --replay all and lists", () => {
  let dir: string;
  let file: string;
  const servers: Record<string, MilterServer> = {};
  const spec = (name: string) =>
    `inet:${(servers[name]!.address as { port: number }).port}@127.0.0.1`;
  const run = async (args: string[]) => {
    const io = fakeIo();
    const code = await dumpCommand.run([file, ...args], io);
    return { code, out: io.out(), err: io.err() };
  };
  before(async () => {
    dir = mkdtempSync(`${tmpdir()}/milterkit-replay-many-`);
    file = `${dir}/yesterday.jsonl`;
    writeFileSync(file, await recording(original));
    for (const [name, f] of Object.entries({ original, reworded, changed })) {
      servers[name] = await listen("inet:0@127.0.0.1", f);
    }
  });
  after(async () => {
    for (const s of Object.values(servers)) await s.stop({ graceMs: 200 });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("the recorded filter: every session the same, a table and exit 0", async () => {
    const r = await run(["--replay", "all", "-c", spec("original")]);
    assert.equal(r.code, 0, r.out + r.err);
    const rows = r.out.trim().split("\n");
    assert.match(rows[0]!, /^session\s+messages\s+recorded\s+replayed\s+result$/);
    assert.equal(
      rows.filter((l) => /^yesterday\.jsonl#c\d\s+1\s+accept\s+accept\s+same$/.test(l)).length,
      3,
    );
    assert.match(
      rows.at(-1)!,
      /^3 session\(s\) replayed against inet:\d+@127\.0\.0\.1: 3 the same, 0 different/,
    );
  });

  it("other negotiation, macros and wording: answers differ, verdicts do not", async () => {
    const answers = await run(["--replay", "all", "-c", spec("reworded")]);
    assert.equal(answers.code, 1);
    assert.match(answers.out, /answer\(s\) differ/);
    const verdicts = await run([
      "--replay",
      "all",
      "-c",
      spec("reworded"),
      "--compare",
      "verdicts",
    ]);
    assert.equal(verdicts.code, 0, verdicts.out + verdicts.err);
    assert.doesNotMatch(verdicts.out, /≠/);
    assert.match(verdicts.out, /3 the same, 0 different \(compared: verdicts\)/);
  });

  it("a changed decision and changed modifications are reported, and only those", async () => {
    const r = await run(["--replay", "all", "-c", spec("changed"), "--compare", "verdicts"]);
    assert.equal(r.code, 1);
    assert.match(
      r.out,
      /≠ message 1 RCPT <nobody@example\.test>: reject 550 5\.7\.1 -> tempfail\n/,
    );
    assert.match(
      r.out,
      /≠ message 1 <a@example\.test>: accept, modifications changed\n {4}\+ ADDHEADER X-Version: "2"\n/,
    );
    assert.equal([...r.out.matchAll(/^≠ /gm)].length, 4, r.out); // 3 messages' headers, 1 rcpt
    assert.match(r.out, /yesterday\.jsonl#c1\s+1\s+accept\s+accept\s+2 decision\(s\) changed/);
    assert.match(r.out, /3 session\(s\) replayed .*: 0 the same, 3 different/);
  });

  it("a list of sessions, JSON lines with the decisions and a summary object", async () => {
    const r = await run([
      "--replay",
      "c2,c3",
      "-c",
      spec("changed"),
      "--compare",
      "verdicts",
      "--json",
    ]);
    assert.equal(r.code, 1);
    const lines = r.out.trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.slice(0, 2).map((j) => j.session), [
      "yesterday.jsonl#c2",
      "yesterday.jsonl#c3",
    ]);
    const change = lines[0].decisions.find((d: { changed: boolean }) => d.changed);
    assert.equal(change.what, "message 1 <c@example.test>");
    assert.deepEqual(change.modifications.replayed, [
      'ADDHEADER X-Checked: "yes"',
      'ADDHEADER X-Version: "2"',
    ]);
    assert.deepEqual(lines[2], { summary: { sessions: 2, same: 0, different: 2 } });
  });

  it("the other selectors narrow --replay all", async () => {
    const r = await run(["--replay", "all", "-c", spec("original"), "--from", "c@example"]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^1 session\(s\) replayed/m);
  });
});
