// bodyStream: a handler that settles without reading the whole body stops the stream; the engine
// never queues the rest of the body in memory.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter, encodeCommand, serveConnection } from "../mod.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { RawMta } from "./helpers/raw_mta.ts";

const MIB = 1024 * 1024;

describe("bodyStream with a large body", () => {
  it("a handler that returns after one chunk: 384 MiB pass with memory bounded", async () => {
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
    const chunks = 384 * MIB / 65535;
    const reading = (async () => {
      for (let i = 0; i < chunks; i++) {
        const r = await mta.next();
        assert.equal(r?.type, "continue");
      }
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
    const grew = (peak - start) / MIB;
    process.stdout.write(
      `# 384 MiB body, handler returned early: RSS grew ${grew.toFixed(1)} MiB\n`,
    );
    assert.ok(grew < 128, `RSS grew by ${grew.toFixed(1)} MiB while 384 MiB of body passed`);
  });
});
