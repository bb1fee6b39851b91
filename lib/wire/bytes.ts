/**
 * Bounds-checked reading and writing of payload fields: uint16/uint32 big-endian,
 * NUL-terminated strings, raw rests. Every read failure is a {@link MilterProtocolError}
 * naming the field and the offset.
 *
 * @module
 */

import { MilterProtocolError } from "./errors.ts";
import { decodeText, encodeText } from "./text.ts";

/**
 * Reads fields from one frame payload, front to back.
 *
 * @example
 * ```ts
 * import { ByteReader } from "./bytes.ts";
 * import assert from "node:assert/strict";
 * const r = new ByteReader(new Uint8Array([0x61, 0, 0, 7]), 0x4c, "SMFIC_HEADER");
 * assert.equal(r.cstring("name"), "a");
 * assert.equal(r.u16("port"), 7);
 * ```
 */
export class ByteReader {
  /** Current offset in the payload. */
  pos = 0;
  readonly #bytes: Uint8Array;
  readonly #code: number;
  readonly #what: string;

  /**
   * Creates a reader positioned at the start of one payload.
   *
   * @param bytes The payload.
   * @param code The command/response byte (for errors).
   * @param what The spec name of the frame (for errors), e.g. `SMFIC_CONNECT`.
   */
  constructor(bytes: Uint8Array, code: number, what: string) {
    this.#bytes = bytes;
    this.#code = code;
    this.#what = what;
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.#bytes.length - this.pos;
  }

  #fail(message: string): never {
    throw new MilterProtocolError(`Cannot decode ${this.#what}: ${message}`, {
      reason: "malformed",
      code: this.#code,
      offset: this.pos,
    });
  }

  /** Reads one byte. */
  u8(field: string): number {
    if (this.remaining < 1) this.#fail(`${field} missing at offset ${this.pos}`);
    return this.#bytes[this.pos++]!;
  }

  /** Reads a big-endian uint16. */
  u16(field: string): number {
    if (this.remaining < 2) {
      this.#fail(`${field} needs 2 bytes at offset ${this.pos}, ${this.remaining} left`);
    }
    const b = this.#bytes;
    const v = (b[this.pos]! << 8) | b[this.pos + 1]!;
    this.pos += 2;
    return v;
  }

  /** Reads a big-endian uint32. */
  u32(field: string): number {
    if (this.remaining < 4) {
      this.#fail(`${field} needs 4 bytes at offset ${this.pos}, ${this.remaining} left`);
    }
    const b = this.#bytes;
    const p = this.pos;
    const v = ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
    this.pos += 4;
    return v;
  }

  /** Reads a NUL-terminated string (byte-exact text, see `lib/text.ts`). */
  cstring(field: string): string {
    const b = this.#bytes;
    const end = b.indexOf(0, this.pos);
    if (end < 0) this.#fail(`${field} has no terminating NUL (offset ${this.pos})`);
    const s = decodeText(b.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }

  /** Reads NUL-terminated strings until the payload ends. */
  cstrings(field: string): string[] {
    const out: string[] = [];
    while (this.remaining > 0) out.push(this.cstring(field));
    return out;
  }

  /** Returns the rest of the payload (a view, not a copy). */
  rest(): Uint8Array {
    const r = this.#bytes.subarray(this.pos);
    this.pos = this.#bytes.length;
    return r;
  }

  /** Fails unless the whole payload was read. */
  end(): void {
    if (this.remaining > 0) {
      this.#fail(`${this.remaining} bytes left over at offset ${this.pos}`);
    }
  }
}

/** A field of a payload to write: a number of a given width, a NUL-string, or raw bytes. */
export type Field =
  | { readonly u8: number }
  | { readonly u16: number }
  | { readonly u32: number }
  | { readonly cstring: string }
  | { readonly raw: Uint8Array };

/**
 * Builds one complete frame (length, code, payload) from fields.
 *
 * @param code The command/response byte.
 * @param fields Payload fields in order.
 * @returns The bytes on the wire.
 * @throws {TypeError} when a string holds a NUL byte.
 *
 * @example
 * ```ts
 * import { buildFrame } from "./bytes.ts";
 * import assert from "node:assert/strict";
 * const f = buildFrame(0x68, [{ cstring: "X-A" }, { cstring: "1" }]);
 * assert.deepEqual([...f.subarray(0, 5)], [0, 0, 0, 7, 0x68]);
 * ```
 */
export function buildFrame(code: number, fields: readonly Field[]): Uint8Array {
  // One pass to size the frame (non-ASCII strings are encoded here, ASCII ones are written
  // directly below), then a single allocation: allocations dominate small frames in Deno.
  const texts: (Uint8Array | undefined)[] = [];
  let size = 0;
  for (const f of fields) {
    if ("u8" in f) size += 1;
    else if ("u16" in f) {
      checkInt(f.u16, 0xffff);
      size += 2;
    } else if ("u32" in f) {
      checkInt(f.u32, 0xffffffff);
      size += 4;
    } else if ("cstring" in f) {
      const encoded = isAscii(f.cstring) ? undefined : encodeText(f.cstring);
      if (encoded === undefined ? f.cstring.includes("\0") : encoded.includes(0)) {
        throw new TypeError(`String contains a NUL byte: ${JSON.stringify(f.cstring)}`);
      }
      texts.push(encoded);
      size += (encoded === undefined ? f.cstring.length : encoded.length) + 1;
    } else {
      size += f.raw.length;
    }
  }
  const out = new Uint8Array(5 + size);
  const len = size + 1;
  out[0] = len >>> 24;
  out[1] = (len >>> 16) & 0xff;
  out[2] = (len >>> 8) & 0xff;
  out[3] = len & 0xff;
  out[4] = code;
  let p = 5;
  let t = 0;
  for (const f of fields) {
    if ("u8" in f) out[p++] = f.u8 & 0xff;
    else if ("u16" in f) {
      out[p++] = f.u16 >>> 8;
      out[p++] = f.u16 & 0xff;
    } else if ("u32" in f) {
      out[p++] = f.u32 >>> 24;
      out[p++] = (f.u32 >>> 16) & 0xff;
      out[p++] = (f.u32 >>> 8) & 0xff;
      out[p++] = f.u32 & 0xff;
    } else if ("cstring" in f) {
      const encoded = texts[t++];
      if (encoded === undefined) {
        const s = f.cstring;
        for (let i = 0; i < s.length; i++) out[p++] = s.charCodeAt(i);
      } else {
        out.set(encoded, p);
        p += encoded.length;
      }
      out[p++] = 0;
    } else {
      out.set(f.raw, p);
      p += f.raw.length;
    }
  }
  return out;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return false;
  return true;
}

function checkInt(v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`Value ${v} does not fit an unsigned field of max ${max}`);
  }
}
