/**
 * `milterkit bench` against a real filter server over TCP: real .eml messages (files or a
 * directory), random senders, recipients and client addresses from pools (repeatable with a
 * seed), rounded JSON, a latency histogram in text, JSON and an HTML page.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Filter } from "../lib/filter/filter.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { benchCommand } from "../lib/cli/bench.ts";
import { UsageError } from "../lib/cli/types.ts";
import { fakeIo } from "./helpers/fake_io.ts";

interface Seen {
  clients: string[];
  senders: string[];
  rcpts: string[];
  subjects: string[];
}

describe("milterkit bench", () => {
  let dir: string;
  let server: MilterServer;
  let seen: Seen;
  const reset = () => (seen = { clients: [], senders: [], rcpts: [], subjects: [] });
  const filter: Filter = {
    connect: (info) => void seen.clients.push(info.address ?? ""),
    envfrom: (s) => void seen.senders.push(s.address),
    envrcpt: (r) => void seen.rcpts.push(r.address),
    header: (h) => void (h.name === "Subject" && seen.subjects.push(h.value.trim())),
    eom: () => "accept",
  };
  const spec = () => `inet:${(server.address as { port: number }).port}@127.0.0.1`;
  const run = async (args: string[]) => {
    reset();
    const io = fakeIo();
    const code = await benchCommand.run(["-c", spec(), ...args], io);
    return { code, out: io.out(), err: io.err() };
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "milterkit-bench-"));
    mkdirSync(join(dir, "samples"));
    for (const [name, subject] of [["a.eml", "first sample"], ["b.eml", "second sample"]]) {
      // LF line ends, as .eml files saved on Unix usually have
      writeFileSync(
        join(dir, "samples", name!),
        `From: someone@example.org\nTo: you@example.test\nSubject: ${subject}\n\nHello.\n`,
      );
    }
    mkdirSync(join(dir, "empty"));
    server = await listen("inet:0@127.0.0.1", filter);
  });
  after(async () => {
    await server?.stop({ graceMs: 500 });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("sends the .eml files of a directory in turn, with random envelopes and clients", async () => {
    const r = await run([
      "--message",
      join(dir, "samples"),
      "--total",
      "40",
      "-n",
      "2",
      "-m",
      "2",
      "--senders",
      "5",
      "--clients",
      "4",
      "--recipients",
      "2",
      "--json",
    ]);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.equal(j.messages, 40);
    assert.equal(j.files, 2);
    assert.deepEqual(
      [...new Set(seen.subjects)].sort(),
      ["first sample", "second sample"],
    );
    assert.equal(seen.subjects.filter((s) => s === "first sample").length, 20);
    const senders = new Set(seen.senders);
    assert.ok(senders.size >= 2 && senders.size <= 5, [...senders].join());
    assert.ok([...senders].every((s) => /^sender[0-4]@domain\d+\.example$/.test(s)));
    assert.equal(seen.rcpts.length, 80);
    assert.ok(seen.rcpts.every((a) => /^user\d+@example\.test$/.test(a)));
    assert.ok(new Set(seen.rcpts).size > 2);
    const clients = new Set(seen.clients);
    assert.equal(seen.clients.length, 20); // -m 2: a new connection every two messages
    assert.ok(clients.size >= 2 && clients.size <= 4, [...clients].join());
    assert.ok([...clients].every((a) => /^10\.0\.0\.[0-3]$/.test(a)));
  });

  it("the same seed makes the same choices", async () => {
    const args = ["--total", "12", "-n", "1", "-m", "3", "--senders", "50", "--clients", "50"];
    await run([...args, "--seed", "9", "--json"]);
    const first = structuredClone(seen);
    await run([...args, "--seed", "9", "--json"]);
    assert.deepEqual(seen.senders, first.senders);
    assert.deepEqual(seen.clients, first.clients);
    await run([...args, "--seed", "10", "--json"]);
    assert.notDeepEqual(seen.senders, first.senders);
  });

  it("JSON numbers are rounded; the histogram counts every message; text shows it", async () => {
    const r = await run(["--total", "60", "-n", "3", "--json"]);
    const j = JSON.parse(r.out);
    const decimals = (v: number) => (String(v).split(".")[1] ?? "").length;
    for (const q of [j.message, ...Object.values(j.stages)] as Record<string, number>[]) {
      for (const k of ["p50", "p90", "p99", "max"]) assert.ok(decimals(q[k]!) <= 3, `${k} ${q[k]}`);
    }
    assert.ok(decimals(j.seconds) <= 3 && decimals(j.messagesPerSecond) <= 1);
    assert.equal(j.histogram.reduce((n: number, b: { count: number }) => n + b.count, 0), 60);
    assert.ok(j.histogram.every((b: { fromMs: number; toMs: number }) => b.fromMs < b.toMs));

    const text = await run(["--total", "60", "-n", "3"]);
    assert.equal(text.code, 0);
    const rows = text.out.split("message latency:\n")[1]!.trim().split("\n");
    assert.ok(rows.length >= 1 && rows.length <= 12);
    const counts = rows.map((l) => Number(/ (\d+) +[\d.]+ %$/.exec(l)![1]));
    assert.equal(counts.reduce((a, b) => a + b, 0), 60);
    assert.ok(rows.some((l) => l.includes("█")));
  });

  it("--html writes a self-contained page with a histogram per stage", async () => {
    const html = join(dir, "bench.html");
    const r = await run(["--total", "30", "-n", "2", "--html", html]);
    assert.equal(r.code, 0, r.err);
    const page = readFileSync(html, "utf8");
    assert.match(page, /^<!doctype html>/);
    assert.doesNotMatch(page, /<(link|img|iframe)\b|\bsrc=|https?:\/\//i);
    const message = /<figure class="hist" data-stage="message">(.*?)<\/figure>/s.exec(page)![1]!;
    const n = [...message.matchAll(/data-count="(\d+)"/g)].reduce((a, m) => a + Number(m[1]), 0);
    assert.equal(n, 30);
    for (const stage of ["connect", "envfrom", "envrcpt", "eom"]) {
      assert.match(page, new RegExp(`data-stage="${stage}"`));
    }
  });

  it("refuses a missing message file and an empty directory (usage errors)", async () => {
    await assert.rejects(
      run(["--message", join(dir, "nope.eml")]),
      (e) => e instanceof UsageError && /nope\.eml: no such file/.test(e.message),
    );
    await assert.rejects(run(["--message", join(dir, "empty")]), /no files in the directory/);
  });
});
