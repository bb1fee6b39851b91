/**
 * Replaying recorded sessions against the real libmilter C test filter: the captures in
 * tests/data/captures (recorded from an older build of the filter) differ exactly where the
 * filter changed since; sessions recorded now by `milterkit proxy` behind real Postfix replay
 * with no difference at all (`milterkit dump --replay`, exit 0), and against the same filter in
 * its no-op mode show what changed (exit 1).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { annotateStreams } from "../../lib/inspect/annotate/feed.ts";
import { readRecording } from "../../lib/inspect/recording_read.ts";
import { connect as connectSocket } from "../../lib/server/net.ts";
import { replaySession } from "../../lib/inspect/replay.ts";
import { type ProxyChild, runCli, startProxy } from "../helpers/proxy_child.ts";
import {
  ensurePeers,
  type PeerProcess,
  type PostfixInstance,
  sendMail,
  sleep,
  startLibmilterFilter,
  startPostfix,
} from "./harness.ts";

const CAPTURES = fileURLToPath(new URL("../data/captures/", import.meta.url));
const LIBMILTER_CAPTURES = [
  "postfix-libmilter",
  "postfix-libmilter-actions",
  "postfix-libmilter-multi",
  "postfix-libmilter-proto2",
  "postfix-tap-libmilter",
  "sendmail-libmilter",
  "miltertest-libmilter",
];

/** What the test filter does at MODIFYME now and did not when the captures were made. */
const ADDED_SINCE = new Set([
  "CHGHEADER X-Delete-Me[1] deleted",
  "ADDRCPT_PAR <added-par@example.test> NOTIFY=NEVER",
  "DELRCPT <removed@example.test>",
  "CHGFROM <changed-from@example.test>",
]);

describe("replaying recorded sessions against the real libmilter test filter", () => {
  let filter: PeerProcess;
  let noop: PeerProcess;

  before(async () => {
    ensurePeers();
    [filter, noop] = await Promise.all([
      startLibmilterFilter(undefined, "full"),
      startLibmilterFilter(undefined, "noop"),
    ]);
  });

  after(async () => {
    await Promise.all([filter?.stop(), noop?.stop()]);
  });

  for (const capture of LIBMILTER_CAPTURES) {
    it(`replays ${capture}: only what the filter changed since differs`, async () => {
      const dir = `${CAPTURES}${capture}/`;
      const stems = readdirSync(dir).filter((f) => f.endsWith(".to-filter.bin")).map((f) =>
        f.slice(0, -".to-filter.bin".length)
      );
      assert.ok(stems.length > 0);
      for (const stem of stems) {
        const events = annotateStreams({
          toFilter: new Uint8Array(readFileSync(`${dir}${stem}.to-filter.bin`)),
          toMta: new Uint8Array(readFileSync(`${dir}${stem}.to-mta.bin`)),
        }).events;
        const r = await replaySession(events, await connectSocket(filter.address.slice(5)));
        const where = `${capture}/${stem}`;
        assert.equal(r.error, undefined, where);
        assert.ok(r.steps.length >= 4, where);
        for (const s of r.steps.filter((x) => !x.same)) {
          if (s.command.startsWith("OPTNEG")) {
            // The filter asks for more actions now (0x17 then, 0xff now); all else is equal.
            const strip = (t: string) =>
              t.replace(/actions=0x[0-9a-f]+/, "").replace(/\[[^\]]*\]/, "");
            assert.deepEqual(s.recorded.map(strip), s.replayed.map(strip), where);
            assert.match(s.recorded[0]!, /actions=0x17 /);
            assert.match(s.replayed[0]!, /actions=0xff /);
          } else {
            assert.equal(s.command, "EOM", `${where}: ${s.command}`);
            assert.deepEqual(s.replayed.filter((l) => !ADDED_SINCE.has(l)), s.recorded, where);
          }
        }
      }
    });
  }

  describe("sessions recorded now by milterkit proxy behind Postfix", () => {
    let proxy: ProxyChild;
    let mta: PostfixInstance;
    let dir: string;
    const rec = () => `${dir}/now.jsonl`;

    before(async () => {
      dir = mkdtempSync(`${tmpdir()}/milterkit-replay-`);
      proxy = await startProxy(["-u", `inet:${filter.port}@127.0.0.1`, "-r", rec(), "--quiet"]);
      mta = await startPostfix({ milters: proxy.address });
      const send = (from: string, subject: string, to = ["user@example.test"]) =>
        sendMail({
          port: mta.port,
          from,
          to,
          data: `From: ${from}\nTo: user@example.test\nSubject: ${subject}\nX-Delete-Me: x\n\n` +
            `body of ${subject}\n`,
        });
      await send("sender@example.test", "plain");
      await send("sender@example.test", "please MODIFYME", [
        "user@example.test",
        "removed@example.test",
      ]);
      await send("sender@example.test", "x REJECTME");
      await send("early-reject@example.test", "refused at MAIL");
      const deadline = Date.now() + 10_000;
      while ((proxy.stderr().match(/session end/g) ?? []).length < 4 && Date.now() < deadline) {
        await sleep(25);
      }
    });

    after(async () => {
      await mta?.stop();
      await proxy?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("replays every recorded session with no difference (exit 0)", async () => {
      for (const id of ["s1", "s2", "s3", "s4"]) {
        const r = await runCli(["dump", rec(), "--replay", id, "--connect", filter.address]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /result: identical \(\d+ answers compared\)\n$/);
        assert.doesNotMatch(r.stdout, /^≠/m);
      }
    });

    it("sends the recorded macros: the filter logs the recorded queue id", async () => {
      const session = readRecording(readFileSync(rec(), "utf8")).sessions[1]!;
      const queueId = annotateStreams(session).summary().messages[0]?.queueId;
      assert.match(queueId ?? "", /^[0-9A-F]{8,}$/);
      const before = filter.log().length;
      const r = await runCli(["dump", rec(), "--replay", "s2", "--connect", filter.address]);
      assert.equal(r.code, 0, r.stdout);
      const lines = filter.log().slice(before).split("\n").filter((l) => /testfilter eom/.test(l));
      assert.deepEqual(lines.map((l) => /qid=(\S+)/.exec(l)?.[1]), [queueId]);
    });

    it("shows what differs against the filter's no-op mode (exit 1)", async () => {
      const r = await runCli(["dump", rec(), "--replay", "s2", "--connect", noop.address]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /^≠ OPTNEG /m);
      assert.match(r.stdout, /^≠ EOM\n {4}- ADDHEADER X-Libmilter-Test: "yes"\n/m);
      assert.match(r.stdout, /^ {4}- REPLBODY 53 bytes\n {6}CONTINUE$/m);
    });
  });
});
