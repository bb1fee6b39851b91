import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MilterProtocolError } from "../lib/wire/errors.ts";
import {
  formatHeaderField,
  parseHeaderField,
  parseMessage,
  serializeMessage,
  toCrlf,
} from "../lib/mail/message.ts";
import { diffLines, messageDiff } from "../lib/mail/diff.ts";
import { applyModifications, type Envelope } from "../lib/mail/modify.ts";
import type { Modification } from "../lib/wire/types.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe("parseMessage()", () => {
  it("splits headers (raw values, LF-joined folds) and a CRLF body", () => {
    const m = parseMessage(
      enc(
        "Subject: Hello\r\nTo: a@example.com,\r\n\tb@example.com\r\nX-Empty:\r\n\r\nline 1\r\n\r\n",
      ),
    );
    assert.deepEqual(m.headers, [
      { name: "Subject", value: " Hello" },
      { name: "To", value: " a@example.com,\n\tb@example.com" },
      { name: "X-Empty", value: "" },
    ]);
    assert.equal(dec(m.body), "line 1\r\n\r\n");
  });

  it("accepts LF line ends and turns the body's into CRLF, ending the last line", () => {
    const m = parseMessage(enc("A: 1\n B\n\nx\ny"));
    assert.deepEqual(m.headers, [{ name: "A", value: " 1\n B" }]);
    assert.equal(dec(m.body), "x\r\ny\r\n");
  });

  it("keeps exact whitespace after the colon and drops it before the colon", () => {
    const m = parseMessage(enc("X-Two:  two\r\nX-Tab:\ttab\r\nX-No:none\r\nSubject : s\r\n\r\n"));
    assert.deepEqual(m.headers.map((h) => [h.name, h.value]), [
      ["X-Two", "  two"],
      ["X-Tab", "\ttab"],
      ["X-No", "none"],
      ["Subject", " s"],
    ]);
  });

  it("starts the body at a header-section line that is not a field", () => {
    const m = parseMessage(enc("A: 1\r\nthis is not a header\r\nmore\r\n"));
    assert.deepEqual(m.headers, [{ name: "A", value: " 1" }]);
    assert.equal(dec(m.body), "this is not a header\r\nmore\r\n");
  });

  it("gives an empty body without an empty line or with nothing after it", () => {
    assert.equal(parseMessage(enc("A: 1\r\n")).body.length, 0);
    assert.equal(parseMessage(enc("A: 1\r\n\r\n")).body.length, 0);
  });

  it("keeps 8-bit header bytes byte-exact through serializeMessage()", () => {
    const bytes = new Uint8Array([...enc("Subject: "), 0xe9, 0xff, ...enc("\r\n\r\nb\r\n")]);
    assert.deepEqual(serializeMessage(parseMessage(bytes)), bytes);
  });

  it("round-trips a CRLF message with folded headers", () => {
    const bytes = enc("Received: from a\r\n\tby b\r\nSubject: x\r\n\r\nbody\r\n.dot\r\n");
    assert.deepEqual(serializeMessage(parseMessage(bytes)), bytes);
  });
});

describe("toCrlf()", () => {
  it("converts bare LF, keeps CRLF and bare CR, terminates the last line", () => {
    assert.equal(dec(toCrlf(enc("a\nb\r\nc\rd"))), "a\r\nb\r\nc\rd\r\n");
    assert.equal(toCrlf(new Uint8Array(0)).length, 0);
  });
});

describe("parseHeaderField() / formatHeaderField()", () => {
  it("reads one field and writes it back with CRLF folds", () => {
    const h = parseHeaderField("Received: from a\n\tby b\n");
    assert.deepEqual(h, { name: "Received", value: " from a\n\tby b" });
    assert.equal(formatHeaderField(h), "Received: from a\r\n\tby b\r\n");
    assert.throws(() => parseHeaderField("no colon here"), TypeError);
  });
});

const MSG = parseMessage(
  enc("Subject: one\r\nX-M: 1\r\nx-m: 2\r\nX-M: 3\r\nTo: a@example.com\r\n\r\nbody\r\n"),
);
const ENV: Envelope = {
  sender: "<s@example.org>",
  senderArgs: ["SIZE=10"],
  recipients: [{ recipient: "<a@example.com>", args: [] }, {
    recipient: "<b@example.com>",
    args: [],
  }],
};
const names = (mods: Modification[], opts = {}) =>
  applyModifications(MSG, ENV, mods, opts).message.headers.map((h) => `${h.name}:${h.value}`);

describe("applyModifications() headers", () => {
  it("appends ADDHEADER with one space inserted, verbatim with HDR_LEADSPC", () => {
    assert.deepEqual(names([{ type: "addheader", name: "X-A", value: "v" }]).at(-1), "X-A: v");
    assert.deepEqual(
      names([{ type: "addheader", name: "X-A", value: "v" }], { headerLeadingSpace: true }).at(-1),
      "X-A:v",
    );
  });

  it("inserts INSHEADER counting the MTA's Received header: 0 above it, 1 below it, large = append", () => {
    const opts = { receivedHeader: "Received: from x\n\tby y" };
    const r0 = names([{ type: "insheader", index: 0, name: "X-I", value: "0" }], opts);
    assert.deepEqual(r0.slice(0, 2), ["X-I: 0", "Received: from x\n\tby y"]);
    const r1 = names([{ type: "insheader", index: 1, name: "X-I", value: "1" }], opts);
    assert.deepEqual(r1.slice(0, 3), ["Received: from x\n\tby y", "X-I: 1", "Subject: one"]);
    const big = names([{ type: "insheader", index: 1000, name: "X-I", value: "z" }], opts);
    assert.equal(big.at(-1), "X-I: z");
    const noRecv = names([{ type: "insheader", index: 0, name: "X-I", value: "t" }]);
    assert.equal(noRecv[0], "X-I: t");
  });

  it("changes the n-th occurrence case-insensitively; index 0 means 1; missing appends", () => {
    const r = names([
      { type: "chgheader", index: 2, name: "X-M", value: "two" },
      { type: "chgheader", index: 0, name: "subject", value: "first" },
      { type: "chgheader", index: 9, name: "X-M", value: "nine" },
    ]);
    assert.deepEqual(r, [
      "subject: first",
      "X-M: 1",
      "X-M: two",
      "X-M: 3",
      "To: a@example.com",
      "X-M: nine",
    ]);
  });

  it("deletes with an empty value, ignores a missing occurrence", () => {
    const r = names([
      { type: "chgheader", index: 1, name: "To", value: "" },
      { type: "chgheader", index: 5, name: "X-M", value: "" },
    ]);
    assert.deepEqual(r, ["Subject: one", "X-M: 1", "x-m: 2", "X-M: 3"]);
  });

  it("does not count the MTA's Received header for CHGHEADER", () => {
    const msg = parseMessage(enc("Received: from msg\r\n\r\n"));
    const out = applyModifications(msg, ENV, [{
      type: "chgheader",
      index: 1,
      name: "Received",
      value: "changed",
    }], {
      receivedHeader: "Received: from mta",
    });
    assert.deepEqual(out.message.headers, [
      { name: "Received", value: " from mta" },
      { name: "Received", value: " changed" },
    ]);
  });

  it("Postfix skips deleted headers when counting later deletes, Sendmail keeps counting", () => {
    const del: Modification[] = [
      { type: "chgheader", index: 1, name: "X-M", value: "" },
      { type: "chgheader", index: 2, name: "X-M", value: "" },
    ];
    assert.deepEqual(names(del), ["Subject: one", "x-m: 2", "To: a@example.com"]);
    assert.deepEqual(names(del, { mta: "sendmail" }), [
      "Subject: one",
      "X-M: 3",
      "To: a@example.com",
    ]);
  });

  it("refuses an empty header name", () => {
    assert.throws(
      () => applyModifications(MSG, ENV, [{ type: "addheader", name: "", value: "x" }]),
      (e) => e instanceof MilterProtocolError && e.reason === "malformed",
    );
  });
});

describe("applyModifications() body, envelope, quarantine", () => {
  it("REPLBODY: the first chunk truncates, the next ones append, line ends become CRLF", () => {
    const out = applyModifications(MSG, ENV, [
      { type: "replbody", chunk: enc("new\nbo") },
      { type: "replbody", chunk: enc("dy") },
    ]);
    assert.equal(dec(out.message.body), "new\r\nbody\r\n");
    assert.equal(out.bodyReplaced, true);
    assert.equal(dec(applyModifications(MSG, ENV, []).message.body), "body\r\n");
  });

  it("REPLBODY interleaved with other requests: Postfix refuses, Sendmail appends", () => {
    const mods: Modification[] = [
      { type: "replbody", chunk: enc("a") },
      { type: "addheader", name: "X", value: "1" },
      { type: "replbody", chunk: enc("b") },
    ];
    assert.throws(() => applyModifications(MSG, ENV, mods), /interleaved/);
    assert.equal(
      dec(applyModifications(MSG, ENV, mods, { mta: "sendmail" }).message.body),
      "ab\r\n",
    );
  });

  it("ADDRCPT, ADDRCPT_PAR with args, DELRCPT with or without brackets, CHGFROM", () => {
    const out = applyModifications(MSG, ENV, [
      { type: "addrcpt", recipient: "<c@example.com>" },
      {
        type: "addrcpt_par",
        recipient: "<d@example.com>",
        args: "NOTIFY=NEVER ORCPT=rfc822;d@example.com",
      },
      { type: "delrcpt", recipient: "a@example.com" },
      { type: "delrcpt", recipient: "<c@example.com>" },
      { type: "chgfrom", sender: "<bounce@example.org>", args: "RET=HDRS" },
    ]);
    assert.deepEqual(out.envelope, {
      sender: "<bounce@example.org>",
      senderArgs: ["RET=HDRS"],
      recipients: [
        { recipient: "<b@example.com>", args: [] },
        { recipient: "<d@example.com>", args: ["NOTIFY=NEVER", "ORCPT=rfc822;d@example.com"] },
      ],
    });
    assert.deepEqual(
      applyModifications(MSG, ENV, [{ type: "chgfrom", sender: "<>" }]).envelope.senderArgs,
      [],
    );
  });

  it("records QUARANTINE and leaves the input untouched", () => {
    const before = JSON.stringify(MSG.headers);
    const out = applyModifications(MSG, ENV, [
      { type: "quarantine", reason: "first" },
      { type: "quarantine", reason: "held by test" },
      { type: "addheader", name: "X", value: "y" },
    ]);
    assert.equal(out.quarantine, "held by test");
    assert.equal(JSON.stringify(MSG.headers), before);
    assert.equal(ENV.recipients.length, 2);
  });
});

describe("diffLines() / messageDiff()", () => {
  it("returns an empty string for equal texts or texts differing only in CRLF vs LF", () => {
    assert.equal(diffLines("a\nb\n", "a\nb\n"), "");
    assert.equal(diffLines("a\r\nb\r\n", "a\nb\n"), "");
  });

  it("writes separate hunks for distant changes with correct ranges", () => {
    const a = Array.from({ length: 20 }, (_, i) => `l${i + 1}`).join("\n") + "\n";
    const b = a.replace("l2\n", "L2\n").replace("l19\n", "").replace("l20\n", "l20\nl21\n");
    assert.equal(
      diffLines(a, b, { context: 1 }),
      [
        "--- a",
        "+++ b",
        "@@ -1,3 +1,3 @@",
        " l1",
        "-l2",
        "+L2",
        " l3",
        "@@ -18,3 +18,3 @@",
        " l18",
        "-l19",
        " l20",
        "+l21",
        "",
      ].join("\n"),
    );
  });

  it("shows insertions into an empty text with a 0 range", () => {
    assert.equal(diffLines("", "x\n"), "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n");
  });

  it("falls back to remove-then-add above maxCells and stays correct", () => {
    const d = diffLines("a\nb\nc\n", "x\ny\nc\n", { maxCells: 1 });
    assert.equal(d, "--- a\n+++ b\n@@ -1,3 +1,3 @@\n-a\n-b\n+x\n+y\n c\n");
  });

  it("diffs a message before and after modifications", () => {
    const out = applyModifications(MSG, ENV, [
      { type: "chgheader", index: 1, name: "Subject", value: "changed" },
      { type: "addheader", name: "X-Added", value: "yes" },
    ]);
    const d = messageDiff(MSG, out.message, { context: 0 });
    assert.equal(
      d,
      "--- received\n+++ delivered\n@@ -1 +1 @@\n-Subject: one\n+Subject: changed\n@@ -5,0 +6 @@\n+X-Added: yes\n",
    );
  });
});
