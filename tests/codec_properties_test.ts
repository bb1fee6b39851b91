/**
 * Property tests of the codec (fast-check, fixed seeds so failures reproduce):
 * decode(encode(x)) equals x for arbitrary commands and replies, whatever the chunking;
 * decode → encode gives back the bytes of any frame that decodes; and arbitrary or mutated
 * streams only ever fail with MilterProtocolError, in bounded work.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeCommand, encodeCommand } from "../lib/wire/command_codec.ts";
import { SMFIC, SMFIR } from "../lib/wire/constants.ts";
import { MilterProtocolError } from "../lib/wire/errors.ts";
import { encodeFrame, FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply, encodeReply } from "../lib/wire/reply_codec.ts";
import { decodeText } from "../lib/wire/text.ts";
import type { Command, Frame, Reply } from "../lib/wire/types.ts";
import { allSessions, streamOf } from "./helpers/captures.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const SEED = 0x6d696c74; // "milt"

function check<T>(arb: fc.Arbitrary<T>, body: (x: T) => void, numRuns = 500): void {
  fc.assert(fc.property(arb, body), { seed: SEED, numRuns });
}

// ----------------------------------------------------------------------------- arbitraries

/** `fc.record` with ordinary objects (the decoder returns plain objects, not null-prototype). */
function record<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record(model, { noNullPrototype: true });
}

/** Byte-exact strings without NUL: arbitrary bytes (8-bit included) through decodeText. */
const text: fc.Arbitrary<string> = fc.oneof(
  fc.uint8Array({ min: 1, max: 255, maxLength: 24 }).map(decodeText),
  fc.string({ unit: "binary", maxLength: 12 }).filter((s) => !s.includes("\0")),
  fc.constantFrom("", "<>", "<user@example.test>", "SIZE=300", "i", "{mail_addr}"),
);
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const bytes = fc.uint8Array({ maxLength: 64 });
const nonEmptyBytes = fc.uint8Array({ minLength: 1, maxLength: 64 });

const KNOWN_COMMANDS = new Set<number>(Object.values(SMFIC));
const KNOWN_REPLIES = new Set<number>(Object.values(SMFIR));

const connect: fc.Arbitrary<Command> = fc.oneof(
  record({
    type: fc.constant("connect" as const),
    hostname: text,
    family: fc.constantFrom("inet" as const, "unix" as const),
    port: fc.integer({ min: 0, max: 0xffff }),
    address: text,
  }),
  record({
    type: fc.constant("connect" as const),
    hostname: text,
    family: fc.constant("inet6" as const),
    port: fc.integer({ min: 0, max: 0xffff }),
    address: text.filter((a) => !a.startsWith("IPv6:")),
  }),
  record({ hostname: text, port: fc.integer({ min: 0, max: 0xffff }), address: text })
    .map(({ hostname, port, address }) => ({
      type: "connect" as const,
      hostname,
      family: "inet6" as const,
      port,
      address,
      rawAddress: `IPv6:${address}`,
    })),
  record({
    type: fc.constant("connect" as const),
    hostname: text,
    family: fc.constant("unknown" as const),
  }),
);

const command: fc.Arbitrary<Command> = fc.oneof(
  record({ type: fc.constant("optneg" as const), version: u32, actions: u32, protocol: u32 }),
  record({
    type: fc.constant("optneg" as const),
    version: u32,
    actions: u32,
    protocol: u32,
    extra: nonEmptyBytes,
  }),
  record({
    type: fc.constant("macro" as const),
    stage: fc.integer({ min: 0, max: 255 }).map((b) => String.fromCharCode(b)),
    macros: fc.array(fc.tuple(text, text), { maxLength: 6 }),
  }),
  connect,
  record({ type: fc.constant("helo" as const), name: text }),
  record({
    type: fc.constant("mail" as const),
    sender: text,
    args: fc.array(text, { maxLength: 4 }),
  }),
  record({
    type: fc.constant("rcpt" as const),
    recipient: text,
    args: fc.array(text, { maxLength: 4 }),
  }),
  record({ type: fc.constant("header" as const), name: text, value: text }),
  record({ type: fc.constant("body" as const), chunk: bytes }),
  record({ type: fc.constant("eom" as const), chunk: nonEmptyBytes }),
  record({ type: fc.constant("unknown" as const), line: text }),
  fc.constantFrom<Command>(
    { type: "data" },
    { type: "eoh" },
    { type: "eom" },
    { type: "abort" },
    { type: "quit" },
    { type: "quit_nc" },
  ),
  record({
    type: fc.constant("raw" as const),
    code: fc.integer({ min: 0, max: 255 }).filter((c) => !KNOWN_COMMANDS.has(c)),
    payload: bytes,
  }),
);

const reply: fc.Arbitrary<Reply> = fc.oneof(
  record({ type: fc.constant("optneg" as const), version: u32, actions: u32, protocol: u32 }),
  record({
    type: fc.constant("optneg" as const),
    version: u32,
    actions: u32,
    protocol: u32,
    symlists: fc.array(record({ stage: u32, macros: text }), { minLength: 1, maxLength: 4 }),
  }),
  fc.constantFrom<Reply>(
    { type: "continue" },
    { type: "accept" },
    { type: "reject" },
    { type: "tempfail" },
    { type: "discard" },
    { type: "skip" },
    { type: "progress" },
    { type: "shutdown" },
    { type: "connfail" },
  ),
  record({ type: fc.constant("replycode" as const), text }),
  record({ type: fc.constant("addheader" as const), name: text, value: text }),
  record({
    type: fc.constantFrom("insheader" as const, "chgheader" as const),
    index: u32,
    name: text,
    value: text,
  }),
  record({ type: fc.constant("replbody" as const), chunk: bytes }),
  record({ type: fc.constantFrom("addrcpt" as const, "delrcpt" as const), recipient: text }),
  record({ type: fc.constant("addrcpt_par" as const), recipient: text }),
  record({ type: fc.constant("addrcpt_par" as const), recipient: text, args: text }),
  record({ type: fc.constant("chgfrom" as const), sender: text }),
  record({ type: fc.constant("chgfrom" as const), sender: text, args: text }),
  record({ type: fc.constant("quarantine" as const), reason: text }),
  record({
    type: fc.constant("raw" as const),
    code: fc.integer({ min: 0, max: 255 }).filter((c) => !KNOWN_REPLIES.has(c)),
    payload: bytes,
  }),
);

/** Chunk sizes to cut a stream with (cycled). */
const chunkSizes = fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 8 });

function cut(stream: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let p = 0, i = 0; p < stream.length; i++) {
    const n = sizes[i % sizes.length]!;
    out.push(stream.slice(p, p + n));
    p += n;
  }
  return out;
}

function frames(chunks: readonly Uint8Array[]): Frame[] {
  const d = new FrameDecoder();
  const out = chunks.flatMap((c) => d.push(c));
  d.finish();
  return out;
}

// ----------------------------------------------------------------------------- round trips

describe("codec round trip on arbitrary values", () => {
  it("decodeCommand(encodeCommand(c)) deep-equals c for every command variant", () => {
    check(command, (c) => {
      const [f] = frames([encodeCommand(c)]);
      assert.deepEqual(decodeCommand(f!), c);
    }, 3000);
  });

  it("decodeReply(encodeReply(r)) deep-equals r for every reply variant", () => {
    check(reply, (r) => {
      const [f] = frames([encodeReply(r)]);
      assert.deepEqual(decodeReply(f!), r);
    }, 3000);
  });

  it("a stream of commands cut at arbitrary places decodes to the same commands", () => {
    check(fc.tuple(fc.array(command, { maxLength: 12 }), chunkSizes), ([cmds, sizes]) => {
      const stream = concatBytes(cmds.map(encodeCommand));
      assert.deepEqual(frames(cut(stream, sizes)).map(decodeCommand), cmds);
    });
  });

  it("a stream of replies cut at arbitrary places decodes to the same replies", () => {
    check(fc.tuple(fc.array(reply, { maxLength: 12 }), chunkSizes), ([replies, sizes]) => {
      const stream = concatBytes(replies.map(encodeReply));
      assert.deepEqual(frames(cut(stream, sizes)).map(decodeReply), replies);
    });
  });
});

// ----------------------------------------------------------------------------- robustness

/** Payload pieces shaped like milter fields: NUL-strings, u32/u16 words, family bytes. */
const fieldPiece: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ min: 1, max: 255, maxLength: 10 }).map((b) => concatBytes([b, Uint8Array.of(0)])),
  fc.uint8Array({ minLength: 4, maxLength: 4 }),
  fc.uint8Array({ minLength: 2, maxLength: 2 }),
  fc.constantFrom(..."46LU".split("").map((c) => Uint8Array.of(c.charCodeAt(0)))),
  fc.uint8Array({ minLength: 1, maxLength: 3 }),
);

/** Frames with a real or random code and a random or field-shaped payload, as wire bytes. */
const plausibleFrame = record({
  code: fc.oneof(
    { arbitrary: fc.constantFrom(...KNOWN_COMMANDS, ...KNOWN_REPLIES), weight: 4 },
    { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 },
  ),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 48 }),
    fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0x20, max: 0x7e })), { maxLength: 48 })
      .map((a) => Uint8Array.from(a)),
    fc.array(fieldPiece, { maxLength: 5 }).map(concatBytes),
  ),
}).map(({ code, payload }) => encodeFrame(code, payload));

/**
 * Feeds bytes to a FrameDecoder and decodes every frame both ways. Returns the error thrown,
 * if any; fails the property when the error is not a MilterProtocolError or the work is not
 * bounded by the input.
 */
function survive(chunks: readonly Uint8Array[], maxDataSize?: number): unknown {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const d = new FrameDecoder(maxDataSize === undefined ? {} : { maxDataSize });
  let count = 0;
  try {
    for (const c of chunks) {
      for (const f of d.push(c)) {
        count++;
        for (const decode of [decodeCommand, decodeReply]) {
          try {
            decode(f);
          } catch (e) {
            if (!(e instanceof MilterProtocolError)) throw e;
            assert.equal(e.reason, "malformed");
          }
        }
      }
    }
    d.finish();
  } catch (e) {
    if (!(e instanceof MilterProtocolError)) throw e;
    assert.ok(e.message.length > 0 && !e.message.endsWith("."), e.message);
    return e;
  } finally {
    assert.ok(count * 5 <= total, `${count} frames out of ${total} bytes`);
  }
  return undefined;
}

type Mutation =
  | { kind: "flip"; at: number; bit: number }
  | { kind: "truncate"; at: number }
  | { kind: "insert"; at: number; bytes: Uint8Array }
  | { kind: "delete"; at: number; n: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  record({
    kind: fc.constant("flip" as const),
    at: fc.nat(),
    bit: fc.integer({ min: 0, max: 7 }),
  }),
  record({ kind: fc.constant("truncate" as const), at: fc.nat() }),
  record({
    kind: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }),
  }),
  record({
    kind: fc.constant("delete" as const),
    at: fc.nat(),
    n: fc.integer({ min: 1, max: 8 }),
  }),
);

function mutate(stream: Uint8Array, m: Mutation): Uint8Array {
  const at = stream.length === 0 ? 0 : m.at % stream.length;
  switch (m.kind) {
    case "flip": {
      const out = stream.slice();
      if (out.length > 0) out[at] = out[at]! ^ (1 << m.bit);
      return out;
    }
    case "truncate":
      return stream.slice(0, at);
    case "insert":
      return concatBytes([stream.subarray(0, at), m.bytes, stream.subarray(at)]);
    case "delete":
      return concatBytes([stream.subarray(0, at), stream.subarray(at + m.n)]);
  }
}

const CAPTURE_STREAMS = allSessions().flatMap((
  s,
) => [streamOf(s, "to-filter"), streamOf(s, "to-mta")]);

describe("decoding untrusted bytes only fails with MilterProtocolError", () => {
  it("arbitrary byte streams in arbitrary chunks", () => {
    check(fc.tuple(fc.uint8Array({ maxLength: 200 }), chunkSizes), ([stream, sizes]) => {
      survive(cut(stream, sizes));
      survive(cut(stream, sizes), 16);
    }, 2000);
  });

  it("streams of plausible frames with random codes and payloads", () => {
    check(
      fc.tuple(fc.array(plausibleFrame, { maxLength: 10 }), chunkSizes),
      ([fs, sizes]) => {
        const stream = concatBytes(fs);
        assert.equal(survive(cut(stream, sizes)), undefined);
      },
      2000,
    );
  });

  it("capture streams with bit flips, truncation, insertion and deletion", () => {
    check(
      fc.tuple(
        fc.integer({ min: 0, max: CAPTURE_STREAMS.length - 1 }),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        chunkSizes,
      ),
      ([which, mutations, sizes]) => {
        const stream = mutations.reduce(mutate, CAPTURE_STREAMS[which]!);
        survive(cut(stream, sizes));
        survive([stream], 65535);
      },
      1500,
    );
  });

  it("any frame that decodes re-encodes to its own bytes", () => {
    check(fc.array(plausibleFrame, { minLength: 1, maxLength: 6 }), (fs) => {
      for (const f of frames([concatBytes(fs)])) {
        const original = encodeFrame(f.code, f.payload);
        for (
          const [decode, encode] of [
            [decodeCommand, encodeCommand],
            [decodeReply, encodeReply],
          ] as const
        ) {
          let decoded: Command | Reply;
          try {
            decoded = decode(f);
          } catch {
            continue;
          }
          if (decoded.type === "macro" && oddMacroStrings(f.payload)) continue;
          assert.deepEqual(
            (encode as (x: Command | Reply) => Uint8Array)(decoded),
            original,
            JSON.stringify(decoded),
          );
        }
      }
    }, 3000);
  });
});

/** A macro payload whose last name has no value (decoded as "", so re-encoding adds a NUL). */
function oddMacroStrings(payload: Uint8Array): boolean {
  let nuls = 0;
  for (let i = 1; i < payload.length; i++) if (payload[i] === 0) nuls++;
  return nuls % 2 === 1;
}
