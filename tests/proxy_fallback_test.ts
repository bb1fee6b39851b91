/**
 * proxyConnection regressions: the tap sees a command before the reply it caused even when
 * writes to the filter complete late; a session whose MTA leaves while the proxy answers in a
 * dead filter's place ends; a filter that never hangs up after the MTA left is closed.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { proxyConnection, type TapFrame } from "../lib/inspect/proxy.ts";
import { decodeCommand } from "../lib/wire/command_codec.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import type { Duplex } from "../lib/wire/types.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { RawMta } from "./helpers/raw_mta.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Fails the test instead of hanging when `p` does not settle within `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not end within ${ms} ms`)), ms);
    }),
  ]);
}

/**
 * A filter that answers OPTNEG and every command with continue at once, reached through a
 * connection whose writes are delivered at once but acknowledged `ackMs` later (a slow socket
 * write completion, as Deno's can be). `dieAfter` commands later it hangs up; `stayOpen` keeps
 * it from ever closing on EOF.
 */
function filter(
  opts: { ackMs?: number; dieAfter?: number; stayOpen?: boolean; shutdownAt?: string } = {},
) {
  const [proxySide, filterSide] = duplexPair();
  const inner = proxySide.writable.getWriter();
  const slowWritable = new WritableStream<Uint8Array>({
    async write(chunk) {
      void inner.write(chunk);
      await sleep(opts.ackMs ?? 0);
    },
    close: () => inner.close(),
    abort: (e) => inner.abort(e),
  });
  let closed = false;
  void (async () => {
    const reader = filterSide.readable.getReader();
    const writer = filterSide.writable.getWriter();
    const dec = new FrameDecoder();
    let n = 0;
    let shutDown = false;
    while (true) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (done || !value) break;
      for (const f of dec.push(value)) {
        const c = decodeCommand(f);
        if (c.type === "macro" || c.type === "abort" || c.type === "quit") continue;
        if (opts.dieAfter !== undefined && ++n > opts.dieAfter) {
          await writer.abort(new Error("filter crashed")).catch(() => {});
          await reader.cancel().catch(() => {});
          return;
        }
        if (shutDown) continue; // hung up its sending side: reads on, answers nothing
        if (c.type === opts.shutdownAt) {
          await writer.write(encodeReply({ type: "shutdown" })).catch(() => {});
          await writer.close().catch(() => {});
          shutDown = true;
          continue;
        }
        await writer.write(encodeReply(
          c.type === "optneg"
            ? { type: "optneg", version: 6, actions: 0, protocol: 0 }
            : { type: "continue" },
        )).catch(() => {});
      }
    }
    if (!opts.stayOpen && !shutDown) await writer.close().catch(() => {});
  })();
  const upstream: Duplex & { close(): void } = {
    readable: proxySide.readable,
    writable: slowWritable,
    close: () => void (closed = true),
  };
  return { upstream, closed: () => closed };
}

describe("proxyConnection (regressions)", () => {
  it("taps each command before its reply even when writes to the filter complete late", async () => {
    const f = filter({ ackMs: 30 });
    const [mtaEnd, proxyEnd] = duplexPair();
    const order: string[] = [];
    const done = proxyConnection(proxyEnd, {
      connectUpstream: () => Promise.resolve(f.upstream),
      onFrame: (t: TapFrame) =>
        void order.push(`${t.direction}:${"decoded" in t ? t.decoded.type : "?"}`),
    });
    const mta = new RawMta(mtaEnd);
    await mta.negotiate();
    assert.deepEqual(await mta.ask({ type: "helo", name: "h" }), { type: "continue" });
    await mta.send({ type: "quit" });
    await mta.close();
    await within(done, 5000, "the session");
    assert.deepEqual(order, [
      "to-filter:optneg",
      "to-mta:optneg",
      "to-filter:helo",
      "to-mta:continue",
      "to-filter:quit",
    ]);
  });

  it("ends when the MTA leaves right after the filter died mid-session", async () => {
    for (let round = 0; round < 20; round++) {
      const f = filter({ dieAfter: 2 }); // optneg, helo, then dies on the next command
      const [mtaEnd, proxyEnd] = duplexPair();
      const done = proxyConnection(proxyEnd, {
        connectUpstream: () => Promise.resolve(f.upstream),
      });
      const mta = new RawMta(mtaEnd);
      await mta.negotiate();
      await mta.ask({ type: "helo", name: "h" });
      await mta.send({ type: "mail", sender: "<a@b>", args: [] });
      if (round % 2 === 1) await sleep(round % 4); // vary when the MTA leaves
      await mta.close();
      const s = await within(done, 5000, `round ${round}`);
      assert.equal(s.end === "upstream" || s.end === "mta", true);
    }
  });

  it("closes a filter that does not hang up after the MTA left (closeGraceMs)", async () => {
    const f = filter({ stayOpen: true });
    const [mtaEnd, proxyEnd] = duplexPair();
    const notes: string[] = [];
    const done = proxyConnection(proxyEnd, {
      connectUpstream: () => Promise.resolve(f.upstream),
      closeGraceMs: 50,
      onNote: (m) => notes.push(m),
    });
    const mta = new RawMta(mtaEnd);
    await mta.negotiate();
    await mta.close(); // no QUIT: the filter sees EOF but keeps its side open
    const s = await within(done, 5000, "the session");
    assert.equal(s.end, "mta");
    assert.ok(f.closed(), "the proxy closed the filter connection");
    assert.match(notes.join("\n"), /did not close within 50 ms after the MTA left/);
  });

  it("counts SHUTDOWN as the final reply: a later fallback answers only what is still waiting", async () => {
    const f = filter({ shutdownAt: "helo" }); // answers HELO with SHUTDOWN, then hangs up
    const [mtaEnd, proxyEnd] = duplexPair();
    const done = proxyConnection(proxyEnd, {
      connectUpstream: () => Promise.resolve(f.upstream),
      onUpstreamFailure: "accept",
    });
    const mta = new RawMta(mtaEnd);
    await mta.negotiate();
    assert.deepEqual(await mta.ask({ type: "helo", name: "h" }), { type: "shutdown" });
    await sleep(50); // the proxy notices the filter is gone
    assert.deepEqual(await mta.ask({ type: "mail", sender: "<a@b>", args: [] }), {
      type: "accept",
    }); // the MAIL's answer, not a second one for the HELO that SHUTDOWN answered
    assert.deepEqual(await mta.ask({ type: "rcpt", recipient: "<c@d>", args: [] }), {
      type: "accept",
    });
    await mta.send({ type: "quit" });
    const extra = await Promise.race([mta.next(), sleep(200).then(() => "nothing")]);
    assert.equal(extra, "nothing", "no reply left over for the MTA after its last command");
    await mta.close();
    await within(done, 5000, "the session");
  });
});
