/**
 * Property tests of the MTA engine: whatever a filter sends back (random bytes, mutated real
 * replies), a whole transaction either completes or fails with a typed MilterError, never
 * hangs and leaves no unhandled rejection.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { MilterError } from "../lib/wire/errors.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { allSessions } from "./helpers/captures.ts";

const unhandled: unknown[] = [];
process.on("unhandledRejection", (e) => unhandled.push(e));

const replies: Uint8Array[] = allSessions().map((s) => s.toMta);

const message = new TextEncoder().encode(
  "From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\n" + "body line\r\n".repeat(20),
);

async function drive(filterBytes: Uint8Array): Promise<"ok" | "typed"> {
  const [mta, filterSide] = duplexPair(1 << 22);
  const w = filterSide.writable.getWriter();
  // The "filter" answers with the given bytes whatever it is asked, then hangs up.
  w.write(filterBytes).then(() => w.close()).catch(() => {});
  const drain = (async () => {
    try {
      const r = filterSide.readable.getReader();
      while (!(await r.read()).done) { /* discard commands */ }
    } catch { /* closed */ }
  })();
  try {
    const client = await MilterClient.open(mta, { commandTimeoutMs: 2000, contentTimeoutMs: 2000 });
    await runTransaction(client, {
      connect: { hostname: "h", family: "inet", address: "127.0.0.1", port: 1 },
      helo: "h",
      from: "a@example.test",
      rcpts: ["b@example.test", "c@example.test"],
      message,
    });
    await endSession(client).catch((e) => {
      if (!(e instanceof MilterError)) throw e;
    });
    await client.close();
    return "ok";
  } catch (e) {
    assert.ok(e instanceof MilterError, `not a MilterError: ${e}`);
    return "typed";
  } finally {
    await mta.readable.cancel().catch(() => {});
    await mta.writable.abort().catch(() => {});
    await drain;
  }
}

describe("MTA engine under random filter replies", () => {
  it("random bytes: completes or fails with a MilterError", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (bytes) => {
        await drive(bytes);
      }),
      { numRuns: 300 },
    );
    assert.deepEqual(unhandled, []);
  });

  it("mutated real filter replies: completes or fails with a MilterError", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.nat(),
        fc.array(fc.record({ at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), {
          maxLength: 3,
        }),
        fc.option(fc.nat()),
        async (which, flips, cut) => {
          const base = replies[which % replies.length]!.slice();
          for (const f of flips) base[f.at % base.length]! ^= 1 << f.bit;
          const bytes = cut === null ? base : base.subarray(0, cut % (base.length + 1));
          await drive(bytes);
        },
      ),
      { numRuns: 300 },
    );
    assert.deepEqual(unhandled, []);
  });
});
