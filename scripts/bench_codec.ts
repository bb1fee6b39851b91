/**
 * Codec throughput: builds one large-body MTA session (headers plus a 50 MB message in
 * 65535-byte BODY frames, as Postfix sends it) and reports MB/s for
 * - encoding it with encodeCommand,
 * - FrameDecoder + decodeCommand over the whole buffer,
 * - FrameDecoder + decodeCommand over 16 KiB socket-like chunks (fresh buffers),
 * - FrameDecoderStream + decodeCommand over the same chunks through web streams;
 * then the same decoding for a header-heavy session (100k small HEADER + per-header macro
 * frames), where per-frame cost dominates, in frames/s.
 *
 * Run: `deno run -A scripts/bench_codec.ts` or `bun scripts/bench_codec.ts`
 * (optional argument: body size in MB, default 50).
 */
import process from "node:process";
import { concatBytes } from "../lib/wire/concat.ts";
import { decodeCommand, encodeCommand } from "../lib/wire/command_codec.ts";
import { MILTER_CHUNK_SIZE } from "../lib/wire/constants.ts";
import { FrameDecoder, FrameDecoderStream } from "../lib/wire/frame.ts";
import type { Command } from "../lib/wire/types.ts";

const MB = 1e6;
const bodyMb = Number(process.argv[2] ?? process.argv.at(-1)) || 50;
const RUNS = 5;

function runtimeName(): string {
  const v = process.versions as Record<string, string | undefined>;
  if (v.bun !== undefined) return `bun ${v.bun}`;
  if (v.deno !== undefined) return `deno ${v.deno}`;
  return `node ${process.version}`;
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** The commands of one SMTP transaction with a body of `bodyBytes`. */
function buildSession(bodyBytes: number): Command[] {
  const cmds: Command[] = [
    { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff },
    { type: "macro", stage: "C", macros: [["j", "mx.example.test"], ["_", "client [192.0.2.1]"]] },
    { type: "connect", hostname: "client", family: "inet", port: 40000, address: "192.0.2.1" },
    { type: "helo", name: "client.example.net" },
    { type: "mail", sender: "<alice@example.net>", args: ["SIZE=50000000", "BODY=8BITMIME"] },
    { type: "rcpt", recipient: "<bob@example.test>", args: [] },
    { type: "macro", stage: "T", macros: [["i", "4F2A716C0D3"]] },
  ];
  for (let i = 0; i < 20; i++) {
    cmds.push({ type: "macro", stage: "L", macros: [["i", "4F2A716C0D3"]] });
    cmds.push({ type: "header", name: `X-Header-${i}`, value: `value number ${i} é` });
  }
  cmds.push({ type: "eoh" });
  const line = new TextEncoder().encode(
    "The quick brown fox jumps over the lazy dog 0123456789\r\n",
  );
  const chunk = new Uint8Array(MILTER_CHUNK_SIZE);
  for (let i = 0; i < chunk.length; i++) chunk[i] = line[i % line.length]!;
  for (let left = bodyBytes; left > 0; left -= MILTER_CHUNK_SIZE) {
    cmds.push({ type: "body", chunk: left >= chunk.length ? chunk : chunk.subarray(0, left) });
  }
  cmds.push({ type: "eom" }, { type: "abort" }, { type: "quit" });
  return cmds;
}

function encodeAll(cmds: readonly Command[]): Uint8Array {
  return concatBytes(cmds.map(encodeCommand));
}

/** Decodes chunks and returns the number of commands and body bytes seen (a checksum). */
function decodeChunks(chunks: readonly Uint8Array[]): { commands: number; body: number } {
  const d = new FrameDecoder();
  let commands = 0;
  let body = 0;
  for (const c of chunks) {
    for (const f of d.push(c)) {
      const cmd = decodeCommand(f);
      commands++;
      if (cmd.type === "body") body += cmd.chunk.length;
    }
  }
  d.finish();
  return { commands, body };
}

async function decodeStream(chunks: readonly Uint8Array[]): Promise<number> {
  let body = 0;
  const frames = ReadableStream.from(chunks).pipeThrough(new FrameDecoderStream());
  for await (const f of frames) {
    const cmd = decodeCommand(f);
    if (cmd.type === "body") body += cmd.chunk.length;
  }
  return body;
}

/** Runs `fn` RUNS times and prints the median throughput over `bytes` (and `frames`). */
async function measure(
  label: string,
  bytes: number,
  fn: () => unknown | Promise<unknown>,
  frames?: number,
): Promise<void> {
  await fn(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)]!;
  const mbps = bytes / MB / (median / 1000);
  print(
    `${runtimeName()}  ${label.padEnd(34)} ${mbps.toFixed(0).padStart(6)} MB/s` +
      (frames === undefined
        ? ""
        : `  ${(frames / (median / 1000) / 1e6).toFixed(2).padStart(5)} M frames/s`) +
      `  (median ${median.toFixed(1)} ms of ${RUNS}, ${(bytes / MB).toFixed(1)} MB)`,
  );
}

/** Fresh 16 KiB buffers, like socket reads (the decoder may keep views into them). */
function socketChunksOf(wire: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let p = 0; p < wire.length; p += 16 * 1024) out.push(wire.slice(p, p + 16 * 1024));
  return out;
}

const cmds = buildSession(bodyMb * MB);
const wire = encodeAll(cmds);
const socketChunks = socketChunksOf(wire);
const expected = decodeChunks([wire]);
if (expected.commands !== cmds.length || expected.body !== bodyMb * MB) {
  throw new Error(`Self-check failed: ${JSON.stringify(expected)}`);
}
const chunked = decodeChunks(socketChunks);
if (chunked.body !== expected.body || chunked.commands !== expected.commands) {
  throw new Error(`Chunked decode differs: ${JSON.stringify(chunked)}`);
}

print(
  `${runtimeName()}  session: ${cmds.length} commands, ${(wire.length / MB).toFixed(1)} MB ` +
    `on the wire, ${MILTER_CHUNK_SIZE}-byte BODY frames`,
);
await measure("encode (encodeCommand)", wire.length, () => encodeAll(cmds));
await measure("decode whole buffer (zero-copy)", wire.length, () => decodeChunks([wire]));
await measure("decode 16 KiB chunks", wire.length, () => decodeChunks(socketChunks));
await measure("decode 16 KiB chunks, stream", wire.length, () => decodeStream(socketChunks));

const headerCmds: Command[] = [];
for (let i = 0; i < 50_000; i++) {
  headerCmds.push({ type: "macro", stage: "L", macros: [["i", "4F2A716C0D3"]] });
  headerCmds.push({ type: "header", name: "Received", value: `from relay${i}.example.net by mx` });
}
const headerWire = encodeAll(headerCmds);
const headerChunks = socketChunksOf(headerWire);
await measure("encode small frames", headerWire.length, () => encodeAll(headerCmds), 100_000);
await measure(
  "decode small frames, 16 KiB chunks",
  headerWire.length,
  () => decodeChunks(headerChunks),
  100_000,
);
