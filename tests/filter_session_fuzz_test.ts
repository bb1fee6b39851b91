/**
 * Property tests of the filter engine: random and mutated byte streams end every session with a
 * typed error or cleanly (no hang, no unhandled rejection), and random command sequences get
 * exactly one final answer per command that expects one.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import fc from "fast-check";
import { defineFilter } from "../lib/filter/filter.ts";
import { serveConnection } from "../lib/filter/session.ts";
import type { Verdict } from "../lib/filter/verdict.ts";
import { encodeCommand } from "../lib/wire/command_codec.ts";
import { MilterError } from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../lib/wire/types.ts";
import { duplexPair } from "../lib/testing/mod.ts";

const unhandled: unknown[] = [];
process.on("unhandledRejection", (e) => unhandled.push(e));

const local = new URL("./data/captures/", import.meta.url);
const root = existsSync(local) ? local : new URL("file:///work/shared/captures/");
const captures: Uint8Array[] = [];
for (const dir of readdirSync(root)) {
  const d = new URL(`${dir}/`, root);
  if (dir.includes(".")) continue;
  for (const f of readdirSync(d).filter((f) => f.endsWith(".to-filter.bin"))) {
    captures.push(new Uint8Array(readFileSync(new URL(f, d))));
  }
}

const VERDICTS: Verdict[] = ["continue", "accept", "reject", "tempfail", "discard", "skip", {
  code: 550,
  text: "no",
}];

function filterFrom(pick: (n: number) => number) {
  // Any verdict at any stage, as an untyped filter could: the run-time checks are tested.
  const v = () => VERDICTS[pick(VERDICTS.length)]! as never;
  return defineFilter({
    actions: ["addHeader", "quarantine"],
    connect: v,
    helo: v,
    envfrom: v,
    envrcpt: v,
    data: v,
    header: v,
    eoh: v,
    body: v,
    unknown: v,
    eom(ctx) {
      if (pick(2)) ctx.addHeader("X-F", "1");
      if (pick(3) === 0) throw new Error("handler failure");
      return v();
    },
  });
}

async function run(bytes: Uint8Array, pick: (n: number) => number) {
  const [mta, filterSide] = duplexPair(1 << 22);
  const done = serveConnection(filterSide, filterFrom(pick), { handlerTimeoutMs: 1000 });
  const w = mta.writable.getWriter();
  w.write(bytes).catch(() => {});
  w.close().catch(() => {});
  const replies: Reply[] = [];
  const dec = new FrameDecoder();
  try {
    for await (const c of mta.readable) for (const f of dec.push(c)) replies.push(decodeReply(f));
  } catch {
    // The engine aborts its side after a protocol error.
  }
  return { summary: await done, replies };
}

function seeded(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    return s % n;
  };
}

describe("filter engine under random input", () => {
  it("random bytes end the session cleanly or with a MilterError", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 400 }), fc.integer(), async (bytes, seed) => {
        const { summary } = await run(bytes, seeded(seed));
        if (summary.error) assert.ok(summary.error instanceof MilterError, String(summary.error));
      }),
      { numRuns: 300 },
    );
    assert.deepEqual(unhandled, []);
  });

  it("mutated real sessions end cleanly or with a MilterError", async () => {
    const mutation = fc.record({
      which: fc.nat(),
      flips: fc.array(fc.record({ at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), {
        maxLength: 4,
      }),
      cut: fc.option(fc.nat()),
      seed: fc.integer(),
    });
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        const base = captures[m.which % captures.length]!.slice();
        for (const f of m.flips) base[f.at % base.length]! ^= 1 << f.bit;
        const bytes = m.cut === null ? base : base.subarray(0, m.cut % (base.length + 1));
        const { summary } = await run(bytes, seeded(m.seed));
        if (summary.error) assert.ok(summary.error instanceof MilterError, String(summary.error));
      }),
      { numRuns: 300 },
    );
    assert.deepEqual(unhandled, []);
  });

  it("answers every command that expects a reply exactly once", async () => {
    const str = fc.stringMatching(/^[a-z<>@.]{1,12}$/);
    const command: fc.Arbitrary<Command> = fc.oneof(
      fc.constant<Command>({ type: "connect", hostname: "h", family: "unknown" }),
      str.map((name): Command => ({ type: "helo", name })),
      str.map((s): Command => ({ type: "mail", sender: s, args: [] })),
      str.map((s): Command => ({ type: "rcpt", recipient: s, args: ["NOTIFY=NEVER"] })),
      fc.constant<Command>({ type: "data" }),
      fc.tuple(str, str).map(([n, v]): Command => ({ type: "header", name: n, value: v })),
      fc.constant<Command>({ type: "eoh" }),
      fc.uint8Array({ minLength: 1, maxLength: 64 }).map((chunk): Command => ({
        type: "body",
        chunk,
      })),
      fc.constant<Command>({ type: "eom" }),
      fc.constant<Command>({ type: "abort" }),
      str.map((line): Command => ({ type: "unknown", line })),
      str.map((s): Command => ({ type: "macro", stage: "M", macros: [["{mail_addr}", s]] })),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(command, { maxLength: 40 }), fc.integer(), async (cmds, seed) => {
        const all: Command[] = [
          { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff },
          ...cmds,
          { type: "quit" },
        ];
        const bytes = Uint8Array.from(all.flatMap((c) => [...encodeCommand(c)]));
        const { summary, replies } = await run(bytes, seeded(seed));
        assert.equal(summary.end, "quit", summary.error?.message);
        const expecting = cmds.filter((c) => !["abort", "macro"].includes(c.type)).length;
        const finals = replies.slice(1).filter((r) =>
          !["addheader", "quarantine", "progress"].includes(r.type)
        );
        assert.equal(finals.length, expecting);
        assert.equal(replies[0]?.type, "optneg");
      }),
      { numRuns: 300 },
    );
    assert.deepEqual(unhandled, []);
  });
});
