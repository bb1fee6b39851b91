/**
 * `milterkit serve` (the compiled binary) over its life as README.md describes it: a Unix
 * socket with its mode, Prometheus metrics, SIGHUP reloading the script (and keeping the
 * running filter when the new one is broken), SIGTERM letting a message in flight finish, a
 * second SIGTERM or the grace deadline ending it with a tempfail.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { get } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./harness.ts";
import { ensureBinary, runBinary, type ServeProcess, startServe } from "./helpers_binary.ts";

const MESSAGE = "From: a@example.test\nTo: b@example.test\nSubject: hi\n\nbody\n";

function versionFilter(version: string): string {
  return `import { defineFilter } from "@milterkit/milterkit";
export default defineFilter({
  name: "v${version}",
  actions: ["addHeader"],
  eom(ctx) { ctx.addHeader("X-Version", "${version}"); },
});
`;
}

/** Sleeps 1.5 s at end of message, after creating the file $MARK (so tests know it runs). */
const SLOW = `import { defineFilter } from "@milterkit/milterkit";
import { writeFileSync } from "node:fs";
import process from "node:process";
export default defineFilter({
  name: "slow",
  actions: ["addHeader"],
  async eom(ctx) {
    writeFileSync(process.env.MARK!, "");
    await new Promise((r) => setTimeout(r, 1500));
    ctx.addHeader("X-Slow", "done");
  },
});
`;

async function sendJson(spec: string) {
  const r = await runBinary(["send", "-c", spec, "--json"], { stdin: MESSAGE });
  assert.ok(r.stdout.startsWith("{"), `send printed no JSON (exit ${r.code}): ${r.stderr}`);
  return { code: r.code, t: JSON.parse(r.stdout).transactions[0] };
}

async function until(what: string, cond: () => boolean, serve: ServeProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}:\n${serve.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("milterkit serve on a Unix socket with metrics, reloaded by SIGHUP", () => {
  let dir: string;
  let serve: ServeProcess | undefined;
  let metricsPort = 0;

  before(async () => {
    ensureBinary();
    dir = mkdtempSync(join(tmpdir(), "milterkit-serve-"));
    writeFileSync(join(dir, "filter.ts"), versionFilter("1"));
    metricsPort = await freePort();
    serve = await startServe("filter.ts", {
      cwd: dir,
      args: ["--listen", `unix:${dir}/milter.sock`, "--metrics-port", String(metricsPort)],
    });
  });
  after(async () => {
    await serve?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("listens on the Unix socket with mode 0660 and serves send over it", async () => {
    assert.equal(serve!.spec, `unix:${dir}/milter.sock`);
    const st = statSync(`${dir}/milter.sock`);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
    const { code, t } = await sendJson(serve!.spec);
    assert.equal(code, 0);
    assert.deepEqual(t.modifications, [{ type: "addheader", name: "X-Version", value: "1" }]);
  });

  it("serves Prometheus metrics that count the messages", async () => {
    const body = await new Promise<string>((ok, fail) => {
      get(`http://127.0.0.1:${metricsPort}/metrics`, (res) => {
        let text = "";
        res.on("data", (d: Uint8Array) => (text += new TextDecoder().decode(d)));
        res.on("end", () => ok(text));
      }).on("error", fail);
    });
    assert.match(body, /^milterkit_messages_total [1-9]\d*$/m);
    assert.match(body, /^milterkit_verdicts_total\{verdict="continue"\} [1-9]\d*$/m);
  });

  it("SIGHUP loads the edited script for new connections", async () => {
    writeFileSync(join(dir, "filter.ts"), versionFilter("2"));
    process.kill(serve!.pid, "SIGHUP");
    const reloaded = () => serve!.events().filter((e) => e.event === "reloaded").length;
    await until("the reload", () => reloaded() === 1, serve!);
    assert.deepEqual((await sendJson(serve!.spec)).t.modifications, [
      { type: "addheader", name: "X-Version", value: "2" },
    ]);
    // A second edit and reload: each reload reads the file again.
    writeFileSync(join(dir, "filter.ts"), versionFilter("3"));
    process.kill(serve!.pid, "SIGHUP");
    await until("the second reload", () => reloaded() === 2, serve!);
    assert.deepEqual((await sendJson(serve!.spec)).t.modifications, [
      { type: "addheader", name: "X-Version", value: "3" },
    ]);
  });

  it("SIGHUP with a broken script keeps the running filter and logs why", async () => {
    writeFileSync(join(dir, "filter.ts"), `export default { eomm() {} };\n`);
    process.kill(serve!.pid, "SIGHUP");
    const failed = () =>
      serve!.events().find((e) => e.event === "reload failed, keeping the running filter");
    await until("the failed reload", () => failed() !== undefined, serve!);
    assert.match(JSON.stringify(failed()), /eomm/);
    assert.deepEqual((await sendJson(serve!.spec)).t.modifications, [
      { type: "addheader", name: "X-Version", value: "3" },
    ]);
  });
});

describe("milterkit serve stopping with a message in flight", () => {
  let dir: string;
  before(() => {
    ensureBinary();
    dir = mkdtempSync(join(tmpdir(), "milterkit-stop-"));
    writeFileSync(join(dir, "slow.ts"), SLOW);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  let n = 0;
  /** Starts the slow filter, sends a message, and resolves once its eom handler runs. */
  async function inFlight(args: string[] = []) {
    const mark = join(dir, `eom-${++n}`);
    const serve = await startServe("slow.ts", { cwd: dir, args, env: { MARK: mark } });
    const sent = sendJson(serve.spec);
    await until("the eom handler", () => existsSync(mark), serve);
    return { serve, sent };
  }

  it("SIGTERM lets the message finish, then the server exits 0", async () => {
    const { serve, sent } = await inFlight();
    try {
      process.kill(serve.pid, "SIGTERM");
      const { code, t } = await sent;
      assert.equal(code, 0);
      assert.deepEqual(t.modifications, [{ type: "addheader", name: "X-Slow", value: "done" }]);
      assert.equal(await serve.exited, 0);
      const stopping = serve.events().find((e) => e.event === "stopping");
      assert.equal(stopping?.sessions, 1);
    } finally {
      await serve.stop("SIGKILL");
    }
  });

  it("a second SIGTERM ends it at once: the MTA gets a tempfail (exit 3)", async () => {
    const { serve, sent } = await inFlight();
    try {
      process.kill(serve.pid, "SIGTERM");
      await until("stopping", () => serve.events().some((e) => e.event === "stopping"), serve);
      process.kill(serve.pid, "SIGTERM");
      const { code, t } = await sent;
      assert.equal(code, 3);
      assert.equal(t.verdict.type, "tempfail");
      assert.equal(await serve.exited, 0);
    } finally {
      await serve.stop("SIGKILL");
    }
  });

  it("--shutdown-grace ends a session that outlives it with a tempfail", async () => {
    const { serve, sent } = await inFlight(["--shutdown-grace", "100"]);
    try {
      process.kill(serve.pid, "SIGTERM");
      const { code } = await sent;
      assert.equal(code, 3);
      assert.ok(
        serve.events().some((e) => e.event === "closing sessions at the deadline"),
        serve.stderr(),
      );
      assert.equal(await serve.exited, 0);
    } finally {
      await serve.stop("SIGKILL");
    }
  });
});
