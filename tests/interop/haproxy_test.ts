/**
 * The "Scale out" recipe, tested with the shipped examples/haproxy/haproxy.cfg (ports replaced):
 * a real Postfix → HAProxy → two `milterkit serve` instances checked on `/health`. Four SMTP
 * clients send 40 distinct messages, retrying on 4xx as MTAs do; instance a is killed (SIGKILL)
 * while sessions are in flight on it. Every message lands in the Maildir exactly once (none lost,
 * none accepted twice), b serves everything after the kill, and HAProxy marks a down.
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

describe("Postfix → HAProxy → two milterkit serve instances, one killed mid-run", () => {
  let dir: string;
  const peers: PeerProcess[] = [];
  let mta: PostfixInstance | undefined;
  let front = 0;
  const instances: Record<string, PeerProcess> = {};

  before(async () => {
    ensurePeers();
    dir = mkdtempSync(join(tmpdir(), "milterkit-haproxy-"));
    const ports = {
      8890: await freePort(),
      8891: await freePort(),
      8892: await freePort(),
      9471: await freePort(),
      9472: await freePort(),
    };
    for (const [name, milter, metrics] of [["a", 8891, 9471], ["b", 8892, 9472]] as const) {
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
      instances[name] = await startPeer(
        `serve ${name}`,
        cmd,
        args,
        ports[milter],
        () => {},
        30_000,
      );
      peers.push(instances[name]);
    }
    let cfg = readFileSync(join(ROOT, "examples/haproxy/haproxy.cfg"), "utf8");
    for (const [from, to] of Object.entries(ports)) {
      cfg = cfg.replaceAll(`:${from}`, `:${to}`).replaceAll(`port ${from}`, `port ${to}`);
    }
    const cfgFile = join(dir, "haproxy.cfg");
    writeFileSync(cfgFile, cfg);
    front = ports[8890];
    peers.push(await startPeer("haproxy", "haproxy", ["-db", "-f", cfgFile], front));
    mta = await startPostfix({ milters: `inet:127.0.0.1:${front}`, defaultAction: "tempfail" });
  }, { timeout: 120_000 }); // peers take a while to start on a busy machine

  after(async () => {
    await mta?.stop();
    for (const p of peers) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    "delivers every message exactly once while an instance dies",
    { timeout: 180_000 },
    async () => {
      const haproxy = peers.at(-1)!;
      // Both instances up in HAProxy's view before the run (two good checks each).
      await sleep(2500);
      const run = `r${Date.now()}`;
      let next = 0;
      let accepted = 0;
      let retries = 0;
      let killedAt = -1;
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
            // A 4xx (the milter connection was cut: milter_default_action = tempfail) is retried,
            // as a real MTA would; nothing else is expected.
            assert.ok(r.code === 0 || (r.code >= 400 && r.code < 500), `${r.code} ${r.text}`);
            retries++;
            await sleep(200);
          }
          accepted++;
          if (accepted === 12) {
            killedAt = accepted;
            process.kill(instances.a!.pid, "SIGKILL");
          }
        }
      };
      await Promise.all(Array.from({ length: SENDERS }, sender));
      assert.equal(accepted, MESSAGES);
      assert.ok(killedAt > 0);

      const deadline = Date.now() + 30_000;
      let mine: { marker: string; served: string }[] = [];
      while (Date.now() < deadline) {
        mine = (await readMaildir(mta!.maildir, { count: 0 })).flatMap((m) => {
          const marker = headerValues(m.text, "X-Test-Marker")[0] ?? "";
          if (!marker.startsWith(`${run}-`)) return [];
          return [{ marker, served: headerValues(m.text, "X-Served-By").join(",") }];
        });
        if (mine.length >= MESSAGES) break;
        await sleep(100);
      }
      await sleep(500); // a duplicate would arrive now
      mine = (await readMaildir(mta!.maildir, { count: 0 })).flatMap((m) => {
        const marker = headerValues(m.text, "X-Test-Marker")[0] ?? "";
        if (!marker.startsWith(`${run}-`)) return [];
        return [{ marker, served: headerValues(m.text, "X-Served-By").join(",") }];
      });
      const markers = mine.map((m) => m.marker).sort();
      const expected = Array.from({ length: MESSAGES }, (_, n) => `${run}-${n}`).sort();
      assert.deepEqual(markers, expected, "each message delivered exactly once");
      const served = new Set(mine.map((m) => m.served));
      assert.ok(served.has("a") && served.has("b"), [...served].join(" "));
      assert.ok(mine.every((m) => m.served === "a" || m.served === "b"), "one filter pass each");
      assert.ok(retries > 0, "sessions in flight on the killed instance were tempfailed");
      // HAProxy saw it: the health check marked a down.
      const deadlineDown = Date.now() + 10_000;
      while (!/milterkit\/a is DOWN/.test(haproxy.log()) && Date.now() < deadlineDown) {
        await sleep(100);
      }
      assert.match(haproxy.log(), /milterkit\/a is DOWN/);
      assert.match(mta!.log(), /milter/);
    },
  );
});
