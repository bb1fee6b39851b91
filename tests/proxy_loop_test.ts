/**
 * A proxy whose upstream leads back to itself: refused at start when the upstream is its own
 * listening address; at run time, a connection from the proxy's own upstream side is refused
 * (no chain of sessions); and a loop through a second proxy, which neither can see, is bounded
 * by --max-connections so file descriptors never run out. Real sockets, real processes.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { createServer } from "node:net";
import { LoopGuard, upstreamLoops } from "../lib/inspect/proxy_loop.ts";
import { proxyConnection } from "../lib/inspect/proxy.ts";
import { connect as connectSocket, listen as listenSocket } from "../lib/server/net.ts";
import { RawMta } from "./helpers/raw_mta.ts";
import { type ProxyChild, runCli, startProxy } from "./helpers/proxy_child.ts";

const TIMEOUT = { timeout: 60_000 };
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const OPTNEG = { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff } as const;
const CONNECT = {
  type: "connect",
  hostname: "client.example",
  family: "inet",
  address: "192.0.2.1",
  port: 4000,
} as const;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

describe("a proxy whose upstream is itself", () => {
  const started: ProxyChild[] = [];
  after(async () => {
    for (const p of started) await p.stop();
  });

  it("is refused at start: exit 2 and one line", TIMEOUT, async () => {
    const port = await freePort();
    for (
      const [listen, upstream] of [
        [`inet:${port}@127.0.0.1`, `inet:${port}@127.0.0.1`],
        [`inet:${port}@0.0.0.0`, `inet:${port}@127.0.0.1`],
        [`inet:${port}@127.0.0.1`, `inet:${port}@localhost`],
        ["unix:/tmp/milterkit-loop.sock", "unix:/tmp/../tmp/milterkit-loop.sock"],
      ]
    ) {
      const r = await runCli(["proxy", "--listen", listen!, "--upstream", upstream!]);
      assert.equal(r.code, 2, `${listen} → ${upstream}: ${r.stderr}`);
      assert.match(r.stderr.split("\n")[0]!, /own --listen address: it would relay to itself/);
    }
    // Different ports, or a host the listen address does not cover, are fine.
    assert.equal(
      upstreamLoops(
        { transport: "tcp", hostname: "127.0.0.1", port },
        { transport: "tcp", hostname: "127.0.0.1", port: port + 1 },
      ),
      false,
    );
  });

  it(
    "at run time: the looped connection is refused, no chain, the MTA gets the policy answer",
    TIMEOUT,
    async () => {
      const listener = await listenSocket("inet:0@127.0.0.1");
      const self = listener.address;
      const guard = new LoopGuard();
      const notes: string[] = [];
      const ends: string[] = [];
      let accepted = 0;
      void (async () => {
        for await (const conn of listener) {
          accepted++;
          let forget = () => {};
          void proxyConnection(conn, {
            connectUpstream: async () => {
              const up = await connectSocket(self); // the upstream is the proxy itself
              forget = guard.add(up.local);
              return up;
            },
            admit: () => (guard.isOwn(conn.remote) ? "refused: from the proxy itself" : undefined),
            onNote: (m) => notes.push(m),
          }).then((s) => {
            forget();
            ends.push(s.end);
            conn.close();
          });
        }
      })();
      try {
        const mta = new RawMta(await connectSocket(self));
        const neg = await mta.ask(OPTNEG);
        assert.equal(neg?.type, "optneg", "the proxy answers OPTNEG in the filter's place");
        assert.equal((await mta.ask(CONNECT))?.type, "tempfail");
        await mta.close();
        await sleep(200);
        assert.equal(accepted, 2, "the MTA's connection and one looped connection, no more");
        assert.ok(notes.some((n) => /from the proxy itself/.test(n)), notes.join("\n"));
        assert.ok(ends.includes("refused"), ends.join(","));
      } finally {
        await listener.close();
      }
    },
  );

  it("through a second proxy: bounded by --max-connections, and it unwinds", TIMEOUT, async () => {
    const [pa, pb] = [await freePort(), await freePort()];
    const a = await startProxy(
      ["-u", `inet:${pb}@127.0.0.1`, "--quiet", "--max-connections", "8"],
      `inet:${pa}@127.0.0.1`,
    );
    started.push(a);
    const b = await startProxy(
      ["-u", `inet:${pa}@127.0.0.1`, "--quiet", "--max-connections", "8"],
      `inet:${pb}@127.0.0.1`,
    );
    started.push(b);
    const base = [fds(a.pid), fds(b.pid)];
    const mta = new RawMta(await connectSocket(`inet:${pa}@127.0.0.1`));
    const neg = await mta.ask(OPTNEG);
    assert.equal(neg?.type, "optneg");
    assert.equal((await mta.ask(CONNECT))?.type, "tempfail");
    // While the chain stands, each proxy holds at most 8 sessions (2 descriptors each).
    assert.ok(fds(a.pid) <= base[0]! + 2 * 8 + 2, `A: ${fds(a.pid)} fds`);
    assert.ok(fds(b.pid) <= base[1]! + 2 * 8 + 2, `B: ${fds(b.pid)} fds`);
    assert.match(a.stderr() + b.stderr(), /too many connections/);
    await mta.send({ type: "quit" });
    await mta.close();
    const deadline = Date.now() + 10_000;
    while ((fds(a.pid) > base[0]! || fds(b.pid) > base[1]!) && Date.now() < deadline) {
      await sleep(50);
    }
    assert.ok(
      fds(a.pid) <= base[0]! && fds(b.pid) <= base[1]!,
      `every descriptor released: ${base} → ${fds(a.pid)},${
        fds(b.pid)
      }\n${a.stderr()}\n${b.stderr()}`,
    );
  });
});
