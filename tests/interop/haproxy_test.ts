/**
 * The "Scale out" recipe, tested with the shipped examples/haproxy/haproxy.cfg (ports replaced):
 * a real Postfix → HAProxy → two `milterkit serve` instances checked on `/health`. Four SMTP
 * clients send 40 distinct messages, retrying on 4xx as MTAs do.
 * - Instance a is killed (SIGKILL) while sessions are in flight on it: every message lands in
 *   the Maildir exactly once (none lost, none accepted twice), b serves everything after the
 *   kill, and HAProxy marks a down.
 * - a is started again; b is stopped gracefully (SIGTERM) mid-run: the sessions it had finish
 *   (none cut), a takes the new ones, HAProxy marks b down, and again every message lands once.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ensurePeers,
  headerValues,
  type PostfixInstance,
  readMaildir,
  sendMail,
  startPostfix,
} from "./harness.ts";
import { freePort, type PeerProcess, sleep, startPeer } from "./helpers_process.ts";
import { cliArgs, ROOT } from "../helpers/server_kit.ts";

const MESSAGES = 40;
const SENDERS = 4;
const LONG = { timeout: 180_000 };

/** A filter naming its instance in `X-Served-By`, slow enough at eom to be caught mid-session. */
const filterScript = (name: string) =>
  `import { defineFilter } from "@milterkit/milterkit";
export default defineFilter({
  name: "instance-${name}",
  actions: ["addHeader"],
  async eom(ctx) {
    await new Promise((r) => setTimeout(r, 150));
    ctx.addHeader("X-Served-By", "${name}");
  },
});
`;

describe("Postfix → HAProxy → two milterkit serve instances", () => {
  let dir: string;
  const peers: PeerProcess[] = [];
  let mta: PostfixInstance | undefined;
  let haproxy: PeerProcess;
  const instances: Record<string, PeerProcess> = {};
  const ports = { 8890: 0, 8891: 0, 8892: 0, 9471: 0, 9472: 0 };

  /** Starts (or starts again) `milterkit serve` instance a or b on its ports. */
  async function startInstance(name: "a" | "b"): Promise<PeerProcess> {
    const [milter, metrics] = name === "a" ? [8891, 9471] as const : [8892, 9472] as const;
    const script = join(dir, `${name}.ts`);
    writeFileSync(script, filterScript(name));
    const [cmd, args] = cliArgs([
      "serve",
      script,
      "--listen",
      `inet:${ports[milter]}@127.0.0.1`,
      "--metrics-port",
      String(ports[metrics]),
      "--log-format",
      "json",
    ]);
    const p = await startPeer(`serve ${name}`, cmd, args, ports[milter], () => {}, 30_000);
    peers.push(p);
    instances[name] = p;
    return p;
  }

  before(async () => {
    ensurePeers();
    dir = mkdtempSync(join(tmpdir(), "milterkit-haproxy-"));
    for (const k of Object.keys(ports)) ports[Number(k) as keyof typeof ports] = await freePort();
    await startInstance("a");
    await startInstance("b");
    let cfg = readFileSync(join(ROOT, "examples/haproxy/haproxy.cfg"), "utf8");
    for (const [from, to] of Object.entries(ports)) {
      cfg = cfg.replaceAll(`:${from}`, `:${to}`).replaceAll(`port ${from}`, `port ${to}`);
    }
    const cfgFile = join(dir, "haproxy.cfg");
    writeFileSync(cfgFile, cfg);
    haproxy = await startPeer("haproxy", "haproxy", ["-db", "-f", cfgFile], ports[8890]);
    peers.push(haproxy);
    mta = await startPostfix({
      milters: `inet:127.0.0.1:${ports[8890]}`,
      defaultAction: "tempfail",
    });
  }, { timeout: 120_000 }); // peers take a while to start on a busy machine

  after(async () => {
    await mta?.stop();
    for (const p of peers) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Sends MESSAGES distinct messages from SENDERS clients, each retried on 4xx (or a dropped
   * connection) as an MTA would; calls `midway` once 12 are accepted. Returns the retries.
   */
  async function sendAll(run: string, midway: () => void): Promise<number> {
    let next = 0;
    let accepted = 0;
    let retries = 0;
    const sender = async () => {
      for (let n = next++; n < MESSAGES; n = next++) {
        for (let attempt = 1;; attempt++) {
          assert.ok(attempt <= 40, `message ${n} never accepted`);
          const r = await sendMail({
            port: mta!.port,
            from: "sender@example.test",
            to: ["user@example.test"],
            data: `From: sender@example.test\nTo: user@example.test\nSubject: msg ${n}\n` +
              `X-Test-Marker: ${run}-${n}\n\nBody ${n}.\n`,
          }).catch((e) => ({ accepted: false, code: 0, text: String(e) }));
          if (r.accepted) break;
          // milter_default_action = tempfail: a cut milter connection is a 4xx, retried.
          assert.ok(r.code === 0 || (r.code >= 400 && r.code < 500), `${r.code} ${r.text}`);
          retries++;
          await sleep(200);
        }
        if (++accepted === 12) midway();
      }
    };
    await Promise.all(Array.from({ length: SENDERS }, sender));
    assert.equal(accepted, MESSAGES);
    return retries;
  }

  /** The delivered copies of this run's messages: marker and the instance that filtered it. */
  async function delivered(run: string): Promise<{ marker: string; served: string }[]> {
    const read = async () =>
      (await readMaildir(mta!.maildir, { count: 0 })).flatMap((m) => {
        const marker = headerValues(m.text, "X-Test-Marker")[0] ?? "";
        if (!marker.startsWith(`${run}-`)) return [];
        return [{ marker, served: headerValues(m.text, "X-Served-By").join(",") }];
      });
    const deadline = Date.now() + 30_000;
    while ((await read()).length < MESSAGES && Date.now() < deadline) await sleep(100);
    await sleep(500); // a duplicate would arrive now
    const mine = await read();
    const expected = Array.from({ length: MESSAGES }, (_, n) => `${run}-${n}`).sort();
    assert.deepEqual(mine.map((m) => m.marker).sort(), expected, "each message delivered once");
    assert.ok(mine.every((m) => m.served === "a" || m.served === "b"), "one filter pass each");
    return mine;
  }

  const waitLog = async (p: PeerProcess, re: RegExp) => {
    const deadline = Date.now() + 15_000;
    while (!re.test(p.log()) && Date.now() < deadline) await sleep(100);
    assert.match(p.log(), re);
  };

  it("delivers every message exactly once while an instance is killed", LONG, async () => {
    await sleep(2500); // both instances up in HAProxy's view (two good checks each)
    const run = `k${Date.now()}`;
    const retries = await sendAll(run, () => process.kill(instances.a!.pid, "SIGKILL"));
    const mine = await delivered(run);
    const served = new Set(mine.map((m) => m.served));
    assert.ok(served.has("a") && served.has("b"), [...served].join(" "));
    assert.ok(retries > 0, "sessions in flight on the killed instance were tempfailed");
    await waitLog(haproxy, /milterkit\/a is DOWN/);
  });

  it("drains an instance stopped with SIGTERM: no session cut", LONG, async () => {
    await startInstance("a");
    await waitLog(haproxy, /milterkit\/a is UP/);
    const b = instances.b!;
    const run = `d${Date.now()}`;
    await sendAll(run, () => process.kill(b.pid, "SIGTERM"));
    const mine = await delivered(run);
    assert.ok(mine.some((m) => m.served === "a"), "a took over");
    await waitLog(b, /"event":"stopped"/);
    const ends = b.log().split("\n").filter((l) => l.includes('"event":"session end"'))
      .map((l) => JSON.parse(l).end);
    assert.ok(ends.length > 0);
    assert.deepEqual(ends.filter((e) => e !== "quit"), [], "every session on b finished");
    await waitLog(haproxy, /milterkit\/b is DOWN/);
  });
});
