// Runs in a fresh process (so other tests' garbage does not blur the figure): an MTA sends a
// body of SIZE MiB to a bodyStream handler that returns after its first chunk; prints the peak
// RSS growth in MiB as `grew=N` and exits non-zero when the session went wrong.
import assert from "node:assert/strict";
import { defineFilter } from "../../lib/filter/filter.ts";
import { serveConnection } from "../../lib/filter/session.ts";
import { encodeCommand } from "../../lib/wire/command_codec.ts";
import { duplexPair } from "../../lib/testing/mod.ts";
import { RawMta } from "./raw_mta.ts";

const MIB = 1024 * 1024;
const size = Number(process.argv[2] ?? 384);

let firstChunk = 0;
let bodyCalls = 0;
const [mtaSide, filterSide] = duplexPair();
const done = serveConnection(
  filterSide,
  defineFilter({
    bodyStream: async (stream) => {
      const r = await stream.getReader().read();
      firstChunk = r.value?.length ?? 0;
      return "continue" as const;
    },
    body: () => void bodyCalls++,
    eom: () => "accept",
  }),
);
const mta = new RawMta(mtaSide);
await mta.negotiate(6, 0x1ff, 0);
await mta.ask({ type: "connect", hostname: "h", family: "unknown" });
await mta.ask({ type: "helo", name: "h" });
await mta.ask({ type: "mail", sender: "<a@b>", args: [] });
await mta.ask({ type: "rcpt", recipient: "<c@d>", args: [] });
const start = process.memoryUsage().rss;
let peak = start;
const chunks = Math.ceil(size * MIB / 65535);
const reading = (async () => {
  for (let i = 0; i < chunks; i++) assert.equal((await mta.next())?.type, "continue");
})();
for (let i = 0; i < chunks; i++) {
  // A fresh buffer per chunk, as a socket delivers them: queued chunks would stay alive.
  await mta.sendBytes(encodeCommand({ type: "body", chunk: new Uint8Array(65535) }));
  if (i % 64 === 0) peak = Math.max(peak, process.memoryUsage().rss);
}
await reading;
assert.deepEqual(await mta.ask({ type: "eom" }), { type: "accept" });
peak = Math.max(peak, process.memoryUsage().rss);
await mta.send({ type: "quit" });
assert.equal((await done).end, "quit");
assert.equal(firstChunk, 65535);
assert.ok(bodyCalls > 0);
process.stdout.write(`grew=${((peak - start) / MIB).toFixed(1)}\n`);
