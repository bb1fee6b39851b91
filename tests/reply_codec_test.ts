/**
 * decodeReply/encodeReply against the byte examples of milter-protocol.md §10.2 and §10.8
 * (exact hex both ways) and the typed errors for payloads that do not fit the layout.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MilterProtocolError } from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply, encodeReply } from "../lib/wire/reply_codec.ts";
import type { Reply } from "../lib/wire/types.ts";
import { fromHex, toHex } from "./helpers/captures.ts";

function decodeHex(hex: string): Reply {
  const d = new FrameDecoder();
  const frames = d.push(fromHex(hex));
  d.finish();
  assert.equal(frames.length, 1);
  return decodeReply(frames[0]!);
}

function decodePayload(code: string, payload: string): Reply {
  return decodeReply({ code: code.charCodeAt(0), payload: new TextEncoder().encode(payload) });
}

function assertMalformed(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof MilterProtocolError, String(e));
    assert.equal(e.reason, "malformed");
    assert.match(e.message, message);
    return true;
  });
}

const VECTORS: [string, string, Reply][] = [
  [
    "§10.2 OPTNEG reply 0x111 / 0x100500",
    "00 00 00 0D 4F 00 00 00 06 00 00 01 11 00 10 05 00",
    { type: "optneg", version: 6, actions: 0x111, protocol: 0x100500 },
  ],
  [
    "§10.2 OPTNEG reply with a macro list for SMFIM_ENVFROM",
    "00 00 00 2B 4F 00 00 00 06 00 00 01 11 00 10 05 00 00 00 00 02 " +
    "7B 61 75 74 68 5F 61 75 74 68 65 6E 7D 20 7B 6D 61 69 6C 5F 61 64 64 72 7D 00",
    {
      type: "optneg",
      version: 6,
      actions: 0x111,
      protocol: 0x100500,
      symlists: [{ stage: 2, macros: "{auth_authen} {mail_addr}" }],
    },
  ],
  [
    "§10.2 OPTNEG reply of a libmilter filter to a v2 MTA",
    "00 00 00 0D 4F 00 00 00 02 00 00 00 11 00 00 00 00",
    { type: "optneg", version: 2, actions: 0x11, protocol: 0 },
  ],
  [
    "§10.2 OPTNEG reply with two macro lists",
    "00 00 00 3F 4F 00 00 00 06 00 00 01 11 00 00 00 00 " +
    "00 00 00 00 6A 20 7B 63 6C 69 65 6E 74 5F 61 64 64 72 7D 00 " +
    "00 00 00 02 7B 61 75 74 68 5F 61 75 74 68 65 6E 7D 20 7B 6D 61 69 6C 5F 61 64 64 72 7D 00",
    {
      type: "optneg",
      version: 6,
      actions: 0x111,
      protocol: 0,
      symlists: [
        { stage: 0, macros: "j {client_addr}" },
        { stage: 2, macros: "{auth_authen} {mail_addr}" },
      ],
    },
  ],
  ["§10.8 CONTINUE", "00 00 00 01 63", { type: "continue" }],
  ["§10.8 ACCEPT", "00 00 00 01 61", { type: "accept" }],
  ["§10.8 REJECT", "00 00 00 01 72", { type: "reject" }],
  ["§10.8 TEMPFAIL", "00 00 00 01 74", { type: "tempfail" }],
  ["§10.8 DISCARD", "00 00 00 01 64", { type: "discard" }],
  ["§10.8 SKIP", "00 00 00 01 73", { type: "skip" }],
  ["§10.8 PROGRESS", "00 00 00 01 70", { type: "progress" }],
  ["SHUTDOWN", "00 00 00 01 34", { type: "shutdown" }],
  ["CONN_FAIL", "00 00 00 01 66", { type: "connfail" }],
  [
    "§10.8 REPLYCODE 550 5.7.1",
    "00 00 00 1C 79 35 35 30 20 35 2E 37 2E 31 20 4D 65 73 73 61 67 65 20 72 65 6A 65 63 74 65 " +
    "64 00",
    { type: "replycode", text: "550 5.7.1 Message rejected" },
  ],
  [
    "§10.8 REPLYCODE with %% from smfi_setreply",
    "00 00 00 18 79 35 35 30 20 35 2E 37 2E 31 20 4E 6F 20 31 30 30 25 25 20 77 61 79 00",
    { type: "replycode", text: "550 5.7.1 No 100%% way" },
  ],
  [
    "§10.8 REPLYCODE multi-line from smfi_setmlreply",
    "00 00 00 28 79 35 35 30 2D 35 2E 37 2E 31 20 4C 69 6E 65 20 6F 6E 65 0D 0A " +
    "35 35 30 20 35 2E 37 2E 31 20 4C 69 6E 65 20 74 77 6F 00",
    { type: "replycode", text: "550-5.7.1 Line one\r\n550 5.7.1 Line two" },
  ],
  [
    "§10.8 ADDHEADER X-Spam-Flag: YES",
    "00 00 00 11 68 58 2D 53 70 61 6D 2D 46 6C 61 67 00 59 45 53 00",
    { type: "addheader", name: "X-Spam-Flag", value: "YES" },
  ],
  [
    "§10.8 CHGHEADER #1 Subject",
    "00 00 00 20 6D 00 00 00 01 53 75 62 6A 65 63 74 00 " +
    "5B 53 50 41 4D 5D 20 48 65 6C 6C 6F 20 77 6F 72 6C 64 00",
    { type: "chgheader", index: 1, name: "Subject", value: "[SPAM] Hello world" },
  ],
  [
    "§10.8 CHGHEADER deleting the 2nd X-Mailer",
    "00 00 00 0F 6D 00 00 00 02 58 2D 4D 61 69 6C 65 72 00 00",
    { type: "chgheader", index: 2, name: "X-Mailer", value: "" },
  ],
  [
    "§10.8 INSHEADER index 0",
    "00 00 00 14 69 00 00 00 00 58 2D 46 69 6C 74 65 72 65 64 00 79 65 73 00",
    { type: "insheader", index: 0, name: "X-Filtered", value: "yes" },
  ],
  [
    "§10.8 ADDRCPT",
    "00 00 00 15 2B 3C 63 61 72 6F 6C 40 65 78 61 6D 70 6C 65 2E 63 6F 6D 3E 00",
    { type: "addrcpt", recipient: "<carol@example.com>" },
  ],
  [
    "§10.8 DELRCPT",
    "00 00 00 13 2D 3C 62 6F 62 40 65 78 61 6D 70 6C 65 2E 63 6F 6D 3E 00",
    { type: "delrcpt", recipient: "<bob@example.com>" },
  ],
  [
    "§10.8 ADDRCPT_PAR with NOTIFY=NEVER",
    "00 00 00 22 32 3C 63 61 72 6F 6C 40 65 78 61 6D 70 6C 65 2E 63 6F 6D 3E 00 " +
    "4E 4F 54 49 46 59 3D 4E 45 56 45 52 00",
    { type: "addrcpt_par", recipient: "<carol@example.com>", args: "NOTIFY=NEVER" },
  ],
  [
    "ADDRCPT_PAR without arguments",
    "00 00 00 05 32 3C 61 3E 00",
    { type: "addrcpt_par", recipient: "<a>" },
  ],
  [
    "§10.8 CHGFROM with RET=HDRS ENVID=abc",
    "00 00 00 29 65 3C 62 6F 75 6E 63 65 40 65 78 61 6D 70 6C 65 2E 63 6F 6D 3E 00 " +
    "52 45 54 3D 48 44 52 53 20 45 4E 56 49 44 3D 61 62 63 00",
    { type: "chgfrom", sender: "<bounce@example.com>", args: "RET=HDRS ENVID=abc" },
  ],
  ["CHGFROM without arguments", "00 00 00 04 65 3C 3E 00", { type: "chgfrom", sender: "<>" }],
  [
    "§10.8 QUARANTINE",
    "00 00 00 17 71 73 75 73 70 69 63 69 6F 75 73 20 61 74 74 61 63 68 6D 65 6E 74 00",
    { type: "quarantine", reason: "suspicious attachment" },
  ],
  [
    "§10.8 REPLBODY",
    "00 00 00 10 62 52 65 70 6C 61 63 65 64 20 62 6F 64 79 0D 0A",
    { type: "replbody", chunk: new TextEncoder().encode("Replaced body\r\n") },
  ],
  [
    "SETSYMLIST 'l' stays raw",
    "00 00 00 03 6C 61 00",
    { type: "raw", code: 0x6c, payload: Uint8Array.of(0x61, 0) },
  ],
  [
    "an unknown response byte",
    "00 00 00 02 5A FF",
    { type: "raw", code: 0x5a, payload: Uint8Array.of(0xff) },
  ],
];

describe("decodeReply()/encodeReply() on the §10 byte examples", () => {
  for (const [name, hex, reply] of VECTORS) {
    it(`${name}: decodes to the reply and encodes back to the exact bytes`, () => {
      assert.deepEqual(decodeHex(hex), reply);
      assert.equal(toHex(encodeReply(reply)), toHex(fromHex(hex)));
    });
  }

  it("encodes an OPTNEG reply with an empty symlists array like one without", () => {
    assert.equal(
      toHex(encodeReply({ type: "optneg", version: 6, actions: 1, protocol: 0, symlists: [] })),
      "00 00 00 0d 4f 00 00 00 06 00 00 00 01 00 00 00 00",
    );
  });
});

describe("decodeReply() refuses payloads that do not fit the layout", () => {
  it("a short OPTNEG reply", () => {
    assertMalformed(
      () => decodePayload("O", "\0\0\0\x06\0\0"),
      /^Cannot decode SMFIC_OPTNEG reply: actions needs 4 bytes at offset 4, 2 left$/,
    );
  });

  it("an OPTNEG macro list with a short stage or no NUL", () => {
    const fixed = "\0\0\0\x06\0\0\0\x01\0\0\0\0";
    assertMalformed(() => decodePayload("O", fixed + "\0\0"), /macro list stage needs 4 bytes/);
    assertMalformed(
      () => decodePayload("O", fixed + "\0\0\0\x02{i}"),
      /macro list has no terminating NUL \(offset 16\)/,
    );
  });

  it("a simple reply carrying data", () => {
    assertMalformed(
      () => decodePayload("c", "x"),
      /^Cannot decode SMFIR_CONTINUE: 1 bytes left over at offset 0$/,
    );
    assertMalformed(() => decodePayload("a", "\0\0"), /SMFIR_ACCEPT: 2 bytes left over/);
  });

  it("strings without their NUL", () => {
    assertMalformed(() => decodePayload("y", "550 5.7.1 no"), /SMFIR_REPLYCODE: reply text has/);
    assertMalformed(() => decodePayload("h", "X-A\0yes"), /SMFIR_ADDHEADER: header value has/);
    assertMalformed(() => decodePayload("+", "<a@b>"), /SMFIR_ADDRCPT: recipient has no/);
    assertMalformed(() => decodePayload("e", "<a@b>\0X"), /SMFIR_CHGFROM: ESMTP arguments has/);
  });

  it("CHGHEADER/INSHEADER without a full index", () => {
    assertMalformed(() => decodePayload("m", "\0\0\0"), /SMFIR_CHGHEADER: header index needs 4/);
    assertMalformed(() => decodePayload("i", ""), /SMFIR_INSHEADER: header index needs 4 bytes/);
  });

  it("left-over bytes after the last field", () => {
    assertMalformed(
      () => decodePayload("y", "550 x\0\0"),
      /^Cannot decode SMFIR_REPLYCODE: 1 bytes left over at offset 6$/,
    );
    assertMalformed(() => decodePayload("2", "<a>\0B\0C\0"), /SMFIR_ADDRCPT_PAR: 2 bytes left/);
    assertMalformed(() => decodePayload("q", "r\0x"), /SMFIR_QUARANTINE: 1 bytes left over/);
  });
});

describe("encodeReply() refuses what cannot be encoded", () => {
  it("a NUL inside a string is a TypeError", () => {
    assert.throws(() => encodeReply({ type: "replycode", text: "550\0" }), TypeError);
    assert.throws(
      () =>
        encodeReply({
          type: "optneg",
          version: 6,
          actions: 0,
          protocol: 0,
          symlists: [{ stage: 0, macros: "a\0" }],
        }),
      TypeError,
    );
  });

  it("an index beyond 32 bits is a RangeError", () => {
    assert.throws(
      () => encodeReply({ type: "chgheader", index: 2 ** 32, name: "X", value: "" }),
      RangeError,
    );
    assert.throws(
      () => encodeReply({ type: "insheader", index: 1.5, name: "X", value: "" }),
      RangeError,
    );
  });
});
