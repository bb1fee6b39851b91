/**
 * Fault injection against the server over real loopback sockets: hostile MTAs (raw node:net
 * sockets) close at every point of a session, stall inside a frame, speak another protocol or
 * announce a 2 GB frame; handlers throw, return illegal verdicts or never answer. Each case
 * states what the MTA is told, checks it, and checks that a healthy session running at the same
 * time and one started afterwards are served correctly.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { defineFilter } from "../lib/filter/filter.ts";
import type { SessionEvent } from "../lib/filter/session.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { expectsReply, FINAL_REPLIES } from "../lib/wire/command_bits.ts";
import { encodeCommand } from "../lib/wire/command_codec.ts";
import { FilterHandlerError, MilterProtocolError, MilterTimeoutError } from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../lib/wire/types.ts";
import { added, openClient, sendOne, TIMEOUT, tx, waitFor, within } from "./helpers/server_kit.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const enc = new TextEncoder();

/** What a raw peer saw: the bytes the server sent and whether the server closed first. */
interface RawOutcome {
  readonly received: Uint8Array;
  readonly replies: Reply[];
}

/**
 * A hostile MTA: connects, writes `bytes`, then half-closes (`end`), closes abruptly
 * (`destroy`) or keeps the socket open (`stall`), and collects what the server sends until the
 * server closes the connection.
 */
function hostile(
  port: number,
  bytes: Uint8Array,
  how: "end" | "destroy" | "stall",
): Promise<RawOutcome> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = net.connect({ host: "127.0.0.1", port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error("The server did not close the hostile connection within 15 s"));
    }, 15_000);
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", () => {/* a reset by the server is an expected ending */});
    sock.on("close", () => {
      clearTimeout(timer);
      const received = new Uint8Array(Buffer.concat(chunks));
      const replies: Reply[] = [];
      try {
        for (const f of new FrameDecoder().push(received)) replies.push(decodeReply(f));
      } catch { /* reported through `received` */ }
      resolve({ received, replies });
    });
    sock.on("connect", () => {
      const done = () => {
        if (how === "end") sock.end();
        else if (how === "destroy") {
          // Give the server a moment to read what was written before the socket vanishes.
          setTimeout(() => sock.destroy(), 20);
        }
      };
      if (bytes.length > 0) sock.write(bytes, done);
      else done();
    });
  });
}

const OFFER: Command = { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff };

/** A Postfix-like session, one command per entry (macros before their event). */
const SESSION: Command[] = [
  OFFER,
  { type: "macro", stage: "C", macros: [["j", "mx.example.com"]] },
  {
    type: "connect",
    hostname: "client.example.net",
    family: "inet",
    address: "192.0.2.7",
    port: 4,
  },
  { type: "helo", name: "client.example.net" },
  { type: "macro", stage: "M", macros: [["i", "4QX1"]] },
  { type: "mail", sender: "<evil@example.net>", args: [] },
  { type: "rcpt", recipient: "<bob@example.com>", args: [] },
  { type: "data" },
  { type: "header", name: "From", value: "<evil@example.net>" },
  { type: "header", name: "Subject", value: "msg 7" },
  { type: "eoh" },
  { type: "body", chunk: enc.encode("Hello\r\n".repeat(20)) },
  { type: "eom" },
  { type: "quit" },
];
const FRAMES = SESSION.map((c) => encodeCommand(c));
const finals = (rs: readonly Reply[]) =>
  rs.filter((r) => r.type === "optneg" || FINAL_REPLIES.has(r.type));

/** Every cut of the session: at each frame boundary, inside each length prefix and payload. */
function cuts(): { name: string; bytes: Uint8Array; complete: Command[] }[] {
  const out: { name: string; bytes: Uint8Array; complete: Command[] }[] = [];
  for (let i = 0; i <= FRAMES.length; i++) {
    const whole = FRAMES.slice(0, i);
    const complete = SESSION.slice(0, i);
    out.push({ name: `after ${i} frames`, bytes: concatBytes(whole), complete });
    const next = FRAMES[i];
    if (next === undefined) continue;
    const what = SESSION[i]!.type;
    out.push({
      name: `inside the length of ${what}`,
      bytes: concatBytes([...whole, next.subarray(0, 2)]),
      complete,
    });
    if (next.length > 6) {
      out.push({
        name: `inside the payload of ${what}`,
        bytes: concatBytes([...whole, next.subarray(0, next.length - 2)]),
        complete,
      });
    }
  }
  return out;
}

describe("server under hostile peers and failing handlers (real sockets)", () => {
  let server: MilterServer;
  let port: number;
  const errors: { session: number; error: Error }[] = [];
  let closes = 0;
  let aborts = 0;

  before(async () => {
    server = await listen(
      "inet:0@127.0.0.1",
      defineFilter({
        actions: ["addHeader"],
        envfrom(from) {
          if (from.address.startsWith("throw@")) throw new Error("envfrom exploded");
          if (from.address.startsWith("hang@")) return new Promise<never>(() => {});
          if (from.address.startsWith("illegal@")) return "skip" as never; // SKIP is for body only (a type error too)
          return "continue";
        },
        abort() {
          aborts++;
        },
        close() {
          closes++;
        },
        eom(ctx) {
          const subject = ctx.headers.find((h) => h.name === "Subject")?.value ?? "";
          if (subject.includes("throw")) throw new Error("eom exploded");
          if (subject.includes("hang")) return new Promise<never>(() => {});
          if (subject.includes("bogus")) return { verdict: "maybe" } as never;
          if (subject.includes("undeclared")) ctx.changeSender("<x@example.net>");
          ctx.addHeader("X-Echo", subject.replace(/^\s*msg /, ""));
          return "accept";
        },
      }),
      {
        handlerTimeoutMs: 300,
        eomTimeoutMs: 300,
        idleTimeoutMs: 700,
        progressIntervalMs: 0,
        onEvent: (session: number, e: SessionEvent) => {
          if (e.type === "error") errors.push({ session, error: e.error });
        },
      },
    );
    port = server.address.transport === "tcp" ? server.address.port : 0;
  });

  after(async () => {
    await server.stop({ graceMs: 0 });
  });

  /** A healthy transaction whose answer depends on `n`: it must come back with X-Echo: n. */
  async function healthy(n: number): Promise<void> {
    const r = await sendOne(server.address, tx(n));
    assert.equal(r.verdict.type, "accept", `healthy session ${n}`);
    assert.equal(added(r, "X-Echo"), String(n), `healthy session ${n} got its own answer`);
  }

  async function quiet(): Promise<void> {
    await waitFor(() => server.connections === 0, "every connection to end");
  }

  it(
    "peer closes at every point of a session: replies to complete commands, then nothing",
    TIMEOUT,
    async () => {
      // The MTA is gone, so it is told nothing more; the server must answer every complete
      // command it read, call close() once for a negotiated session, and leak nothing.
      let n = 1000;
      for (const cut of cuts()) {
        for (const how of ["end", "destroy"] as const) {
          const before = { closes, errors: errors.length, messages: server.metrics.messages };
          const [out] = await Promise.all([hostile(port, cut.bytes, how), healthy(n++)]);
          await quiet();
          const negotiated = cut.complete.length > 0;
          const eomSeen = cut.complete.some((c) => c.type === "eom");
          const label = `${cut.name} (${how})`;
          assert.equal(closes - before.closes, negotiated ? 2 : 1, `close handler calls, ${label}`);
          assert.equal(server.metrics.messages - before.messages, eomSeen ? 2 : 1, label);
          if (how === "end") {
            // Half-closed: the peer still reads, so every reply must have arrived.
            const first = out.replies[0];
            const protocol = first?.type === "optneg" ? first.protocol : 0;
            const want = cut.complete.filter((c) => expectsReply(c.type, protocol)).length;
            assert.equal(finals(out.replies).length, want, `final replies, ${label}`);
            const fresh = errors.slice(before.errors).map((e) => e.error);
            const midFrame = cut.name.startsWith("inside");
            assert.equal(fresh.length, midFrame ? 1 : 0, `errors ${fresh.map(String)}, ${label}`);
            if (midFrame) {
              assert.ok(fresh[0] instanceof MilterProtocolError);
              assert.equal(fresh[0].reason, "truncated");
            }
          }
        }
      }
      assert.ok(aborts > 0, "open messages were aborted on disconnect");
      await healthy(n);
    },
  );

  for (
    const [name, bytes] of [
      ["half a length prefix", new Uint8Array([0, 0])],
      ["half an OPTNEG frame", FRAMES[0]!.subarray(0, 9)],
      [
        "a complete OPTNEG then half a CONNECT",
        concatBytes([FRAMES[0]!, FRAMES[2]!.subarray(0, 12)]),
      ],
    ] as const
  ) {
    it(
      `peer sends ${name} and stalls: closed without a reply after idleTimeoutMs`,
      TIMEOUT,
      async () => {
        // The MTA (if it ever comes back) sees the connection closed and applies
        // milter_default_action; the error names the limit.
        const before = errors.length;
        const stalled = hostile(port, bytes, "stall");
        await healthy(1); // served while the other connection stalls
        const out = await within(stalled, 10_000, "the idle close");
        const negotiated = bytes.length >= FRAMES[0]!.length;
        assert.deepEqual(out.replies.map((r) => r.type), negotiated ? ["optneg"] : []);
        const fresh = errors.slice(before).map((e) => e.error);
        const timeout = fresh.find((e) => e instanceof MilterTimeoutError);
        assert.ok(timeout instanceof MilterTimeoutError, String(fresh));
        assert.equal(timeout.timeoutMs, 700);
        assert.match(timeout.message, /idleTimeoutMs/);
        await quiet();
        await healthy(2);
      },
    );
  }

  const lengthPrefixed = (len: number, code: number) => {
    const b = new Uint8Array(5 + 16);
    new DataView(b.buffer).setUint32(0, len);
    b[4] = code;
    return b;
  };
  const tlsHello = new Uint8Array([
    0x16,
    0x03,
    0x01,
    0x00,
    0xa5,
    0x01,
    0x00,
    0x00,
    0xa1,
    0x03,
    0x03,
    ...new Array(32).fill(7),
  ]);
  for (
    const [name, bytes, reason, pattern] of [
      ["GET / HTTP/1.1", enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "not-milter", /HTTP/],
      ["a TLS ClientHello", tlsHello, "not-milter", /TLS/],
      ["an SMTP greeting", enc.encode("EHLO evil.example\r\n"), "not-milter", /SMTP/],
      ["a 2 GB length (0x7fffffff)", lengthPrefixed(0x7fffffff, 0x4f), "oversized", /1048576/],
      ["a 4 GB length (0xffffffff)", lengthPrefixed(0xffffffff, 0x4f), "oversized", /maxDataSize/],
      ["a zero length", new Uint8Array([0, 0, 0, 0, 0x4f]), "empty", /length 0/],
      [
        "binary garbage",
        new Uint8Array([0x00, 0x13, 0x37, 0x99, 0xfe, 0, 1, 2]),
        "oversized",
        /limit/,
      ],
    ] as const
  ) {
    it(`peer sends ${name}: closed without a reply, typed protocol error`, TIMEOUT, async () => {
      // No reply at all: a real MTA would see the connection closed and apply
      // milter_default_action; nothing is allocated for the announced length.
      const before = errors.length;
      const [out] = await Promise.all([hostile(port, bytes, "stall"), healthy(3)]);
      assert.equal(out.received.length, 0);
      const fresh = errors.slice(before).map((e) => e.error);
      assert.equal(fresh.length, 1, String(fresh));
      const e = fresh[0];
      assert.ok(e instanceof MilterProtocolError, String(e));
      assert.equal(e.reason, reason);
      assert.match(e.message, pattern);
      await quiet();
      await healthy(4);
    });
  }

  for (
    const [name, from, subject, limit] of [
      ["envfrom throws", "throw@example.net", "msg 5", undefined],
      ["envfrom never answers", "hang@example.net", "msg 5", "handlerTimeoutMs"],
      ["envfrom returns SKIP (illegal there)", "illegal@example.net", "msg 5", undefined],
      ["eom throws", "alice@example.net", "msg throw", undefined],
      ["eom never answers", "alice@example.net", "msg hang", "eomTimeoutMs"],
      ["eom returns a bogus object", "alice@example.net", "msg bogus", undefined],
      ["eom uses an undeclared action", "alice@example.net", "msg undeclared", undefined],
    ] as const
  ) {
    it(`${name}: the MTA is told the fallback tempfail, the session goes on`, TIMEOUT, async () => {
      const before = errors.length;
      const client = await openClient(server.address);
      try {
        const tried = runTransaction(client, tx(subject.slice(4), { from }));
        const [r] = await Promise.all([tried, healthy(6)]);
        assert.equal(r.verdict.type, "tempfail");
        // The filter sent a plain SMFIR_TEMPFAIL ('t'); Postfix answers it with its 451.
        const at = r.replies.findLast((s) => s.result.outcome === "replied");
        assert.deepEqual(at?.result.verdict, { type: "tempfail" });
        assert.equal(at?.stage, name.startsWith("eom") ? "eom" : "envfrom");
        assert.equal(r.delivered, false);
        const fresh = errors.slice(before).map((e) => e.error);
        assert.equal(fresh.length, 1, String(fresh));
        assert.ok(fresh[0] instanceof FilterHandlerError, String(fresh[0]));
        if (limit) assert.match(fresh[0].message, new RegExp(limit));
        // The same connection still serves the next message correctly.
        const next = await runTransaction(client, tx(8));
        assert.equal(next.verdict.type, "accept");
        assert.equal(added(next, "X-Echo"), "8");
      } finally {
        await endSession(client);
      }
      await quiet();
      await healthy(9);
    });
  }
});
