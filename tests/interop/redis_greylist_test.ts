/**
 * examples/greylist_redis.ts with a real Redis (Debian's redis-server, started here on a loopback
 * port) shared by two `milterkit serve` instances: a triplet first seen by one instance is
 * greylisted by the other too, and passes on the other once the delay is over; a Redis that goes
 * away lets mail through (fail open) instead of blocking it.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import process from "node:process";
import type { TransactionResult } from "../../lib/mta/types.ts";
import { ensurePeers } from "./harness.ts";
import { freePort, type PeerProcess, sleep, startPeer } from "./helpers_process.ts";
import { cliArgs, ROOT, sendOne, tx } from "../helpers/server_kit.ts";

/** The reply to the only recipient: "" when it was accepted. */
const rcptReply = (r: TransactionResult) => r.rejectedRecipients[0]?.reply ?? "";

describe("greylisting in Redis shared by two serve instances", () => {
  let redis: PeerProcess;
  const instances: PeerProcess[] = [];
  let a = "";
  let b = "";
  const saved = { ...process.env };

  before(async () => {
    ensurePeers();
    const redisPort = await freePort();
    redis = await startPeer("redis-server", "redis-server", [
      "--port",
      String(redisPort),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
    ], redisPort);
    // The instances read their settings from the environment they inherit.
    process.env.MILTERKIT_REDIS_URL = `redis://127.0.0.1:${redisPort}`;
    process.env.GREYLIST_DELAY_S = "1";
    for (const _ of [1, 2]) {
      const port = await freePort();
      const [cmd, args] = cliArgs([
        "serve",
        join(ROOT, "examples/greylist_redis.ts"),
        "--listen",
        `inet:${port}@127.0.0.1`,
        "--log-format",
        "json",
      ]);
      instances.push(await startPeer("serve", cmd, args, port, () => {}, 30_000));
    }
    a = `inet:${instances[0]!.port}@127.0.0.1`;
    b = `inet:${instances[1]!.port}@127.0.0.1`;
  }, { timeout: 120_000 }); // peers take a while to start on a busy machine

  after(async () => {
    for (const i of instances) await i.stop();
    await redis?.stop();
    for (const k of ["MILTERKIT_REDIS_URL", "GREYLIST_DELAY_S"]) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });

  it("a triplet seen by one instance is known to the other", { timeout: 60_000 }, async () => {
    const t1 = tx(1, { from: "alice@example.net", rcpts: ["bob@example.com"] });
    const t2 = tx(2, { from: "carol@example.net", rcpts: ["dave@example.com"] });

    // First attempts: greylisted, one on each instance.
    assert.match(rcptReply(await sendOne(a, t1)), /^451 4\.7\.1 Greylisted: please try again/);
    assert.match(rcptReply(await sendOne(b, t2)), /^451 4\.7\.1 Greylisted/);
    // The other instance knows them: too early there as well.
    assert.match(rcptReply(await sendOne(b, t1)), /^451 4\.7\.1 Greylisted/);

    await sleep(1200);
    // After the delay each passes on the instance that never saw its first attempt.
    const r1 = await sendOne(b, t1);
    assert.equal(rcptReply(r1), "");
    assert.equal(r1.delivered, true);
    assert.equal(rcptReply(await sendOne(a, t2)), "");
    // And stays let through, on both.
    assert.equal(rcptReply(await sendOne(a, t1)), "");
    // A new triplet (same sender, other recipient) is still greylisted.
    const t3 = tx(3, { from: "alice@example.net", rcpts: ["erin@example.com"] });
    assert.match(rcptReply(await sendOne(b, t3)), /^451 4\.7\.1 Greylisted/);
  });

  it("lets mail through when Redis is gone (fail open)", { timeout: 60_000 }, async () => {
    await redis.stop();
    const t = tx(4, { from: "frank@example.net", rcpts: ["grace@example.com"] });
    const r = await sendOne(a, t);
    assert.equal(rcptReply(r), "");
    assert.equal(r.delivered, true);
    assert.match(instances[0]!.log(), /greylist: Redis unavailable, passing/);
  });
});
