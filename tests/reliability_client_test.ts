/**
 * Fault injection against the MTA engine over real loopback sockets: `MilterClient` talks to
 * hostile fake filters (raw node:net servers) that hang up at every stage, stall inside a reply,
 * answer with another protocol or a 2 GB length, send illegal replies or never answer. Each case
 * checks the typed error the MTA gets (a real MTA then applies milter_default_action), that the
 * filter connection is released, and that healthy transactions in parallel and afterwards work.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { defineFilter } from "../lib/filter/filter.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { connect as connectSocket } from "../lib/server/net.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { decodeCommand } from "../lib/wire/command_codec.ts";
import {
  ConnectionClosedError,
  MilterError,
  MilterNegotiationError,
  MilterProtocolError,
  MilterTimeoutError,
} from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../lib/wire/types.ts";
import { added, sendOne, TIMEOUT, tx } from "./helpers/server_kit.ts";

const unhandled: unknown[] = [];
const onUnhandled = (e: unknown) => unhandled.push(e);
process.on("unhandledRejection", onUnhandled);

/** What the fake filter does when a command arrives: answer normally, or misbehave. */
type Act =
  | { readonly kind: "normal" }
  | { readonly kind: "close" }
  | {
    readonly kind: "bytes";
    readonly bytes: Uint8Array;
    readonly then: "stall" | "close" | "repeat";
  };

/** The normal answer of a fake filter to a command (undefined: no answer is owed). */
function normal(c: Command): Reply | undefined {
  switch (c.type) {
    case "optneg":
      return { type: "optneg", version: 6, actions: 0x1ff, protocol: 0 };
    case "macro":
    case "abort":
    case "quit":
    case "quit_nc":
      return undefined;
    case "eom":
      return { type: "accept" };
    default:
      return { type: "continue" };
  }
}

/** A scripted fake filter on 127.0.0.1: `script(cmd)` decides what each command gets. */
async function fakeFilter(
  script: (c: Command) => Act,
): Promise<{ port: number; closed: Promise<void>; stop(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  const server = net.createServer((sock) => {
    sockets.add(sock);
    const dec = new FrameDecoder();
    let done = false;
    sock.on("error", () => {});
    sock.on("close", () => {
      sockets.delete(sock);
      closedResolve();
    });
    sock.on("data", (d: Buffer) => {
      if (done) return;
      for (const f of dec.push(new Uint8Array(d))) {
        const c = decodeCommand(f);
        const act = script(c);
        if (act.kind === "close") {
          done = true;
          sock.destroy();
          return;
        }
        if (act.kind === "bytes") {
          done = true;
          sock.write(act.bytes, () => {
            if (act.then === "close") sock.end();
          });
          if (act.then === "repeat") {
            // Keep sending the same bytes (e.g. PROGRESS) until the MTA hangs up.
            const timer = setInterval(() => sock.write(act.bytes), 100);
            sock.on("close", () => clearInterval(timer));
          }
          return;
        }
        const r = normal(c);
        if (r) sock.write(encodeReply(r));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    closed,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const STAGES = [
  "optneg",
  "connect",
  "helo",
  "mail",
  "rcpt",
  "data",
  "header",
  "eoh",
  "body",
  "eom",
];
const NAME: Record<string, string> = {
  optneg: "OPTNEG reply",
  connect: "SMFIC_CONNECT",
  helo: "SMFIC_HELO",
  mail: "SMFIC_MAIL",
  rcpt: "SMFIC_RCPT",
  data: "SMFIC_DATA",
  header: "SMFIC_HEADER",
  eoh: "SMFIC_EOH",
  body: "SMFIC_BODY",
  eom: "SMFIC_BODYEOB",
};

const OPTS = { commandTimeoutMs: 400, contentTimeoutMs: 450, eomTimeoutMs: 900 };
/** The per-reply limit of a stage: contentTimeoutMs for message content, else commandTimeoutMs. */
const limitOf = (stage: string) => ["header", "eoh", "body", "eom"].includes(stage) ? 450 : 400;

/** Runs one whole transaction against the fake filter; returns the error it ended with. */
async function attempt(port: number): Promise<Error | undefined> {
  const conn = await connectSocket(`inet:${port}@127.0.0.1`, { timeoutMs: 5000 });
  let client: MilterClient;
  try {
    client = await MilterClient.open(conn, OPTS);
  } catch (e) {
    conn.close();
    return e as Error;
  }
  try {
    await runTransaction(client, tx(1));
    return undefined;
  } catch (e) {
    return e as Error;
  } finally {
    await endSession(client);
    conn.close();
  }
}

const len = (n: number, code: number) => {
  const b = new Uint8Array(5 + 8);
  new DataView(b.buffer).setUint32(0, n);
  b[4] = code;
  return b;
};
const enc = new TextEncoder();
const tlsServerHello = new Uint8Array([0x16, 0x03, 0x03, 0x00, 0x5a, 0x02, 0x00, 0x00, 0x56, 3, 3]);

describe("MTA engine against hostile filters (real sockets)", () => {
  let good: MilterServer;

  before(async () => {
    good = await listen(
      "inet:0@127.0.0.1",
      defineFilter({
        actions: ["addHeader"],
        eom(ctx) {
          const s = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
          ctx.addHeader("X-Echo", s.replace(/^\s*msg /, ""));
          return "accept";
        },
      }),
    );
  });

  after(async () => {
    await good.stop({ graceMs: 0 });
    process.off("unhandledRejection", onUnhandled);
  });

  async function healthy(n: number): Promise<void> {
    const r = await sendOne(good.address, tx(n));
    assert.equal(added(r, "X-Echo"), String(n));
  }

  /** Runs `script` as the filter, a healthy transaction in parallel and one after. */
  async function check(script: (c: Command) => Act): Promise<Error> {
    const fake = await fakeFilter(script);
    try {
      const [e] = await Promise.all([attempt(fake.port), healthy(10)]);
      assert.ok(e instanceof MilterError, `a typed error, got ${e}`);
      // The MTA engine releases the filter connection after a failure (as Postfix does).
      await fake.closed;
      await healthy(11);
      return e;
    } finally {
      await fake.stop();
    }
  }

  for (const stage of STAGES) {
    it(
      `filter hangs up when ${stage} arrives: ConnectionClosedError naming it`,
      TIMEOUT,
      async () => {
        const e = await check((c) => (c.type === stage ? { kind: "close" } : { kind: "normal" }));
        assert.ok(e instanceof ConnectionClosedError, String(e));
        assert.ok(e.message.includes(NAME[stage]!), e.message);
      },
    );

    it(
      `filter sends half a reply to ${stage} and stalls: MilterTimeoutError`,
      TIMEOUT,
      async () => {
        const half = encodeReply(normal({ type: stage } as Command) ?? { type: "continue" });
        const e = await check((c) =>
          c.type === stage
            ? { kind: "bytes", bytes: half.subarray(0, half.length - 1), then: "stall" }
            : { kind: "normal" }
        );
        assert.ok(e instanceof MilterTimeoutError, String(e));
        const limit = limitOf(stage);
        assert.equal(e.timeoutMs, limit);
        assert.match(e.message, new RegExp(`${limit} ms`));
        assert.ok(e.message.includes(NAME[stage]!), e.message);
      },
    );

    it(`filter sends half a reply to ${stage} and hangs up: truncated`, TIMEOUT, async () => {
      const half = encodeReply(normal({ type: stage } as Command) ?? { type: "continue" });
      const e = await check((c) =>
        c.type === stage
          ? { kind: "bytes", bytes: half.subarray(0, 3), then: "close" }
          : { kind: "normal" }
      );
      assert.ok(e instanceof ConnectionClosedError, String(e));
      assert.ok(e.cause instanceof MilterProtocolError, String(e.cause));
      assert.equal(e.cause.reason, "truncated");
    });
  }

  for (const stage of ["optneg", "mail", "eom"]) {
    it(
      `filter never answers ${stage}: MilterTimeoutError after the command timeout`,
      TIMEOUT,
      async () => {
        const e = await check((c) =>
          c.type === stage ? { kind: "bytes", bytes: new Uint8Array(0), then: "stall" } : {
            kind: "normal",
          }
        );
        assert.ok(e instanceof MilterTimeoutError, String(e));
        assert.equal(e.timeoutMs, limitOf(stage));
      },
    );

    for (
      const [what, bytes, reason] of [
        ["an HTTP response", enc.encode("HTTP/1.1 400 Bad Request\r\n\r\n"), "not-milter"],
        ["a TLS ServerHello", tlsServerHello, "not-milter"],
        ["a 2 GB length", len(0x7fffffff, 0x63), "oversized"],
        ["a zero length", new Uint8Array([0, 0, 0, 0]), "empty"],
      ] as const
    ) {
      it(
        `filter answers ${stage} with ${what}: MilterProtocolError ${reason}`,
        TIMEOUT,
        async () => {
          const e = await check((c) =>
            c.type === stage ? { kind: "bytes", bytes, then: "stall" } : { kind: "normal" }
          );
          assert.ok(e instanceof MilterProtocolError, String(e));
          assert.equal(e.reason, reason);
        },
      );
    }
  }

  const illegal: [string, string, Reply[], (e: Error) => void][] = [
    ["an OPTNEG with version 7", "optneg", [{
      type: "optneg",
      version: 7,
      actions: 0,
      protocol: 0,
    }], (e) => assert.ok(e instanceof MilterNegotiationError, String(e))],
    ["an OPTNEG asking actions beyond the offer", "optneg", [{
      type: "optneg",
      version: 6,
      actions: 0x10000,
      protocol: 0,
    }], (e) => assert.ok(e instanceof MilterNegotiationError, String(e))],
    ["CONTINUE instead of an OPTNEG", "optneg", [{ type: "continue" }], (e) => {
      assert.ok(e instanceof MilterProtocolError, String(e));
    }],
    ["ADDHEADER before RCPT's reply", "rcpt", [{
      type: "addheader",
      name: "X",
      value: "y",
    }], (e) => assert.ok(e instanceof MilterProtocolError && e.reason === "unexpected", String(e))],
    ["SKIP to MAIL", "mail", [{ type: "skip" }], (e) => {
      assert.ok(e instanceof MilterProtocolError && e.reason === "unexpected", String(e));
    }],
    [
      "an OPTNEG to HELO",
      "helo",
      [{ type: "optneg", version: 6, actions: 0, protocol: 0 }],
      (e) => {
        assert.ok(e instanceof MilterProtocolError, String(e));
      },
    ],
    ["two replies to CONNECT", "connect", [{ type: "continue" }, { type: "continue" }], (e) => {
      assert.ok(e instanceof MilterProtocolError && e.reason === "unexpected", String(e));
      assert.match(e.message, /nobody asked for/);
    }],
    ["a reply code outside 4xx/5xx", "eom", [{ type: "replycode", text: "250 fine" }], (e) => {
      assert.ok(e instanceof MilterProtocolError, String(e));
    }],
  ];
  for (const [what, stage, replies, judge] of illegal) {
    it(
      `filter answers ${stage} with ${what}: typed error, connection released`,
      TIMEOUT,
      async () => {
        const bytes = new Uint8Array(replies.flatMap((r) => [...encodeReply(r)]));
        const e = await check((c) =>
          c.type === stage ? { kind: "bytes", bytes, then: "stall" } : { kind: "normal" }
        );
        judge(e);
      },
    );
  }

  it("an unknown reply byte 'Z' to EOM is a protocol error, not a crash", TIMEOUT, async () => {
    const e = await check((c) =>
      c.type === "eom"
        ? { kind: "bytes", bytes: new Uint8Array([0, 0, 0, 1, 0x5a]), then: "stall" }
        : { kind: "normal" }
    );
    assert.ok(e instanceof MilterProtocolError, String(e));
  });

  it(
    "filter sends PROGRESS forever at eom: MilterTimeoutError at the overall eomTimeoutMs",
    TIMEOUT,
    async () => {
      const progress = encodeReply({ type: "progress" });
      const e = await check((c) =>
        c.type === "eom" ? { kind: "bytes", bytes: progress, then: "repeat" } : { kind: "normal" }
      );
      assert.ok(e instanceof MilterTimeoutError, String(e));
      assert.equal(e.timeoutMs, 900);
      assert.match(e.message, /overall limit of 900 ms/);
    },
  );

  it("left no unhandled rejection behind", () => {
    assert.deepEqual(unhandled, []);
  });
});
