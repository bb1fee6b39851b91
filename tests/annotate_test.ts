import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { SessionAnnotator } from "../lib/inspect/annotate/annotator.ts";
import { checkReplyText } from "../lib/inspect/annotate/check.ts";
import { annotateStreams } from "../lib/inspect/annotate/feed.ts";
import { encodeCommand } from "../lib/wire/command_codec.ts";
import { readCapture } from "../lib/inspect/capture/pcap.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import { findMilterConversations } from "../lib/inspect/capture/tcp.ts";
import type { Command, Frame, Reply } from "../lib/wire/types.ts";
import { SMFIF, SMFIP } from "../lib/wire/constants.ts";

const root = new URL("./data/captures/", import.meta.url);
const read = (rel: string) => new Uint8Array(readFileSync(new URL(rel, root)));

const frameOf = (b: Uint8Array): Frame => ({ code: b[4]!, payload: b.subarray(5) });
type Step = Command | Reply | { raw: "c" | "r"; code: number; payload?: number[] };
const OFFER: Command = { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff };
const optReply = (actions = 0x1ff, protocol = 0): Reply => ({
  type: "optneg",
  version: 6,
  actions,
  protocol,
});
const C = (type: "helo" | "data" | "eoh" | "eom" | "abort" | "quit"): Command =>
  type === "helo" ? { type, name: "h" } : { type } as Command;
const mail: Command = { type: "mail", sender: "<a@example.test>", args: [] };
const rcpt: Command = { type: "rcpt", recipient: "<b@example.test>", args: [] };
const cont: Reply = { type: "continue" };

const REPLY_TYPES = new Set([
  "continue",
  "accept",
  "reject",
  "tempfail",
  "discard",
  "skip",
  "progress",
  "shutdown",
  "connfail",
  "replycode",
  "addheader",
  "insheader",
  "chgheader",
  "replbody",
  "addrcpt",
  "addrcpt_par",
  "delrcpt",
  "chgfrom",
  "quarantine",
]);

/** Runs steps; a Command goes MTA → filter, a Reply filter → MTA (optneg: by position). */
function run(steps: Step[]): SessionAnnotator {
  const a = new SessionAnnotator();
  let t = 0;
  let sawOptneg = false;
  for (const s of steps) {
    t += 1;
    if ("raw" in s) {
      const f = { code: s.code, payload: new Uint8Array(s.payload ?? []) };
      if (s.raw === "c") a.pushCommand(f, t);
      else a.pushReply(f, t);
    } else if (s.type === "optneg" ? sawOptneg : REPLY_TYPES.has(s.type)) {
      a.pushReply(frameOf(encodeReply(s as Reply)), t);
    } else {
      if (s.type === "optneg") sawOptneg = true;
      a.pushCommand(frameOf(encodeCommand(s as Command)), t);
    }
  }
  return a;
}

const rules = (a: SessionAnnotator) => a.summary().issues.map((i) => i.rule);
const clean = (extra: Step[], protocol = 0, actions = 0x1ff): Step[] => [
  OFFER,
  optReply(actions, protocol),
  ...extra,
];
const message: Step[] = [mail, cont, rcpt, cont, C("eoh"), cont, C("eom")];

describe("SessionAnnotator pairing and messages", () => {
  it("pairs each reply with its command, with latency and stage", () => {
    const a = run(clean([...message, { type: "addheader", name: "X", value: "1" }, cont]));
    const ev = a.events;
    const add = ev.find((e) => !("error" in e.decoded) && e.decoded.type === "addheader")!;
    const eom = ev.find((e) => e.stage === "eom" && e.direction === "to-filter")!;
    assert.equal(add.answers, eom.seq);
    assert.equal(add.final, false);
    assert.equal(ev.at(-1)!.final, true);
    assert.equal(ev.at(-1)!.latencyMs, 2);
    assert.equal(ev[1]!.stage, "optneg");
    assert.deepEqual(rules(a), []);
    const m = a.summary().messages[0]!;
    assert.equal(m.sender, "<a@example.test>");
    assert.deepEqual(m.modifications, [{ type: "addheader", name: "X", value: "1" }]);
    assert.deepEqual(m.outcome, {
      kind: "accept",
      stage: "eom",
      reply: "continue",
      seq: ev.at(-1)!.seq,
    });
    assert.equal(m.latency.eom?.count, 1);
  });

  it("expects no reply for commands under NR_* and pairs the next reply correctly", () => {
    const a = run(clean([mail, rcpt, cont], SMFIP.NR_MAIL));
    const last = a.events.at(-1)!;
    assert.equal(last.answers, 3); // the RCPT
    assert.deepEqual(rules(a), []);
  });

  it("splits messages at MAIL, records per-recipient verdicts and aborted messages", () => {
    const a = run(clean([
      mail,
      cont,
      rcpt,
      { type: "replycode", text: "550 5.1.1 No such user" },
      { type: "rcpt", recipient: "<c@x>", args: [] },
      cont,
      C("abort"),
      mail,
      { type: "tempfail" },
      C("abort"),
      C("quit"),
    ]));
    const [m1, m2] = a.summary().messages;
    assert.equal(a.summary().messages.length, 2);
    assert.equal(m1!.recipients[0]!.outcome?.kind, "reject");
    assert.equal(m1!.recipients[0]!.outcome?.text, "550 5.1.1 No such user");
    assert.equal(m1!.recipients[1]!.outcome?.kind, "accept");
    assert.equal(m1!.outcome.kind, "aborted");
    assert.deepEqual(m2!.outcome, {
      kind: "tempfail",
      stage: "envfrom",
      reply: "tempfail",
      seq: 10,
    });
    assert.equal(a.summary().ended, "quit");
    assert.deepEqual(rules(a), []);
  });

  it("records a connection-level verdict at CONNECT", () => {
    const a = run(clean([
      { type: "connect", hostname: "h", family: "inet", port: 25, address: "192.0.2.1" },
      { type: "replycode", text: "554 5.7.1 Go away" },
    ]));
    assert.equal(a.summary().outcome?.kind, "reject");
    assert.equal(a.summary().connect?.address, "192.0.2.1");
  });

  it("allows PROGRESS while a command waits", () => {
    const a = run(clean([...message, { type: "progress" }, { type: "progress" }, cont]));
    assert.deepEqual(rules(a), []);
    assert.equal(a.summary().messages[0]!.outcome.kind, "accept");
  });
});

describe("SessionAnnotator protocol checker: one test per rule", () => {
  const cases: [string, Step[], string][] = [
    ["missing-optneg", [mail], "missing-optneg"],
    ["bad-negotiation (actions not offered)", [
      { ...OFFER, actions: 0x1 } as Command,
      optReply(0x3),
    ], "bad-negotiation"],
    ["reply-after-noreply", clean([mail, cont], SMFIP.NR_MAIL), "reply-after-noreply"],
    [
      "duplicate-final",
      clean([mail, { type: "replycode", text: "451 4.7.1 x" }, {
        type: "reject",
      }]),
      "duplicate-final",
    ],
    ["unsolicited-reply", [OFFER, optReply(), cont], "unsolicited-reply"],
    ["missing-reply", clean([mail]), "missing-reply"],
    [
      "modification-outside-eom",
      clean([C("eoh"), { type: "addheader", name: "X", value: "y" }, cont]),
      "modification-outside-eom",
    ],
    [
      "action-not-negotiated",
      clean([...message, { type: "chgfrom", sender: "<x@y>" }, cont], 0, SMFIF.ADDHDRS),
      "action-not-negotiated",
    ],
    [
      "bad-header-index (CHGHEADER 0)",
      clean([...message, {
        type: "chgheader",
        index: 0,
        name: "Subject",
        value: "x",
      }, cont]),
      "bad-header-index",
    ],
    [
      "bad-header-index (CHGHEADER huge)",
      clean([...message, {
        type: "chgheader",
        index: 1_000_000,
        name: "Subject",
        value: "x",
      }, cont]),
      "bad-header-index",
    ],
    [
      "bad-header-index (INSHEADER 0xFFFFFFFF)",
      clean([...message, {
        type: "insheader",
        index: 0xffffffff,
        name: "X",
        value: "x",
      }, cont]),
      "bad-header-index",
    ],
    [
      "cr-in-header",
      clean([...message, { type: "addheader", name: "X", value: "a\r\n\tb" }, cont]),
      "cr-in-header",
    ],
    [
      "bad-reply-code",
      clean([mail, { type: "replycode", text: "250 2.0.0 ok" }]),
      "bad-reply-code",
    ],
    [
      "skip-not-negotiated",
      clean([...message.slice(0, 6), { type: "body", chunk: new Uint8Array([65]) }, {
        type: "skip",
      }]),
      "skip-not-negotiated",
    ],
    [
      "verdict-not-allowed (DISCARD at HELO)",
      clean([C("helo"), { type: "discard" }]),
      "verdict-not-allowed",
    ],
    ["disabled-command", clean([C("data"), cont], SMFIP.NODATA), "disabled-command"],
    ["command-after-quit", clean([C("quit"), C("helo"), cont]), "command-after-quit"],
    [
      "oversized-frame",
      clean([mail, cont, rcpt, cont, { type: "body", chunk: new Uint8Array(70000) }, cont]),
      "oversized-frame",
    ],
    [
      "garbage-frame (undecodable payload)",
      clean([{ raw: "c", code: 0x48, payload: [0x61] }]),
      "garbage-frame",
    ],
    ["unknown-code", clean([mail, { raw: "r", code: 0x6c, payload: [] }, cont]), "unknown-code"],
  ];
  for (const [name, steps, rule] of cases) {
    it(`flags ${name}`, () => {
      const found = rules(run(steps));
      assert.ok(found.includes(rule as never), `expected ${rule}, got ${JSON.stringify(found)}`);
    });
  }

  it("flags garbage in a byte stream (framing error) without throwing", () => {
    const a = annotateStreams({
      toFilter: encodeCommand(OFFER),
      toMta: new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n"),
    });
    const s = a.summary();
    assert.ok(s.issues.some((i) => i.rule === "garbage-frame" && /filter/.test(i.message)));
  });

  it("accepts valid reply texts, including multi-line ones", () => {
    assert.deepEqual(checkReplyText("550 5.7.1 No"), []);
    assert.deepEqual(checkReplyText("451 Try later"), []);
    assert.deepEqual(checkReplyText("550-5.7.1 line one\r\n550 5.7.1 line two, 100%% sure"), []);
  });

  it("explains each kind of bad reply text", () => {
    assert.match(checkReplyText("250 ok")[0]!, /not 4xx or 5xx/);
    assert.match(checkReplyText("550 4.7.1 x")[0]!, /does not match the class/);
    assert.match(checkReplyText("550 5.7.1 100% sure")[0]!, /lone "%"/);
    assert.match(
      checkReplyText("550 5.7.1 a\r\n550 5.7.1 b")[0]!,
      /before the last must use "550-"/,
    );
    assert.match(checkReplyText("550-5.7.1 a\r\n451 b").join(), /differs/);
    assert.match(checkReplyText("550 a\nb").join(), /bare CR or LF/);
    assert.match(checkReplyText("55 x").join(), /3-digit/);
  });
});

describe("SessionAnnotator on the recorded captures", () => {
  const pcaps = readdirSync(root).filter((f) => f.endsWith(".pcap")).sort();
  for (const file of pcaps) {
    it(`${file}: no issues, and the bare .bin streams give the same messages`, () => {
      for (const c of findMilterConversations(readCapture(read(file)).packets)) {
        const timed = annotateStreams(c).summary();
        const bare = annotateStreams({ toFilter: c.toFilter, toMta: c.toMta }).summary();
        assert.deepEqual(timed.issues, [], `${file} s${c.index}`);
        assert.deepEqual(bare.issues, []);
        const strip = (ms: typeof timed.messages) =>
          ms.map((m) => ({ ...m, latency: {}, startTime: 0, endTime: 0 }));
        assert.deepEqual(strip(timed.messages), strip(bare.messages));
        assert.equal(timed.ended, "quit");
        for (const m of timed.messages) {
          for (const s of Object.values(m.latency)) assert.ok(s.maxMs >= 0 && s.count > 0);
        }
      }
    });
  }
  it("postfix-tap-libmilter (relay streams): no issues", () => {
    for (const c of ["c1", "c2"]) {
      const s = annotateStreams({
        toFilter: read(`postfix-tap-libmilter/tap.${c}.to-filter.bin`),
        toMta: read(`postfix-tap-libmilter/tap.${c}.to-mta.bin`),
      }).summary();
      assert.deepEqual(s.issues, []);
      assert.equal(s.messages.length, 1);
    }
  });
});
