/**
 * Byte-exact text. Milter strings are bytes, not UTF-8: 8-bit headers and SMTPUTF8 addresses
 * both occur. {@link decodeText} reads valid UTF-8 as text and maps every byte that is not part
 * of valid UTF-8 to a lone surrogate U+DC80..U+DCFF (Python's "surrogateescape");
 * {@link encodeText} maps those back. So `encodeText(decodeText(b))` equals `b` for any bytes,
 * and ordinary mail reads as ordinary strings.
 *
 * @module
 */

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/**
 * Decodes bytes to a string, losslessly.
 *
 * @param bytes Any bytes.
 * @returns The text; bytes outside valid UTF-8 appear as U+DC80 + byte − 0x80.
 *
 * @example
 * ```ts
 * import { decodeText, encodeText } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const latin1 = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // "café" in ISO-8859-1
 * assert.deepEqual(encodeText(decodeText(latin1)), latin1);
 * ```
 */
export function decodeText(bytes: Uint8Array): string {
  const n = bytes.length;
  if (n < 64) {
    // Short ASCII (most milter strings): a plain loop beats both TextDecoder and
    // String.fromCharCode(...spread) in Deno and Bun.
    let s = "";
    for (let i = 0; i < n; i++) {
      const b = bytes[i]!;
      if (b >= 0x80) return decodeUtf8(bytes);
      s += String.fromCharCode(b);
    }
    return s;
  }
  return decodeUtf8(bytes);
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return decodeSlow(bytes);
  }
}

function decodeSlow(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  const n = bytes.length;
  while (i < n) {
    const b = bytes[i]!;
    if (b < 0x80) {
      out += String.fromCharCode(b);
      i++;
      continue;
    }
    let need = 0;
    let min = 0;
    let cp = 0;
    if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
      cp = b & 0x1f;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      cp = b & 0x0f;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      cp = b & 0x07;
      min = 0x10000;
    }
    let ok = need > 0 && i + need < n;
    if (ok) {
      for (let k = 1; k <= need; k++) {
        const c = bytes[i + k];
        if (c === undefined || (c & 0xc0) !== 0x80) {
          ok = false;
          break;
        }
        cp = (cp << 6) | (c & 0x3f);
      }
    }
    if (ok && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
    if (ok) {
      out += String.fromCodePoint(cp);
      i += need + 1;
    } else {
      out += String.fromCharCode(0xdc00 + b);
      i++;
    }
  }
  return out;
}

/**
 * Encodes a string to bytes, the inverse of {@link decodeText}: lone surrogates
 * U+DC80..U+DCFF become the single bytes 0x80..0xFF; everything else is UTF-8.
 *
 * @param text A string, typically one that came from {@link decodeText}.
 * @returns The bytes.
 *
 * @example
 * ```ts
 * import { encodeText } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * assert.deepEqual(encodeText("Hé"), new Uint8Array([0x48, 0xc3, 0xa9]));
 * ```
 */
export function encodeText(text: string): Uint8Array {
  if (text.isWellFormed()) return encoder.encode(text);
  const parts: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        parts.push(
          0xf0 | (cp >> 18),
          0x80 | ((cp >> 12) & 0x3f),
          0x80 | ((cp >> 6) & 0x3f),
          0x80 | (cp & 0x3f),
        );
        i++;
        continue;
      }
      pushUtf8(parts, 0xfffd);
    } else if (c >= 0xdc80 && c <= 0xdcff) {
      parts.push(c - 0xdc00);
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      pushUtf8(parts, 0xfffd);
    } else {
      pushUtf8(parts, c);
    }
  }
  return Uint8Array.from(parts);
}

function pushUtf8(out: number[], c: number): void {
  if (c < 0x80) out.push(c);
  else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
  else out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
}

/**
 * Shows a string from {@link decodeText} for humans: escaped bytes become `\xNN`.
 *
 * @param text A byte-exact string.
 * @returns Printable text.
 *
 * @example
 * ```ts
 * import { decodeText } from "@milterkit/milterkit";
 * import { displayText } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(displayText(decodeText(new Uint8Array([0x41, 0xff]))), "A\\xff");
 * ```
 */
export function displayText(text: string): string {
  if (text.isWellFormed()) return text;
  return text.replace(
    // The `u` flag makes the class match lone surrogates only, never the low half of a pair
    // (U+1F480 is D83D DC80 in UTF-16).
    /[\udc80-\udcff]/gu,
    (c) => `\\x${(c.charCodeAt(0) - 0xdc00).toString(16).padStart(2, "0")}`,
  );
}
