/**
 * What the admin sees from `milterkit serve` (in a child process, over real sockets): one log
 * line per message with queue id, client, envelope, verdict and stage, reply text, changes and
 * duration, in JSON and text; `ctx.log` lines tagged with session and queue id; handler
 * exceptions with their first stack frame (the whole stack at debug level); and errors nobody
 * caught (an unawaited rejection, a throw in a timer) logged in the configured format, never as
 * a raw runtime trace, with the server still serving.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./interop/helpers_process.ts";
import {
  type Child,
  killChildren,
  sendOne,
  spawnCli,
  TIMEOUT,
  tx,
  waitFor,
} from "./helpers/server_kit.ts";

const enc = new TextEncoder();
const children: Child[] = [];

const SCRIPT = `import { defineFilter } from "@milterkit/milterkit";
export default defineFilter({
  name: "logs",
  actions: ["addHeader", "changeHeader"],
  envrcpt(rcpt, ctx) {
    ctx.log.debug("rcpt seen", { rcpt: rcpt.address });
  },
  eom(ctx) {
    const subject = ctx.header("subject") ?? "";
    ctx.log.info("scored", { score: subject.length });
    if (subject.includes("spam")) return { code: 550, enhanced: "5.7.1", text: "Looks like spam" };
    if (subject.includes("throw")) throw new Error("handler bug");
    ctx.addHeader("X-Seen", "yes");
    ctx.changeHeader("Subject", 1, "[ok] " + subject);
  },
});
`;

const UNCAUGHT = `import { defineFilter } from "@milterkit/milterkit";
export default defineFilter({
  name: "uncaught",
  async eom(ctx) {
    const subject = ctx.header("subject") ?? "";
    if (subject.includes("rejection")) {
      Promise.reject(new Error("unawaited boom"));
      await new Promise(() => {});
    }
    if (subject.includes("timer")) {
      await new Promise((resolve) => setTimeout(() => resolve(JSON.parse("{")), 5));
    }
  },
});
`;

/** Throws values that are not Errors, whose conversion to text itself throws. */
const ODD_THROWS = `import { defineFilter } from "@milterkit/milterkit";
const odd = () => Object.create(null);
const hostile = () => ({ toString() { throw new Error("no text"); } });
export default defineFilter({
  name: "odd-throws",
  envfrom(from) {
    if (from.address.startsWith("direct")) throw odd();
    if (from.address.startsWith("tostring")) throw hostile();
  },
  eom(ctx) {
    if ((ctx.header("subject") ?? "").includes("timer")) {
      setTimeout(() => { throw odd(); }, 1);
      Promise.reject(hostile());
    }
  },
});
`;

/** Starts `serve SCRIPT --listen … ARGS` and waits until it listens. */
async function serve(script: string, args: string[]): Promise<{ child: Child; spec: string }> {
  const spec = `inet:${await freePort()}@127.0.0.1`;
  const child = spawnCli(["serve", script, "--listen", spec, ...args]);
  children.push(child);
  await waitFor(() => /listening/.test(child.stderr) || child.proc.exitCode !== null, "listen");
  assert.equal(child.proc.exitCode, null, child.stderr);
  return { child, spec };
}

function mail(subject: string, queueId: string) {
  return tx(subject, {
    queueId,
    message: enc.encode(`From: <alice@example.net>\r\nSubject: ${subject}\r\n\r\nHello\r\n`),
  });
}

function records(child: Child): Record<string, unknown>[] {
  return child.stderr.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

describe("milterkit serve logs", () => {
  let dir: string;
  let script: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "milterkit-logs-"));
    script = join(dir, "logs.ts");
    writeFileSync(script, SCRIPT);
    writeFileSync(join(dir, "uncaught.ts"), UNCAUGHT);
    writeFileSync(join(dir, "odd.ts"), ODD_THROWS);
  });
  const serveUncaught = (eomTimeoutMs: number, extra: string[] = []) =>
    serve(join(dir, "uncaught.ts"), [
      "--log-format",
      "json",
      "--eom-timeout",
      String(eomTimeoutMs),
      ...extra,
    ]);
  after(async () => {
    await killChildren(children);
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    "a log reader that goes away: mail is still answered and SIGTERM still stops",
    TIMEOUT,
    async () => {
      const { child, spec } = await serve(script, ["--log-format", "json"]);
      // The pipe's reader exits (as `serve | head -1` does): every later log write fails (EPIPE).
      child.proc.stdout!.destroy();
      child.proc.stderr!.destroy();
      for (let i = 0; i < 3; i++) {
        const r = await sendOne(spec, mail(`hello ${i}`, `4DDD0${i}`));
        assert.equal(r.verdict.type, "continue");
      }
      child.proc.kill("SIGTERM");
      const ended = await Promise.race([
        child.exited,
        new Promise<"hung">((r) => setTimeout(() => r("hung"), 10_000)),
      ]);
      assert.notEqual(
        ended,
        "hung",
        "serve did not stop on SIGTERM after its log reader went away",
      );
    },
  );

  it("JSON: one line per message, ctx.log tagged with session and queue id", TIMEOUT, async () => {
    const { child, spec } = await serve(script, ["--log-format", "json"]);
    const ok = await sendOne(spec, mail("hello", "4AAA01"));
    const spam = await sendOne(spec, mail("spam offer", "4AAA02"));
    const bug = await sendOne(spec, mail("throw please", "4AAA03"));
    assert.equal(ok.verdict.type, "continue");
    assert.equal(spam.verdict.type, "reject");
    assert.equal(bug.verdict.type, "tempfail");
    await waitFor(() => records(child).filter((r) => r.event === "message").length === 3, "lines");

    const all = records(child);
    const messages = all.filter((r) => r.event === "message");
    const [m1, m2, m3] = messages;
    assert.deepEqual({ ...m1, time: undefined, session: undefined, ms: undefined }, {
      time: undefined,
      level: "info",
      event: "message",
      session: undefined,
      queue: "4AAA01",
      client: "client.example.net[192.0.2.7]",
      from: "<alice@example.net>",
      to: ["<bob@example.com>"],
      verdict: "continue",
      stage: "eom",
      changes: ["addheader:X-Seen", "chgheader:Subject[1]"],
      ms: undefined,
    });
    assert.ok(typeof m1!.ms === "number" && m1!.ms >= 0);
    assert.match(String(m1!.time), /^\d{4}-\d\d-\d\dT/);
    assert.equal(m2!.queue, "4AAA02");
    assert.equal(m2!.verdict, "reject");
    assert.equal(m2!.reply, "550 5.7.1 Looks like spam");
    assert.equal(m2!.changes, undefined);
    assert.equal(m3!.verdict, "tempfail");
    assert.equal(new Set(messages.map((m) => m.session)).size, 3, "one session per message");

    // ctx.log: same session and queue id as the message's line; debug lines hidden at info.
    const scored = all.filter((r) => r.event === "filter");
    assert.deepEqual(scored.map((r) => [r.session, r.queue, r.msg, r.score]), [
      [m1!.session, "4AAA01", "scored", 5],
      [m2!.session, "4AAA02", "scored", 10],
      [m3!.session, "4AAA03", "scored", 12],
    ]);
    // The handler's exception: where it was thrown, without the stack at info level.
    const error = all.find((r) => r.event === "session error");
    assert.equal(error?.session, m3!.session);
    assert.match(String(error?.error), /handler bug/);
    assert.match(String(error?.at), new RegExp(`${script.replaceAll(".", "\\.")}:12:\\d+`));
    assert.equal(error?.stack, undefined);
  });

  it("text at debug level: readable lines, the whole stack, no escape codes", TIMEOUT, async () => {
    const { child, spec } = await serve(script, ["--log-format", "text", "--log-level", "debug"]);
    await sendOne(spec, mail("spam offer", "4BBB01"));
    await sendOne(spec, mail("throw please", "4BBB02"));
    await waitFor(() => (child.stderr.match(/ message /g) ?? []).length === 2, "two lines");
    assert.ok(!child.stderr.includes(String.fromCharCode(27)), "no escape codes");
    const line = child.stderr.split("\n").find((l) => / INFO {2}message .*queue=4BBB01/.test(l));
    assert.match(
      line ?? "",
      /^\S+Z INFO {2}message session=\d+ queue=4BBB01 client=client\.example\.net\[192\.0\.2\.7\] from=<alice@example\.net> to=<bob@example\.com> verdict=reject stage=eom reply="550 5\.7\.1 Looks like spam" ms=[\d.]+$/,
      child.stderr,
    );
    assert.match(child.stderr, /DEBUG filter session=\d+ msg="rcpt seen" rcpt=bob@example\.com/);
    const error = child.stderr.split("\n").find((l) => / WARN {2}session error /.test(l)) ?? "";
    assert.match(error, /at="[^"]*logs\.ts:12:\d+\)?"/);
    assert.match(error, /stack="Error: handler bug\\n {4}at /);
  });

  it(
    "errors nobody caught are logged as JSON, tied to their session with --trace-uncaught",
    TIMEOUT,
    async () => {
      const { child, spec } = await serveUncaught(3000, ["--trace-uncaught"]);
      const rejection = await sendOne(spec, mail("rejection", "4CCC01"));
      const timer = await sendOne(spec, mail("timer", "4CCC02"));
      // Tempfail either at once (the error was tied to the session) or at the eom timeout.
      assert.equal(rejection.verdict.type, "tempfail");
      assert.equal(timer.verdict.type, "tempfail");
      const after = await sendOne(spec, mail("fine", "4CCC03"));
      assert.equal(after.verdict.type, "continue", "still serving");
      await waitFor(
        () => records(child).filter((r) => r.event === "message").length === 3,
        "lines",
      );

      const all = records(child); // every line parses: JSON stays JSON, no runtime trace
      const unhandled = all.find((r) => r.event === "unhandled rejection");
      const uncaught = all.find((r) => r.event === "uncaught exception");
      assert.equal(unhandled?.level, "error");
      assert.equal(unhandled?.error, "unawaited boom");
      assert.match(String(unhandled?.at), /uncaught\.ts:7:\d+/);
      assert.equal(uncaught?.level, "error");
      assert.match(String(uncaught?.at), /uncaught\.ts:11:\d+/);
      // Where the runtime tells which session's code failed, that session got the fallback at
      // once: its handler failed with the error (Deno: rejections; Bun: timer errors).
      const tied = [unhandled, uncaught].filter((r) => r?.session !== undefined);
      assert.ok(tied.length >= 1, JSON.stringify([unhandled, uncaught]));
      for (const r of tied) {
        const failed = all.find((x) => x.event === "session error" && x.session === r!.session);
        assert.match(String(failed?.error), /in the filter's code/);
      }
      assert.equal(child.proc.exitCode, null);
    },
  );

  it(
    "without --trace-uncaught the error is logged and the handler's timeout answers",
    TIMEOUT,
    async () => {
      const { child, spec } = await serveUncaught(1000);
      const r = await sendOne(spec, mail("rejection", "4DDD01"));
      assert.equal(r.verdict.type, "tempfail");
      await waitFor(() => records(child).some((x) => x.event === "message"), "message line");
      const all = records(child);
      const unhandled = all.find((x) => x.event === "unhandled rejection");
      assert.equal(unhandled?.error, "unawaited boom");
      assert.equal(unhandled?.session, undefined);
      const failed = all.find((x) => x.event === "session error");
      assert.match(String(failed?.error), /did not answer within 1000 ms/);
    },
  );

  it(
    "a null-prototype object or a throwing toString thrown, in a handler or a timer, gets the fallback and keeps the process",
    TIMEOUT,
    async () => {
      const { child, spec } = await serve(join(dir, "odd.ts"), ["--log-format", "json"]);
      const send = (from: string, subject: string, queueId: string) =>
        sendOne(spec, {
          ...mail(subject, queueId),
          from: `${from}@example.net`,
        });
      // Before, the text of such a value threw inside the engine: the session was cut (the
      // MTA saw a closed connection), and from a timer the whole process died with a trace.
      assert.equal((await send("direct", "a", "4ODD01")).verdict.type, "tempfail");
      assert.equal((await send("tostring", "b", "4ODD02")).verdict.type, "tempfail");
      assert.equal((await send("plain", "timer", "4ODD03")).verdict.type, "continue");
      assert.equal((await send("plain", "after", "4ODD04")).verdict.type, "continue");
      await waitFor(
        () => records(child).filter((r) => r.event === "message").length === 4,
        "lines",
      );
      assert.equal(child.proc.exitCode, null, child.stderr);
      const all = records(child); // every line is JSON: no runtime trace
      const errors = all.filter((r) => r.event === "session error").map((r) => r.error);
      assert.deepEqual(errors, [
        "The envfrom handler failed: {}",
        "The envfrom handler failed: {}",
      ]);
      await waitFor(
        () =>
          records(child).filter((r) =>
            /^(uncaught exception|unhandled rejection)$/.test(String(r.event))
          ).length === 2,
        "the timer's and the rejection's lines",
      );
    },
  );
});
