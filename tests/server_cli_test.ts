/**
 * `milterkit serve` end to end in a child process of the running runtime: a message through
 * examples/tag_suspicious.ts, Prometheus metrics over HTTP, JSON logs, SIGHUP reload of a
 * script copy (new connections get the new version, a session in flight keeps the old one),
 * SIGTERM → exit 0 with "stopped" logged, and a second signal that ends a stuck session.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { freePort } from "./interop/helpers_process.ts";
import {
  added,
  type Child,
  CONNECT,
  killChildren,
  logs,
  openClient,
  sendOne,
  serveChild,
  signal,
  sleep,
  TIMEOUT,
  tx,
  waitLog,
  within,
} from "./helpers/server_kit.ts";

const enc = new TextEncoder();
const children: Child[] = [];
const serve = (args: string[]) => serveChild(args, children);

/** A filter script adding `X-Version: V`; stuck forever when the Subject says "stuck". */
function versionScript(version: number): string {
  return `import { defineFilter } from "@milterkit/milterkit";
export default defineFilter({
  name: "version-${version}",
  actions: ["addHeader"],
  async eom(ctx) {
    const subject = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
    if (subject.includes("stuck")) await new Promise(() => {});
    ctx.addHeader("X-Version", "${version}");
  },
});
`;
}

describe("milterkit serve in a child process", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "milterkit-serve-"));
  });
  after(async () => {
    await killChildren(children);
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves a script, exposes metrics and stops on SIGTERM with exit 0", TIMEOUT, async () => {
    const [port, metricsPort] = [await freePort(), await freePort()];
    const child = await serve([
      "examples/tag_suspicious.ts",
      "--listen",
      `inet:${port}@127.0.0.1`,
      "--metrics-port",
      String(metricsPort),
    ]);
    const r = await sendOne(`inet:${port}@127.0.0.1`, {
      ...tx(1),
      message: enc.encode("From: <alice@example.net>\r\nSubject: BUY NOW CHEAP\r\n\r\nHi\r\n"),
    });
    assert.equal(r.verdict.type, "continue");
    assert.equal(added(r, "X-Suspicious"), "yes (no-message-id, shouting)");
    assert.equal(
      r.result?.message.headers.find((h) => h.name === "Subject")?.value.trim(),
      "[SUSPICIOUS] BUY NOW CHEAP",
    );
    await waitLog(child, "session end");

    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
    const text = await res.text();
    assert.match(text, /^milterkit_connections_total 1$/m);
    assert.match(text, /^milterkit_messages_total 1$/m);
    assert.match(text, /^milterkit_handler_seconds_count\{stage="eom"\} 1$/m);
    assert.equal(
      await fetch(`http://127.0.0.1:${metricsPort}/nope`).then(async (x) => {
        await x.body?.cancel();
        return x.status;
      }),
      404,
    );
    const health = await fetch(`http://127.0.0.1:${metricsPort}/health`);
    assert.deepEqual([health.status, await health.text()], [200, "serving\n"]);

    signal(child, "SIGTERM");
    const exit = await within(child.exited, 20_000, "serve to exit");
    assert.equal(exit.code, 0, child.stderr);
    const records = logs(child);
    const end = records.find((x) => x.event === "session end");
    assert.equal(end?.end, "quit");
    assert.equal(end?.messages, 1);
    assert.equal(records.at(-1)?.event, "stopped");
  });

  it("reloads a script copy on SIGHUP for new connections only", TIMEOUT, async () => {
    const script = join(dir, "version.ts");
    writeFileSync(script, versionScript(1));
    const port = await freePort();
    const child = await serve([script, "--listen", `inet:${port}@127.0.0.1`]);
    const spec = `inet:${port}@127.0.0.1`;
    assert.equal(added(await sendOne(spec, tx(1)), "X-Version"), "1");

    // A session in flight: mid-message when the script changes.
    const old = await openClient(spec);
    await old.connect(CONNECT);
    await old.helo("old.example");
    await old.mail("<alice@example.net>");
    await old.rcpt("<bob@example.com>");
    await old.data();
    await old.header("Subject", " msg old");

    writeFileSync(script, versionScript(2));
    signal(child, "SIGHUP");
    await waitLog(child, "reloaded");
    assert.equal(added(await sendOne(spec, tx(2)), "X-Version"), "2");

    await old.eoh();
    await old.body("Hello\r\n");
    const eom = await old.eom();
    assert.deepEqual(eom.modifications, [{ type: "addheader", name: "X-Version", value: "1" }]);
    await endSession(old);

    // A broken script is refused and the running filter kept.
    writeFileSync(script, "export default 42;\n");
    signal(child, "SIGHUP");
    await waitLog(child, "reload failed, keeping the running filter");
    assert.equal(added(await sendOne(spec, tx(3)), "X-Version"), "2");

    signal(child, "SIGTERM");
    const exit = await within(child.exited, 20_000, "serve to exit");
    assert.equal(exit.code, 0, child.stderr);
    assert.equal(logs(child).at(-1)?.event, "stopped");
  });

  it(
    "waits for a stuck session on SIGTERM and stops at once on a second signal",
    TIMEOUT,
    async () => {
      const script = join(dir, "stuck.ts");
      writeFileSync(script, versionScript(1));
      const [port, metricsPort] = [await freePort(), await freePort()];
      const child = await serve([
        script,
        "--listen",
        `inet:${port}@127.0.0.1`,
        "--metrics-port",
        String(metricsPort),
      ]);
      const client = await openClient(`inet:${port}@127.0.0.1`);
      const stuck = runTransaction(client, tx("stuck"));
      stuck.catch(() => {});
      try {
        await sleep(300); // the EOM reaches the handler, which never answers
        signal(child, "SIGTERM");
        await waitLog(child, "stopping");
        await sleep(300);
        assert.equal(child.proc.exitCode, null, "the first SIGTERM waits for the session");
        // Load balancers are told to send no more: /health answers 503 while draining.
        const health = await fetch(`http://127.0.0.1:${metricsPort}/health`);
        assert.deepEqual([health.status, await health.text()], [503, "stopping\n"]);

        signal(child, "SIGINT");
        const exit = await within(child.exited, 10_000, "serve to exit after the second signal");
        assert.equal(exit.code, 0, child.stderr);
        const r = await within(stuck, 5_000, "the stuck transaction");
        assert.equal(r.verdict.type, "tempfail");
      } finally {
        await endSession(client);
      }
      const events = logs(child).map((x) => x.event);
      assert.ok(events.includes("closing sessions now"), events.join(","));
      assert.equal(logs(child).find((x) => x.event === "session end")?.end, "signal");
      assert.equal(events.at(-1), "stopped");
    },
  );
});
