/**
 * In-memory byte streams for tests: a connected pair of duplexes, and chunking helpers.
 *
 * @module
 */

import type { Duplex } from "../wire/types.ts";

/**
 * Two connected in-memory {@link Duplex} ends: what one writes, the other reads. Closing a
 * writable ends the other side's readable, like a socket's half-close.
 *
 * @param highWaterMark Bytes each direction buffers before backpressure (default 64 KiB).
 * @returns `[a, b]`: `a.writable` feeds `b.readable` and `b.writable` feeds `a.readable`.
 *
 * @example
 * ```ts
 * import { duplexPair } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 * const [a, b] = duplexPair();
 * const w = a.writable.getWriter();
 * void w.write(new Uint8Array([1, 2, 3]));
 * const { value } = await b.readable.getReader().read();
 * assert.deepEqual(value, new Uint8Array([1, 2, 3]));
 * ```
 */
export function duplexPair(highWaterMark = 64 * 1024): [Duplex, Duplex] {
  const strategy = new ByteLengthQueuingStrategy({ highWaterMark });
  const ab = new TransformStream<Uint8Array, Uint8Array>(undefined, strategy, strategy);
  const ba = new TransformStream<Uint8Array, Uint8Array>(undefined, strategy, strategy);
  return [
    { readable: ba.readable, writable: ab.writable },
    { readable: ab.readable, writable: ba.writable },
  ];
}

/**
 * Splits bytes into chunks at the given sizes, cycling through them: `[1]` gives one-byte
 * chunks, `[3, 100]` alternates. Useful to prove a decoder does not depend on chunking.
 *
 * @param bytes The bytes to split.
 * @param sizes Chunk sizes to cycle through (each ≥ 1).
 * @returns The chunks (copies), whose concatenation equals `bytes`.
 *
 * @example
 * ```ts
 * import { chunked } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 * assert.equal(chunked(new Uint8Array(10), [3]).length, 4);
 * ```
 */
export function chunked(bytes: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let p = 0;
  let i = 0;
  while (p < bytes.length) {
    const size = Math.max(1, sizes[i++ % sizes.length] ?? 1);
    out.push(bytes.slice(p, p + size));
    p += size;
  }
  return out;
}
