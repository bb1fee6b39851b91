/**
 * MilterClient against a scripted fake filter: the fake decodes every frame with the codec,
 * records it, and answers exactly what the test tells it to (so client bugs cannot hide).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, newSession, runTransaction } from "../lib/mta/transaction.ts";
import { newQueueId, postfixMacros } from "../lib/mta/presets.ts";
import type { ClientOptions } from "../lib/mta/types.ts";
import { decodeCommand } from "../lib/wire/command_codec.ts";
import {
  ConnectionClosedError,
  MilterNegotiationError,
  MilterProtocolError,
  MilterTimeoutError,
} from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { encodeReply } from "../lib/wire/reply_codec.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import type { Command, Duplex, Reply } from "../lib/wire/types.ts";
import { SMFIF, SMFIP } from "../lib/wire/constants.ts";

type Answer = Reply[] | "close" | "silent" | undefined;

/** A filter that answers OPTNEG with `optneg` and every other command with `script(cmd)`. */
class FakeFilter {
  readonly commands: Command[] = [];
  readonly done: Promise<void>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(
    conn: Duplex,
    optneg: Reply,
    script: (cmd: Command, self: FakeFilter) => Answer = defaultAnswer,
  ) {
    this.#writer = conn.writable.getWriter();
    this.done = this.#run(conn, optneg, script);
  }

  async #run(conn: Duplex, optneg: Reply, script: (c: Command, f: FakeFilter) => Answer) {
    const d = new FrameDecoder();
    const reader = conn.readable.getReader();
    try {
      while (true) {
        const r = await reader.read();
        if (r.done) break;
        for (const f of d.push(r.value)) {
          const c = decodeCommand(f);
          this.commands.push(c);
          const a = c.type === "optneg" ? [optneg] : script(c, this);
          if (a === "close") {
            await reader.cancel();
            await this.#writer.close().catch(() => {});
            return;
          }
          if (a === "silent" || a === undefined) continue;
          for (const reply of a) await this.send(reply);
        }
      }
    } catch { /* the client went away */ }
    await this.#writer.close().catch(() => {});
  }

  async send(reply: Reply): Promise<void> {
    await this.#writer.write(encodeReply(reply)).catch(() => {});
  }

  /** Command types seen, macros shown as `D<stage>`. */
  get trace(): string[] {
    return this.commands.map((c) => (c.type === "macro" ? `D${c.stage}` : c.type));
  }
}

const NO_REPLY = new Set(["macro", "abort", "quit", "quit_nc"]);

function defaultAnswer(c: Command): Answer {
  if (NO_REPLY.has(c.type)) return undefined;
  if (c.type === "eom") return [{ type: "accept" }];
  return [{ type: "continue" }];
}

function optneg(
  actions = 0,
  protocol = 0,
  version = 6,
  symlists?: { stage: number; macros: string }[],
): Reply {
  return symlists
    ? { type: "optneg", version, actions, protocol, symlists }
    : { type: "optneg", version, actions, protocol };
}

async function pair(
  reply: Reply,
  script?: (c: Command, f: FakeFilter) => Answer,
  options?: ClientOptions,
): Promise<{ client: MilterClient; filter: FakeFilter }> {
  const [mta, filterSide] = duplexPair(1 << 20);
  const filter = new FakeFilter(filterSide, reply, script);
  const client = await MilterClient.open(mta, options);
  return { client, filter };
}

async function finish(client: MilterClient, filter: FakeFilter): Promise<void> {
  await client.close();
  await filter.done;
}

const CONNECT = {
  hostname: "[192.0.2.1]",
  family: "inet",
  address: "192.0.2.1",
  port: 4711,
} as const;

describe("MilterClient.open() negotiation", () => {
  it("offers v6/0x1FF/0x1FFFFF and exposes what the filter asked for", async () => {
    const { client, filter } = await pair(
      optneg(0x111, SMFIP.NOUNKNOWN | SMFIP.SKIP, 6, [{
        stage: 2,
        macros: "{auth_authen} {mail_addr}",
      }]),
    );
    assert.deepEqual(filter.commands[0], {
      type: "optneg",
      version: 6,
      actions: 0x1ff,
      protocol: 0x1fffff,
    });
    assert.equal(client.negotiated.version, 6);
    assert.equal(client.negotiated.actions, 0x111);
    assert.equal(client.negotiated.protocol, SMFIP.NOUNKNOWN | SMFIP.SKIP);
    assert.deepEqual([...client.macroLists.get("M")!], ["{auth_authen}", "{mail_addr}"]);
    assert.equal(client.requested.type, "optneg");
    await finish(client, filter);
  });

  it("offers Postfix milter_protocol=2 with the preset", async () => {
    const { client, filter } = await pair(optneg(0x11, 0, 2), undefined, { preset: "postfix-2" });
    assert.deepEqual(filter.commands[0], {
      type: "optneg",
      version: 2,
      actions: 0x1ff,
      protocol: 0x7f,
    });
    await finish(client, filter);
  });

  it("downgrades to v2: no DATA (nor its macros) and no UNKNOWN are sent", async () => {
    const { client, filter } = await pair(optneg(0, 0, 2));
    assert.equal(client.negotiated.version, 2);
    await client.mail("<a@b>", [], { "{mail_addr}": "a@b" });
    const d = await client.data({ i: "Q1" });
    assert.deepEqual(d, {
      outcome: "not-sent",
      reason: "version",
      verdict: { type: "continue" },
      progress: 0,
    });
    const u = await client.unknown("XYZZY");
    assert.equal(u.reason, "version");
    await client.eoh({ i: "Q1" });
    await client.quit();
    await filter.done;
    assert.deepEqual(filter.trace, ["optneg", "DM", "mail", "DN", "eoh", "quit"]);
  });

  it("v3 sends UNKNOWN but not DATA", async () => {
    const { client, filter } = await pair(optneg(0, 0, 3));
    assert.equal((await client.data()).reason, "version");
    assert.equal((await client.unknown("XYZZY")).outcome, "replied");
    await finish(client, filter);
    assert.deepEqual(filter.trace, ["optneg", "DU", "unknown"]);
  });

  it("refuses actions that were not offered, naming them", async () => {
    const [mta, f] = duplexPair();
    const filter = new FakeFilter(f, optneg(SMFIF.ADDHDRS | SMFIF.CHGHDRS | SMFIF.QUARANTINE, 0));
    await assert.rejects(MilterClient.open(mta, { actions: SMFIF.ADDHDRS }), (e) => {
      assert.ok(e instanceof MilterNegotiationError);
      assert.deepEqual(e.missing, ["CHGHDRS", "QUARANTINE"]);
      assert.match(e.message, /CHGHDRS, QUARANTINE/);
      return true;
    });
    await filter.done;
  });

  it("refuses a version above the offer and unoffered feature bits, accepts unoffered NR_* bits", async () => {
    for (
      const [reply, missing] of [
        [optneg(0, 0, 7), ["version 7"]],
        [optneg(0, SMFIP.SKIP | SMFIP.HDR_LEADSPC, 2), ["SKIP", "HDR_LEADSPC"]],
        [optneg(0, 0, 1), ["version 1"]],
      ] as const
    ) {
      const [mta, f] = duplexPair();
      const filter = new FakeFilter(f, reply);
      await assert.rejects(MilterClient.open(mta, { preset: "postfix-2", version: 6 }), (e) => {
        assert.ok(e instanceof MilterNegotiationError, String(e));
        assert.deepEqual(e.missing, missing);
        return true;
      });
      await filter.done;
    }
    const { client, filter } = await pair(optneg(0, SMFIP.NR_HDR | SMFIP.NOEOH, 2), undefined, {
      preset: "postfix-2",
    });
    assert.equal(client.negotiated.protocol, SMFIP.NR_HDR | SMFIP.NOEOH);
    assert.match(client.warnings.join("\n"), /NR_HDR/);
    await finish(client, filter);
  });

  it("refuses a first reply that is not OPTNEG", async () => {
    const [mta, f] = duplexPair();
    const filter = new FakeFilter(f, { type: "continue" });
    await assert.rejects(MilterClient.open(mta), (e) => {
      assert.ok(e instanceof MilterProtocolError);
      assert.equal(e.reason, "unexpected");
      return true;
    });
    await filter.done;
  });
});

describe("MilterClient commands", () => {
  it("does not read a reply when NR_* was negotiated", async () => {
    const { client, filter } = await pair(
      optneg(0, SMFIP.NR_HDR | SMFIP.NR_CONN),
      (
        c,
      ) => (c.type === "header" || c.type === "connect" || NO_REPLY.has(c.type)
        ? undefined
        : defaultAnswer(c)),
      { contentTimeoutMs: 2000, commandTimeoutMs: 2000 },
    );
    assert.equal((await client.connect(CONNECT)).outcome, "no-reply");
    assert.equal((await client.helo("h")).outcome, "replied");
    const h = await client.header("Subject", " x");
    assert.equal(h.outcome, "no-reply");
    const eoh = await client.eoh();
    assert.equal(eoh.outcome, "replied");
    await finish(client, filter);
  });

  it("does not send NO* events but still sends their macros", async () => {
    const { client, filter } = await pair(
      optneg(0, SMFIP.NOHELO | SMFIP.NODATA | SMFIP.NOUNKNOWN | SMFIP.NORCPT),
    );
    assert.equal((await client.helo("h", { "{tls_version}": "TLSv1.3" })).reason, "disabled");
    await client.mail("<a@b>");
    assert.equal((await client.rcpt("<c@d>")).reason, "disabled");
    assert.equal((await client.data({ i: "Q" })).reason, "disabled");
    assert.equal((await client.unknown("XYZZY")).reason, "disabled");
    await finish(client, filter);
    assert.deepEqual(filter.trace, ["optneg", "DH", "DM", "mail", "DR", "DT", "DU"]);
    assert.deepEqual(filter.commands[1], {
      type: "macro",
      stage: "H",
      macros: [["{tls_version}", "TLSv1.3"]],
    });
  });

  it("sends no header/EOH/body frames and no D L/N/B with NOHDRS/NOEOH/NOBODY (Postfix)", async () => {
    const { client, filter } = await pair(optneg(0, SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NOBODY));
    assert.equal((await client.header("A", " b", { i: "Q" })).reason, "disabled");
    assert.equal((await client.eoh({ i: "Q" })).reason, "disabled");
    assert.equal((await client.body("x\r\n", { i: "Q" })).reason, "disabled");
    assert.equal((await client.eom({ i: "Q" })).verdict.type, "accept");
    await finish(client, filter);
    assert.deepEqual(filter.trace, ["optneg", "DE", "eom"]);
  });

  it("sends only the macros the filter listed, all of them for unlisted stages", async () => {
    const { client, filter } = await pair(
      optneg(SMFIF.SETSYMLIST, 0, 6, [
        { stage: 2, macros: "{mail_addr}" },
        { stage: 5, macros: "{i}" },
        { stage: 1, macros: "" },
      ]),
    );
    await client.connect(CONNECT, { j: "mx", "{daemon_name}": "mx" });
    await client.helo("h", { "{cipher}": "x" });
    await client.mail("<a@b>", [], [["{mail_addr}", "a@b"], ["{mail_host}", "b"]]);
    await client.body("x", { i: "Q", "{msg_id}": "m" });
    await client.eom({ i: "Q", "{msg_id}": "m" });
    await finish(client, filter);
    const macros = filter.commands.filter((c) => c.type === "macro");
    assert.deepEqual(macros, [
      { type: "macro", stage: "C", macros: [["j", "mx"], ["{daemon_name}", "mx"]] },
      // Postfix: an empty list falls back to the default, i.e. everything given.
      { type: "macro", stage: "H", macros: [["{cipher}", "x"]] },
      { type: "macro", stage: "M", macros: [["{mail_addr}", "a@b"]] },
      { type: "macro", stage: "B", macros: [["i", "Q"]] },
      { type: "macro", stage: "E", macros: [["i", "Q"]] },
    ]);
  });

  it("Sendmail style: empty list means no macros, no D L/B/U, no empty D frames", async () => {
    const { client, filter } = await pair(
      optneg(SMFIF.SETSYMLIST, 0, 6, [{ stage: 1, macros: "" }]),
      undefined,
      { preset: "sendmail" },
    );
    await client.connect(CONNECT);
    await client.helo("h", { "{cipher}": "x" });
    await client.mail("<a@b>", [], { "{mail_addr}": "a@b" });
    await client.header("Subject", " s", { i: "Q" });
    await client.body("x", { i: "Q" });
    await client.unknown("XYZZY", { i: "Q" });
    await finish(client, filter);
    assert.deepEqual(filter.trace, [
      "optneg",
      "connect",
      "helo",
      "DM",
      "mail",
      "header",
      "body",
      "unknown",
    ]);
  });

  it("Postfix style sends an empty D frame before every event and D L before headers", async () => {
    const { client, filter } = await pair(optneg());
    await client.connect(CONNECT);
    await client.helo("h");
    await client.header("Subject", " s", { i: "Q" });
    await finish(client, filter);
    assert.deepEqual(filter.trace, ["optneg", "DC", "connect", "DH", "helo", "DL", "header"]);
    assert.deepEqual(filter.commands[3], { type: "macro", stage: "H", macros: [] });
  });

  it("strips exactly one leading space from header values unless HDR_LEADSPC", async () => {
    const a = await pair(optneg());
    await a.client.header("X-Two", "  two");
    await a.client.header("X-Tab", "\ttab");
    await a.client.header("X-Fold", " a,\n\tb");
    await finish(a.client, a.filter);
    const values = a.filter.commands.flatMap((c) => (c.type === "header" ? [c.value] : []));
    assert.deepEqual(values, [" two", "\ttab", "a,\n\tb"]);
    const b = await pair(optneg(0, SMFIP.HDR_LEADSPC));
    await b.client.header("Subject", " Hello");
    await finish(b.client, b.filter);
    assert.deepEqual(b.filter.commands.at(-1), {
      type: "header",
      name: "Subject",
      value: " Hello",
    });
  });

  it("skips progress frames at EOM and collects modifications in order", async () => {
    const mods: Reply[] = [
      { type: "addheader", name: "X-A", value: "1" },
      { type: "progress" },
      { type: "chgheader", index: 1, name: "Subject", value: "new" },
      { type: "insheader", index: 0, name: "X-Top", value: "t" },
      { type: "progress" },
      { type: "addrcpt", recipient: "<c@d>" },
      { type: "delrcpt", recipient: "<b@d>" },
      { type: "replbody", chunk: new Uint8Array([0x68, 0x69]) },
      { type: "quarantine", reason: "hold" },
      { type: "progress" },
      { type: "continue" },
    ];
    const { client, filter } = await pair(
      optneg(0x3f),
      (c) => (c.type === "eom" ? mods : defaultAnswer(c)),
    );
    const r = await client.eom();
    assert.equal(r.progress, 3);
    assert.deepEqual(r.verdict, { type: "continue" });
    assert.deepEqual(
      r.modifications,
      mods.filter((m) => m.type !== "progress" && m.type !== "continue"),
    );
    await finish(client, filter);
  });

  it("counts progress frames before other stages' replies (Postfix accepts them)", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) =>
        c.type === "helo"
          ? [{ type: "progress" }, { type: "progress" }, { type: "reject" }]
          : defaultAnswer(c),
    );
    const r = await client.helo("h");
    assert.deepEqual(r, { outcome: "replied", verdict: { type: "reject" }, progress: 2 });
    await finish(client, filter);
  });

  it("rejects a modification outside end of message with a typed error naming it", async () => {
    const { client, filter } = await pair(
      optneg(SMFIF.ADDHDRS),
      (c) => c.type === "rcpt" ? [{ type: "addheader", name: "X", value: "y" }] : defaultAnswer(c),
    );
    await client.mail("<a@b>");
    await assert.rejects(client.rcpt("<c@d>"), (e) => {
      assert.ok(e instanceof MilterProtocolError);
      assert.equal(e.reason, "unexpected");
      assert.match(e.message, /SMFIR_ADDHEADER.*SMFIC_RCPT/);
      return true;
    });
    assert.ok(client.closed);
    await assert.rejects(client.data(), ConnectionClosedError);
    await finish(client, filter);
  });

  it("rejects a modification whose action was not negotiated", async () => {
    const { client, filter } = await pair(
      optneg(SMFIF.ADDHDRS),
      (c) =>
        c.type === "eom"
          ? [{ type: "chgfrom", sender: "<x@y>" }, { type: "accept" }]
          : defaultAnswer(c),
    );
    await assert.rejects(client.eom(), (e) => {
      assert.ok(e instanceof MilterProtocolError);
      assert.match(e.message, /SMFIR_CHGFROM.*CHGFROM was not negotiated/);
      return true;
    });
    await finish(client, filter);
  });

  it("rejects REPLBODY chunks interleaved with other requests (Postfix), allows it for Sendmail", async () => {
    const answer = (c: Command): Answer =>
      c.type === "eom"
        ? [
          { type: "replbody", chunk: new Uint8Array([0x61]) },
          { type: "addheader", name: "X", value: "1" },
          { type: "replbody", chunk: new Uint8Array([0x62]) },
          { type: "accept" },
        ]
        : defaultAnswer(c);
    const a = await pair(optneg(0x3), answer);
    await assert.rejects(a.client.eom(), /REPLBODY chunks must be contiguous/);
    await finish(a.client, a.filter);
    const b = await pair(optneg(0x3), answer, { preset: "sendmail" });
    assert.equal((await b.client.eom()).modifications.length, 3);
    await finish(b.client, b.filter);
  });

  it("rejects DISCARD at CONNECT, SKIP outside BODY, malformed reply codes", async () => {
    const cases: [string, Reply, (c: MilterClient) => Promise<unknown>, RegExp][] = [
      ["connect", { type: "discard" }, (c) => c.connect(CONNECT), /DISCARD is only allowed/],
      ["helo", { type: "skip" }, (c) => c.helo("h"), /SKIP is only portable/],
      [
        "helo",
        { type: "replycode", text: "250 ok" },
        (c) => c.helo("h"),
        /malformed SMFIR_REPLYCODE/,
      ],
      ["helo", { type: "replycode", text: "550 4.7.1 no" }, (c) => c.helo("h"), /class 4 differs/],
      ["helo", { type: "connfail" }, (c) => c.helo("h"), /SMFIR_CONN_FAIL/],
    ];
    for (const [stage, reply, call, re] of cases) {
      const { client, filter } = await pair(
        optneg(0, SMFIP.SKIP),
        (c) => c.type === stage ? [reply] : defaultAnswer(c),
      );
      await assert.rejects(call(client), (e) => {
        assert.ok(e instanceof MilterProtocolError, String(e));
        assert.match(e.message, re);
        return true;
      });
      await finish(client, filter);
    }
  });

  it("detects a second reply that arrived before the next command", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) =>
        c.type === "helo"
          ? [{ type: "replycode", text: "451 4.7.1 later" }, { type: "reject" }]
          : defaultAnswer(c),
    );
    assert.equal((await client.helo("h")).verdict.type, "replycode");
    await new Promise((r) => setTimeout(r, 20));
    await assert.rejects(client.mail("<a@b>"), (e) => {
      assert.ok(e instanceof MilterProtocolError);
      assert.match(e.message, /nobody asked for after the reply to SMFIC_HELO/);
      return true;
    });
    await finish(client, filter);
  });
});

describe("MilterClient body", () => {
  it("splits a 200 KB body into 65535-byte frames, never an empty one", async () => {
    const { client, filter } = await pair(optneg());
    const body = new Uint8Array(200_000).map((_, i) => 0x41 + (i % 26));
    const r = await client.body(body, { i: "Q" });
    assert.equal(r.chunks, 4);
    assert.equal((await client.body(new Uint8Array(0))).reason, "empty");
    await finish(client, filter);
    const chunks = filter.commands.flatMap((c) => (c.type === "body" ? [c.chunk] : []));
    assert.deepEqual(chunks.map((c) => c.length), [65535, 65535, 65535, 3395]);
    assert.deepEqual(Uint8Array.from(chunks.flatMap((c) => [...c])), body);
    assert.equal(filter.trace.filter((t) => t === "DB").length, 4);
  });

  it("stops sending body after SKIP for this message only", async () => {
    const { client, filter } = await pair(
      optneg(0, SMFIP.SKIP),
      (c) => c.type === "body" ? [{ type: "skip" }] : defaultAnswer(c),
    );
    const r = await client.body(new Uint8Array(100_000));
    assert.equal(r.verdict.type, "skip");
    assert.equal(r.chunks, 1);
    assert.equal((await client.body("more")).reason, "skipped");
    await client.eom();
    await client.abort();
    await client.mail("<a@b>");
    assert.equal((await client.body("again")).outcome, "replied");
    await finish(client, filter);
  });

  it("refuses SKIP when SMFIP_SKIP was not negotiated", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) => (c.type === "body" ? [{ type: "skip" }] : defaultAnswer(c)),
    );
    await assert.rejects(client.body("x"), /SMFIP_SKIP was not negotiated/);
    await finish(client, filter);
  });
});

describe("MilterClient failures", () => {
  it("times out a read with MilterTimeoutError", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) => (c.type === "helo" ? "silent" : defaultAnswer(c)),
      {
        commandTimeoutMs: 50,
      },
    );
    await assert.rejects(client.helo("h"), (e) => {
      assert.ok(e instanceof MilterTimeoutError);
      assert.equal(e.timeoutMs, 50);
      return true;
    });
    await finish(client, filter);
  });

  it("enforces the overall EOM limit even while progress keeps coming", async () => {
    let timer: ReturnType<typeof setInterval> | undefined;
    const { client, filter } = await pair(optneg(), (c, f) => {
      if (c.type !== "eom") return defaultAnswer(c);
      timer = setInterval(() => void f.send({ type: "progress" }), 10);
      return "silent";
    }, { contentTimeoutMs: 1000, eomTimeoutMs: 120 });
    await assert.rejects(client.eom(), (e) => {
      assert.ok(e instanceof MilterTimeoutError);
      assert.equal(e.timeoutMs, 120);
      assert.match(e.message, /overall/);
      return true;
    });
    clearInterval(timer);
    await finish(client, filter);
  });

  it("reports EOF in the middle of EOM as ConnectionClosedError naming the stage", async () => {
    const { client, filter } = await pair(optneg(SMFIF.ADDHDRS), (c, f) => {
      if (c.type !== "eom") return defaultAnswer(c);
      void f.send({ type: "addheader", name: "X", value: "1" });
      return "close";
    });
    await assert.rejects(client.eom(), (e) => {
      assert.ok(e instanceof ConnectionClosedError);
      assert.match(e.message, /SMFIC_BODYEOB/);
      return true;
    });
    await finish(client, filter);
  });

  it("reports a write to a vanished filter as ConnectionClosedError", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) => (c.type === "connect" ? "close" : defaultAnswer(c)),
    );
    await assert.rejects(client.connect(CONNECT), ConnectionClosedError);
    await assert.rejects(client.helo("h"), ConnectionClosedError);
    await client.quit();
    await filter.done;
  });
});

describe("MilterClient sessions", () => {
  it("runs several messages with ABORT between them and ends with QUIT", async () => {
    const { client, filter } = await pair(optneg());
    await client.connect(CONNECT);
    await client.helo("h");
    for (const n of [1, 2]) {
      await client.mail(`<s${n}@x>`);
      await client.rcpt("<r@y>");
      await client.data();
      await client.header("Subject", ` m${n}`);
      await client.eoh();
      await client.body(`body ${n}\r\n`);
      assert.equal((await client.eom()).verdict.type, "accept");
      await client.abort();
    }
    await client.quit();
    await filter.done;
    const cmds = filter.trace.filter((t) => !t.startsWith("D"));
    assert.deepEqual(cmds, [
      "optneg",
      "connect",
      "helo",
      ...["mail", "rcpt", "data", "header", "eoh", "body", "eom", "abort"],
      ...["mail", "rcpt", "data", "header", "eoh", "body", "eom", "abort"],
      "quit",
    ]);
  });

  it("QUIT_NC keeps the connection for a new CONNECT without OPTNEG", async () => {
    const { client, filter } = await pair(optneg());
    await client.connect(CONNECT);
    await client.quitNc();
    assert.equal(
      (await client.connect({ hostname: "localhost", family: "unknown" })).outcome,
      "replied",
    );
    await client.quit();
    await filter.done;
    assert.deepEqual(filter.trace, ["optneg", "DC", "connect", "quit_nc", "DC", "connect", "quit"]);
  });
});

const enc = (t: string) => new TextEncoder().encode(t);
const MESSAGE = enc("Subject: hello\r\nTo: b@example.com,\r\n c@example.com\r\n\r\nHi\r\n");
const TX = {
  connect: CONNECT,
  helo: "client.example.net",
  from: "alice@example.net",
  fromArgs: ["SIZE=300"],
  rcpts: ["bob@example.com", { recipient: "<carol@example.com>", args: ["NOTIFY=NEVER"] }],
  message: MESSAGE,
  queueId: "7A69B20C018",
};

describe("runTransaction()", () => {
  it("sends the whole transaction Postfix style and applies the modifications", async () => {
    const { client, filter } = await pair(optneg(0x1f), (c) =>
      c.type === "eom"
        ? [
          { type: "chgheader", index: 1, name: "Subject", value: "[tagged] hello" },
          { type: "delrcpt", recipient: "<bob@example.com>" },
          { type: "continue" },
        ]
        : defaultAnswer(c));
    const r = await runTransaction(client, TX);
    await endSession(client);
    await filter.done;
    assert.deepEqual(r.verdict, { type: "continue", stage: "eom", scope: "message" });
    assert.equal(r.delivered, true);
    assert.deepEqual(filter.trace, [
      ...[
        "optneg",
        "DC",
        "connect",
        "DH",
        "helo",
        "DM",
        "mail",
        "DR",
        "rcpt",
        "DR",
        "rcpt",
        "DT",
        "data",
      ],
      ...[
        "DL",
        "header",
        "DL",
        "header",
        "DN",
        "eoh",
        "DB",
        "body",
        "DE",
        "eom",
        "abort",
        "abort",
        "quit",
      ],
    ]);
    const mail = filter.commands.find((c) => c.type === "mail");
    assert.deepEqual(mail, { type: "mail", sender: "<alice@example.net>", args: ["SIZE=300"] });
    const headers = filter.commands.flatMap((c) => (c.type === "header" ? [c.value] : []));
    assert.deepEqual(headers, ["hello", "b@example.com,\n c@example.com"]);
    // i only from the second recipient on (Postfix assigns it after the first accepted RCPT).
    const rcptMacros = filter.commands.flatMap((
      c,
    ) => (c.type === "macro" && c.stage === "R" ? [c.macros] : []));
    assert.equal(rcptMacros[0]!.some(([n]) => n === "i"), false);
    assert.deepEqual(rcptMacros[1]![0], ["i", "7A69B20C018"]);
    assert.deepEqual(r.result!.message.headers[0], { name: "Subject", value: " [tagged] hello" });
    assert.deepEqual(r.result!.envelope.recipients, [{
      recipient: "<carol@example.com>",
      args: ["NOTIFY=NEVER"],
    }]);
    assert.deepEqual(r.original.envelope.recipients.length, 2);
  });

  it("drops only the recipient rejected at RCPT and goes on", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) =>
        c.type === "rcpt" && c.recipient === "<bob@example.com>"
          ? [{ type: "replycode", text: "550 5.1.1 No such user" }]
          : defaultAnswer(c),
    );
    const r = await runTransaction(client, TX);
    await endSession(client);
    await filter.done;
    assert.deepEqual(r.rejectedRecipients, [{
      recipient: "<bob@example.com>",
      reply: "550 5.1.1 No such user",
    }]);
    assert.equal(r.verdict.type, "accept");
    assert.deepEqual(r.result!.envelope.recipients.map((x) => x.recipient), [
      "<carol@example.com>",
    ]);
    // The only accepted recipient came second: i is not known yet for it.
    const rcptMacros = filter.commands.flatMap((
      c,
    ) => (c.type === "macro" && c.stage === "R" ? [c.macros] : []));
    assert.equal(rcptMacros[1]!.some(([n]) => n === "i"), false);
  });

  it("refuses the message when every recipient is rejected", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) => (c.type === "rcpt" ? [{ type: "tempfail" }] : defaultAnswer(c)),
    );
    const r = await runTransaction(client, TX);
    await endSession(client);
    await filter.done;
    assert.deepEqual(r.verdict, {
      type: "tempfail",
      stage: "envrcpt",
      scope: "message",
      reply: "451 4.7.1 Service unavailable - try again later",
    });
    assert.equal(r.delivered, false);
    assert.equal(filter.trace.includes("data"), false);
  });

  it("accept at CONNECT accepts the whole session: no more traffic, no QUIT", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) => (c.type === "connect" ? [{ type: "accept" }] : defaultAnswer(c)),
    );
    const r1 = await runTransaction(client, TX);
    const r2 = await runTransaction(client, { ...TX, from: "<other@example.net>" });
    await endSession(client);
    await filter.done;
    assert.deepEqual(r1.verdict, { type: "accept", stage: "connect", scope: "session" });
    assert.deepEqual(r2.verdict, r1.verdict);
    assert.equal(r2.delivered, true);
    assert.deepEqual(r2.result!.message.headers, r2.original.message.headers);
    assert.deepEqual(filter.trace, ["optneg", "DC", "connect"]);
  });

  it("stops at MAIL on reject and reports the filter's text", async () => {
    const { client, filter } = await pair(
      optneg(),
      (c) =>
        c.type === "mail"
          ? [{ type: "replycode", text: "550 5.7.1 No 100%% way" }]
          : defaultAnswer(c),
    );
    const r = await runTransaction(client, TX);
    await endSession(client);
    await filter.done;
    assert.deepEqual(r.verdict, {
      type: "reject",
      stage: "envfrom",
      scope: "message",
      reply: "550 5.7.1 No 100% way",
    });
    assert.deepEqual(filter.trace.slice(-5), ["DM", "mail", "abort", "abort", "quit"]);
  });

  it("accept at DATA delivers the message unmodified without EOM; discard at RCPT drops it", async () => {
    const a = await pair(
      optneg(),
      (c) => (c.type === "data" ? [{ type: "accept" }] : defaultAnswer(c)),
    );
    const r = await runTransaction(a.client, TX);
    await endSession(a.client);
    await a.filter.done;
    assert.deepEqual(r.verdict, { type: "accept", stage: "data", scope: "message" });
    assert.equal(r.delivered, true);
    assert.equal(a.filter.trace.includes("eom"), false);
    const d = await pair(
      optneg(),
      (c) => (c.type === "rcpt" ? [{ type: "discard" }] : defaultAnswer(c)),
    );
    const r2 = await runTransaction(d.client, TX);
    await endSession(d.client);
    await d.filter.done;
    assert.deepEqual(r2.verdict, { type: "discard", stage: "envrcpt", scope: "message" });
    assert.equal(r2.delivered, false);
    assert.equal(d.filter.trace.filter((t) => t === "rcpt").length, 1);
  });

  it("runs several transactions on one connection, CONNECT/HELO once, ABORT after each", async () => {
    const { client, filter } = await pair(optneg());
    await runTransaction(client, TX);
    await runTransaction(client, { ...TX, rcpts: ["dave@example.com"] });
    await endSession(client);
    await filter.done;
    const cmds = filter.trace.filter((t) => !t.startsWith("D"));
    assert.equal(cmds.filter((t) => t === "connect").length, 1);
    assert.equal(cmds.filter((t) => t === "helo").length, 1);
    assert.deepEqual(cmds.filter((t) => ["mail", "eom", "abort", "quit"].includes(t)), [
      ...["mail", "eom", "abort", "mail", "eom", "abort", "abort", "quit"],
    ]);
  });

  it("starts a new session with QUIT_NC: CONNECT again, no OPTNEG", async () => {
    const { client, filter } = await pair(optneg());
    await runTransaction(client, TX);
    await newSession(client);
    await runTransaction(client, TX);
    await endSession(client);
    await filter.done;
    const cmds = filter.trace.filter((t) => !t.startsWith("D"));
    assert.equal(cmds.filter((t) => t === "optneg").length, 1);
    assert.equal(cmds.filter((t) => t === "connect").length, 2);
    assert.ok(cmds.indexOf("quit_nc") < cmds.lastIndexOf("connect"));
  });

  it("Sendmail style: no ABORT after a completed message, QUIT at the end", async () => {
    const { client, filter } = await pair(optneg(), undefined, { preset: "sendmail" });
    await runTransaction(client, TX, {});
    await endSession(client);
    await filter.done;
    assert.equal(filter.trace.includes("abort"), false);
    assert.equal(filter.trace.at(-1), "quit");
  });

  it("lets the caller override and add default macros", async () => {
    const { client, filter } = await pair(optneg());
    await runTransaction(client, {
      ...TX,
      macros: { C: { j: "mx.test", "{client_addr}": "192.0.2.1" } },
    });
    await endSession(client);
    await filter.done;
    const c = filter.commands.find((x) => x.type === "macro" && x.stage === "C");
    assert.ok(c?.type === "macro");
    assert.deepEqual(c.macros.map(([n]) => n), [
      "j",
      "{daemon_name}",
      "{daemon_addr}",
      "v",
      "_",
      "{client_addr}",
    ]);
    assert.equal(c.macros[0]![1], "mx.test");
  });
});

describe("postfixMacros()", () => {
  it("gives Postfix 3.7's connect macros with the observed _ format", () => {
    assert.deepEqual(postfixMacros("C", { client: CONNECT }, { hostname: "mta.example.test" }), [
      ["j", "mta.example.test"],
      ["{daemon_name}", "mta.example.test"],
      ["{daemon_addr}", "127.0.0.1"],
      ["v", "Postfix 3.7.11"],
      ["_", "unknown [192.0.2.1]"],
    ]);
    const named = { ...CONNECT, hostname: "client.example.net" };
    assert.equal(
      postfixMacros("C", { client: named }).at(-1)![1],
      "client.example.net [192.0.2.1]",
    );
  });

  it("sends {mail_addr} empty and nothing else for the null sender; no i before it is assigned", () => {
    assert.deepEqual(postfixMacros("M", { sender: "<>" }), [["{mail_addr}", ""]]);
    assert.deepEqual(postfixMacros("M", { sender: "<a@example.net>" }, { mailer: "virtual" }), [
      ["{mail_addr}", "a@example.net"],
      ["{mail_host}", "example.net"],
      ["{mail_mailer}", "virtual"],
    ]);
  });

  it("gives i alone for T, L, N, B, E and nothing for H and U", () => {
    for (const s of ["T", "L", "N", "B", "E"] as const) {
      assert.deepEqual(postfixMacros(s, { queueId: "Q1" }), [["i", "Q1"]]);
    }
    assert.deepEqual(postfixMacros("H", { queueId: "Q1" }), []);
    assert.deepEqual(postfixMacros("U", { queueId: "Q1" }), []);
  });

  it("makes Postfix-style queue ids", () => {
    assert.match(newQueueId(), /^[0-9A-F]{11}$/);
    assert.notEqual(newQueueId(), newQueueId());
  });
});
