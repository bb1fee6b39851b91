import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter } from "../lib/filter/filter.ts";
import { serveConnection } from "../lib/filter/session.ts";
import { proxyConnection, type ProxyOptions, type TapFrame } from "../lib/inspect/proxy.ts";
import { decodeCommand } from "../lib/wire/command_codec.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Direction, Duplex, Reply } from "../lib/wire/types.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { RawMta } from "./helpers/raw_mta.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const C = { type: "continue" } as const;

/** MTA ↔ proxy ↔ upstream, with everything the proxy forwarded recorded per direction. */
function rig(connectUpstream: ProxyOptions["connectUpstream"], extra: Partial<ProxyOptions> = {}) {
  const [mtaEnd, proxyEnd] = duplexPair();
  const chunks: Record<Direction, Uint8Array[]> = { "to-filter": [], "to-mta": [] };
  const frames: TapFrame[] = [];
  const notes: string[] = [];
  const done = proxyConnection(proxyEnd, {
    connectUpstream,
    onChunk: (d, _t, b) => chunks[d].push(b.slice()),
    onFrame: (f) => frames.push(f),
    onNote: (m) => notes.push(m),
    ...extra,
  });
  return { mta: new RawMta(mtaEnd), done, chunks, frames, notes };
}

/** A scripted upstream filter that answers `continue` and dies after `dieAfter` commands. */
function dyingFilter(dieAfter: number): () => Promise<Duplex> {
  return () => {
    const [proxySide, filterSide] = duplexPair();
    (async () => {
      const reader = filterSide.readable.getReader();
      const writer = filterSide.writable.getWriter();
      const dec = new FrameDecoder();
      let n = 0;
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        for (const f of dec.push(value)) {
          const c = decodeCommand(f);
          if (c.type === "macro" || c.type === "abort") continue;
          if (++n > dieAfter) {
            await writer.abort(new Error("filter crashed"));
            await reader.cancel();
            return;
          }
          const r: Reply = c.type === "optneg"
            ? { type: "optneg", version: 6, actions: 1, protocol: 0 }
            : C;
          await writer.write(encodeReply(r));
        }
      }
    })();
    return Promise.resolve(proxySide);
  };
}

describe("proxyConnection", () => {
  it("relays both directions unchanged and taps every frame", async () => {
    const upstream = (): Promise<Duplex> => {
      const [a, b] = duplexPair();
      void serveConnection(
        b,
        defineFilter({
          actions: ["addHeader"],
          eom: (ctx) => ctx.addHeader("X-Via", "proxy"),
        }),
      );
      return Promise.resolve(a);
    };
    const { mta, done, chunks, frames } = rig(upstream);
    const opt = await mta.negotiate();
    assert.equal(opt?.type, "optneg");
    await mta.send({ type: "mail", sender: "<a@b>", args: [] });
    await mta.send({ type: "eom" });
    assert.deepEqual(await mta.untilFinal(), [
      { type: "addheader", name: "X-Via", value: "proxy" },
      C,
    ]);
    await mta.send({ type: "quit" });
    await mta.close();
    const s = await done;
    assert.equal(s.end, "mta");
    assert.equal(s.fallback, false);
    // What the MTA received is exactly what the proxy forwarded to it.
    const toMta = concatBytes(chunks["to-mta"]);
    assert.equal(toMta.length, s.bytes["to-mta"]);
    const decoded = frames.filter((f) => "decoded" in f).map((f) =>
      `${f.direction}:${"decoded" in f ? f.decoded.type : ""}`
    );
    assert.deepEqual(decoded, [
      "to-filter:optneg",
      "to-mta:optneg",
      "to-filter:mail",
      "to-filter:eom",
      "to-mta:addheader",
      "to-mta:continue",
      "to-filter:quit",
    ]);
  });

  it("answers tempfail when the filter is down (policy tempfail)", async () => {
    const { mta, done, notes } = rig(() => Promise.reject(new Error("ECONNREFUSED")));
    const opt = await mta.negotiate();
    assert.equal(opt?.type, "optneg");
    assert.deepEqual(await mta.ask({ type: "connect", hostname: "h", family: "unknown" }), {
      type: "tempfail",
    });
    await mta.send({ type: "quit" });
    const s = await done;
    assert.equal(s.fallback, true);
    assert.match(notes[0]!, /cannot connect.*tempfail/);
  });

  it("answers accept when the filter is down (policy accept)", async () => {
    const { mta, done } = rig(() => Promise.reject(new Error("down")), {
      onUpstreamFailure: "accept",
    });
    await mta.negotiate();
    assert.deepEqual(await mta.ask({ type: "connect", hostname: "h", family: "unknown" }), {
      type: "accept",
    });
    await mta.send({ type: "quit" });
    await done;
  });

  it("closes the MTA connection when the filter is down (policy close)", async () => {
    const { mta, done } = rig(() => Promise.reject(new Error("down")), {
      onUpstreamFailure: "close",
    });
    assert.equal(await mta.negotiate(), undefined);
    assert.equal((await done).end, "upstream");
  });

  it("answers the MTA in the filter's place when the filter dies mid-body", async () => {
    const { mta, done, notes } = rig(dyingFilter(4)); // optneg, connect, mail, body 1, then dies
    await mta.negotiate();
    assert.deepEqual(await mta.ask({ type: "connect", hostname: "h", family: "unknown" }), C);
    assert.deepEqual(await mta.ask({ type: "mail", sender: "<a@b>", args: [] }), C);
    assert.deepEqual(await mta.ask({ type: "body", chunk: new Uint8Array(10) }), C);
    assert.deepEqual(await mta.ask({ type: "body", chunk: new Uint8Array(10) }), {
      type: "tempfail",
    });
    assert.deepEqual(await mta.ask({ type: "eom" }), { type: "tempfail" });
    await mta.send({ type: "abort" }, { type: "quit" });
    await mta.close();
    const s = await done;
    assert.equal(s.fallback, true);
    assert.ok(notes.some((n) => /died mid-session; answering the MTA: tempfail/.test(n)));
  });

  it("ends without hanging when the MTA disappears mid-session", async () => {
    let upstreamClosed = false;
    const upstream = (): Promise<Duplex> => {
      const [a, b] = duplexPair();
      void serveConnection(b, defineFilter({ close: () => void (upstreamClosed = true) }));
      return Promise.resolve(a);
    };
    const { mta, done } = rig(upstream);
    await mta.negotiate();
    await mta.send({ type: "mail", sender: "<a@b>", args: [] });
    await mta.cancel();
    const s = await done;
    assert.equal(s.end, "mta");
    await new Promise((r) => setTimeout(r, 10));
    assert.ok(upstreamClosed, "the filter saw the session end");
  });

  it("keeps relaying when the tap cannot decode (garbage from the filter)", async () => {
    const garbage = new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n");
    const upstream = (): Promise<Duplex> => {
      const [a, b] = duplexPair();
      const w = b.writable.getWriter();
      void w.write(garbage).then(() => w.close());
      return Promise.resolve(a);
    };
    const { mta, done, chunks } = rig(upstream, { onUpstreamFailure: "close" });
    const w = mta as unknown as { send(c: Command): Promise<void> };
    await w.send({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff });
    const s = await done;
    assert.deepEqual(concatBytes(chunks["to-mta"]), garbage, "forwarded unchanged");
    assert.equal(s.bytes["to-mta"], garbage.length);
  });
});
