/**
 * Recognises what a file holds from its first bytes, so that `dump` reads only what it can
 * read and refuses everything else (a README, an empty file, random bytes, zeros, a damaged
 * capture header) with one line instead of inventing a session.
 *
 * @module
 */

import { SMFIC, SMFIR } from "../../wire/constants.ts";
import { CaptureFormatError, captureKind } from "./pcap.ts";

/** What {@link sniffInput} recognised. */
export type InputKind = "pcap" | "pcapng" | "recording" | "segment-log" | "stream";

/** How many leading bytes {@link sniffInput} wants to see (more are ignored). */
export const SNIFF_BYTES = 64 * 1024;

const CODES = new Set<number>([...Object.values(SMFIC), ...Object.values(SMFIR)]);
/** Largest frame length believed when sniffing a byte stream. */
const MAX_SNIFF_FRAME = 64 * 1024 * 1024;

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
}

/**
 * Tells whether bytes start a milter byte stream: an OPTNEG frame (both sides of a session
 * start with one), or at least three frames with known codes (or the whole input, when it is
 * shorter, framed exactly).
 *
 * @param head The first bytes of the stream.
 * @param complete True when `head` is the whole input.
 * @returns Whether it reads as milter frames.
 *
 * @example
 * ```ts
 * import { looksLikeMilterStream } from "./sniff.ts";
 * import assert from "node:assert/strict";
 * assert.ok(looksLikeMilterStream(new Uint8Array([0, 0, 0, 1, 0x63]), true));
 * assert.ok(!looksLikeMilterStream(new Uint8Array(16), true));
 * ```
 */
export function looksLikeMilterStream(head: Uint8Array, complete: boolean): boolean {
  let p = 0;
  let frames = 0;
  while (p + 5 <= head.length && frames < 3) {
    const len = ((head[p]! << 24) | (head[p + 1]! << 16) | (head[p + 2]! << 8) | head[p + 3]!) >>>
      0;
    if (len === 0 || len > MAX_SNIFF_FRAME || !CODES.has(head[p + 4]!)) return false;
    if (frames === 0 && head[p + 4] === SMFIC.OPTNEG && len === 13) {
      return head.length >= 9 && head[5] === 0 && head[6] === 0 && head[7] === 0 &&
        head[8]! >= 2 && head[8]! <= 6;
    }
    p += 4 + len;
    frames++;
  }
  if (frames >= 3) return true;
  return complete && frames > 0 && p === head.length;
}

/**
 * Recognises the kind of input from its first bytes.
 *
 * @param head The first bytes of the file ({@link SNIFF_BYTES} are enough).
 * @param size The file's total size in bytes.
 * @returns The kind of input.
 * @throws {CaptureFormatError} with a one-line reason when it is none of them.
 *
 * @example
 * ```ts
 * import { sniffInput } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * const head = new TextEncoder().encode('{"format":"milterkit-recording","version":1}\n');
 * assert.equal(sniffInput(head, head.length), "recording");
 * assert.throws(() => sniffInput(new Uint8Array(0), 0), /empty/);
 * ```
 */
export function sniffInput(head: Uint8Array, size: number): InputKind {
  if (size === 0) throw new CaptureFormatError("The file is empty", 0);
  const kind = captureKind(head);
  if (kind !== undefined) return kind;
  const text = new TextDecoder().decode(head.subarray(0, 4096));
  const line = /^\s*(\{[^\n]*)/.exec(text)?.[1];
  if (line !== undefined) {
    if (/"format"\s*:\s*"milterkit-recording"/.test(line)) return "recording";
    if (/"dir"\s*:\s*"to-(filter|mta)"/.test(line)) return "segment-log";
  }
  if (looksLikeMilterStream(head, head.length >= size)) return "stream";
  const what = head.every((b) => b === 0)
    ? "only zero bytes"
    : /^[\t\n\r\x20-\x7e\u00a0-\uffff]*$/.test(text.slice(0, 512).replace(/\ufffd/g, "\x00"))
    ? "text"
    : `starts with ${hex(head.subarray(0, 8))}`;
  throw new CaptureFormatError(
    `Not a capture, recording or milter byte stream (${what}${size < 24 ? `, ${size} bytes` : ""})`,
    0,
  );
}
