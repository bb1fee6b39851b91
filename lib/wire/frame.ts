/**
 * Framing: a 4-byte big-endian length (command byte + data), the command byte, the data.
 * {@link FrameDecoder} is the synchronous core (used by the proxy tap and the dumper);
 * {@link FrameDecoderStream} puts it in a `TransformStream`.
 *
 * @module
 */

import { concatBytes } from "./concat.ts";
import { MilterProtocolError } from "./errors.ts";
import type { Frame } from "./types.ts";
import { DEFAULT_MAX_FRAME_DATA } from "./constants.ts";

/** Options of the frame reader. */
export interface FrameDecoderOptions {
  /**
   * Largest accepted data size of a frame (length field − 1), in bytes.
   * Default 1 MiB ({@link DEFAULT_MAX_FRAME_DATA}); libmilter itself accepts 65535.
   */
  readonly maxDataSize?: number;
}

const EMPTY = new Uint8Array(0);

/**
 * Names what the bytes at the start of a "frame" really are, when they are not milter.
 *
 * @param head The first bytes (up to 8) where a length was expected.
 * @returns A description such as `"an HTTP request (GET )"`, or `undefined`.
 *
 * @example
 * ```ts
 * import { sniffForeignProtocol } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const get = new TextEncoder().encode("GET / HTTP/1.1");
 * assert.equal(sniffForeignProtocol(get), 'an HTTP request ("GET ")');
 * ```
 */
export function sniffForeignProtocol(head: Uint8Array): string | undefined {
  if (head.length >= 3 && head[0] === 0x16 && head[1] === 0x03 && head[2]! <= 0x04) {
    return head.length >= 6 && head[5] === 0x01
      ? "a TLS handshake (ClientHello)"
      : "a TLS handshake record";
  }
  const text = String.fromCharCode(...head.subarray(0, 4));
  if (/^(GET |POST|HEAD|PUT |DELE|OPTI|PATC|CONN|PRI )$/.test(text)) {
    return `an HTTP request (${JSON.stringify(text)})`;
  }
  if (/^(EHLO|HELO|MAIL|RCPT|QUIT|RSET|NOOP|220[ -])$/i.test(text)) {
    return `SMTP (${JSON.stringify(text)})`;
  }
  if (/^SSH-$/.test(text)) return "SSH";
  if (head.length >= 4 && head.subarray(0, 4).every((b) => b >= 0x20 && b < 0x7f)) {
    return `text (${JSON.stringify(text)})`;
  }
  return undefined;
}

/**
 * Splits a byte stream into frames, whatever the chunking: one byte at a time, many frames in
 * one chunk, or a length prefix split across chunks. Frames lying inside one chunk are
 * returned as views without copying.
 *
 * @example
 * ```ts
 * import { FrameDecoder } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const d = new FrameDecoder();
 * assert.deepEqual(d.push(new Uint8Array([0, 0, 0])), []);
 * const frames = d.push(new Uint8Array([1, 0x51]));
 * assert.equal(frames[0]?.code, 0x51);
 * d.finish();
 * ```
 */
export class FrameDecoder {
  readonly #max: number;
  /** Length prefix being collected when it arrived split (0..4 bytes filled). */
  readonly #head = new Uint8Array(4);
  #headFill = 0;
  /** Code + data of the frame being collected, allocated once its length is known. */
  #body: Uint8Array | undefined;
  #bodyFill = 0;
  #consumed = 0;
  #failed: MilterProtocolError | undefined;

  /**
   * Creates a decoder with no bytes buffered.
   *
   * @param options The data-size limit.
   */
  constructor(options: FrameDecoderOptions = {}) {
    this.#max = options.maxDataSize ?? DEFAULT_MAX_FRAME_DATA;
  }

  /** Bytes received but not yet part of a complete frame. */
  get buffered(): number {
    return this.#body ? 4 + this.#bodyFill : this.#headFill;
  }

  /** Total bytes turned into frames so far (the stream offset of the next frame). */
  get offset(): number {
    return this.#consumed;
  }

  /**
   * Adds bytes and returns the frames they complete.
   *
   * @param chunk The next bytes of the stream. Frames may be views into it: do not reuse it.
   * @returns Complete frames, in order.
   * @throws {MilterProtocolError} for a zero, oversized or non-milter length; every later
   * call throws the same error.
   */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failed) throw this.#failed;
    const frames: Frame[] = [];
    const n = chunk.length;
    let p = 0;
    while (p < n) {
      const body = this.#body;
      if (body !== undefined) {
        const take = Math.min(body.length - this.#bodyFill, n - p);
        body.set(chunk.subarray(p, p + take), this.#bodyFill);
        this.#bodyFill += take;
        p += take;
        if (this.#bodyFill === body.length) {
          frames.push({ code: body[0]!, payload: body.subarray(1) });
          this.#consumed += 4 + body.length;
          this.#body = undefined;
          this.#bodyFill = 0;
        }
        continue;
      }
      if (this.#headFill > 0 || n - p < 4) {
        const take = Math.min(4 - this.#headFill, n - p);
        this.#head.set(chunk.subarray(p, p + take), this.#headFill);
        this.#headFill += take;
        p += take;
        if (this.#headFill < 4) break;
        const h = this.#head;
        const len = ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
        this.#check(len, () => concatBytes([h, chunk.subarray(p, p + 4)]));
        this.#headFill = 0;
        this.#body = new Uint8Array(len);
        continue;
      }
      const len = ((chunk[p]! << 24) | (chunk[p + 1]! << 16) | (chunk[p + 2]! << 8) |
        chunk[p + 3]!) >>> 0;
      this.#check(len, () => chunk.subarray(p, p + 8));
      if (n - p - 4 >= len) {
        frames.push({ code: chunk[p + 4]!, payload: chunk.subarray(p + 5, p + 4 + len) });
        this.#consumed += 4 + len;
        p += 4 + len;
      } else {
        this.#body = new Uint8Array(len);
        p += 4;
      }
    }
    return frames;
  }

  #check(len: number, head: () => Uint8Array): void {
    if (len === 0 || len - 1 > this.#max) {
      this.#failed = this.#lengthError(len, head());
      throw this.#failed;
    }
  }

  /**
   * Declares the end of the stream.
   *
   * @throws {MilterProtocolError} with reason `truncated` when bytes of an incomplete frame
   * remain.
   */
  finish(): void {
    if (this.#failed) throw this.#failed;
    if (this.#body === undefined && this.#headFill === 0) return;
    const body = this.#body;
    const detail = body === undefined
      ? `${this.#headFill} of the 4 length bytes`
      : `${Math.max(0, this.#bodyFill - 1)} of ${body.length - 1} data bytes of a frame` +
        (this.#bodyFill > 0 ? ` (command ${describeCode(body[0]!)})` : "");
    this.#failed = new MilterProtocolError(
      `Stream ended inside a frame at offset ${this.#consumed}: got ${detail}`,
      {
        reason: "truncated",
        offset: this.#consumed,
        ...(body !== undefined && this.#bodyFill > 0 ? { code: body[0]! } : {}),
      },
    );
    throw this.#failed;
  }

  #lengthError(len: number, head: Uint8Array): MilterProtocolError {
    const at = this.#consumed;
    const foreign = sniffForeignProtocol(head);
    if (foreign !== undefined && (len === 0 || len - 1 > this.#max)) {
      return new MilterProtocolError(
        `Not a milter frame at offset ${at}: the length bytes look like ${foreign}`,
        { reason: "not-milter", offset: at },
      );
    }
    if (len === 0) {
      return new MilterProtocolError(`Frame of length 0 at offset ${at} (at least 1 is required)`, {
        reason: "empty",
        offset: at,
      });
    }
    return new MilterProtocolError(
      `Frame at offset ${at} carries ${
        len - 1
      } data bytes, over the limit of ${this.#max} (maxDataSize)`,
      { reason: "oversized", offset: at, code: head[4] },
    );
  }
}

/**
 * Shows a command/response byte as `'C' (0x43)`.
 *
 * @param code The byte.
 * @returns A printable description.
 *
 * @example
 * ```ts
 * import { describeCode } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(describeCode(0x43), "'C' (0x43)");
 * ```
 */
export function describeCode(code: number): string {
  const hex = `0x${code.toString(16).padStart(2, "0")}`;
  return code >= 0x21 && code < 0x7f ? `'${String.fromCharCode(code)}' (${hex})` : hex;
}

/**
 * A `TransformStream` from bytes to {@link Frame}s. Errors the stream with a
 * {@link MilterProtocolError} on bad framing or a truncated end.
 *
 * @example
 * ```ts
 * import { FrameDecoderStream } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const frames = ReadableStream.from([new Uint8Array([0, 0, 0, 1, 0x63])])
 *   .pipeThrough(new FrameDecoderStream());
 * for await (const f of frames) assert.equal(f.code, 0x63);
 * ```
 */
export class FrameDecoderStream extends TransformStream<Uint8Array, Frame> {
  /**
   * Creates the stream around a fresh {@link FrameDecoder}.
   *
   * @param options The data-size limit.
   */
  constructor(options: FrameDecoderOptions = {}) {
    const decoder = new FrameDecoder(options);
    super({
      transform(chunk, controller) {
        for (const f of decoder.push(chunk)) controller.enqueue(f);
      },
      flush() {
        decoder.finish();
      },
    });
  }
}

/**
 * Encodes one frame.
 *
 * @param code Command or response byte.
 * @param payload Data (default none).
 * @returns Length prefix, code and payload.
 *
 * @example
 * ```ts
 * import { encodeFrame } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...encodeFrame(0x63)], [0, 0, 0, 1, 0x63]);
 * ```
 */
export function encodeFrame(code: number, payload: Uint8Array = EMPTY): Uint8Array {
  const out = new Uint8Array(5 + payload.length);
  const len = payload.length + 1;
  out[0] = len >>> 24;
  out[1] = (len >>> 16) & 0xff;
  out[2] = (len >>> 8) & 0xff;
  out[3] = len & 0xff;
  out[4] = code;
  out.set(payload, 5);
  return out;
}
