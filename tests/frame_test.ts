/**
 * The frame reader: chunking invariance over every capture stream, the typed errors for bad
 * lengths, foreign protocols and truncation, and the stream wrapper.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { DEFAULT_MAX_FRAME_DATA } from "../lib/wire/constants.ts";
import { MilterProtocolError, type ProtocolErrorReason } from "../lib/wire/errors.ts";
import {
  describeCode,
  encodeFrame,
  FrameDecoder,
  FrameDecoderStream,
  sniffForeignProtocol,
} from "../lib/wire/frame.ts";
import type { Frame } from "../lib/wire/types.ts";
import { chunked } from "../lib/testing/mod.ts";
import { allSessions, fromHex, streamOf } from "./helpers/captures.ts";
import { concatBytes } from "../lib/wire/concat.ts";

/** Feeds chunks to a fresh decoder and returns every frame (the decoder must end clean). */
function decodeChunks(chunks: readonly Uint8Array[], maxDataSize?: number): Frame[] {
  const d = new FrameDecoder(maxDataSize === undefined ? {} : { maxDataSize });
  const frames: Frame[] = [];
  for (const c of chunks) frames.push(...d.push(c));
  d.finish();
  return frames;
}

/** Frames as plain comparable data (code + payload copy). */
function plain(frames: readonly Frame[]): { code: number; payload: number[] }[] {
  return frames.map((f) => ({ code: f.code, payload: [...f.payload] }));
}

/** Deterministic PRNG (mulberry32), so random chunkings are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomChunks(bytes: Uint8Array, seed: number, maxSize: number): Uint8Array[] {
  const next = prng(seed);
  const out: Uint8Array[] = [];
  let p = 0;
  while (p < bytes.length) {
    const size = 1 + Math.floor(next() * maxSize);
    out.push(bytes.slice(p, p + size));
    p += size;
  }
  return out;
}

/** Splits at the given offsets (copies). */
function splitAt(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set([0, ...cuts.filter((c) => c > 0 && c < bytes.length), bytes.length])]
    .sort((a, b) => a - b);
  return points.slice(1).map((end, i) => bytes.slice(points[i]!, end));
}

/** Offsets of every frame start in a well-formed stream. */
function frameStarts(bytes: Uint8Array): number[] {
  const starts: number[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let p = 0; p < bytes.length; p += 4 + view.getUint32(p)) starts.push(p);
  return starts;
}

/** Asserts that `fn` throws a MilterProtocolError with this reason and a matching message. */
function assertProtocolError(
  fn: () => unknown,
  reason: ProtocolErrorReason,
  message: RegExp,
): MilterProtocolError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof MilterProtocolError, `expected MilterProtocolError, got ${caught}`);
  assert.equal(caught.reason, reason);
  assert.match(caught.message, message);
  return caught;
}

/** A length prefix followed by `code` and `dataSize` zero bytes. */
function frameOfDataSize(code: number, dataSize: number): Uint8Array {
  return encodeFrame(code, new Uint8Array(dataSize));
}

const STREAMS = allSessions().flatMap((s) =>
  (["to-filter", "to-mta"] as const).map((dir) => ({
    name: `${s.name} ${dir}`,
    bytes: streamOf(s, dir),
  }))
);

describe("FrameDecoder chunking invariance over every capture stream", () => {
  for (const { name, bytes } of STREAMS) {
    it(`${name}: same frames whatever the chunking`, () => {
      const expected = plain(decodeChunks([bytes]));
      assert.ok(expected.length > 0);
      const chunkings: [string, Uint8Array[]][] = [
        ["1-byte", chunked(bytes, [1])],
        ["2-byte", chunked(bytes, [2])],
        ["3-byte", chunked(bytes, [3])],
        ["7-byte", chunked(bytes, [7])],
        ["1,4,5 cycling", chunked(bytes, [1, 4, 5])],
        ["random ≤ 16", randomChunks(bytes, 1, 16)],
        ["random ≤ 200", randomChunks(bytes, 2, 200)],
        ["random ≤ 1000", randomChunks(bytes, 3, 1000)],
      ];
      for (const k of [1, 2, 3]) {
        chunkings.push([
          `split ${k} bytes into every length prefix`,
          splitAt(bytes, frameStarts(bytes).map((s) => s + k)),
        ]);
      }
      chunkings.push([
        "split right after every length prefix and after every code byte",
        splitAt(bytes, frameStarts(bytes).flatMap((s) => [s + 4, s + 5])),
      ]);
      for (const [label, chunks] of chunkings) {
        assert.deepEqual(plain(decodeChunks(chunks)), expected, label);
      }
    });
  }

  it("decodes every frame of every capture from one chunk holding all of them", () => {
    const all = concatBytes(
      STREAMS.filter((s) => s.name.endsWith("to-filter")).map((s) => s.bytes),
    );
    const expected = STREAMS.filter((s) => s.name.endsWith("to-filter"))
      .flatMap((s) => plain(decodeChunks([s.bytes])));
    assert.ok(expected.length > 400, `${expected.length} frames`);
    assert.deepEqual(plain(decodeChunks([all])), expected);
  });

  it("returns frames in one chunk as views of that chunk, without copying", () => {
    const chunk = concatBytes([encodeFrame(0x48, fromHex("6d 78 00")), encodeFrame(0x51)]);
    const frames = new FrameDecoder().push(chunk);
    assert.equal(frames.length, 2);
    assert.equal(frames[0]!.payload.buffer, chunk.buffer);
    assert.equal(frames[0]!.payload.byteOffset, 5);
  });

  it("keeps earlier frames intact when later chunks arrive", () => {
    const d = new FrameDecoder();
    const first = d.push(fromHex("00 00 00 04 48 61 62"));
    assert.deepEqual(first, []);
    const [helo] = d.push(fromHex("00 00 00 00 01"));
    const rest = d.push(fromHex("51 00 00 00 01 63"));
    assert.deepEqual(plain([helo!]), [{ code: 0x48, payload: [0x61, 0x62, 0x00] }]);
    assert.deepEqual(plain(rest), [{ code: 0x51, payload: [] }, { code: 0x63, payload: [] }]);
  });

  it("reports buffered bytes and the stream offset of the next frame", () => {
    const d = new FrameDecoder();
    d.push(fromHex("00 00 00 01 41 00 00"));
    assert.equal(d.offset, 5);
    assert.equal(d.buffered, 2);
    d.push(fromHex("00 03 4c 61"));
    assert.equal(d.buffered, 6);
    d.push(fromHex("00"));
    assert.equal(d.offset, 12);
    assert.equal(d.buffered, 0);
  });

  it("accepts an empty chunk anywhere", () => {
    const d = new FrameDecoder();
    assert.deepEqual(d.push(new Uint8Array(0)), []);
    d.push(fromHex("00 00"));
    assert.deepEqual(d.push(new Uint8Array(0)), []);
    assert.equal(d.push(fromHex("00 01 51")).length, 1);
    d.finish();
  });
});

describe("FrameDecoder limits", () => {
  it("defaults to a 1 MiB data limit (DEFAULT_MAX_FRAME_DATA)", () => {
    assert.equal(DEFAULT_MAX_FRAME_DATA, 1024 * 1024);
    const atLimit = frameOfDataSize(0x42, DEFAULT_MAX_FRAME_DATA);
    const [f] = decodeChunks(chunked(atLimit, [65536]));
    assert.equal(f!.payload.length, 1048576);
    assertProtocolError(
      () => new FrameDecoder().push(frameOfDataSize(0x42, DEFAULT_MAX_FRAME_DATA + 1)),
      "oversized",
      /1048577 data bytes, over the limit of 1048576 \(maxDataSize\)/,
    );
  });

  it("accepts a frame exactly at a configured maxDataSize and refuses one byte more", () => {
    const [f] = decodeChunks([frameOfDataSize(0x4c, 100)], 100);
    assert.equal(f!.payload.length, 100);
    const e = assertProtocolError(
      () => new FrameDecoder({ maxDataSize: 100 }).push(frameOfDataSize(0x4c, 101)),
      "oversized",
      /101 data bytes, over the limit of 100 \(maxDataSize\)/,
    );
    assert.equal(e.code, 0x4c);
    assert.equal(e.offset, 0);
  });

  it("accepts libmilter's 65535-byte body chunk with maxDataSize 65535", () => {
    const body = frameOfDataSize(0x42, 65535);
    assert.deepEqual([...body.subarray(0, 5)], [0x00, 0x01, 0x00, 0x00, 0x42]);
    assert.equal(decodeChunks([body], 65535)[0]!.payload.length, 65535);
  });

  it("checks the limit before buffering a frame split after its length", () => {
    const d = new FrameDecoder({ maxDataSize: 10 });
    d.push(fromHex("00"));
    assertProtocolError(() => d.push(fromHex("00 00 0c")), "oversized", /11 data bytes/);
  });

  it("names the stream offset of an oversized frame after good ones", () => {
    const d = new FrameDecoder({ maxDataSize: 10 });
    const e = assertProtocolError(
      () => d.push(concatBytes([encodeFrame(0x63), encodeFrame(0x61), frameOfDataSize(0x62, 11)])),
      "oversized",
      /at offset 10 /,
    );
    assert.equal(e.offset, 10);
  });

  it("refuses a 2 GB length (0x7fffffff) before allocating anything", () => {
    const e = assertProtocolError(
      () => new FrameDecoder().push(fromHex("7f ff ff ff 42 00 00")),
      "oversized",
      /2147483646 data bytes, over the limit of 1048576/,
    );
    assert.equal(e.code, 0x42);
    assertProtocolError(
      () => new FrameDecoder().push(fromHex("ff ff ff ff")),
      "oversized",
      /4294967294 data bytes/,
    );
  });

  it("refuses a zero length", () => {
    const e = assertProtocolError(
      () => new FrameDecoder().push(fromHex("00 00 00 01 63 00 00 00 00 63")),
      "empty",
      /length 0 at offset 5 \(at least 1 is required\)/,
    );
    assert.equal(e.offset, 5);
  });
});

describe("FrameDecoder recognises foreign protocols", () => {
  // [label, bytes, message when read whole, message when read one byte at a time]
  const cases: [string, Uint8Array, RegExp, RegExp][] = [
    [
      "an HTTP request",
      new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      /an HTTP request \("GET "\)/,
      /HTTP/,
    ],
    [
      "a TLS ClientHello",
      fromHex("16 03 01 02 00 01 00 01 fc 03 03 5a 2b 1c 00 11 22 33"),
      /TLS handshake \(ClientHello\)/,
      // Only the 4 length bytes are known when the length is checked.
      /TLS handshake record/,
    ],
    [
      "SMTP EHLO",
      new TextEncoder().encode("EHLO client.example.net\r\n"),
      /SMTP \("EHLO"\)/,
      /SMTP \("EHLO"\)/,
    ],
    [
      "an SMTP greeting",
      new TextEncoder().encode("220 mx.example.net ESMTP\r\n"),
      /SMTP \("220 "\)/,
      /SMTP/,
    ],
    ["SSH", new TextEncoder().encode("SSH-2.0-OpenSSH_9.2\r\n"), /SSH/, /SSH/],
  ];
  for (const [label, bytes, message, byByte] of cases) {
    it(`says the bytes are ${label}, with reason not-milter`, () => {
      const e = assertProtocolError(
        () => new FrameDecoder().push(bytes),
        "not-milter",
        new RegExp(
          `Not a milter frame at offset 0: the length bytes look like .*${message.source}`,
        ),
      );
      assert.equal(e.offset, 0);
      // The same bytes arriving one at a time are recognised too.
      const d = new FrameDecoder();
      assertProtocolError(
        () => {
          for (const b of bytes) d.push(Uint8Array.of(b));
        },
        "not-milter",
        byByte,
      );
    });
  }

  it("sniffForeignProtocol() names TLS, HTTP and SMTP and stays quiet on milter bytes", () => {
    assert.equal(sniffForeignProtocol(fromHex("16 03 03 00 2a 02")), "a TLS handshake record");
    assert.equal(
      sniffForeignProtocol(new TextEncoder().encode("POST /x")),
      'an HTTP request ("POST")',
    );
    assert.equal(sniffForeignProtocol(new TextEncoder().encode("quit")), 'SMTP ("quit")');
    assert.equal(sniffForeignProtocol(new TextEncoder().encode("abcd")), 'text ("abcd")');
    assert.equal(sniffForeignProtocol(fromHex("00 00 00 0d 4f")), undefined);
    assert.equal(sniffForeignProtocol(fromHex("00 01 00 00 42")), undefined);
  });
});

describe("FrameDecoder truncation and sticky failure", () => {
  it("refuses a stream ending inside a payload, naming what arrived", () => {
    const d = new FrameDecoder();
    d.push(fromHex("00 00 00 01 63 00 00 00 0a 4c 53 75 62"));
    const e = assertProtocolError(
      () => d.finish(),
      "truncated",
      /Stream ended inside a frame at offset 5: got 3 of 9 data bytes of a frame \(command 'L' \(0x4c\)\)/,
    );
    assert.equal(e.code, 0x4c);
    assert.equal(e.offset, 5);
  });

  it("refuses a stream ending inside the length prefix", () => {
    const d = new FrameDecoder();
    d.push(fromHex("00 00"));
    assertProtocolError(() => d.finish(), "truncated", /got 2 of the 4 length bytes/);
  });

  it("refuses a stream ending right after the length prefix", () => {
    const d = new FrameDecoder();
    d.push(fromHex("00 00 00 05"));
    assertProtocolError(() => d.finish(), "truncated", /got 0 of 4 data bytes/);
  });

  it("ends cleanly on a frame boundary and on an empty stream", () => {
    new FrameDecoder().finish();
    const d = new FrameDecoder();
    d.push(encodeFrame(0x51));
    d.finish();
  });

  it("keeps failing with the same error after a framing error", () => {
    const d = new FrameDecoder({ maxDataSize: 4 });
    const first = assertProtocolError(() => d.push(frameOfDataSize(0x4c, 5)), "oversized", /5/);
    assert.throws(() => d.push(encodeFrame(0x51)), (e) => e === first);
    assert.throws(() => d.push(new Uint8Array(0)), (e) => e === first);
    assert.throws(() => d.finish(), (e) => e === first);
  });

  it("keeps failing with the same error after a truncated end", () => {
    const d = new FrameDecoder();
    d.push(fromHex("00 00 00"));
    const first = assertProtocolError(() => d.finish(), "truncated", /3 of the 4/);
    assert.throws(() => d.push(encodeFrame(0x51)), (e) => e === first);
    assert.throws(() => d.finish(), (e) => e === first);
  });
});

describe("FrameDecoderStream", () => {
  async function collect(chunks: Uint8Array[], maxDataSize?: number): Promise<Frame[]> {
    const out: Frame[] = [];
    const stream = ReadableStream.from(chunks).pipeThrough(
      new FrameDecoderStream(maxDataSize === undefined ? {} : { maxDataSize }),
    );
    for await (const f of stream) out.push(f);
    return out;
  }

  it("yields the frames of a capture stream fed in 1-byte chunks", async () => {
    const { bytes } = STREAMS[0]!;
    assert.deepEqual(plain(await collect(chunked(bytes, [1]))), plain(decodeChunks([bytes])));
  });

  it("errors the stream with reason truncated at a cut end", async () => {
    await assert.rejects(
      collect([fromHex("00 00 00 01 63 00 00 00 02")]),
      (e) => e instanceof MilterProtocolError && e.reason === "truncated",
    );
  });

  it("errors the stream with reason oversized over maxDataSize", async () => {
    await assert.rejects(
      collect([frameOfDataSize(0x42, 11)], 10),
      (e) => e instanceof MilterProtocolError && e.reason === "oversized",
    );
  });
});

describe("encodeFrame() and describeCode()", () => {
  it("writes the length of code + data, big-endian", () => {
    assert.deepEqual([...encodeFrame(0x63)], [0, 0, 0, 1, 0x63]);
    assert.deepEqual([...encodeFrame(0x48, fromHex("61 00"))], [0, 0, 0, 3, 0x48, 0x61, 0]);
    const big = encodeFrame(0x42, new Uint8Array(0x01_02_03));
    assert.deepEqual([...big.subarray(0, 5)], [0x00, 0x01, 0x02, 0x04, 0x42]);
  });

  it("shows printable codes with their letter and others as hex", () => {
    assert.equal(describeCode(0x79), "'y' (0x79)");
    assert.equal(describeCode(0x2b), "'+' (0x2b)");
    assert.equal(describeCode(0x00), "0x00");
    assert.equal(describeCode(0xff), "0xff");
  });
});
