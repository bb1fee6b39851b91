import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dumpCommand } from "../lib/cli/dump.ts";
import { LatencyHistogram, VerdictSeries } from "../lib/inspect/stats.ts";
import { fakeIo } from "./helpers/fake_io.ts";
import { LATENCY, TRAFFIC_T0, trafficRecording } from "./helpers/traffic.ts";

const tmp = mkdtempSync(join(tmpdir(), "milterkit-dump-stats-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const N = 200;
const file = join(tmp, "day.jsonl");
writeFileSync(file, trafficRecording(N, 6).join("\n") + "\n");

async function run(args: string[]) {
  const io = fakeIo();
  const code = await dumpCommand.run(args, io);
  return { code, out: io.out(), err: io.err() };
}

describe("dump --stats", () => {
  it("counts verdicts, stages, refused recipients and reasons as generated", async () => {
    const r = await run([file, "--stats", "--json"]);
    assert.equal(r.code, 0, r.err);
    const { stats: s } = JSON.parse(r.out);
    assert.equal(s.sessions, N);
    assert.equal(s.messages, N);
    assert.deepEqual(s.verdicts, {
      accept: N * 0.7,
      reject: N * 0.1,
      tempfail: N * 0.1,
      discard: N * 0.1,
    });
    assert.deepEqual(s.byStage, {
      "accept@eom": N * 0.7,
      "reject@eom": N * 0.1,
      "tempfail@envfrom": N * 0.1,
      "discard@eom": N * 0.1,
    });
    assert.deepEqual(s.recipientVerdicts, { reject: N * 0.1 });
    assert.deepEqual(s.reasons, [
      { reason: "451 4.7.1 Greylisted, try again later", count: N * 0.1 },
      { reason: "550 5.1.1 No such user", count: N * 0.1 },
      { reason: "550 5.7.1 Spam detected", count: N * 0.1 },
    ]);
    assert.equal(s.from, TRAFFIC_T0 + 1); // the first frame, 1 ms after the session opened
    assert.deepEqual(s.hours.map((h: { hour: string }) => h.hour), [
      "2026-11-20T06:00Z",
      "2026-11-20T07:00Z",
      "2026-11-20T08:00Z",
      "2026-11-20T09:00Z",
      "2026-11-20T10:00Z",
      "2026-11-20T11:00Z",
    ]);
    assert.equal(s.hours.reduce((n: number, h: { messages: number }) => n + h.messages, 0), N);
  });

  it("latency percentiles per stage match the generated delays (within the histogram's 6 %)", async () => {
    const { stats: s } = JSON.parse((await run([file, "--stats", "--json"])).out);
    for (const [stage, ms] of Object.entries(LATENCY)) {
      const l = s.latency[stage];
      assert.ok(l, stage);
      for (const p of [l.p50Ms, l.p99Ms]) {
        assert.ok(Math.abs(p - ms) <= ms * 0.07, `${stage} ${p} vs ${ms}`);
      }
    }
    // EOM: 20 + 10 × (i mod 7) ms for the sessions that reach it
    assert.ok(s.latency.eom.p50Ms >= 45 && s.latency.eom.p50Ms <= 53, String(s.latency.eom.p50Ms));
    assert.ok(Math.abs(s.latency.eom.maxMs - 80) < 0.01);
  });

  it("text output names every section; the selectors narrow what is counted", async () => {
    const text = await run([file, "--stats"]);
    assert.equal(text.code, 0);
    for (
      const h of [
        "verdicts (messages):",
        "by stage",
        "top reject/tempfail reasons:",
        "reply latency per stage",
        "per hour (UTC):",
      ]
    ) {
      assert.ok(text.out.includes(h), h);
    }
    assert.match(
      text.out,
      /^200 sessions, 200 messages, 200 recipients, 2026-11-20T06:00:00\.001Z to /,
    );
    const rejects = await run([file, "--stats", "--json", "--verdict", "reject"]);
    assert.deepEqual(JSON.parse(rejects.out).stats.verdicts, { reject: N * 0.1 });
  });

  it("works on captures as well (the recorded pcaps)", async () => {
    const root = new URL("./data/captures/", import.meta.url).pathname;
    const r = await run([`${root}postfix-libmilter-actions.pcap`, "--stats", "--json"]);
    const { stats: s } = JSON.parse(r.out);
    assert.equal(s.sessions, 4);
    assert.ok(s.latency.eom.count > 0);
    // stages are listed in protocol order, in the stage vocabulary of the filter API
    const text = (await run([`${root}postfix-libmilter-actions.pcap`, "--stats"])).out;
    const section = text.slice(text.indexOf("reply latency per stage"));
    const listed = [...section.matchAll(/^ {2}(\w+) +\d/gm)].map((m) => m[1]);
    assert.deepEqual(listed, [
      "optneg",
      "connect",
      "helo",
      "envfrom",
      "envrcpt",
      "header",
      "eoh",
      "body",
      "eom",
    ]);
  });
});

describe("LatencyHistogram and VerdictSeries", () => {
  it("percentiles of a known distribution", () => {
    const h = new LatencyHistogram();
    for (let i = 1; i <= 1000; i++) h.add(i / 10); // 0.1 .. 100 ms
    for (const [p, want] of [[50, 50], [90, 90], [99, 99]]) {
      const got = h.percentile(p!);
      assert.ok(Math.abs(got - want!) <= want! * 0.07, `p${p} ${got}`);
    }
    assert.equal(h.percentile(100), 100);
  });
  it("the series widens its slots instead of growing past its bound", () => {
    const v = new VerdictSeries();
    for (let s = 0; s < 30 * 86_400; s += 7) v.add(s * 1000, s % 2 ? "accept" : "reject");
    assert.ok(v.slots().length <= 2000);
    assert.ok(v.resolutionMs >= 3_600_000);
    const total = v.slots().reduce(
      (n, sl) => n + (sl.verdicts.accept ?? 0) + (sl.verdicts.reject ?? 0),
      0,
    );
    assert.equal(total, Math.ceil((30 * 86_400) / 7));
  });
});

describe("dump --html", () => {
  it("writes one self-contained page with the charts' data", async () => {
    const out = join(tmp, "report.html");
    const r = await run([file, "--html", out]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /wrote .*report\.html \(200 sessions\)/);
    const html = readFileSync(out, "utf8");
    assert.match(html, /^<!doctype html>/);
    assert.doesNotMatch(
      html,
      /<(link|img|iframe)\b|\bsrc=|@import|url\(/i,
      "no external resources",
    );
    assert.doesNotMatch(html, /https?:\/\//);
    assert.equal((html.match(/class="bar" data-kind=/g) ?? []).length > 0, true);
    assert.match(html, /data-stage="eom"/);
  });
});
