/**
 * Byte-exact text: decodeText/encodeText give back the same bytes for any input (8-bit,
 * latin1, broken UTF-8), read valid UTF-8 as text, and displayText shows escaped bytes.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeText, displayText, encodeText } from "../lib/wire/text.ts";
import { fromHex } from "./helpers/captures.ts";

function roundTrips(bytes: Uint8Array): void {
  assert.deepEqual(encodeText(decodeText(bytes)), bytes);
}

/** Code units of a string, as hex, for readable failures. */
function units(s: string): string[] {
  return Array.from({ length: s.length }, (_, i) => s.charCodeAt(i).toString(16));
}

describe("decodeText()/encodeText() round trip", () => {
  it("every single byte value: ASCII as itself, 0x80..0xFF as U+DC80..U+DCFF", () => {
    for (let b = 0; b < 256; b++) {
      const s = decodeText(Uint8Array.of(b));
      assert.equal(s.length, 1);
      assert.equal(s.charCodeAt(0), b < 0x80 ? b : 0xdc00 + b, `byte ${b}`);
      assert.deepEqual(encodeText(s), Uint8Array.of(b));
    }
  });

  it("every pair of byte values", () => {
    const pair = new Uint8Array(2);
    for (let a = 0; a < 256; a++) {
      for (let b = 0; b < 256; b++) {
        pair[0] = a;
        pair[1] = b;
        const back = encodeText(decodeText(pair));
        if (back.length !== 2 || back[0] !== a || back[1] !== b) {
          assert.fail(`bytes ${a},${b} came back as ${[...back]}`);
        }
      }
    }
  });

  it("all 256 byte values in one string, forwards and backwards, short and long", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    roundTrips(all);
    roundTrips(all.slice().reverse());
    roundTrips(all.subarray(0x70, 0x90));
    const long = new Uint8Array(4096).map((_, i) => (i * 7919) & 0xff);
    roundTrips(long);
  });

  it("random bytes (fast-check)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        assert.deepEqual(encodeText(decodeText(bytes)), bytes);
      }),
      { numRuns: 2000 },
    );
  });

  it("random bytes biased to UTF-8 lead and continuation bytes (fast-check)", () => {
    const utf8ish = fc.array(
      fc.oneof(
        fc.integer({ min: 0x00, max: 0x7f }),
        fc.integer({ min: 0x80, max: 0xbf }),
        fc.integer({ min: 0xc0, max: 0xff }),
      ),
      { maxLength: 64 },
    ).map((a) => Uint8Array.from(a));
    fc.assert(
      fc.property(utf8ish, (bytes) => {
        assert.deepEqual(encodeText(decodeText(bytes)), bytes);
      }),
      { numRuns: 3000 },
    );
  });

  it("well-formed strings survive encode then decode (fast-check)", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 80 }), (s) => {
        assert.equal(decodeText(encodeText(s)), s);
        assert.deepEqual(encodeText(s), new TextEncoder().encode(s));
      }),
      { numRuns: 500 },
    );
  });

  it("a view into a larger buffer decodes only its own bytes", () => {
    const buf = new TextEncoder().encode("xxHELLOxx");
    assert.equal(decodeText(buf.subarray(2, 7)), "HELLO");
    const long = new Uint8Array(200).fill(0x61);
    long[0] = 0xff;
    assert.equal(decodeText(long.subarray(1, 101)), "a".repeat(100));
  });
});

describe("decodeText() reads valid UTF-8 as text", () => {
  it("ASCII, 2-, 3- and 4-byte sequences", () => {
    assert.equal(decodeText(new TextEncoder().encode("Subject")), "Subject");
    assert.equal(decodeText(fromHex("c3 a9")), "é");
    assert.equal(decodeText(fromHex("e2 82 ac")), "€");
    const grin = decodeText(fromHex("f0 9f 98 80"));
    assert.equal(grin, "😀");
    assert.deepEqual(units(grin), ["d83d", "de00"]);
    assert.deepEqual(encodeText(grin), fromHex("f0 9f 98 80"));
  });

  it("a 4-byte character whose low surrogate lies in the escape range", () => {
    // U+1F480 is D83D DC80 in UTF-16: it must not be mistaken for the escaped byte 0x80.
    const skull = fromHex("f0 9f 92 80");
    assert.deepEqual(units(decodeText(skull)), ["d83d", "dc80"]);
    roundTrips(skull);
    const mixed = fromHex("f0 9f 92 80 ff");
    assert.deepEqual(units(decodeText(mixed)), ["d83d", "dc80", "dcff"]);
    roundTrips(mixed);
  });

  it("the highest code point U+10FFFF and a BOM are kept", () => {
    assert.equal(decodeText(fromHex("f4 8f bf bf")), "\u{10ffff}");
    assert.equal(decodeText(fromHex("ef bb bf 41")), "\ufeffA");
  });

  it("long ASCII and long UTF-8 (the TextDecoder path)", () => {
    const s = "Received: from mx.example.net (mx.example.net [192.0.2.1]) by host; é€😀";
    assert.equal(decodeText(new TextEncoder().encode(s)), s);
  });
});

describe("decodeText() escapes bytes outside valid UTF-8", () => {
  const cases: [string, string, string[]][] = [
    ["latin1 café", "63 61 66 e9", ["63", "61", "66", "dce9"]],
    ["valid é followed by a stray 0xff", "c3 a9 ff", ["e9", "dcff"]],
    ["overlong '/' (C0 AF)", "c0 af", ["dcc0", "dcaf"]],
    ["overlong 3-byte (E0 80 AF)", "e0 80 af", ["dce0", "dc80", "dcaf"]],
    ["overlong 4-byte (F0 80 80 AF)", "f0 80 80 af", ["dcf0", "dc80", "dc80", "dcaf"]],
    ["surrogate U+D800 encoded in UTF-8", "ed a0 80", ["dced", "dca0", "dc80"]],
    ["surrogate U+DCFF encoded in UTF-8", "ed b3 bf", ["dced", "dcb3", "dcbf"]],
    ["above U+10FFFF (F4 90 80 80)", "f4 90 80 80", ["dcf4", "dc90", "dc80", "dc80"]],
    ["truncated 3-byte at the end", "41 e2 82", ["41", "dce2", "dc82"]],
    ["truncated 3-byte before ASCII", "e2 82 41", ["dce2", "dc82", "41"]],
    ["truncated 4-byte at the end", "f0 9f 98", ["dcf0", "dc9f", "dc98"]],
    ["lone continuation byte", "41 80 42", ["41", "dc80", "42"]],
    ["F5..FF lead bytes", "f5 f8 fe", ["dcf5", "dcf8", "dcfe"]],
  ];
  for (const [name, hex, expected] of cases) {
    it(`${name}`, () => {
      const bytes = fromHex(hex);
      assert.deepEqual(units(decodeText(bytes)), expected);
      roundTrips(bytes);
    });
  }
});

describe("encodeText() on strings that did not come from decodeText()", () => {
  it("writes a lone high surrogate or a low surrogate outside U+DC80..DCFF as U+FFFD", () => {
    assert.deepEqual(encodeText("a\ud800b"), fromHex("61 ef bf bd 62"));
    assert.deepEqual(encodeText("\udc00"), fromHex("ef bf bd"));
    assert.deepEqual(encodeText("\udd00\udcff"), fromHex("ef bf bd ff"));
  });

  it("writes 2- and 3-byte characters next to escapes as UTF-8", () => {
    assert.deepEqual(encodeText("é\udc80€"), fromHex("c3 a9 80 e2 82 ac"));
    assert.deepEqual(encodeText("😀\udcff"), fromHex("f0 9f 98 80 ff"));
  });
});

describe("displayText()", () => {
  it("shows escaped bytes as \\xNN and leaves text alone", () => {
    assert.equal(displayText(decodeText(fromHex("41 ff"))), "A\\xff");
    assert.equal(displayText(decodeText(fromHex("63 61 66 e9 80"))), "caf\\xe9\\x80");
    assert.equal(displayText("café 😀"), "café 😀");
    assert.equal(displayText(decodeText(fromHex("f0 9f 92 80 c3"))), "💀\\xc3");
  });
});
