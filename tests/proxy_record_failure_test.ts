/**
 * `milterkit proxy --record` when the recording fails: a file system that fills (a 1 MiB
 * tmpfs mounted by the test, as root) and a disk that stalls (a FIFO nobody reads). Mail keeps
 * flowing through the proxy (a child process) to a real filter over real sockets, new MTA
 * connections are answered, the error is logged once per cause, and the recording says which
 * sessions are incomplete.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  closeSync,
  constants,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { defineFilter } from "../lib/filter/filter.ts";
import { readRecording } from "../lib/inspect/recording_read.ts";
import { proxySuite, terminate, transactionThrough } from "./helpers/proxy_child.ts";

const TIMEOUT = { timeout: 90_000 };
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const filter = defineFilter({
  actions: ["addHeader"],
  eom: (ctx) => ctx.addHeader("X-Seen", "yes"),
});

/** One transaction through the proxy; resolves to the verdict (the filter always accepts). */
const transaction = (port: number, n: number) => transactionThrough(port, n, 200);

/** Runs `count` transactions and returns how many were answered with the filter's verdict. */
async function run(port: number, from: number, count: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < count; i++) {
    if ((await transaction(port, from + i)) === "continue") ok++;
  }
  return ok;
}

/** Reads what a non-blocking pipe holds right now. */
function drain(fd: number, buf: Uint8Array): string {
  let text = "";
  while (true) {
    let n: number;
    try {
      n = readSync(fd, buf);
    } catch {
      return text; // EAGAIN: empty
    }
    if (n === 0) return text;
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
}

const lines = (text: string, re: RegExp) => text.split("\n").filter((l) => re.test(l));

describe("proxy --record failures never stop mail", () => {
  const suite = proxySuite(filter);

  it(
    "a file system that fills: ENOSPC logged once, mail flows, recording resumes",
    TIMEOUT,
    async (t) => {
      if (process.getuid?.() !== 0) return t.skip("needs root to mount a tmpfs");
      const mnt = `${suite.dir}/tmpfs`;
      mkdirSync(mnt);
      try {
        execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], { stdio: "ignore" });
      } catch {
        return t.skip("cannot mount a tmpfs here");
      }
      try {
        // Leave about 64 KiB free: a few sessions fill it.
        writeFileSync(`${mnt}/filler`, new Uint8Array(1024 * 1024 - 64 * 1024));
        const file = `${mnt}/r.jsonl`;
        const p = await suite.start(["--quiet", "-r", file]);
        assert.equal(await run(p.port, 0, 40), 40, "every message answered while the disk fills");
        const failed = lines(p.stderr(), /recording to .* failed/);
        assert.equal(failed.length, 1, `one error line:\n${p.stderr()}`);
        assert.match(failed[0]!, /ENOSPC|no space/i);

        // Room again: the next batch after the retry interval is written, with a note.
        rmSync(`${mnt}/filler`);
        await sleep(1200);
        assert.equal(await run(p.port, 100, 5), 5);
        await sleep(200);
        assert.equal(lines(p.stderr(), /works again/).length, 1, p.stderr());
        assert.ok(await terminate(p), p.stderr());
        assert.match(p.stderr(), /recording incomplete.*lostLines=[1-9]/);

        const rec = readRecording(readFileSync(file, "utf8"));
        const lost = rec.notes.filter((n) => /recording lines were lost \(ENOSPC\)/.test(n));
        assert.equal(lost.length, 1, JSON.stringify(rec.notes));
        // The sessions recorded after the recovery are whole: every message is there.
        const last = rec.sessions.slice(-5);
        assert.equal(last.length, 5);
        last.forEach((s, i) => {
          assert.ok(s.endReason !== undefined && s.toMta.length > 0, s.id);
          assert.match(new TextDecoder().decode(s.toFilter), new RegExp(`<sender${100 + i}@`));
        });
      } finally {
        execFileSync("umount", ["-l", mnt], { stdio: "ignore" });
      }
    },
  );

  it(
    "a stalled disk: the queue is bounded, mail flows, writing resumes when it moves",
    TIMEOUT,
    async () => {
      const fifo = `${suite.dir}/stall.fifo`;
      execFileSync("mkfifo", [fifo]);
      // A reader that does not read (yet): the proxy's writes block once the pipe is full.
      const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        const p = await suite.start([
          "--quiet",
          "-r",
          fifo,
          "--record-buffer",
          "65536",
        ]);
        assert.equal(await run(p.port, 0, 60), 60, "every message answered while the disk stalls");
        const slow = lines(p.stderr(), /recording to .* failed/);
        assert.equal(slow.length, 1, p.stderr());
        assert.match(slow[0]!, /cannot keep up/);

        // The disk moves again: drain the pipe until the proxy says so.
        const buf = new Uint8Array(1 << 16);
        let got = "";
        const deadline = Date.now() + 20_000;
        while (!/works again/.test(p.stderr()) && Date.now() < deadline) {
          got += drain(reader, buf);
          assert.equal(await transaction(p.port, 999), "continue");
          await sleep(100);
        }
        assert.match(p.stderr(), /works again/);
        assert.equal(await run(p.port, 200, 3), 3);
        assert.match(got, /"format":"milterkit-recording"/);
      } finally {
        closeSync(reader);
      }
    },
  );

  it(
    "the recording's directory removed mid-run: mail flows, said once, the file is started again when it can be",
    TIMEOUT,
    async () => {
      const dir = `${suite.dir}/removed`;
      mkdirSync(dir);
      const file = `${dir}/r.jsonl`;
      const p = await suite.start(["--quiet", "-r", file, "--rotate-size", "2000"]);
      assert.equal(await run(p.port, 0, 3), 3);
      // The proxy may still be writing a file in it while rm walks it (ENOTEMPTY): rm retries.
      rmSync(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 10 });
      assert.equal(await run(p.port, 10, 6), 6, "every message answered without the directory");
      await sleep(200);
      const removed = lines(p.stderr(), /was removed and cannot be created again/);
      assert.equal(removed.length, 1, p.stderr());
      // Before: "writing on to the same file", a file nobody could open again, for good.
      mkdirSync(dir);
      assert.equal(await run(p.port, 20, 3), 3);
      await sleep(200);
      assert.equal(lines(p.stderr(), /was created again; recording goes on there/).length, 1);
      assert.ok(await terminate(p), p.stderr());
      const senders = readdirSync(dir).flatMap((f) =>
        readRecording(readFileSync(`${dir}/${f}`, "utf8")).sessions
      ).map((s) => new TextDecoder().decode(s.toFilter)).filter((t) => /<sender22@/.test(t));
      assert.equal(senders.length, 1, "the last session is in the file made again");
    },
  );
});
