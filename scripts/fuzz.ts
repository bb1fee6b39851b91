// deno-lint-ignore-file no-console
/**
 * Mutation and property-based fuzzing (fast-check) of the frame reader, the filter engine, the
 * MTA engine and the proxy, seeded from `tests/data/fuzz-corpus/` (real capture streams and
 * hand-made hostile inputs). A finding is anything but a clean end or a typed `MilterError`: another
 * exception, a hang past the bound, an unhandled rejection, or a broken invariant (every
 * reply-expecting command gets exactly one final reply; the proxy forwards bytes unchanged;
 * decoding is stable under re-encoding). Each finding is saved to `fuzz-corpus/findings/`, which
 * `tests/fuzz_regressions_test.ts` replays in CI.
 *
 *   deno run -A scripts/fuzz.ts [--seconds 60 | --runs N] [--target frame,filter,client,proxy]
 *   bun scripts/fuzz.ts --seconds 300 --seed 42
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { setImmediate } from "node:timers";
import { parseArgs } from "node:util";
import fc from "fast-check";
import {
  type Command,
  decodeCommand,
  decodeReply,
  defineFilter,
  encodeCommand,
  encodeFrame,
  encodeReply,
  endSession,
  type Filter,
  type Frame,
  FrameDecoder,
  MilterClient,
  MilterError,
  proxyConnection,
  type Reply,
  runTransaction,
  serveConnection,
  SMFIP,
  type Verdict,
} from "../mod.ts";
import { chunked, duplexPair } from "../lib/testing.ts";

/** Where the corpus lives: `to-filter/`, `to-mta/` seeds and `findings/`. */
export const CORPUS = new URL("../tests/data/fuzz-corpus/", import.meta.url);

/** The fuzzed components. */
export type TargetName = "frame" | "filter" | "client" | "proxy";
export const TARGET_NAMES: readonly TargetName[] = ["frame", "filter", "client", "proxy"];

/** One execution's input: the byte stream, how it is chunked, and the seed of every choice. */
export interface FuzzInput {
  readonly bytes: Uint8Array;
  readonly chunk: number;
  readonly seed: number;
}

/** How many executions of each target reached its strongest invariant check. */
export const checked: Record<TargetName, number> = { frame: 0, filter: 0, client: 0, proxy: 0 };

/** A broken invariant or an untyped failure. */
export class Finding extends Error {}

const HANG_MS = 5000;

function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    return n <= 0 ? 0 : s % n;
  };
}

const bytesEqual = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Anything thrown that is not a MilterError is a finding. */
function typed(e: unknown, where: string): void {
  if (!(e instanceof MilterError)) {
    throw new Finding(`${where} threw an untyped ${e instanceof Error ? e.name : typeof e}: ${e}`, {
      cause: e,
    });
  }
}

/** Splits a stream into frames as far as it frames; the framing error, if any. */
function frames(bytes: Uint8Array): { frames: Frame[]; error?: MilterError } {
  const d = new FrameDecoder();
  try {
    const out = d.push(bytes);
    d.finish();
    return { frames: out };
  } catch (e) {
    typed(e, "FrameDecoder");
    return { frames: [], error: e as MilterError };
  }
}

// ── frame reader and codecs ─────────────────────────────────────────────────────────────────

async function fuzzFrame({ bytes, chunk }: FuzzInput): Promise<void> {
  const d = new FrameDecoder();
  const got: Frame[] = [];
  let failed: unknown;
  for (const part of chunked(bytes, [chunk])) {
    try {
      got.push(...d.push(part));
    } catch (e) {
      typed(e, "FrameDecoder.push");
      failed = e;
      break;
    }
  }
  if (failed === undefined) {
    try {
      d.finish();
    } catch (e) {
      typed(e, "FrameDecoder.finish");
    }
  }
  // Whatever the chunking, the frames are the same as from one push, and re-encode to a prefix.
  const whole = new FrameDecoder();
  let reference: Frame[] = [];
  try {
    reference = whole.push(bytes);
  } catch { /* the chunked run saw the same error at the same frame */ }
  if (failed === undefined && reference.length !== got.length) {
    throw new Finding(`Chunked decoding gave ${got.length} frames, whole gave ${reference.length}`);
  }
  const again = concat(got.map((f) => encodeFrame(f.code, f.payload)));
  if (!bytesEqual(again, bytes.subarray(0, again.length))) {
    throw new Finding("Re-encoded frames differ from the bytes they came from");
  }
  if (got.length > 0) checked.frame++;
  // Decoding is stable: decode(encode(decode(f))) equals decode(f), both directions.
  for (const f of got) {
    for (const [decode, encode] of [[decodeCommand, encodeCommand], [decodeReply, encodeReply]]) {
      let first: unknown;
      try {
        first = (decode as (f: Frame) => unknown)(f);
      } catch (e) {
        typed(e, "decode");
        continue;
      }
      let second: unknown;
      try {
        const bytes2 = (encode as (x: unknown) => Uint8Array)(first);
        second = (decode as (f: Frame) => unknown)(frames(bytes2).frames[0]!);
      } catch (e) {
        typed(e, "re-encode");
        continue;
      }
      if (JSON.stringify(normal(first)) !== JSON.stringify(normal(second))) {
        throw new Finding(`Decoding is not stable for frame code 0x${f.code.toString(16)}`);
      }
    }
  }
  await Promise.resolve();
}

function normal(x: unknown): unknown {
  return JSON.parse(JSON.stringify(x, (_k, v) => (v instanceof Uint8Array ? [...v] : v)));
}

// ── filter engine ───────────────────────────────────────────────────────────────────────────

const VERDICTS: Verdict[] = ["continue", "accept", "reject", "tempfail", "discard", "skip", {
  code: 550,
  text: "5.7.1 no",
}];

/** A filter whose every answer (and failure) is drawn from `pick`. */
function randomFilter(pick: (n: number) => number): Filter {
  const v = () => {
    const r = pick(20);
    if (r === 0) throw new Error("handler failure");
    if (r === 1) return { bogus: true } as never;
    return VERDICTS[pick(VERDICTS.length)]!;
  };
  return defineFilter({
    actions: ["addHeader", "quarantine", "changeSender", "addRecipient"],
    connect: v,
    helo: v,
    envfrom: v,
    envrcpt: v,
    data: v,
    header: v,
    eoh: v,
    body: v,
    unknown: v,
    abort: () => {
      if (pick(10) === 0) throw new Error("abort failure");
    },
    eom(ctx) {
      if (pick(2)) ctx.addHeader("X-Fuzz", "1");
      if (pick(4) === 0) ctx.changeSender("<f@example.net>");
      if (pick(8) === 0) ctx.quarantine("fuzz");
      return v();
    },
  });
}

/** Final replies (ending a command), as opposed to modifications and PROGRESS. */
const FINAL = new Set([
  "optneg",
  "continue",
  "accept",
  "reject",
  "tempfail",
  "discard",
  "replycode",
  "skip",
  "shutdown",
]);
const NR: Partial<Record<Command["type"], number>> = {
  connect: SMFIP.NR_CONN,
  helo: SMFIP.NR_HELO,
  mail: SMFIP.NR_MAIL,
  rcpt: SMFIP.NR_RCPT,
  data: SMFIP.NR_DATA,
  header: SMFIP.NR_HDR,
  eoh: SMFIP.NR_EOH,
  body: SMFIP.NR_BODY,
  unknown: SMFIP.NR_UNKN,
};

/** How many final replies a filter owes for a well-framed command stream. */
function owed(all: readonly Frame[], protocol: number): number {
  let n = 0;
  let negotiated = false;
  for (const f of all) {
    let c: Command;
    try {
      c = decodeCommand(f);
    } catch {
      return n; // the engine stops at the first undecodable command
    }
    if (c.type === "optneg") {
      negotiated = true;
      n++;
    } else if (c.type === "macro") continue;
    else if (!negotiated) return n;
    else if (c.type === "quit") return n;
    else if (c.type === "eom") n++;
    else if (NR[c.type] !== undefined && (protocol & NR[c.type]!) === 0) n++;
  }
  return n;
}

async function fuzzFilter({ bytes, chunk, seed }: FuzzInput): Promise<void> {
  const [mta, filterSide] = duplexPair(1 << 22);
  const done = serveConnection(filterSide, randomFilter(rng(seed)), { handlerTimeoutMs: 1000 });
  const w = mta.writable.getWriter();
  void (async () => {
    for (const part of chunked(bytes, [chunk])) await w.write(part);
    await w.close();
  })().catch(() => {});
  // The engine aborts its side (with the session's error) after a protocol error.
  const received: Uint8Array[] = [];
  try {
    for await (const c of mta.readable) received.push(c);
  } catch { /* the stream ends with the session's error; the summary carries it */ }
  const replies: Reply[] = [];
  try {
    for (const f of frames(concat(received)).frames) replies.push(decodeReply(f));
  } catch (e) {
    throw new Finding(`The filter engine sent a reply that does not decode: ${e}`, { cause: e });
  }
  if (frames(concat(received)).error) throw new Finding("The filter engine sent a broken frame");
  const summary = await done;
  if (summary.error) typed(summary.error, "serveConnection");
  const framed = frames(bytes);
  if (framed.error) return;
  const negotiatedReply = replies[0];
  if (negotiatedReply?.type !== "optneg") return; // refused or never offered: closed, no reply
  checked.filter++;
  const want = owed(framed.frames, negotiatedReply.protocol);
  const got = replies.filter((r) => FINAL.has(r.type)).length;
  if (got !== want) {
    throw new Finding(`The filter engine sent ${got} final replies for ${want} commands owed one`);
  }
}

/** Splits a filter's byte stream into answer units, each ending with a final reply. */
function replyUnits(bytes: Uint8Array): { framed: Uint8Array[]; tail: Uint8Array } {
  const d = new FrameDecoder();
  let all: Frame[] = [];
  try {
    all = d.push(bytes);
  } catch {
    return { framed: [], tail: bytes };
  }
  const framed: Uint8Array[] = [];
  let unit: Uint8Array[] = [];
  let used = 0;
  for (const f of all) {
    const b = encodeFrame(f.code, f.payload);
    unit.push(b);
    used += b.length;
    if (FINAL_CODES.has(f.code) || framed.length === 0) {
      framed.push(concat(unit));
      unit = [];
    }
  }
  return { framed, tail: concat([...unit, bytes.subarray(used)]) };
}

/** Reply codes that end an answer (or are meant to): OPTNEG, c, a, r, t, d, y, s, 4. */
const FINAL_CODES = new Set([0x4f, 0x63, 0x61, 0x72, 0x74, 0x64, 0x79, 0x73, 0x34]);

// ── MTA engine ──────────────────────────────────────────────────────────────────────────────

async function fuzzClient({ bytes, chunk, seed }: FuzzInput): Promise<void> {
  const pick = rng(seed);
  const [mta, filterSide] = duplexPair(1 << 22);
  const w = filterSide.writable.getWriter();
  const stall = pick(8) === 0;
  const units = replyUnits(bytes);
  const send = async (b: Uint8Array) => {
    for (const part of chunked(b, [chunk])) await w.write(part);
  };
  // The fake filter answers in step: one unit (modifications, PROGRESS, then a final reply) per
  // command, the OPTNEG reply first; what does not frame is sent after the last unit.
  void (async () => {
    const dec = new FrameDecoder();
    for await (const c of filterSide.readable) {
      for (const f of dec.push(c)) {
        if (f.code === 0x44 || f.code === 0x41 || f.code === 0x51) continue; // D, A, Q
        const unit = units.framed.shift();
        if (unit) await send(unit);
        if (units.framed.length === 0) {
          await send(units.tail);
          if (!stall) await w.close();
          return;
        }
      }
    }
  })().catch(() => {});
  const opts = { commandTimeoutMs: 20, contentTimeoutMs: 20, eomTimeoutMs: 40 };
  let client: MilterClient;
  try {
    client = await MilterClient.open(mta, opts);
  } catch (e) {
    typed(e, "MilterClient.open");
    void w.abort().catch(() => {});
    return;
  }
  try {
    const r = await runTransaction(client, {
      connect: { hostname: "c.example.net", family: "inet", address: "192.0.2.1", port: 25 },
      helo: "c.example.net",
      from: "a@example.net",
      rcpts: ["b@example.com", "c@example.com"],
      message: new TextEncoder().encode("Subject: fuzz\r\nX-A: 1\r\n\r\nbody\r\n"),
    });
    checked.client++;
    const delivered = r.verdict.type === "continue" || r.verdict.type === "accept";
    if (delivered !== r.delivered) throw new Finding("delivered disagrees with the verdict");
  } catch (e) {
    if (e instanceof Finding) throw e;
    typed(e, "runTransaction");
  } finally {
    await endSession(client);
    void w.abort().catch(() => {});
  }
}

// ── proxy ───────────────────────────────────────────────────────────────────────────────────

/** A pass-through that records every chunk. */
function recorder(): { stream: TransformStream<Uint8Array, Uint8Array>; bytes: () => Uint8Array } {
  const parts: Uint8Array[] = [];
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    transform(c, ctl) {
      parts.push(c.slice());
      ctl.enqueue(c);
    },
  });
  return { stream, bytes: () => concat(parts) };
}

async function fuzzProxy({ bytes, chunk, seed }: FuzzInput): Promise<void> {
  const [mta, proxySide] = duplexPair(1 << 22);
  const [upstreamProxySide, filterSide] = duplexPair(1 << 22);
  // Record what reaches the filter and what the filter sends, on the filter's side of the proxy.
  const toFilter = recorder();
  const toMta = recorder();
  const served = serveConnection(
    { readable: filterSide.readable.pipeThrough(toFilter.stream), writable: toMta.stream.writable },
    randomFilter(rng(seed)),
    { handlerTimeoutMs: 1000 },
  );
  void toMta.stream.readable.pipeTo(filterSide.writable).catch(() => {});
  const proxied = proxyConnection(proxySide, {
    connectUpstream: () => Promise.resolve(upstreamProxySide),
    closeGraceMs: 200,
  });
  const w = mta.writable.getWriter();
  void (async () => {
    for (const part of chunked(bytes, [chunk])) await w.write(part);
    await w.close();
  })().catch(() => {});
  const got: Uint8Array[] = [];
  try {
    for await (const c of mta.readable) got.push(c);
  } catch { /* the proxy may close the MTA side after a filter failure */ }
  let summary;
  try {
    summary = await proxied;
  } catch (e) {
    throw new Finding(`proxyConnection rejected: ${e}`, { cause: e });
  }
  await served;
  const seen = toFilter.bytes();
  if (!bytesEqual(seen, bytes.subarray(0, seen.length))) {
    throw new Finding("The proxy altered the bytes on their way to the filter");
  }
  if (!summary.fallback) {
    checked.proxy++;
    if (!bytesEqual(concat(got), toMta.bytes())) {
      throw new Finding("The proxy altered the bytes on their way to the MTA");
    }
  }
}

/** Each target: runs one input, throws a {@link Finding} on a problem. */
export const TARGETS: Readonly<Record<TargetName, (input: FuzzInput) => Promise<void>>> = {
  frame: fuzzFrame,
  filter: fuzzFilter,
  client: fuzzClient,
  proxy: fuzzProxy,
};

const unhandled: unknown[] = [];
let listening = false;

/**
 * Runs one input on one target under the hang bound, checking for unhandled rejections.
 *
 * @param target The target.
 * @param input The input.
 * @returns Resolves when the input ran cleanly.
 * @throws {Finding} on a hang, an unhandled rejection or a broken invariant.
 */
export async function runOne(target: TargetName, input: FuzzInput): Promise<void> {
  if (!listening) {
    process.on("unhandledRejection", (e) => unhandled.push(e));
    listening = true;
  }
  const before = unhandled.length;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Finding(`The ${target} target did not finish within ${HANG_MS} ms`)),
      HANG_MS,
    );
  });
  try {
    await Promise.race([TARGETS[target](input), hang]);
  } catch (e) {
    if (e instanceof Finding) throw e;
    throw new Finding(`The ${target} target threw: ${e}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  // Let stray rejections of this run surface before judging it (the frame target is synchronous).
  if (target !== "frame") await new Promise((r) => setImmediate(r));
  if (unhandled.length > before) {
    throw new Finding(`Unhandled rejection: ${unhandled.slice(before).map(String).join("; ")}`);
  }
}

// ── corpus ──────────────────────────────────────────────────────────────────────────────────

/** Seed files for a target (`to-filter/` streams, `to-mta/` streams, or both). */
export function seeds(target: TargetName): { name: string; bytes: Uint8Array }[] {
  const dirs = target === "client"
    ? ["to-mta"]
    : target === "frame"
    ? ["to-filter", "to-mta"]
    : ["to-filter"];
  const out: { name: string; bytes: Uint8Array }[] = [];
  for (const dir of dirs) {
    const url = new URL(`${dir}/`, CORPUS);
    if (!existsSync(url)) continue;
    for (const f of readdirSync(url).filter((f) => f.endsWith(".bin")).sort()) {
      out.push({ name: `${dir}/${f}`, bytes: new Uint8Array(readFileSync(new URL(f, url))) });
    }
  }
  return out;
}

/** A saved finding: its bytes and how it was run. */
export interface SavedFinding {
  readonly file: string;
  readonly target: TargetName;
  readonly input: FuzzInput;
  readonly message: string;
}

/** The findings saved so far (each `findings/NAME.bin` with its `NAME.json`). */
export function savedFindings(): SavedFinding[] {
  const url = new URL("findings/", CORPUS);
  if (!existsSync(url)) return [];
  return readdirSync(url).filter((f) => f.endsWith(".json")).sort().map((f) => {
    const meta = JSON.parse(readFileSync(new URL(f, url), "utf8"));
    const bytes = new Uint8Array(readFileSync(new URL(f.replace(/\.json$/, ".bin"), url)));
    return {
      file: f,
      target: meta.target,
      input: { bytes, chunk: meta.chunk, seed: meta.seed },
      message: meta.message,
    };
  });
}

function saveFinding(target: TargetName, input: FuzzInput, message: string): string {
  const dir = new URL("findings/", CORPUS);
  mkdirSync(dir, { recursive: true });
  const hash = createHash("sha1").update(input.bytes).update(`${input.chunk}/${input.seed}`)
    .digest("hex").slice(0, 12);
  const name = `${target}-${hash}`;
  writeFileSync(new URL(`${name}.bin`, dir), input.bytes);
  const meta = {
    target,
    chunk: input.chunk,
    seed: input.seed,
    message,
    found: new Date().toISOString(),
  };
  writeFileSync(new URL(`${name}.json`, dir), JSON.stringify(meta, null, 2) + "\n");
  return name;
}

// ── mutation ────────────────────────────────────────────────────────────────────────────────

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
        b = concat([b.subarray(0, at), v, b.subarray(Math.min(b.length, at + 4))]);
        break;
      }
      case "insert":
        b = concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case "delete":
        b = concat([b.subarray(0, at), b.subarray(at + m.count)]);
        break;
      case "duplicate":
        b = concat([b.subarray(0, at + m.count), b.subarray(at)]);
        break;
      case "cut":
        b = b.subarray(0, at);
        break;
      case "splice": {
        const other = pool[m.other % pool.length]!;
        b = concat([b.subarray(0, at), other.subarray(m.from % (other.length + 1))]);
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
    concat([
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
    concat([encodeReply(o), ...rs.map(encodeReply)])
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

// ── main ────────────────────────────────────────────────────────────────────────────────────

interface TargetReport {
  target: TargetName;
  executions: number;
  checked: number;
  seconds: number;
  findings: string[];
}

async function fuzzTarget(
  target: TargetName,
  budget: { ms?: number; runs?: number },
  seed: number,
): Promise<TargetReport> {
  const pool = seeds(target).map((s) => s.bytes);
  const report: TargetReport = { target, executions: 0, checked: 0, seconds: 0, findings: [] };
  const started = performance.now();
  const out = (m: string) => process.stderr.write(`  ${target}: ${m}\n`);
  // Replay the corpus first: every seed, whole and byte by byte.
  for (const s of pool) {
    for (const chunk of [1 << 20, 1]) {
      report.executions++;
      try {
        await runOne(target, { bytes: s, chunk, seed: 1 });
      } catch (e) {
        report.findings.push(
          saveFinding(target, { bytes: s, chunk, seed: 1 }, (e as Error).message),
        );
      }
    }
  }
  let round = 0;
  while (true) {
    const elapsed = performance.now() - started;
    if (budget.ms !== undefined && elapsed >= budget.ms) break;
    if (budget.runs !== undefined && report.executions >= budget.runs) break;
    const numRuns = Math.min(
      200,
      budget.runs !== undefined ? budget.runs - report.executions : 200,
    );
    const property = fc.asyncProperty(inputs(target, pool), async (input) => {
      report.executions++;
      await runOne(target, input);
    });
    const left = budget.ms !== undefined ? budget.ms - elapsed : undefined;
    const details = await fc.check(property, {
      numRuns,
      seed: seed + round++,
      ...(left !== undefined ? { interruptAfterTimeLimit: Math.max(1, left) } : {}),
      markInterruptAsFailure: false,
    });
    if (details.failed && details.counterexample) {
      const [input] = details.counterexample;
      const message = details.errorInstance instanceof Error
        ? details.errorInstance.message
        : String(details.errorInstance);
      const name = saveFinding(target, input, message);
      report.findings.push(name);
      out(`finding ${name}: ${message}`);
    }
  }
  report.seconds = (performance.now() - started) / 1000;
  report.checked = checked[target];
  return report;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      seconds: { type: "string" },
      runs: { type: "string" },
      target: { type: "string", default: TARGET_NAMES.join(",") },
      seed: { type: "string", default: String(Date.now() % 1_000_000) },
      json: { type: "boolean", default: false },
    },
  });
  const targets = values.target!.split(",").map((t) => t.trim()) as TargetName[];
  for (const t of targets) {
    if (!TARGET_NAMES.includes(t)) throw new Error(`Unknown target ${t}: expected ${TARGET_NAMES}`);
  }
  const seconds = values.seconds !== undefined ? Number(values.seconds) : undefined;
  const runs = values.runs !== undefined ? Number(values.runs) : undefined;
  const perTarget = {
    ...(seconds !== undefined ? { ms: (seconds * 1000) / targets.length } : {}),
    ...(runs !== undefined ? { runs: Math.ceil(runs / targets.length) } : {}),
  };
  if (perTarget.ms === undefined && perTarget.runs === undefined) {
    perTarget.ms = 60_000 / targets.length;
  }
  const seed = Number(values.seed);
  const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
  process.stderr.write(`fuzzing ${targets.join(", ")} under ${runtime}, seed ${seed}\n`);
  const reports: TargetReport[] = [];
  for (const t of targets) reports.push(await fuzzTarget(t, perTarget, seed));
  if (values.json) {
    console.log(JSON.stringify({ runtime, seed, reports }, null, 2));
  } else {
    for (const r of reports) {
      console.log(
        `${r.target.padEnd(7)} ${String(r.executions).padStart(8)} executions  ${
          (r.executions / r.seconds).toFixed(0).padStart(6)
        }/s  ${r.seconds.toFixed(1)} s  ${r.checked} reached the invariant check  findings: ${
          r.findings.length ? [...new Set(r.findings)].join(", ") : "none"
        }`,
      );
    }
    const total = reports.reduce((n, r) => n + r.executions, 0);
    const found = reports.reduce((n, r) => n + r.findings.length, 0);
    console.log(`total   ${total} executions under ${runtime}, ${found} findings`);
  }
  process.exitCode = reports.some((r) => r.findings.length) ? 1 : 0;
}

if (import.meta.main) await main();
