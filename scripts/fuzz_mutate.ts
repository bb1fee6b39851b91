/**
 * The fuzzer's inputs: byte-level mutations of corpus seeds, and well-formed command and reply
 * streams that exercise the engines' state machines (see scripts/fuzz.ts).
 */
import fc from "fast-check";
import { encodeCommand } from "../lib/wire/command_codec.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../lib/wire/types.ts";
import type { FuzzInput, TargetName } from "./fuzz_common.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const INTERESTING_LENGTHS = [0, 1, 2, 5, 0x10000, 0x100000, 0x100001, 0x7fffffff, 0xffffffff];

type Mutation =
  | { op: "flip"; at: number; bit: number }
  | { op: "set"; at: number; value: number }
  | { op: "length"; at: number; value: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "delete"; at: number; count: number }
  | { op: "duplicate"; at: number; count: number }
  | { op: "cut"; at: number }
  | { op: "splice"; at: number; other: number; from: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
  fc.record({
    op: fc.constant("set" as const),
    at: fc.nat(),
    value: fc.constantFrom(0, 0x7f, 0x80, 0xff, 0x44, 0x4f, 0x51),
  }),
  fc.record({
    op: fc.constant("length" as const),
    at: fc.nat(),
    value: fc.constantFrom(...INTERESTING_LENGTHS),
  }),
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({
    op: fc.constant("delete" as const),
    at: fc.nat(),
    count: fc.integer({ min: 1, max: 32 }),
  }),
  fc.record({
    op: fc.constant("duplicate" as const),
    at: fc.nat(),
    count: fc.integer({ min: 1, max: 64 }),
  }),
  fc.record({ op: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({ op: fc.constant("splice" as const), at: fc.nat(), other: fc.nat(), from: fc.nat() }),
);

function mutate(
  base: Uint8Array,
  ms: readonly Mutation[],
  pool: readonly Uint8Array[],
): Uint8Array {
  let b: Uint8Array = base.slice();
  for (const m of ms) {
    const at = b.length === 0 ? 0 : m.at % (b.length + 1);
    switch (m.op) {
      case "flip":
        if (b.length) b[at % b.length]! ^= 1 << m.bit;
        break;
      case "set":
        if (b.length) b[at % b.length] = m.value;
        break;
      case "length": {
        const v = new Uint8Array(4);
        new DataView(v.buffer).setUint32(0, m.value);
        b = concatBytes([b.subarray(0, at), v, b.subarray(Math.min(b.length, at + 4))]);
        break;
      }
      case "insert":
        b = concatBytes([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case "delete":
        b = concatBytes([b.subarray(0, at), b.subarray(at + m.count)]);
        break;
      case "duplicate":
        b = concatBytes([b.subarray(0, at + m.count), b.subarray(at)]);
        break;
      case "cut":
        b = b.subarray(0, at);
        break;
      case "splice": {
        const other = pool[m.other % pool.length]!;
        b = concatBytes([b.subarray(0, at), other.subarray(m.from % (other.length + 1))]);
        break;
      }
    }
  }
  return b;
}

/** Well-formed command streams: the engines' state machines, not their parsers. */
const commandStream: fc.Arbitrary<Uint8Array> = (() => {
  const str = fc.stringMatching(/^[a-zA-Z0-9<>@. =-]{0,16}$/);
  const cmd: fc.Arbitrary<Command> = fc.oneof(
    fc.constant<Command>({
      type: "connect",
      hostname: "h",
      family: "inet",
      address: "192.0.2.1",
      port: 1,
    }),
    str.map((name): Command => ({ type: "helo", name })),
    str.map((s): Command => ({ type: "mail", sender: `<${s}>`, args: ["SIZE=10"] })),
    str.map((s): Command => ({ type: "rcpt", recipient: `<${s}>`, args: [] })),
    fc.constant<Command>({ type: "data" }),
    fc.tuple(str, str).map(([n, v]): Command => ({ type: "header", name: n || "X", value: v })),
    fc.constant<Command>({ type: "eoh" }),
    fc.uint8Array({ minLength: 1, maxLength: 200 }).map((chunk): Command => ({
      type: "body",
      chunk,
    })),
    fc.constant<Command>({ type: "eom" }),
    fc.constant<Command>({ type: "abort" }),
    fc.constant<Command>({ type: "quit_nc" }),
    str.map((line): Command => ({ type: "unknown", line })),
    str.map((s): Command => ({ type: "macro", stage: "M", macros: [["{mail_addr}", s]] })),
  );
  const offer = fc.record({
    version: fc.constantFrom(2, 3, 4, 6),
    actions: fc.constantFrom(0x1ff, 0x3f, 0),
    protocol: fc.constantFrom(0x1fffff, 0x3f, 0, 0x1ff000),
  });
  return fc.tuple(offer, fc.array(cmd, { maxLength: 40 }), fc.boolean()).map(([o, cs, quit]) =>
    concatBytes([
      encodeCommand({ type: "optneg", ...o }),
      ...cs.map(encodeCommand),
      ...(quit ? [encodeCommand({ type: "quit" })] : []),
    ])
  );
})();

/** Plausible filter answers: an OPTNEG, then random final replies, modifications, PROGRESS. */
const replyStream: fc.Arbitrary<Uint8Array> = (() => {
  const reply: fc.Arbitrary<Reply> = fc.oneof(
    { weight: 8, arbitrary: fc.constant<Reply>({ type: "continue" }) },
    fc.constantFrom<Reply>(
      { type: "accept" },
      { type: "reject" },
      { type: "tempfail" },
      { type: "discard" },
      { type: "skip" },
      { type: "progress" },
      { type: "replycode", text: "550 5.7.1 No" },
      { type: "replycode", text: "451 4.7.1 Later" },
      { type: "addheader", name: "X-F", value: "1" },
      { type: "chgfrom", sender: "<x@example.net>", args: "" },
      { type: "addrcpt", recipient: "<n@example.com>" },
      { type: "delrcpt", recipient: "<b@example.com>" },
      { type: "quarantine", reason: "q" },
      { type: "replbody", chunk: new Uint8Array([0x41, 0x0d, 0x0a]) },
    ),
  );
  const optneg = fc.record({
    version: fc.constantFrom(2, 6),
    actions: fc.constantFrom(0, 0x1ff, 0x1),
    protocol: fc.constantFrom(0, 0x1000, 0x1ff000, 0x3f, 0x400),
  }).map((o): Reply => ({ type: "optneg", ...o }));
  return fc.tuple(optneg, fc.array(reply, { maxLength: 24 })).map(([o, rs]) =>
    concatBytes([encodeReply(o), ...rs.map(encodeReply)])
  );
})();

/** The input arbitrary of a target: random bytes, mutated seeds, or well-formed streams. */
export function inputs(target: TargetName, pool: readonly Uint8Array[]): fc.Arbitrary<FuzzInput> {
  const mutated = fc.tuple(fc.nat(), fc.array(mutation, { minLength: 0, maxLength: 6 })).map(
    ([which, ms]) => mutate(pool[which % pool.length]!, ms, pool),
  );
  const bytes = fc.oneof(
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
    { weight: pool.length ? 5 : 0, arbitrary: pool.length ? mutated : fc.uint8Array() },
    { weight: 2, arbitrary: target === "client" ? replyStream : commandStream },
  );
  return fc.record({
    bytes,
    chunk: fc.oneof(fc.constant(1 << 20), fc.integer({ min: 1, max: 64 })),
    seed: fc.integer(),
  });
}
