/**
 * The fuzz targets: the frame reader and codecs, the filter engine, the MTA engine and the proxy,
 * each running one input and throwing a {@link Finding} on a problem (see scripts/fuzz.ts).
 */
import { defineFilter, type Filter } from "../lib/filter/filter.ts";
import { serveConnection } from "../lib/filter/session.ts";
import type { Verdict } from "../lib/filter/verdict.ts";
import { proxyConnection } from "../lib/inspect/proxy.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import { expectsReply, FINAL_REPLIES } from "../lib/wire/command_bits.ts";
import { decodeCommand, encodeCommand } from "../lib/wire/command_codec.ts";
import { encodeFrame, FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply, encodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Frame, Reply } from "../lib/wire/types.ts";
import { chunked, duplexPair } from "../lib/testing/mod.ts";
import {
  bytesEqual,
  checked,
  Finding,
  frames,
  type FuzzInput,
  rng,
  type TargetName,
  typed,
} from "./fuzz_common.ts";
import { concatBytes } from "../lib/wire/concat.ts";

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
  const again = concatBytes(got.map((f) => encodeFrame(f.code, f.payload)));
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
    // Any verdict at any stage, as an untyped filter could: the run-time checks are fuzzed.
    return VERDICTS[pick(VERDICTS.length)]! as never;
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
    else if (expectsReply(c.type, protocol)) n++;
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
    for (const f of frames(concatBytes(received)).frames) replies.push(decodeReply(f));
  } catch (e) {
    throw new Finding(`The filter engine sent a reply that does not decode: ${e}`, { cause: e });
  }
  if (frames(concatBytes(received)).error) {
    throw new Finding("The filter engine sent a broken frame");
  }
  const summary = await done;
  if (summary.error) typed(summary.error, "serveConnection");
  const framed = frames(bytes);
  if (framed.error) return;
  const negotiatedReply = replies[0];
  if (negotiatedReply?.type !== "optneg") return; // refused or never offered: closed, no reply
  checked.filter++;
  const want = owed(framed.frames, negotiatedReply.protocol);
  const got = replies.filter((r) => r.type === "optneg" || FINAL_REPLIES.has(r.type)).length;
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
      framed.push(concatBytes(unit));
      unit = [];
    }
  }
  return { framed, tail: concatBytes([...unit, bytes.subarray(used)]) };
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
  return { stream, bytes: () => concatBytes(parts) };
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
  // The proxy connects to the filter only once the MTA has sent something: when it sent
  // nothing, the filter's connection was never used and is closed here.
  if (summary.bytes["to-filter"] === 0) await upstreamProxySide.writable.close().catch(() => {});
  await served;
  const seen = toFilter.bytes();
  if (!bytesEqual(seen, bytes.subarray(0, seen.length))) {
    throw new Finding("The proxy altered the bytes on their way to the filter");
  }
  if (!summary.fallback) {
    checked.proxy++;
    if (!bytesEqual(concatBytes(got), toMta.bytes())) {
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
