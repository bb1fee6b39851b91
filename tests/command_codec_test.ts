/**
 * decodeCommand/encodeCommand against the byte examples of milter-protocol.md §10 (both
 * directions, exact hex) and the typed errors for payloads that do not fit the layout.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { decodeCommand, encodeCommand } from "../lib/wire/command_codec.ts";
import { MilterProtocolError } from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import type { Command } from "../lib/wire/types.ts";
import { fromHex, toHex } from "./helpers/captures.ts";

/** Decodes one complete frame given as hex. */
function decodeHex(hex: string): Command {
  const d = new FrameDecoder();
  const frames = d.push(fromHex(hex));
  d.finish();
  assert.equal(frames.length, 1);
  return decodeCommand(frames[0]!);
}

/** Decodes a payload given as text with `\0`s for command `code`. */
function decodePayload(code: string, payload: string | Uint8Array): Command {
  const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  return decodeCommand({ code: code.charCodeAt(0), payload: bytes });
}

function assertMalformed(fn: () => unknown, message: RegExp, offset?: number): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof MilterProtocolError, String(e));
    assert.equal(e.reason, "malformed");
    assert.match(e.message, message);
    if (offset !== undefined) assert.equal(e.offset, offset);
    return true;
  });
}

/** [name, hex from §10, decoded command] */
const VECTORS: [string, string, Command][] = [
  [
    "§10.1 OPTNEG v6 from Postfix/Sendmail",
    "00 00 00 0D 4F 00 00 00 06 00 00 01 FF 00 1F FF FF",
    { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff },
  ],
  [
    "OPTNEG with bytes after the 12 fixed ones",
    "00 00 00 0F 4F 00 00 00 06 00 00 01 FF 00 1F FF FF AB CD",
    {
      type: "optneg",
      version: 6,
      actions: 0x1ff,
      protocol: 0x1fffff,
      extra: Uint8Array.of(0xab, 0xcd),
    },
  ],
  [
    "§10.3 D C with j and {daemon_name}",
    "00 00 00 30 44 43 6A 00 6D 78 2E 65 78 61 6D 70 6C 65 2E 63 6F 6D 00 " +
    "7B 64 61 65 6D 6F 6E 5F 6E 61 6D 65 7D 00 6D 78 2E 65 78 61 6D 70 6C 65 2E 63 6F 6D 00",
    {
      type: "macro",
      stage: "C",
      macros: [["j", "mx.example.com"], ["{daemon_name}", "mx.example.com"]],
    },
  ],
  ["§10.3 empty D H before HELO", "00 00 00 02 44 48", { type: "macro", stage: "H", macros: [] }],
  [
    "§10.3 Postfix per-header D L with i only",
    "00 00 00 10 44 4C 69 00 37 41 36 39 42 32 30 43 30 31 38 00",
    { type: "macro", stage: "L", macros: [["i", "7A69B20C018"]] },
  ],
  [
    "D M with an empty value (null sender's {mail_addr})",
    "00 00 00 0F 44 4D 7B 6D 61 69 6C 5F 61 64 64 72 7D 00 00",
    { type: "macro", stage: "M", macros: [["{mail_addr}", ""]] },
  ],
  [
    "§10.4 CONNECT IPv4 client.example.net 192.0.2.10:49152",
    "00 00 00 22 43 63 6C 69 65 6E 74 2E 65 78 61 6D 70 6C 65 2E 6E 65 74 00 34 C0 00 " +
    "31 39 32 2E 30 2E 32 2E 31 30 00",
    {
      type: "connect",
      hostname: "client.example.net",
      family: "inet",
      port: 49152,
      address: "192.0.2.10",
    },
  ],
  [
    "§10.4 CONNECT Postfix unresolved loopback",
    "00 00 00 1A 43 5B 31 32 37 2E 30 2E 30 2E 31 5D 00 34 9D 7A 31 32 37 2E 30 2E 30 2E 31 00",
    { type: "connect", hostname: "[127.0.0.1]", family: "inet", port: 40314, address: "127.0.0.1" },
  ],
  [
    "§10.4 CONNECT Sendmail IPv6 with the IPv6: prefix",
    "00 00 00 28 43 5B 49 50 76 36 3A 32 30 30 31 3A 64 62 38 3A 3A 35 5D 00 36 00 19 " +
    "49 50 76 36 3A 32 30 30 31 3A 64 62 38 3A 3A 35 00",
    {
      type: "connect",
      hostname: "[IPv6:2001:db8::5]",
      family: "inet6",
      port: 25,
      address: "2001:db8::5",
      rawAddress: "IPv6:2001:db8::5",
    },
  ],
  [
    "CONNECT IPv6 without prefix (Postfix)",
    "00 00 00 0A 43 68 00 36 00 19 3A 3A 31 00",
    { type: "connect", hostname: "h", family: "inet6", port: 25, address: "::1" },
  ],
  [
    "§10.4 CONNECT unknown family",
    "00 00 00 0C 43 6C 6F 63 61 6C 68 6F 73 74 00 55",
    { type: "connect", hostname: "localhost", family: "unknown" },
  ],
  [
    "CONNECT unix socket",
    "00 00 00 10 43 6C 6F 63 61 6C 00 4C 00 00 2F 73 6F 63 6B 00",
    { type: "connect", hostname: "local", family: "unix", port: 0, address: "/sock" },
  ],
  [
    "HELO",
    "00 00 00 14 48 63 6C 69 65 6E 74 2E 65 78 61 6D 70 6C 65 2E 6E 65 74 00",
    { type: "helo", name: "client.example.net" },
  ],
  [
    "§10.5 MAIL with SIZE and BODY",
    "00 00 00 2C 4D 3C 61 6C 69 63 65 40 65 78 61 6D 70 6C 65 2E 6E 65 74 3E 00 " +
    "53 49 5A 45 3D 33 30 30 00 42 4F 44 59 3D 38 42 49 54 4D 49 4D 45 00",
    { type: "mail", sender: "<alice@example.net>", args: ["SIZE=300", "BODY=8BITMIME"] },
  ],
  [
    "§10.5 RCPT with NOTIFY",
    "00 00 00 20 52 3C 62 6F 62 40 65 78 61 6D 70 6C 65 2E 63 6F 6D 3E 00 " +
    "4E 4F 54 49 46 59 3D 4E 45 56 45 52 00",
    { type: "rcpt", recipient: "<bob@example.com>", args: ["NOTIFY=NEVER"] },
  ],
  [
    "§10.5 MAIL null sender",
    "00 00 00 04 4D 3C 3E 00",
    { type: "mail", sender: "<>", args: [] },
  ],
  [
    "§10.6 HEADER without leading space",
    "00 00 00 15 4C 53 75 62 6A 65 63 74 00 48 65 6C 6C 6F 20 77 6F 72 6C 64 00",
    { type: "header", name: "Subject", value: "Hello world" },
  ],
  [
    "§10.6 HEADER with HDR_LEADSPC",
    "00 00 00 16 4C 53 75 62 6A 65 63 74 00 20 48 65 6C 6C 6F 20 77 6F 72 6C 64 00",
    { type: "header", name: "Subject", value: " Hello world" },
  ],
  [
    "§10.6 folded HEADER keeps LF + TAB",
    "00 00 00 23 4C 54 6F 00 20 61 40 65 78 61 6D 70 6C 65 2E 63 6F 6D 2C 0A 09 " +
    "62 40 65 78 61 6D 70 6C 65 2E 63 6F 6D 00",
    { type: "header", name: "To", value: " a@example.com,\n\tb@example.com" },
  ],
  [
    "§10.6 HEADER with empty value",
    "00 00 00 0A 4C 58 2D 45 6D 70 74 79 00 00",
    { type: "header", name: "X-Empty", value: "" },
  ],
  [
    "HEADER with 8-bit latin1 value",
    "00 00 00 0B 4C 53 75 62 6A 00 63 61 66 E9 00",
    { type: "header", name: "Subj", value: "caf\udce9" },
  ],
  [
    "HEADER with UTF-8 value",
    "00 00 00 0C 4C 53 75 62 6A 00 63 61 66 C3 A9 00",
    { type: "header", name: "Subj", value: "café" },
  ],
  ["§10.7 DATA", "00 00 00 01 54", { type: "data" }],
  ["§10.7 EOH", "00 00 00 01 4E", { type: "eoh" }],
  [
    "§10.7 BODY",
    "00 00 00 0A 42 48 69 20 42 6F 62 2C 0D 0A",
    { type: "body", chunk: new TextEncoder().encode("Hi Bob,\r\n") },
  ],
  [
    "BODY with NUL bytes",
    "00 00 00 04 42 00 FF 00",
    { type: "body", chunk: Uint8Array.of(0, 0xff, 0) },
  ],
  ["§10.7 EOB", "00 00 00 01 45", { type: "eom" }],
  [
    "EOB carrying data (libmilter accepts it)",
    "00 00 00 03 45 6F 6B",
    { type: "eom", chunk: Uint8Array.of(0x6f, 0x6b) },
  ],
  ["§10.7 ABORT", "00 00 00 01 41", { type: "abort" }],
  ["§10.7 QUIT", "00 00 00 01 51", { type: "quit" }],
  ["§10.7 QUIT_NC", "00 00 00 01 4B", { type: "quit_nc" }],
  [
    "§10.7 UNKNOWN XYZZY foo",
    "00 00 00 0B 55 58 59 5A 5A 59 20 66 6F 6F 00",
    { type: "unknown", line: "XYZZY foo" },
  ],
  [
    "an unknown command byte",
    "00 00 00 04 5A 01 00 02",
    { type: "raw", code: 0x5a, payload: Uint8Array.of(1, 0, 2) },
  ],
];

describe("decodeCommand()/encodeCommand() on the §10 byte examples", () => {
  for (const [name, hex, command] of VECTORS) {
    it(`${name}: decodes to the command and encodes back to the exact bytes`, () => {
      assert.deepEqual(decodeHex(hex), command);
      assert.equal(toHex(encodeCommand(command)), toHex(fromHex(hex)));
    });
  }

  it("a body chunk of 65535 bytes gets the length 00 01 00 00", () => {
    const bytes = encodeCommand({ type: "body", chunk: new Uint8Array(65535).fill(0x61) });
    assert.equal(bytes.length, 65540);
    assert.equal(toHex(bytes.subarray(0, 5)), "00 01 00 00 42");
  });

  it("decodes an unknown command byte with an empty payload as raw and re-encodes it", () => {
    for (const code of [0x00, 0x3f, 0x50, 0x7a, 0xff]) {
      const c = decodeCommand({ code, payload: new Uint8Array(0) });
      assert.deepEqual(c, { type: "raw", code, payload: new Uint8Array(0) });
      assert.deepEqual([...encodeCommand(c)], [0, 0, 0, 1, code]);
    }
  });

  it("copies OPTNEG extra bytes instead of keeping a view of the frame", () => {
    const frame = fromHex("00 00 00 06 00 00 00 06 00 00 01 ff 00 1f ff ff 99");
    const c = decodeCommand({ code: 0x4f, payload: frame.subarray(4) });
    assert.ok(c.type === "optneg" && c.extra !== undefined);
    frame[16] = 0;
    assert.deepEqual([...c.extra], [0x99]);
  });

  it("keeps a macro name without a value (odd count) readable as an empty value", () => {
    // libmilter tolerates this (smfi_getsymval sees a NULL value); the value decodes as "".
    assert.deepEqual(decodePayload("D", "Mi\0Q1\0{x}\0"), {
      type: "macro",
      stage: "M",
      macros: [["i", "Q1"], ["{x}", ""]],
    });
  });
});

describe("decodeCommand() refuses payloads that do not fit the layout", () => {
  it("OPTNEG shorter than 12 bytes, naming the field and offset", () => {
    assertMalformed(
      () => decodeHex("00 00 00 09 4F 00 00 00 06 00 00 01 FF"),
      /^Cannot decode SMFIC_OPTNEG: protocol needs 4 bytes at offset 8, 0 left$/,
      8,
    );
    assertMalformed(() => decodePayload("O", ""), /version needs 4 bytes at offset 0, 0 left/);
  });

  it("HELO without its NUL", () => {
    assertMalformed(
      () => decodePayload("H", "mx.example"),
      /^Cannot decode SMFIC_HELO: helo name has no terminating NUL \(offset 0\)$/,
    );
  });

  it("HEADER without the NUL after the name or after the value", () => {
    assertMalformed(() => decodePayload("L", "Subject"), /SMFIC_HEADER: header name has no/);
    assertMalformed(
      () => decodePayload("L", "Subject\0Hello"),
      /SMFIC_HEADER: header value has no terminating NUL \(offset 8\)/,
      8,
    );
  });

  it("CONNECT without the hostname NUL, port or address NUL", () => {
    assertMalformed(() => decodePayload("C", "host"), /SMFIC_CONNECT: hostname has no/);
    assertMalformed(() => decodePayload("C", "host\0"), /family missing at offset 5/);
    assertMalformed(() => decodePayload("C", "host\x004\x00"), /port needs 2 bytes at offset 6/);
    assertMalformed(
      () => decodePayload("C", "host\x004\x00\x19127.0.0.1"),
      /address has no terminating NUL \(offset 8\)/,
    );
  });

  it("CONNECT with an unknown family byte", () => {
    assertMalformed(
      () => decodePayload("C", "host\0X\0\x19a\0"),
      /^Cannot decode SMFIC_CONNECT: unknown address family byte 0x58 \(expected '4', '6', 'L' or 'U'\)$/,
      5,
    );
  });

  it("left-over bytes after the last field", () => {
    assertMalformed(
      () => decodePayload("H", "mx\0junk"),
      /^Cannot decode SMFIC_HELO: 4 bytes left over at offset 3$/,
      3,
    );
    assertMalformed(() => decodePayload("C", "h\0U\0"), /1 bytes left over at offset 3/);
    assertMalformed(() => decodePayload("L", "a\0b\0c\0"), /SMFIC_HEADER: 2 bytes left over/);
    assertMalformed(() => decodePayload("Q", "x"), /SMFIC_QUIT: 1 bytes left over at offset 0/);
    assertMalformed(() => decodePayload("A", "\0"), /SMFIC_ABORT: 1 bytes left over/);
    assertMalformed(() => decodePayload("U", "XYZZY\0\0"), /SMFIC_UNKNOWN: 1 bytes left over/);
  });

  it("MAIL and RCPT without any string, or with an unterminated argument", () => {
    assertMalformed(() => decodePayload("M", ""), /SMFIC_MAIL: empty payload, sender missing/);
    assertMalformed(() => decodePayload("R", ""), /SMFIC_RCPT: empty payload, recipient missing/);
    assertMalformed(() => decodePayload("M", "<a@b>\0SIZE=1"), /sender has no terminating NUL/);
  });

  it("a macro frame without its stage byte or with an unterminated value", () => {
    assertMalformed(() => decodePayload("D", ""), /SMFIC_MACRO: macro stage byte missing/);
    assertMalformed(() => decodePayload("D", "Ci\0abc"), /macro has no terminating NUL/);
  });
});

describe("encodeCommand() refuses what cannot be encoded", () => {
  it("a NUL inside a string is a TypeError", () => {
    assert.throws(() => encodeCommand({ type: "helo", name: "a\0b" }), TypeError);
    assert.throws(() => encodeCommand({ type: "helo", name: "é\0" }), TypeError);
    assert.throws(() => encodeCommand({ type: "helo", name: "\udcff\0" }), TypeError);
    assert.throws(
      () => encodeCommand({ type: "header", name: "X", value: "1\x002" }),
      /String contains a NUL byte/,
    );
  });

  it("a port beyond 16 bits or a negative version is a RangeError", () => {
    assert.throws(
      () =>
        encodeCommand({
          type: "connect",
          hostname: "h",
          family: "inet",
          port: 70000,
          address: "a",
        }),
      RangeError,
    );
    assert.throws(
      () => encodeCommand({ type: "optneg", version: -1, actions: 0, protocol: 0 }),
      RangeError,
    );
  });

  it("a macro stage that is not one character is a TypeError", () => {
    assert.throws(() => encodeCommand({ type: "macro", stage: "CM", macros: [] }), TypeError);
  });
});
