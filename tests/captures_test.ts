/**
 * The codec against real traffic: every frame of every recorded session (Postfix 3.7, Sendmail
 * 8.17, miltertest ↔ libmilter) decodes and re-encodes byte-identically, agrees line by line
 * with the independent Python dump (`.txt`), and holds exactly what each capture is known to
 * contain (see tests/data/captures/README.md).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { decodeCommand, encodeCommand } from "../lib/wire/command_codec.ts";
import { SMFIF, SMFIP } from "../lib/wire/constants.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply, encodeReply } from "../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../lib/wire/types.ts";
import {
  allSessions,
  type CaptureSession,
  type Direction,
  fromHex,
  listCaptures,
  listPcaps,
  listStems,
  loadDump,
  loadSegments,
  loadSession,
  readCaptureFile,
  streamOf,
} from "./helpers/captures.ts";
import { concatBytes } from "../lib/wire/concat.ts";

/** Decodes both directions of a session into commands and replies. */
function decodeSession(s: CaptureSession): { commands: Command[]; replies: Reply[] } {
  const dc = new FrameDecoder();
  const commands = dc.push(s.toFilter).map(decodeCommand);
  dc.finish();
  const dr = new FrameDecoder();
  const replies = dr.push(s.toMta).map(decodeReply);
  dr.finish();
  return { commands, replies };
}

function session(capture: string, stem: string) {
  return decodeSession(loadSession(capture, stem));
}

function ofType<T extends { type: string }, K extends T["type"]>(
  items: readonly T[],
  type: K,
): Extract<T, { type: K }>[] {
  return items.filter((x): x is Extract<T, { type: K }> => x.type === type);
}

function types(items: readonly { type: string }[]): string[] {
  return items.map((x) => x.type);
}

function macroStages(commands: readonly Command[]): string[] {
  return ofType(commands, "macro").map((m) => m.stage);
}

// ---------------------------------------------------------------------------------------------
// A re-implementation of peers/milter-dump.py's output format, so our decoding can be compared
// with that independent decoder line by line.

function pyStr(s: string): string {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = q;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === "\\") out += "\\\\";
    else if (ch === q) out += `\\${q}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + q;
}

function pyBytes(b: Uint8Array): string {
  return "b" + pyStr(String.fromCharCode(...b));
}

function pyList(items: readonly string[]): string {
  return `[${items.map(pyStr).join(", ")}]`;
}

function pyBody(name: string, chunk: Uint8Array): string {
  return `${name} ${chunk.length} bytes ${pyBytes(chunk.subarray(0, 60))}${
    chunk.length > 60 ? "..." : ""
  }`;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function dumpCommand(c: Command): string {
  switch (c.type) {
    case "optneg":
      return `OPTNEG version=${c.version} actions=${hex(c.actions)} protocol=${hex(c.protocol)}`;
    case "macro":
      return `MACRO for=${c.stage} ${pyList(c.macros.flat())}`;
    case "connect":
      return c.family === "inet" || c.family === "inet6"
        ? `CONNECT host=${pyStr(c.hostname)} family=${
          c.family === "inet" ? 4 : 6
        } port=${c.port} ` +
          `addr=${pyList([c.rawAddress ?? c.address ?? ""])}`
        : `CONNECT host=${pyStr(c.hostname)} family=${pyStr(c.family === "unix" ? "L" : "U")}`;
    case "helo":
      return `HELO ${pyList([c.name])}`;
    case "mail":
      return `MAIL ${pyList([c.sender, ...c.args])}`;
    case "rcpt":
      return `RCPT ${pyList([c.recipient, ...c.args])}`;
    case "header":
      return `HEADER ${pyList([c.name, c.value])}`;
    case "body":
      return pyBody("BODY", c.chunk);
    case "eom":
      return "BODYEOB";
    case "data":
      return "DATA";
    case "eoh":
      return "EOH";
    case "abort":
      return "ABORT";
    case "quit":
      return "QUIT";
    default:
      return `unexpected ${c.type}`;
  }
}

function dumpReply(r: Reply): string {
  switch (r.type) {
    case "optneg": {
      const lists = (r.symlists ?? []).map((l) => ` symlist[${l.stage}]=${pyStr(l.macros)}`);
      return `OPTNEG version=${r.version} actions=${hex(r.actions)} protocol=${hex(r.protocol)}` +
        lists.join("");
    }
    case "replycode":
      return `REPLYCODE ${pyList([r.text])}`;
    case "addheader":
      return `ADDHEADER ${pyList([r.name, r.value])}`;
    case "chgheader":
    case "insheader":
      return `${r.type.toUpperCase()} index=${r.index} ${pyList([r.name, r.value])}`;
    case "addrcpt":
      return `ADDRCPT ${pyList([r.recipient])}`;
    case "replbody":
      return pyBody("REPLBODY", r.chunk);
    case "raw":
      return `unexpected raw ${r.code}`;
    default:
      return r.type.toUpperCase();
  }
}

/** Replays the TCP segments in capture order and prints every frame as it completes. */
function dumpTimeline(s: CaptureSession): string[] {
  const decoders = { "to-filter": new FrameDecoder(), "to-mta": new FrameDecoder() };
  const lines: string[] = [];
  for (const seg of loadSegments(s)) {
    for (const f of decoders[seg.dir].push(seg.bytes)) {
      const text = seg.dir === "to-filter"
        ? dumpCommand(decodeCommand(f))
        : dumpReply(decodeReply(f));
      lines.push(`${seg.dir.padEnd(9)} ${text}`);
    }
  }
  decoders["to-filter"].finish();
  decoders["to-mta"].finish();
  return lines;
}

// ---------------------------------------------------------------------------------------------

const SESSIONS = allSessions();
const DIRECTIONS: readonly Direction[] = ["to-filter", "to-mta"];

describe("capture inventory", () => {
  it("holds the seven captures with their sessions and six pcap files", () => {
    assert.deepEqual(
      Object.fromEntries(listCaptures().map((c) => [c, listStems(c)])),
      {
        "miltertest-libmilter": ["pcap.s0", "pcap.s1", "pcap.s2"],
        "postfix-libmilter": ["pcap.s0", "pcap.s1"],
        "postfix-libmilter-actions": ["pcap.s0", "pcap.s1", "pcap.s2", "pcap.s3"],
        "postfix-libmilter-multi": ["pcap.s0"],
        "postfix-libmilter-proto2": ["pcap.s0"],
        "postfix-tap-libmilter": ["tap.c1", "tap.c2"],
        "sendmail-libmilter": ["pcap.s0", "pcap.s1", "pcap.s2"],
      },
    );
    assert.equal(SESSIONS.length, 16);
    assert.deepEqual(listPcaps().map((u) => u.pathname.split("/").pop()), [
      "miltertest-libmilter.pcap",
      "postfix-libmilter-actions.pcap",
      "postfix-libmilter-multi.pcap",
      "postfix-libmilter-proto2.pcap",
      "postfix-libmilter.pcap",
      "sendmail-libmilter.pcap",
    ]);
  });

  it("the .jsonl segments of each session concatenate to its .bin streams", () => {
    for (const s of SESSIONS) {
      const segs = loadSegments(s);
      for (const dir of DIRECTIONS) {
        const joined = concatBytes(segs.filter((g) => g.dir === dir).map((g) => g.bytes));
        assert.deepEqual(joined, streamOf(s, dir), `${s.name} ${dir}`);
      }
    }
  });
});

describe("every capture frame round-trips", () => {
  for (const s of SESSIONS) {
    for (const dir of DIRECTIONS) {
      it(`${s.name} ${dir}: decodes fully and re-encodes byte-identically`, () => {
        const bytes = streamOf(s, dir);
        const d = new FrameDecoder();
        const frames = d.push(bytes);
        d.finish();
        assert.equal(d.offset, bytes.length);
        assert.equal(d.buffered, 0);
        assert.ok(frames.length >= 3, `only ${frames.length} frames`);
        const encoded = frames.map((f) => {
          if (dir === "to-filter") {
            const c = decodeCommand(f);
            assert.notEqual(c.type, "raw", `unknown command byte ${f.code}`);
            return encodeCommand(c);
          }
          const r = decodeReply(f);
          assert.notEqual(r.type, "raw", `unknown reply byte ${f.code}`);
          return encodeReply(r);
        });
        assert.deepEqual(concatBytes(encoded), bytes);
      });
    }
  }
});

describe("decoding agrees with the independent Python dump (.txt)", () => {
  for (const s of SESSIONS) {
    it(`${s.name}: every line matches milter-dump.py, in TCP arrival order`, () => {
      assert.deepEqual(dumpTimeline(s), loadDump(s));
    });
  }
});

describe("postfix-libmilter", () => {
  const s0 = session("postfix-libmilter", "pcap.s0");
  const s1 = session("postfix-libmilter", "pcap.s1");

  it("s0 negotiates v6: MTA offers 0x1FF/0x1FFFFF, libmilter answers 0x17/0x300", () => {
    assert.deepEqual(s0.commands[0], {
      type: "optneg",
      version: 6,
      actions: 0x1ff,
      protocol: 0x1fffff,
    });
    assert.deepEqual(s0.replies[0], {
      type: "optneg",
      version: 6,
      actions: SMFIF.ADDHDRS | SMFIF.CHGBODY | SMFIF.ADDRCPT | SMFIF.CHGHDRS,
      protocol: SMFIP.NOUNKNOWN | SMFIP.NODATA,
    });
  });

  it("s0 sends Postfix's connect macros, then CONNECT [127.0.0.1] inet", () => {
    assert.deepEqual(s0.commands[1], {
      type: "macro",
      stage: "C",
      macros: [
        ["j", "mta.example.test"],
        ["{daemon_name}", "mta.example.test"],
        ["{daemon_addr}", "127.0.0.1"],
        ["v", "Postfix 3.7.11"],
        ["_", "unknown [127.0.0.1]"],
      ],
    });
    assert.deepEqual(s0.commands[2], {
      type: "connect",
      hostname: "[127.0.0.1]",
      family: "inet",
      port: 58374,
      address: "127.0.0.1",
    });
  });

  it("s0 has an empty D H frame before HELO (00 00 00 02 44 48)", () => {
    assert.deepEqual(s0.commands[3], { type: "macro", stage: "H", macros: [] });
    assert.deepEqual(s0.commands[4], { type: "helo", name: "client.example.test" });
    const bytes = loadSession("postfix-libmilter", "pcap.s0").toFilter;
    assert.ok(Buffer.from(bytes).includes(Buffer.from(fromHex("00 00 00 02 44 48"))));
  });

  it("s0 sends a D L frame with only `i` before every header", () => {
    const cmds = s0.commands;
    const headers = cmds.flatMap((c, i) => (c.type === "header" ? [i] : []));
    assert.deepEqual(
      headers.map((i) => (cmds[i] as { name: string }).name),
      ["Date", "To", "From", "Subject", "Message-Id", "X-Mailer"],
    );
    for (const i of headers) {
      assert.deepEqual(cmds[i - 1], { type: "macro", stage: "L", macros: [["i", "5417D16C27E"]] });
    }
    assert.deepEqual(cmds[headers[3]!], {
      type: "header",
      name: "Subject",
      value: "hello libmilter",
    });
  });

  it("s0 sends D T although NODATA was negotiated, and no DATA command", () => {
    assert.ok(macroStages(s0.commands).includes("T"));
    assert.equal(ofType(s0.commands, "data").length, 0);
  });

  it("s0 body, then ADDHEADER X-Libmilter-Test: yes and CONTINUE at end of message", () => {
    const body = ofType(s0.commands, "body");
    assert.equal(body.length, 1);
    assert.equal(
      new TextDecoder().decode(body[0]!.chunk),
      "Hello from the milter lab.\r\nSecond line.\r\n\r\n\r\n",
    );
    assert.deepEqual(s0.replies.slice(-2), [
      { type: "addheader", name: "X-Libmilter-Test", value: "yes" },
      { type: "continue" },
    ]);
    // One CONTINUE for CONNECT, HELO, MAIL, RCPT, 6 headers, EOH and BODY before the final one.
    assert.equal(ofType(s0.replies, "continue").length, 12 + 1);
  });

  it("s0 ends with ABORT ABORT QUIT (15 bytes)", () => {
    assert.deepEqual(types(s0.commands.slice(-4)), ["eom", "abort", "abort", "quit"]);
    const bytes = loadSession("postfix-libmilter", "pcap.s0").toFilter;
    assert.deepEqual(bytes.subarray(-15), fromHex("000000014100000001410000000151"));
  });

  it("s1 rejects at end of message with REPLYCODE 550 5.7.1", () => {
    assert.deepEqual(ofType(s1.commands, "header")[3], {
      type: "header",
      name: "Subject",
      value: "please REJECTME",
    });
    assert.deepEqual(s1.replies.at(-1), {
      type: "replycode",
      text: "550 5.7.1 Message rejected by libmilter testfilter (REJECTME)",
    });
    assert.equal(ofType(s1.replies, "addheader").length, 0);
  });

  it("the tap recording holds the same filter answers as the pcap", () => {
    const tap1 = loadSession("postfix-tap-libmilter", "tap.c1");
    const tap2 = loadSession("postfix-tap-libmilter", "tap.c2");
    assert.deepEqual(tap1.toMta, loadSession("postfix-libmilter", "pcap.s0").toMta);
    assert.deepEqual(tap2.toMta, loadSession("postfix-libmilter", "pcap.s1").toMta);
    assert.deepEqual(ofType(decodeSession(tap2).commands, "header")[3], {
      type: "header",
      name: "Subject",
      value: "through the tap REJECTME",
    });
  });
});

describe("postfix-libmilter-actions", () => {
  it("s0 MODIFYME: all five modifications in order, then CONTINUE", () => {
    const s0 = session("postfix-libmilter-actions", "pcap.s0");
    assert.deepEqual(s0.replies.slice(-6), [
      { type: "addheader", name: "X-Libmilter-Test", value: "yes" },
      {
        type: "chgheader",
        index: 1,
        name: "Subject",
        value: "MODIFIED by libmilter testfilter",
      },
      { type: "insheader", index: 0, name: "X-Libmilter-First", value: "inserted at index 0" },
      { type: "addrcpt", recipient: "<added@example.test>" },
      {
        type: "replbody",
        chunk: new TextEncoder().encode(
          "This body was replaced by the libmilter testfilter.\r\n",
        ),
      },
      { type: "continue" },
    ]);
  });

  it("s1 TEMPFAILME: REPLYCODE 451 4.7.1", () => {
    const s1 = session("postfix-libmilter-actions", "pcap.s1");
    assert.deepEqual(s1.replies.at(-1), {
      type: "replycode",
      text: "451 4.7.1 Try again later (TEMPFAILME)",
    });
  });

  it("s2 DISCARDME: DISCARD at end of message", () => {
    const s2 = session("postfix-libmilter-actions", "pcap.s2");
    assert.deepEqual(s2.replies.at(-1), { type: "discard" });
    assert.deepEqual(types(s2.commands.slice(-4)), ["eom", "abort", "abort", "quit"]);
  });

  it("s3 rejects at MAIL: no headers, no body, then ABORT ABORT QUIT", () => {
    const s3 = session("postfix-libmilter-actions", "pcap.s3");
    assert.deepEqual(types(s3.commands.filter((c) => c.type !== "macro")), [
      "optneg",
      "connect",
      "helo",
      "mail",
      "abort",
      "abort",
      "quit",
    ]);
    assert.deepEqual(ofType(s3.commands, "mail")[0], {
      type: "mail",
      sender: "<early-reject@example.test>",
      args: [],
    });
    assert.deepEqual(types(s3.replies), ["optneg", "continue", "continue", "replycode"]);
    assert.deepEqual(s3.replies[3], {
      type: "replycode",
      text: "550 5.7.1 sender refused by libmilter testfilter",
    });
  });

  it("delivered copies carry the modifications", () => {
    const eml = new TextDecoder().decode(
      readCaptureFile("postfix-libmilter-actions", "delivered-1.eml"),
    );
    assert.match(eml, /Subject: MODIFIED by libmilter testfilter/);
    assert.match(eml, /X-Libmilter-Test: yes/);
    assert.match(eml, /This body was replaced by the libmilter testfilter\./);
  });
});

describe("postfix-libmilter-multi", () => {
  const { commands, replies } = session("postfix-libmilter-multi", "pcap.s0");

  it("carries three transactions on one connection, with ESMTP size on MAIL", () => {
    assert.equal(ofType(commands, "optneg").length, 1);
    assert.deepEqual(ofType(commands, "mail"), [
      { type: "mail", sender: "<sender@example.test>", args: ["size=83"] },
      { type: "mail", sender: "<sender@example.test>", args: [] },
      { type: "mail", sender: "<sender@example.test>", args: ["size=86"] },
    ]);
    assert.deepEqual(ofType(commands, "rcpt").map((r) => r.recipient), [
      "<user@example.test>",
      "<user@example.test>",
      "<user@example.test>",
      "<other@example.test>",
    ]);
    assert.equal(ofType(commands, "eom").length, 2);
  });

  it("ABORTs after the first message and after RSET, then ends ABORT ABORT QUIT", () => {
    const skeleton = types(commands.filter((c) => c.type !== "macro" && c.type !== "header"));
    assert.deepEqual(skeleton, [
      "optneg",
      "connect",
      "helo",
      "mail",
      "rcpt",
      "eoh",
      "body",
      "eom",
      "abort",
      "mail",
      "rcpt",
      "abort",
      "mail",
      "rcpt",
      "rcpt",
      "eoh",
      "body",
      "eom",
      "abort",
      "abort",
      "quit",
    ]);
  });

  it("accepts message 1 with a header and rejects message 2 with 550", () => {
    assert.deepEqual(ofType(replies, "addheader").length, 1);
    assert.deepEqual(replies.at(-1), {
      type: "replycode",
      text: "550 5.7.1 Message rejected by libmilter testfilter (REJECTME)",
    });
    const rcptMacro = ofType(commands, "macro").find((m) =>
      m.stage === "R" &&
      m.macros.some(([k, v]) => k === "{rcpt_addr}" && v === "other@example.test")
    );
    assert.deepEqual(rcptMacro?.macros[0], ["i", "AD8A716C0D3"]);
  });
});

describe("postfix-libmilter-proto2", () => {
  const { commands, replies } = session("postfix-libmilter-proto2", "pcap.s0");

  it("negotiates version 2: Postfix offers 0x1ff/0x7f, libmilter answers protocol 0", () => {
    assert.deepEqual(commands[0], { type: "optneg", version: 2, actions: 0x1ff, protocol: 0x7f });
    assert.deepEqual(replies[0], { type: "optneg", version: 2, actions: 0x17, protocol: 0 });
  });

  it("has no DATA command and no D T macros", () => {
    assert.equal(ofType(commands, "data").length, 0);
    assert.ok(!macroStages(commands).includes("T"));
    assert.ok(macroStages(commands).includes("L"));
  });

  it("adds the header and continues", () => {
    assert.deepEqual(replies.slice(-2), [
      { type: "addheader", name: "X-Libmilter-Test", value: "yes" },
      { type: "continue" },
    ]);
  });
});

describe("sendmail-libmilter", () => {
  const all = listStems("sendmail-libmilter").map((st) => session("sendmail-libmilter", st));

  it("sends its own connect macros including {if_name}, host localhost", () => {
    const [s0] = all;
    assert.deepEqual(s0!.commands[1], {
      type: "macro",
      stage: "C",
      macros: [
        ["j", "mta.example.test"],
        ["_", "localhost [127.0.0.1]"],
        ["{daemon_name}", "MTA"],
        ["{if_name}", "localhost"],
      ],
    });
    const conn = ofType(s0!.commands, "connect")[0]!;
    assert.equal(conn.hostname, "localhost");
    assert.equal(conn.family, "inet");
    assert.equal(conn.address, "127.0.0.1");
  });

  it("has no per-header or DATA macros, and {msg_id} at end of message", () => {
    for (const s of all) {
      const stages = macroStages(s.commands);
      assert.ok(!stages.includes("L") && !stages.includes("T"), stages.join(","));
      const eomMacro = ofType(s.commands, "macro").find((m) => m.stage === "E");
      assert.equal(eomMacro?.macros[0]?.[0], "{msg_id}");
      assert.ok(stages.includes("H"));
    }
  });

  it("ends every session with QUIT and never sends ABORT", () => {
    for (const s of all) {
      assert.equal(s.commands.at(-1)?.type, "quit");
      assert.equal(ofType(s.commands, "abort").length, 0);
    }
  });

  it("sends empty macro values ({mail_host} of a local sender)", () => {
    const mailMacro = ofType(all[0]!.commands, "macro").find((m) => m.stage === "M")!;
    assert.deepEqual(mailMacro.macros.find(([k]) => k === "{mail_host}"), ["{mail_host}", ""]);
  });

  it("s1 rejects with 550, s2 gets the five modifications", () => {
    assert.equal(all[1]!.replies.at(-1)?.type, "replycode");
    assert.deepEqual(types(all[2]!.replies.slice(-6)), [
      "addheader",
      "chgheader",
      "insheader",
      "addrcpt",
      "replbody",
      "continue",
    ]);
  });
});

describe("miltertest-libmilter", () => {
  const all = listStems("miltertest-libmilter").map((st) => session("miltertest-libmilter", st));

  it("connects with the fake port 12345 in every session", () => {
    for (const s of all) {
      assert.deepEqual(ofType(s.commands, "connect"), [{
        type: "connect",
        hostname: "client.example.test",
        family: "inet",
        port: 12345,
        address: "127.0.0.1",
      }]);
    }
  });

  it("sends only the macros of its script: no D H, ends with QUIT only", () => {
    for (const s of all) {
      assert.deepEqual(macroStages(s.commands), ["C", "M", "R"]);
      assert.equal(ofType(s.commands, "abort").length, 0);
      assert.deepEqual(types(s.commands.slice(-2)), ["eom", "quit"]);
    }
  });

  it("accept, reject and modify sessions get the expected answers", () => {
    assert.deepEqual(types(all[0]!.replies.slice(-2)), ["addheader", "continue"]);
    assert.deepEqual(all[1]!.replies.at(-1), {
      type: "replycode",
      text: "550 5.7.1 Message rejected by libmilter testfilter (REJECTME)",
    });
    // CONTINUE for CONNECT, HELO, MAIL, RCPT, 5 headers, EOH, BODY; then the modifications.
    assert.deepEqual(types(all[2]!.replies), [
      "optneg",
      ...Array<string>(11).fill("continue"),
      "addheader",
      "chgheader",
      "insheader",
      "addrcpt",
      "replbody",
      "continue",
    ]);
  });
});
