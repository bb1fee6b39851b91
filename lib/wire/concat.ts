/**
 * Joining byte arrays: the one copy of this helper every layer uses (internal, not exported).
 *
 * @module
 */

/**
 * Joins byte arrays into one (returns the only part itself when there is one).
 *
 * @param parts The arrays, in order.
 * @returns Their concatenation.
 */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
