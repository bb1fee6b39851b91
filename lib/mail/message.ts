/**
 * The message model of the MTA side: an RFC 5322 message as header fields (exactly what an MTA
 * passes to a filter) plus body bytes with CRLF line ends (exactly what it sends in BODY
 * frames), and back.
 *
 * @module
 */

import { decodeText, encodeText } from "../wire/text.ts";

/**
 * One header field as the MTA holds it.
 *
 * @example
 * ```ts
 * import type { MessageHeader } from "@milterkit/milterkit/mta";
 * const h: MessageHeader = { name: "To", value: " a@example.com,\n\tb@example.com" };
 * ```
 */
export interface MessageHeader {
  /** Field name without the colon (whitespace before the colon removed, as Postfix does). */
  readonly name: string;
  /**
   * The raw value: every byte after the colon, including the usual leading space, folded lines
   * joined with a bare LF followed by their original whitespace, no CR, no final newline
   * (byte-exact string, see `lib/text.ts`). `MilterClient.header()` removes the one leading
   * space the MTAs remove.
   */
  readonly value: string;
}

/**
 * A parsed message.
 *
 * @example
 * ```ts
 * import type { ParsedMessage } from "@milterkit/milterkit/mta";
 * const m: ParsedMessage = { headers: [{ name: "Subject", value: " hi" }], body: new Uint8Array() };
 * ```
 */
export interface ParsedMessage {
  /** Header fields in message order. */
  readonly headers: readonly MessageHeader[];
  /** Body bytes after the empty line, every line ended by CRLF (empty when there is none). */
  readonly body: Uint8Array;
}

const LF = 0x0a;
const CR = 0x0d;
const HEADER_NAME = /^([\x21-\x39\x3b-\x7e]+)[ \t]*:/;

/**
 * Rewrites line ends to CRLF the way Postfix stores and sends a body: a bare LF becomes CRLF,
 * CRLF stays, and a last line without a newline gets CRLF appended.
 *
 * @param bytes Body bytes with any line ends.
 * @returns Bytes with CRLF line ends (the input itself when already canonical).
 *
 * @example
 * ```ts
 * import { toCrlf } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * const out = toCrlf(new TextEncoder().encode("a\nb"));
 * assert.equal(new TextDecoder().decode(out), "a\r\nb\r\n");
 * ```
 */
export function toCrlf(bytes: Uint8Array): Uint8Array {
  let extra = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === LF && (i === 0 || bytes[i - 1] !== CR)) extra++;
  }
  const needsEnd = bytes.length > 0 && bytes[bytes.length - 1] !== LF;
  if (extra === 0 && !needsEnd) return bytes;
  const out = new Uint8Array(bytes.length + extra + (needsEnd ? 2 : 0));
  let o = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === LF && (i === 0 || bytes[i - 1] !== CR)) out[o++] = CR;
    out[o++] = b;
  }
  if (needsEnd) {
    out[o++] = CR;
    out[o++] = LF;
  }
  return out;
}

/**
 * Parses header field lines (no body) into fields; a line that is neither a field nor a
 * continuation ends the header section.
 *
 * @returns The fields and the offset where the header section ended (start of the line that
 * ended it, or after the empty line).
 */
function parseHeaderSection(bytes: Uint8Array): { headers: MessageHeader[]; bodyStart: number } {
  const headers: { name: string; value: string }[] = [];
  let p = 0;
  while (p < bytes.length) {
    let eol = bytes.indexOf(LF, p);
    const next = eol < 0 ? bytes.length : eol + 1;
    if (eol < 0) eol = bytes.length;
    const end = eol > p && bytes[eol - 1] === CR ? eol - 1 : eol;
    if (end === p) return { headers, bodyStart: next }; // the empty line
    const line = decodeText(bytes.subarray(p, end));
    const first = bytes[p];
    if ((first === 0x20 || first === 0x09) && headers.length > 0) {
      headers[headers.length - 1]!.value += `\n${line}`;
    } else {
      const m = HEADER_NAME.exec(line);
      if (m === null) return { headers, bodyStart: p };
      headers.push({ name: m[1]!, value: line.slice(m[0].length) });
    }
    p = next;
  }
  return { headers, bodyStart: bytes.length };
}

/**
 * Splits an RFC 5322 message into header fields and body, as an MTA hands them to a filter:
 * CRLF or LF line ends accepted, folded fields joined with LF, the body from the line after the
 * first empty line with CRLF line ends. A line in the header section that is not a field (no
 * colon) starts the body, as in Postfix. Expects dot-unstuffed content (no SMTP `.` line).
 *
 * @param bytes The message.
 * @returns Headers and body.
 *
 * @example
 * ```ts
 * import { parseMessage } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * const m = parseMessage(new TextEncoder().encode("Subject: hi\nTo: a,\n b\n\nbody\n"));
 * assert.deepEqual(m.headers, [{ name: "Subject", value: " hi" }, { name: "To", value: " a,\n b" }]);
 * assert.equal(new TextDecoder().decode(m.body), "body\r\n");
 * ```
 */
export function parseMessage(bytes: Uint8Array): ParsedMessage {
  const { headers, bodyStart } = parseHeaderSection(bytes);
  return { headers, body: toCrlf(bytes.subarray(bodyStart)) };
}

/**
 * Parses one header field given as text (`"Received: from a\n\tby b"`), e.g. an MTA's own
 * trace header.
 *
 * @param text The field, folds separated by LF or CRLF.
 * @returns The field.
 * @throws {TypeError} when the text does not start with a field name and a colon.
 *
 * @example
 * ```ts
 * import { parseHeaderField } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseHeaderField("X-A: 1"), { name: "X-A", value: " 1" });
 * ```
 */
export function parseHeaderField(text: string): MessageHeader {
  const { headers } = parseHeaderSection(encodeText(text.replace(/\r?\n$/, "")));
  if (headers.length !== 1) {
    throw new TypeError(`Not a single header field: ${JSON.stringify(text.slice(0, 60))}`);
  }
  return headers[0]!;
}

/**
 * Formats one header field as it appears in the message: `Name:value` with LF folds turned
 * into CRLF, plus the final CRLF.
 *
 * @param header The field (raw value, including its leading space).
 * @returns The text of the field.
 *
 * @example
 * ```ts
 * import { formatHeaderField } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.equal(formatHeaderField({ name: "To", value: " a,\n b" }), "To: a,\r\n b\r\n");
 * ```
 */
export function formatHeaderField(header: MessageHeader): string {
  return `${header.name}:${header.value.replace(/\r?\n/g, "\r\n")}\r\n`;
}

/**
 * Serialises a message back to bytes with CRLF line ends: the header fields, an empty line,
 * the body.
 *
 * @param message Headers and body.
 * @returns The RFC 5322 bytes.
 *
 * @example
 * ```ts
 * import { parseMessage, serializeMessage } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * const bytes = new TextEncoder().encode("Subject: hi\r\n\r\nbody\r\n");
 * assert.deepEqual(serializeMessage(parseMessage(bytes)), bytes);
 * ```
 */
export function serializeMessage(message: ParsedMessage): Uint8Array {
  const head = encodeText(message.headers.map(formatHeaderField).join("") + "\r\n");
  const out = new Uint8Array(head.length + message.body.length);
  out.set(head);
  out.set(message.body, head.length);
  return out;
}
