/**
 * `milterkit serve --workers N` over real sockets, in child processes of the running runtime:
 * every worker answers and connections spread over them, one metrics endpoint sums them, SIGHUP
 * reloads every worker, SIGTERM drains sessions in flight on every worker, a dead worker is
 * replaced; under Node (the one-file build) the workers share the port through node:cluster.
 * And CPU-bound handlers (a 3 s busy loop with a 1.5 s handler timeout): with one
 * process every other session waits and a warning names the stage and the script, with two
 * workers the other worker keeps answering.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MilterClient } from "../lib/mta/client.ts";
import { endSession } from "../lib/mta/transaction.ts";
import type { TransactionResult } from "../lib/mta/types.ts";
import { freePort } from "./interop/helpers_process.ts";
import {
  added,
  type Child,
  CONNECT,
  killChildren,
  logs,
  openClient,
  ROOT,
  runTransactionIn,
  sendOne,
  serveChild,
  signal,
  sleep,
  spawnChild,
  TIMEOUT,
  tx,
  waitFor,
  waitLog,
  within,
} from "./helpers/server_kit.ts";

const children: Child[] = [];
const LONG = { timeout: 120_000 };

/**
 * A filter that adds `X-Pid` (the worker's process id) and `X-Version: V`; the eom handler
 * computes for 3 s without awaiting when the Subject says "busy", after creating the file `mark`.
 */
function script(version: number, mark = join(tmpdir(), "milterkit-unused.mark")): string {
  return `import process from "node:process";
import { writeFileSync } from "node:fs";
import { defineFilter } from "@milterkit/milterkit";
export default defineFilter({
  name: "workers-${version}",
  actions: ["addHeader"],
  eom(ctx) {
    const subject = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
    if (subject.includes("busy")) {
      writeFileSync(${JSON.stringify(mark)}, "");
      const until = Date.now() + 3000;
      while (Date.now() < until) { /* CPU-bound */ }
    }
    ctx.addHeader("X-Pid", String(process.pid));
    ctx.addHeader("X-Version", "${version}");
  },
});
`;
}

/** Runs `n` whole sessions at once; resolves with their results. */
function many(spec: string, n: number, tag: string): Promise<TransactionResult[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => sendOne(spec, tx(`${tag}-${i}`))));
}

const pids = (rs: TransactionResult[]) => new Set(rs.map((r) => added(r, "X-Pid")));

async function scrape(port: number, path = "/metrics"): Promise<[number, string]> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return [res.status, await res.text()];
}

function metric(text: string, name: string): number {
  const m = text.match(new RegExp(`^${name.replace(/[{}]/g, "\\$&")} (\\S+)$`, "m"));
  assert.ok(m, `${name} in\n${text}`);
  return Number(m[1]);
}

/** The worker pids the supervisor logged. */
function workerPids(child: Child): string[] {
  const rec = logs(child).find((r) => r.event === "workers");
  return ((rec?.pids ?? []) as number[]).map(String);
}

describe("serve --workers", () => {
  let dir: string;
  let file: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "milterkit-workers-"));
    file = join(dir, "filter.ts");
  });
  after(async () => {
    await killChildren(children);
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * `serve SCRIPT --workers 2` with a metrics port, started and listening; by default SCRIPT is
   * the version 1 filter, served by cli.ts under this runtime.
   */
  async function twoWorkers(
    target = file,
    spawnIt?: (args: string[]) => Child,
  ): Promise<{ child: Child; spec: string; metricsPort: number }> {
    if (target === file) writeFileSync(file, script(1));
    const [port, metricsPort] = [await freePort(), await freePort()];
    const spec = `inet:${port}@127.0.0.1`;
    const child = await serveChild(
      [target, "--workers", "2", "--listen", spec, "--metrics-port", String(metricsPort)],
      children,
      "metrics",
      spawnIt,
    );
    return { child, spec, metricsPort };
  }

  it(
    "spreads sessions over the workers, sums their metrics and reloads them all",
    LONG,
    async () => {
      const { child, spec, metricsPort } = await twoWorkers();
      const workers = workerPids(child);
      assert.equal(workers.length, 2);

      // The kernel spreads connections by their ports: 24 sessions reach both workers.
      const first = await many(spec, 24, "a");
      assert.deepEqual([...pids(first)].sort(), [...workers].sort());
      assert.ok(first.every((r) => added(r, "X-Version") === "1"));

      const [status, text] = await scrape(metricsPort);
      assert.equal(status, 200);
      assert.equal(metric(text, "milterkit_messages_total"), 24);
      assert.equal(metric(text, "milterkit_connections_total"), 24);
      assert.equal(metric(text, 'milterkit_handler_seconds_count{stage="eom"}'), 24);
      assert.equal(metric(text, 'milterkit_worker_up{worker="1"}'), 1);
      assert.equal(metric(text, 'milterkit_worker_up{worker="2"}'), 1);
      assert.deepEqual(await scrape(metricsPort, "/health"), [
        200,
        "serving: 2 of 2 workers answering\n",
      ]);

      writeFileSync(file, script(2));
      signal(child, "SIGHUP");
      await waitLog(child, "reloaded all workers");
      assert.deepEqual(
        logs(child).filter((r) => r.event === "reloaded").map((r) => r.worker).sort(),
        [1, 2],
      );
      const second = await many(spec, 24, "b");
      assert.deepEqual([...pids(second)].sort(), [...workers].sort());
      assert.ok(second.every((r) => added(r, "X-Version") === "2"), "every worker reloaded");

      signal(child, "SIGTERM");
      const exit = await within(child.exited, 30_000, "serve to exit");
      assert.equal(exit.code, 0, child.stderr);
      assert.deepEqual(
        logs(child).filter((r) => r.event === "stopped").map((r) => r.worker ?? 0).sort(),
        [0, 1, 2],
      );
    },
  );

  it("drains sessions in flight on every worker on SIGTERM", LONG, async () => {
    const { child, spec, metricsPort } = await twoWorkers();
    // 16 sessions stopped before end of message, spread over both workers.
    const clients: MilterClient[] = [];
    for (let i = 0; i < 16; i++) {
      const c = await openClient(spec);
      await c.connect(CONNECT);
      await c.helo("client.example.net");
      await c.mail("<alice@example.net>");
      await c.rcpt("<bob@example.com>");
      clients.push(c);
    }
    signal(child, "SIGTERM");
    await waitLog(child, "stopping", 2);
    assert.equal((await scrape(metricsPort, "/health"))[0], 503, "health fails while draining");
    await sleep(200);
    assert.equal(child.proc.exitCode, null, child.stderr);
    await assert.rejects(sendOne(spec, tx("late")), "no new sessions while stopping");

    const results = await Promise.all(clients.map(async (c, i) => {
      await c.data();
      await c.header("Subject", ` msg ${i}`);
      await c.eoh();
      await c.body("Hello\r\n");
      const eom = await c.eom();
      await endSession(c);
      return eom.modifications.find((m) => m.type === "addheader" && m.name === "X-Pid");
    }));
    const served = new Set(results.map((m) => m?.type === "addheader" ? m.value : undefined));
    assert.deepEqual([...served].sort(), [...workerPids(child)].sort());
    const exit = await within(child.exited, 30_000, "serve to exit");
    assert.equal(exit.code, 0, child.stderr);
    const ends = logs(child).filter((r) => r.event === "session end" && r.end === "quit");
    assert.equal(ends.length, 16, "every session finished, none cut");
  });

  it("replaces a worker that dies", LONG, async () => {
    writeFileSync(file, script(1));
    const port = await freePort();
    const spec = `inet:${port}@127.0.0.1`;
    const child = await serveChild([file, "--workers", "2", "--listen", spec], children, "workers");
    const [victim] = workerPids(child);
    process.kill(Number(victim), "SIGKILL");
    await waitLog(child, "worker exited, restarting");
    await waitFor(
      () => logs(child).filter((r) => r.event === "listening").length >= 3,
      "a new worker listening",
    );
    const rs = await many(spec, 24, "c");
    assert.equal(pids(rs).size, 2, "two live workers answer");
    assert.ok(!pids(rs).has(victim));
    signal(child, "SIGTERM");
    assert.equal((await within(child.exited, 30_000, "serve to exit")).code, 0, child.stderr);
  });

  it("under Node, shares the port through node:cluster", LONG, async () => {
    // The one-file Node build, and a .js script (Node 20 runs no .ts).
    const build = join(dir, "milterkit.mjs");
    execFileSync(join(ROOT, "node_modules/.bin/bun"), [
      join(ROOT, "scripts/build.ts"),
      "--node",
      "--outfile",
      build,
    ], { cwd: ROOT, stdio: "ignore" });
    const js = join(dir, "filter.js");
    writeFileSync(
      js,
      script(1).replace(/import \{ defineFilter \} from [^\n]*\n/, "")
        .replace("defineFilter(", "("),
    );
    const { child, spec, metricsPort } = await twoWorkers(
      js,
      (args) => spawnChild("node", [build, ...args]),
    );
    assert.equal(logs(child).find((r) => r.event === "workers")?.sharing, "node:cluster");
    const rs = await many(spec, 24, "node");
    assert.deepEqual([...pids(rs)].sort(), [...workerPids(child)].sort());
    assert.equal(metric((await scrape(metricsPort))[1], "milterkit_messages_total"), 24);
    signal(child, "SIGTERM");
    assert.equal((await within(child.exited, 30_000, "serve to exit")).code, 0, child.stderr);
  });

  it("refuses --workers with a Unix socket and bad counts (exit 2)", TIMEOUT, async () => {
    for (const args of [["--workers", "2", "--listen", `unix:${dir}/m.sock`], ["--workers", "0"]]) {
      const child = await import("./helpers/server_kit.ts").then((k) =>
        k.spawnCli(["serve", ...args])
      );
      children.push(child);
      const exit = await within(child.exited, 30_000, "serve to exit");
      assert.equal(exit.code, 2, child.stderr);
      assert.match(child.stderr, /--workers/);
    }
  });
});

describe("a CPU-bound handler (3 s busy loop, --handler-timeout 1500)", () => {
  let dir: string;
  let file: string;
  let mark: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "milterkit-busy-"));
    file = join(dir, "busy.ts");
    mark = join(dir, "busy.mark");
    writeFileSync(file, script(1, mark));
  });
  after(async () => {
    await killChildren(children);
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Starts the busy session, then 16 others once its eom is running; returns how many of the
   * others finished before the busy one did.
   */
  async function race(
    spec: string,
    during: () => Promise<unknown> = async () => {},
  ): Promise<{ busy: TransactionResult; before: number; seen: unknown }> {
    const client = await openClient(spec);
    let busyDone = false;
    rmSync(mark, { force: true });
    const busy = runTransactionIn(client, tx("busy"));
    busy.then(() => (busyDone = true), () => (busyDone = true));
    await waitFor(() => existsSync(mark), "the busy loop to start");
    const seen = await during();
    let before = 0;
    await Promise.all(Array.from({ length: 16 }, async (_, i) => {
      await sendOne(spec, tx(`other-${i}`));
      if (!busyDone) before++;
    }));
    const r = await within(busy, 30_000, "the busy session");
    await endSession(client);
    return { busy: r, before, seen };
  }

  /** `serve busy.ts --workers N --handler-timeout 1500` with a metrics port. */
  async function busyServe(workers: number) {
    const [port, metricsPort] = [await freePort(), await freePort()];
    const spec = `inet:${port}@127.0.0.1`;
    const child = await serveChild(
      [
        file,
        ...["--workers", String(workers), "--listen", spec, "--handler-timeout", "1500"],
        ...["--metrics-port", String(metricsPort)],
      ],
      children,
      "metrics",
    );
    return { child, spec, metricsPort };
  }

  it(
    "with one process: every other session waits, a warning names stage and script",
    LONG,
    async () => {
      const { child, spec, metricsPort } = await busyServe(1);
      const { busy, before } = await race(spec);
      // The limit, stated: the timeout cannot fire while the handler holds the event loop.
      assert.equal(busy.verdict.type, "continue");
      assert.equal(before, 0, "no other session was answered during the busy loop");
      await waitLog(child, "handler blocked the event loop");
      const warning = logs(child).find((r) => r.event === "handler blocked the event loop")!;
      assert.equal(warning.level, "warn");
      assert.equal(warning.stage, "eom");
      assert.equal(warning.script, file);
      assert.ok(Number(warning.blockedMs) >= 2000, JSON.stringify(warning));
      const [, text] = await scrape(metricsPort);
      assert.ok(metric(text, "milterkit_event_loop_lag_seconds") >= 2, text);
      assert.equal(metric(text, "milterkit_event_loop_blocks_total"), 1);
      signal(child, "SIGTERM");
      await within(child.exited, 30_000, "serve to exit");
    },
  );

  it("with two workers: the other worker keeps answering", LONG, async () => {
    const { child, spec, metricsPort } = await busyServe(2);
    const { busy, before, seen } = await race(spec, () => scrape(metricsPort, "/health"));
    assert.equal(busy.verdict.type, "continue");
    assert.ok(before > 0, "sessions on the other worker were answered during the busy loop");
    // The held worker does not answer the health check's ping; the other one does.
    assert.deepEqual(seen, [200, "serving: 1 of 2 workers answering\n"]);
    await waitLog(child, "handler blocked the event loop");
    signal(child, "SIGTERM");
    await within(child.exited, 30_000, "serve to exit");
  });
});
