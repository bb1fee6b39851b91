/**
 * Fault injection against the proxy over real loopback sockets: `proxyConnection` behind a real
 * listener, in front of a milterkit server or a hostile fake filter. The upstream filter goes
 * away and comes back, dies mid-session or stalls; the MTA hangs up at every point or speaks
 * another protocol. Each case checks what the MTA is told, that the upstream connection is
 * released, and that sessions in parallel and afterwards are relayed correctly.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { defineFilter } from "../lib/filter/filter.ts";
import {
  proxyConnection,
  type ProxySummary,
  type UpstreamFailurePolicy,
} from "../lib/inspect/proxy.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { runTransaction } from "../lib/mta/transaction.ts";
import { connect as connectSocket, listen as listenSocket } from "../lib/server/net.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { decodeCommand, encodeCommand } from "../lib/wire/command_codec.ts";
import { SMFIP } from "../lib/wire/constants.ts";
import { ConnectionClosedError, MilterTimeoutError } from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply, encodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../lib/wire/types.ts";
import { stageOf } from "../lib/wire/command_bits.ts";
import type { Listener } from "../lib/server/adapters/types.ts";
import { added, openClient, sendOne, TIMEOUT, tx, waitFor, within } from "./helpers/server_kit.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const echo = () =>
  defineFilter({
    actions: ["addHeader"],
    eom(ctx) {
      const s = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
      if (s.includes("throw")) throw new Error("eom exploded");
      ctx.addHeader("X-Echo", s.replace(/^\s*msg /, ""));
      return "accept";
    },
  });

/** A proxy on 127.0.0.1 whose upstream can be switched between tests. */
class TestProxy {
  listener!: Listener;
  upstream = "";
  policy: UpstreamFailurePolicy = "tempfail";
  readonly summaries: ProxySummary[] = [];
  readonly notes: string[] = [];
  open = 0;
  #loop: Promise<void> = Promise.resolve();
  readonly #sessions = new Set<Promise<void>>();

  async start(): Promise<void> {
    this.listener = await listenSocket("inet:0@127.0.0.1");
    this.#loop = (async () => {
      for await (const conn of this.listener) {
        this.open++;
        const s = proxyConnection(conn, {
          connectUpstream: () => connectSocket(this.upstream, { timeoutMs: 2000 }),
          onUpstreamFailure: this.policy,
          closeGraceMs: 300,
          onNote: (m) => this.notes.push(m),
        }).then((summary) => {
          this.summaries.push(summary);
        }).finally(() => {
          conn.close();
          this.open--;
          this.#sessions.delete(s);
        });
        this.#sessions.add(s);
      }
    })();
  }

  get port(): number {
    const a = this.listener.address;
    return a.transport === "tcp" ? a.port : 0;
  }

  async stop(): Promise<void> {
    await this.listener.close();
    await this.#loop;
    await Promise.all(this.#sessions);
  }
}

/** A raw MTA: writes `bytes`, half-closes or stalls, returns the replies it got. */
function rawMta(port: number, bytes: Uint8Array, how: "end" | "stall"): Promise<Reply[]> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = net.connect({ host: "127.0.0.1", port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error("The proxy did not close the MTA connection within 15 s"));
    }, 15_000);
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", () => {});
    sock.on("close", () => {
      clearTimeout(timer);
      const replies: Reply[] = [];
      try {
        for (const f of new FrameDecoder().push(new Uint8Array(Buffer.concat(chunks)))) {
          replies.push(decodeReply(f));
        }
      } catch { /* partial */ }
      resolve(replies);
    });
    sock.on("connect", () => sock.write(bytes, () => how === "end" && sock.end()));
  });
}

/** A fake filter that answers normally until `misbehave(cmd)` returns an action. */
async function fakeFilter(
  misbehave: (c: Command) => "close" | "stall" | "half" | undefined,
): Promise<{ spec: string; connections: () => number; stop(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    const dec = new FrameDecoder();
    let stalled = false;
    sock.on("error", () => {});
    sock.on("close", () => sockets.delete(sock));
    sock.on("data", (d: Buffer) => {
      if (stalled) return;
      for (const f of dec.push(new Uint8Array(d))) {
        const c = decodeCommand(f);
        const act = misbehave(c);
        if (act === "close") return void sock.destroy();
        if (act === "stall") return void (stalled = true);
        if (act === "half") {
          stalled = true;
          return void sock.write(new Uint8Array([0, 0]));
        }
        const r: Reply | undefined = c.type === "optneg"
          ? { type: "optneg", version: 6, actions: 0x1ff, protocol: 0 }
          : c.type === "eom"
          ? { type: "accept" }
          : ["macro", "abort", "quit", "quit_nc"].includes(c.type)
          ? undefined
          : { type: "continue" };
        if (r) sock.write(encodeReply(r));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    spec: `inet:${port}@127.0.0.1`,
    connections: () => sockets.size,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const OFFER: Command = { type: "optneg", version: 6, actions: 0x1ff, protocol: 0 };
const SESSION: Command[] = [
  OFFER,
  { type: "connect", hostname: "c.example.net", family: "inet", address: "192.0.2.9", port: 5 },
  { type: "helo", name: "c.example.net" },
  { type: "mail", sender: "<a@example.net>", args: [] },
  { type: "rcpt", recipient: "<b@example.com>", args: [] },
  { type: "header", name: "Subject", value: "msg 3" },
  { type: "eoh" },
  { type: "body", chunk: new TextEncoder().encode("Hi\r\n") },
  { type: "eom" },
  { type: "quit" },
];
const FRAMES = SESSION.map(encodeCommand);
const FINAL = new Set(["continue", "accept", "reject", "tempfail", "discard", "replycode", "skip"]);
const NR: Partial<Record<Command["type"], number>> = {
  connect: SMFIP.NR_CONN,
  helo: SMFIP.NR_HELO,
  mail: SMFIP.NR_MAIL,
  rcpt: SMFIP.NR_RCPT,
  header: SMFIP.NR_HDR,
  eoh: SMFIP.NR_EOH,
  body: SMFIP.NR_BODY,
};
/** Whether the filter owes a reply to `c`, given the protocol bits it negotiated. */
function expectsReply(c: Command, protocol: number): boolean {
  if (c.type === "optneg" || c.type === "eom") return true;
  const bit = NR[c.type];
  return bit !== undefined && (protocol & bit) === 0;
}

describe("proxy under faults (real sockets)", () => {
  let upstream: MilterServer | undefined;
  let upstreamSpec = "";
  const proxy = new TestProxy();

  const startUpstream = async () => {
    upstream = await listen(upstreamSpec || "inet:0@127.0.0.1", echo());
    const a = upstream.address;
    upstreamSpec = `inet:${a.transport === "tcp" ? a.port : 0}@127.0.0.1`;
    proxy.upstream = upstreamSpec;
  };

  before(async () => {
    await startUpstream();
    await proxy.start();
  });

  after(async () => {
    await proxy.stop();
    await upstream?.stop({ graceMs: 0 });
  });

  const proxySpec = () => `inet:${proxy.port}@127.0.0.1`;

  /** A healthy session through the proxy, answered on its own message. */
  async function healthy(n: number): Promise<void> {
    const r = await sendOne(proxySpec(), tx(n));
    assert.equal(r.verdict.type, "accept");
    assert.equal(added(r, "X-Echo"), String(n));
  }

  async function settle(): Promise<void> {
    await waitFor(() => proxy.open === 0, "every proxied session to end");
    await waitFor(() => (upstream?.connections ?? 0) === 0, "every upstream connection to end");
  }

  it("relays a session unchanged (the filter's own answer reaches the MTA)", TIMEOUT, async () => {
    await Promise.all([healthy(1), healthy(2), healthy(3)]);
    await settle();
  });

  it("relays a handler failure upstream as the filter's tempfail", TIMEOUT, async () => {
    const [r] = await Promise.all([sendOne(proxySpec(), tx("throw")), healthy(4)]);
    assert.equal(r.verdict.type, "tempfail");
    assert.deepEqual(r.replies.at(-1)?.result.verdict, { type: "tempfail" });
    await settle();
  });

  for (const policy of ["tempfail", "reject", "accept"] as const) {
    it(
      `upstream down: the MTA gets ${policy} (policy ${policy}); works again once back`,
      TIMEOUT,
      async () => {
        proxy.policy = policy;
        try {
          await upstream!.stop({ graceMs: 0 });
          upstream = undefined;
          const r = await sendOne(proxySpec(), tx(5));
          assert.equal(r.verdict.type, policy);
          assert.equal(r.verdict.stage, "connect");
          assert.equal(r.verdict.scope, "session");
          await waitFor(() => proxy.open === 0, "the proxied session to end");
          assert.equal(proxy.summaries.at(-1)?.fallback, true);
          assert.equal(proxy.summaries.at(-1)?.end, "upstream");
          await startUpstream(); // same port
          await healthy(6);
        } finally {
          proxy.policy = "tempfail";
          if (!upstream) await startUpstream();
        }
        await settle();
      },
    );
  }

  it(
    "upstream down with policy close: the MTA's connection is closed (default action)",
    TIMEOUT,
    async () => {
      proxy.policy = "close";
      try {
        await upstream!.stop({ graceMs: 0 });
        upstream = undefined;
        const conn = await connectSocket(proxySpec(), { timeoutMs: 5000 });
        await assert.rejects(
          MilterClient.open(conn, { commandTimeoutMs: 5000 }),
          ConnectionClosedError,
        );
        conn.close();
        await startUpstream();
        await healthy(7);
      } finally {
        proxy.policy = "tempfail";
        if (!upstream) await startUpstream();
      }
      await settle();
    },
  );

  for (const stage of ["connect", "envfrom", "envrcpt", "header", "eom"]) {
    it(
      `upstream dies when ${stage} arrives: the MTA gets tempfail for it and the rest`,
      TIMEOUT,
      async () => {
        const fake = await fakeFilter((c) => (stageOf(c.type) === stage ? "close" : undefined));
        proxy.upstream = fake.spec;
        try {
          const client = await openClient(proxySpec(), { commandTimeoutMs: 5000 });
          proxy.upstream = upstreamSpec; // the healthy session in parallel goes to the real one
          const [r] = await Promise.all([runTransaction(client, tx(8)), healthy(13)]);
          assert.equal(r.verdict.type, "tempfail");
          assert.equal(r.verdict.stage, stage);
          assert.deepEqual(r.replies.at(-1)?.result.verdict, { type: "tempfail" });
          await client.quit().catch(() => {});
          await client.close();
          await healthy(9);
        } finally {
          proxy.upstream = upstreamSpec;
          await fake.stop();
        }
        await settle();
      },
    );
  }

  it(
    "upstream stalls mid-reply: the MTA times out; the proxy then drops the upstream",
    TIMEOUT,
    async () => {
      const fake = await fakeFilter((c) => (c.type === "mail" ? "half" : undefined));
      proxy.upstream = fake.spec;
      try {
        const client = await openClient(proxySpec(), { commandTimeoutMs: 400 });
        proxy.upstream = upstreamSpec;
        const [e] = await Promise.all([
          runTransaction(client, tx(10)).then(() => undefined, (e) => e),
          healthy(11),
        ]);
        assert.ok(e instanceof MilterTimeoutError, String(e));
        assert.equal(e.timeoutMs, 400);
        await client.close();
        // closeGraceMs (300 ms) after the MTA left, the proxy closes the stalled filter.
        await waitFor(() => fake.connections() === 0, "the proxy to close the stalled filter");
        await healthy(12);
      } finally {
        proxy.upstream = upstreamSpec;
        await fake.stop();
      }
      await settle();
    },
  );

  it(
    "MTA hangs up at every frame boundary and inside every frame: nothing leaks",
    TIMEOUT,
    async () => {
      let n = 100;
      for (let i = 0; i <= FRAMES.length; i++) {
        for (const part of [0, 2]) {
          if (part > 0 && i === FRAMES.length) continue;
          const bytes = concatBytes([
            ...FRAMES.slice(0, i),
            FRAMES[i]?.subarray(0, part) ?? new Uint8Array(),
          ]);
          const [replies] = await Promise.all([rawMta(proxy.port, bytes, "end"), healthy(n++)]);
          // The filter's answer to every complete command reached the MTA.
          const first = replies[0];
          const protocol = first?.type === "optneg" ? first.protocol : 0;
          const owed = SESSION.slice(0, i).filter((c) => expectsReply(c, protocol)).length;
          const got = replies.filter((r) => r.type === "optneg" || FINAL.has(r.type)).length;
          assert.equal(got, owed, `replies relayed for a cut after ${i} frames (+${part} bytes)`);
          await within(settle(), 20_000, `the sessions after cut ${i}+${part}`);
        }
      }
      await healthy(n);
    },
  );

  const len = (v: number) => {
    const b = new Uint8Array(9);
    new DataView(b.buffer).setUint32(0, v);
    b[4] = 0x4f;
    return b;
  };
  for (
    const [name, bytes] of [
      ["GET / HTTP/1.1", new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")],
      ["a TLS ClientHello", new Uint8Array([0x16, 3, 1, 0, 0xa5, 1, 0, 0, 0xa1, 3, 3])],
      ["a 2 GB length", len(0x7fffffff)],
    ] as const
  ) {
    it(
      `MTA sends ${name}: the filter refuses it, the MTA is closed without a reply`,
      TIMEOUT,
      async () => {
        const [replies] = await Promise.all([rawMta(proxy.port, bytes, "stall"), healthy(20)]);
        assert.deepEqual(replies, []);
        await settle();
        await healthy(21);
      },
    );
  }
});
