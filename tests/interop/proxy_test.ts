/**
 * `milterkit proxy` (run from source as a child process) between a real Postfix and real
 * filters (the libmilter C test filter, OpenDKIM), compared with a second Postfix that talks to
 * the same kinds of filters directly:
 *
 *   Postfix P ─▶ proxy L (--record) ─▶ byte relay ─▶ libmilter A
 *             └▶ proxy D (--record --redact) ─────▶ OpenDKIM A (sign)
 *   Postfix Q ─▶ libmilter B, OpenDKIM B (sign)
 *
 * The byte relay is a few lines of node:net written here (no milterkit code): it keeps what
 * crossed the wire in each direction, to compare with the recording.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect, createServer, type Server, type Socket } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { readRecording } from "../../lib/inspect/recording_read.ts";
import { encodeCommand } from "../../lib/wire/command_codec.ts";
import { FrameDecoder } from "../../lib/wire/frame.ts";
import { decodeReply } from "../../lib/wire/reply_codec.ts";
import { type ProxyChild, runCli, startProxy, terminate } from "../helpers/proxy_child.ts";
import {
  ensurePeers,
  headerValues,
  type MaildirMessage,
  parseMessage,
  type PeerProcess,
  type PostfixInstance,
  readMaildir,
  sendMail,
  sleep,
  type SmtpResult,
  startLibmilterFilter,
  startOpenDkim,
  startPostfix,
} from "./harness.ts";

/** One connection through the relay: the bytes of each direction, and how it ended. */
interface Relayed {
  readonly toFilter: Buffer[];
  readonly toMta: Buffer[];
  /** Resolves when the proxy side has closed (FIN or error). */
  readonly proxyEnded: Promise<void>;
}

/** A transparent TCP relay to 127.0.0.1:target that keeps every byte per direction. */
async function startRelay(target: number): Promise<{
  port: number;
  conns: Relayed[];
  close(): Promise<void>;
}> {
  const conns: Relayed[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true }, (a) => {
    const b = connect({ port: target, host: "127.0.0.1", allowHalfOpen: true });
    let ended!: () => void;
    const c: Relayed = {
      toFilter: [],
      toMta: [],
      proxyEnded: new Promise<void>((r) => (ended = r)),
    };
    conns.push(c);
    for (const s of [a, b]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    a.on("data", (d: Buffer) => void (c.toFilter.push(Buffer.from(d)), b.write(d)));
    b.on("data", (d: Buffer) => void (c.toMta.push(Buffer.from(d)), a.write(d)));
    a.on("end", () => (ended(), b.end()));
    b.on("end", () => a.end());
    a.on("error", () => (ended(), b.destroy()));
    b.on("error", () => a.destroy());
    a.on("close", () => ended());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    conns,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

let seq = 0;
function message(subject: string, extraHeaders = "") {
  const marker = `p${Date.now()}-${++seq}`;
  const body = `Body text ${marker} that must not be recorded when redacting.\n`;
  return {
    marker,
    subject,
    body,
    data: `From: sender@example.test\nTo: user@example.test\nSubject: ${subject}\n` +
      `X-Test-Marker: ${marker}\n${extraHeaders}\n${body}`,
  };
}

async function copies(maildir: string, marker: string, count: number): Promise<MaildirMessage[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const mine = (await readMaildir(maildir, { count: 0 })).filter((m) =>
      headerValues(m.text, "X-Test-Marker").includes(marker)
    );
    if (mine.length >= count || Date.now() > deadline) return mine;
    await sleep(25);
  }
}

/** Headers that differ between two Postfix instances anyway (ids, dates, hops). */
const VOLATILE = new Set(["received", "message-id", "date", "dkim-signature"]);

/** A delivered copy without what legitimately differs: volatile headers, DKIM time and signature. */
function normalise(text: string) {
  const m = parseMessage(text);
  const dkim = headerValues(text, "DKIM-Signature").map((v) =>
    v.replace(/\s+/g, "").split(";").filter((t) => !/^(t|b)=/.test(t)).sort().join(";")
  );
  return {
    headers: m.headers.filter((h) => !VOLATILE.has(h.name.toLowerCase())),
    body: m.body,
    dkim,
  };
}

const session = (s: Record<string, unknown>) =>
  s as {
    id: string;
    messages: {
      sender?: string;
      recipients: { address: string }[];
      headers: { name: string; value: string }[];
      bodySize: number;
      modifications: { type: string }[];
      outcome: { kind: string; text?: string };
    }[];
    frames: { toFilter: number; toMta: number };
    issues: unknown[];
  };

/** `milterkit dump ARGS --json`, one object per session. */
async function dumpJson(...args: string[]) {
  const r = await runCli(["dump", ...args, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split("\n").map((l) => session(JSON.parse(l)));
}

/** The parts of a dumped session that do not depend on timing or names. */
function comparable(s: ReturnType<typeof session>) {
  const { id: _id, ...rest } = s as unknown as Record<string, unknown>;
  return JSON.stringify(
    rest,
    (k, v) =>
      ["mta", "filter", "start", "end", "notes", "latency", "startTime", "endTime"].includes(k)
        ? undefined
        : v,
  );
}

const markerOf = (m: { headers: { name: string; value: string }[] }) =>
  m.headers.find((h) => h.name === "X-Test-Marker")?.value;

describe("milterkit proxy between real Postfix and real filters", () => {
  let filterA: PeerProcess, filterB: PeerProcess, dkimA: PeerProcess, dkimB: PeerProcess;
  let relay: Awaited<ReturnType<typeof startRelay>>;
  let proxyL: ProxyChild, proxyD: ProxyChild;
  let viaProxy: PostfixInstance, direct: PostfixInstance;
  let dir: string;
  const recL = () => `${dir}/libmilter.jsonl`;
  const recD = () => `${dir}/dkim.jsonl`;

  before(async () => {
    ensurePeers();
    dir = mkdtempSync(`${tmpdir()}/milterkit-proxy-`);
    [filterA, filterB, dkimA, dkimB] = await Promise.all([
      startLibmilterFilter(),
      startLibmilterFilter(),
      startOpenDkim(undefined, "sign"),
      startOpenDkim(undefined, "sign"),
    ]);
    relay = await startRelay(filterA.port);
    [proxyL, proxyD] = await Promise.all([
      startProxy(["-u", `inet:${relay.port}@127.0.0.1`, "-r", recL()]),
      startProxy(["-u", `inet:${dkimA.port}@127.0.0.1`, "-r", recD(), "--redact", "--quiet"]),
    ]);
    [viaProxy, direct] = await Promise.all([
      startPostfix({ milters: `${proxyL.address}, ${proxyD.address}` }),
      startPostfix({ milters: `${filterB.address}, ${dkimB.address}` }),
    ]);
  });

  after(async () => {
    await Promise.all([viaProxy?.stop(), direct?.stop()]);
    await Promise.all([proxyL?.stop(), proxyD?.stop()]);
    await relay?.close();
    await Promise.all([filterA, filterB, dkimA, dkimB].map((p) => p?.stop()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** What was sent through the proxy, with the SMTP result, for the recording checks. */
  const sent: { marker: string; subject: string; body: string; result: SmtpResult }[] = [];

  async function both(m: ReturnType<typeof message>, to = ["user@example.test"]) {
    const send = (port: number) =>
      sendMail({ port, from: "sender@example.test", to, data: m.data });
    const [p, q] = await Promise.all([send(viaProxy.port), send(direct.port)]);
    sent.push({ ...m, result: p });
    return [p, q] as const;
  }

  it("delivers an ordinary message exactly as without the proxy", async () => {
    const m = message("hello through the proxy");
    const [p, q] = await both(m);
    assert.equal(p.code, 250, p.transcript);
    assert.equal(q.code, 250, q.transcript);
    const [a] = await copies(viaProxy.maildir, m.marker, 1);
    const [b] = await copies(direct.maildir, m.marker, 1);
    assert.ok(a && b);
    assert.deepEqual(headerValues(a.text, "X-Libmilter-Test"), ["yes"]);
    assert.equal(headerValues(a.text, "DKIM-Signature").length, 1);
    assert.deepEqual(normalise(a.text), normalise(b.text));
  });

  it("gives the same copies for MODIFYME (every libmilter modification)", async () => {
    const m = message("please MODIFYME", "X-Delete-Me: gone\n");
    const to = ["user@example.test", "removed@example.test"];
    const [p, q] = await both(m, to);
    assert.equal(p.code, 250, p.transcript);
    assert.equal(q.code, 250, q.transcript);
    // user@, added@, added-par@ (removed@ was deleted by the filter)
    const a = await copies(viaProxy.maildir, m.marker, 3);
    const b = await copies(direct.maildir, m.marker, 3);
    const key = (x: MaildirMessage) => headerValues(x.text, "Delivered-To")[0] ?? "";
    const sortByRcpt = (xs: MaildirMessage[]) => [...xs].sort((x, y) => key(x) < key(y) ? -1 : 1);
    assert.deepEqual(sortByRcpt(a).map(key), [
      "added-par@example.test",
      "added@example.test",
      "user@example.test",
    ]);
    assert.deepEqual(
      sortByRcpt(a).map((x) => normalise(x.text)),
      sortByRcpt(b).map((x) => normalise(x.text)),
    );
    assert.deepEqual(headerValues(a[0]!.text, "Subject"), ["MODIFIED by libmilter testfilter"]);
  });

  it("gives the same exact reply for REJECTME and for a sender refused at MAIL", async () => {
    const [p, q] = await both(message("x REJECTME"));
    assert.equal(p.code, 550);
    assert.equal(p.text, "5.7.1 Message rejected by libmilter testfilter (REJECTME)");
    assert.deepEqual([p.stage, p.code, p.text], [q.stage, q.code, q.text]);
    const early = (port: number) =>
      sendMail({
        port,
        from: "early-reject@example.test",
        to: ["user@example.test"],
        data: "Subject: x\n\nx\n",
      });
    const [e1, e2] = await Promise.all([early(viaProxy.port), early(direct.port)]);
    assert.deepEqual([e1.stage, e1.code, e1.text], [
      "mail",
      550,
      "5.7.1 sender refused by libmilter testfilter",
    ]);
    assert.deepEqual([e1.stage, e1.code, e1.text], [e2.stage, e2.code, e2.text]);
  });

  it("gives each of 20 concurrent SMTP sessions its own verdict", async () => {
    const kinds = ["plain", "REJECTME", "TEMPFAILME", "DISCARDME"] as const;
    const want = { plain: 250, REJECTME: 550, TEMPFAILME: 451, DISCARDME: 250 };
    const msgs = Array.from({ length: 20 }, (_, i) => message(`n${i} ${kinds[i % 4]}`));
    const results = await Promise.all(
      msgs.map((m) =>
        sendMail({
          port: viaProxy.port,
          from: "sender@example.test",
          to: ["user@example.test"],
          data: m.data,
        })
      ),
    );
    results.forEach((r, i) => {
      assert.equal(r.code, want[kinds[i % 4]!], r.transcript);
      sent.push({ ...msgs[i]!, result: r });
    });
    // Plain ones are delivered once; discarded ones never.
    for (const [i, m] of msgs.entries()) {
      const got = await copies(viaProxy.maildir, m.marker, kinds[i % 4] === "plain" ? 1 : 0);
      assert.equal(got.length, kinds[i % 4] === "plain" ? 1 : 0, m.subject);
    }
  });

  /** Waits until proxy L has logged the end of every session the relay saw. */
  async function settled(): Promise<void> {
    const deadline = Date.now() + 10_000;
    const ends = () => (proxyL.stderr().match(/session end/g) ?? []).length;
    while (ends() < relay.conns.length || ends() === 0) {
      if (Date.now() > deadline) {
        throw new Error(`Proxy L did not end its sessions:\n${proxyL.stderr()}`);
      }
      await sleep(25);
    }
  }

  it("records the sessions: dump --json shows every message with its verdict and changes", async () => {
    await settled();
    const sessions = await dumpJson(recL());
    assert.equal(sessions.length, relay.conns.length);
    const messages = sessions.flatMap((s) => s.messages);
    for (const s of sent) {
      const m = messages.find((x) => markerOf(x) === s.marker);
      assert.ok(m, `message ${s.subject} is in the recording`);
      assert.equal(m.sender, "<sender@example.test>");
      assert.ok(m.recipients.some((r) => r.address === "<user@example.test>"));
      const kind = /REJECTME/.test(s.subject)
        ? "reject"
        : /TEMPFAILME/.test(s.subject)
        ? "tempfail"
        : /DISCARDME/.test(s.subject)
        ? "discard"
        : "accept";
      assert.equal(m.outcome.kind, kind, s.subject);
      if (kind === "reject") {
        assert.equal(
          m.outcome.text,
          "550 5.7.1 Message rejected by libmilter testfilter (REJECTME)",
        );
      }
      const mods = m.modifications.map((x) => x.type);
      if (/MODIFYME/.test(s.subject)) {
        assert.deepEqual(mods, [
          "addheader",
          "chgheader",
          "insheader",
          "chgheader",
          "addrcpt",
          "addrcpt_par",
          "delrcpt",
          "chgfrom",
          "replbody",
        ]);
      } else assert.deepEqual(mods, kind === "accept" ? ["addheader"] : []);
    }
    assert.ok(
      messages.some((m) =>
        m.sender === "<early-reject@example.test>" && m.outcome.kind === "reject"
      ),
    );
  });

  it("records exactly the bytes that crossed the wire, per direction", async () => {
    await settled();
    const rec = readRecording(readFileSync(recL(), "utf8"));
    const wire = relay.conns.map((c) => ({
      toFilter: Buffer.concat(c.toFilter),
      toMta: Buffer.concat(c.toMta),
    }));
    assert.equal(rec.sessions.length, wire.length);
    const key = (x: { toFilter: Uint8Array; toMta: Uint8Array }) =>
      Buffer.from(x.toFilter).toString("base64") + "|" + Buffer.from(x.toMta).toString("base64");
    assert.deepEqual(rec.sessions.map(key).sort(), wire.map(key).sort());
    assert.ok(wire.every((w) => w.toFilter.length > 0 && w.toMta.length > 0));
    // And the relay's bytes, dumped as .bin streams, decode to the very same sessions.
    const recorded = await dumpJson(recL());
    for (const [i, w] of wire.entries()) {
      writeFileSync(`${dir}/c${i}.to-filter.bin`, w.toFilter);
      writeFileSync(`${dir}/c${i}.to-mta.bin`, w.toMta);
    }
    const fromWire = await dumpJson(...wire.map((_, i) => `${dir}/c${i}.to-filter.bin`));
    assert.deepEqual(recorded.map(comparable).sort(), fromWire.map(comparable).sort());
  });

  it("shows one line per frame and a summary per message, and the checker finds nothing", async () => {
    await settled();
    const out = proxyL.stdout();
    const sessions = await dumpJson(recL());
    for (const s of sessions) {
      const id = s.id.slice(s.id.lastIndexOf("#") + 1);
      const frameLines = out.split("\n").filter((l) => l.startsWith(`[${id} +`));
      assert.equal(frameLines.length, s.frames.toFilter + s.frames.toMta, id);
      const summaries = out.split("\n").filter((l) => l.startsWith(`[${id}] message `));
      const decided = s.messages.filter((m) => !["aborted", "incomplete"].includes(m.outcome.kind));
      assert.equal(summaries.length, decided.length, id);
      assert.deepEqual(s.issues, []);
    }
    const modify = sent.find((s) => /MODIFYME/.test(s.subject))!;
    const m = sessions.find((s) => s.messages.some((x) => markerOf(x) === modify.marker))!;
    const id = m.id.slice(m.id.lastIndexOf("#") + 1);
    assert.match(
      out,
      new RegExp(
        `\\[${id}\\] message 1 \\S+Z queue=\\w+: from=<sender@example.test> ` +
          `to=<user@example.test>,<removed@example.test> verdict=ACCEPT \\(continue at eom\\) ` +
          `changes=addheader,chgheader,insheader,chgheader,addrcpt,addrcpt_par,delrcpt,chgfrom,replbody`,
      ),
    );
    assert.match(
      out,
      /\] message 1 \S+Z queue=\w+: from=<sender@example.test> to=<user@example.test> verdict=REJECT/,
    );
    const check = await runCli(["dump", "--check", recL()]);
    assert.equal(check.code, 0, check.stdout);
    assert.doesNotMatch(proxyL.stderr(), /protocol issue|WARN|ERROR/);
  });

  it("--redact keeps no header value or body byte, while dump still shows the structure", async () => {
    const deadline = Date.now() + 10_000;
    while ((proxyD.stderr().match(/session end/g) ?? []).length < sent.length) {
      if (Date.now() > deadline) break;
      await sleep(25);
    }
    const text = readFileSync(recD(), "utf8");
    const rec = readRecording(text);
    assert.equal(rec.header.redacted, true);
    const raw =
      rec.sessions.map((s) => Buffer.concat([s.toFilter, s.toMta]).toString("latin1")).join("\n") +
      text;
    for (const s of sent) {
      assert.ok(!raw.includes(s.subject), `subject ${s.subject} left out`);
      assert.ok(!raw.includes(s.body.trim()), "body text left out");
      assert.ok(!raw.includes(s.marker), "header value left out");
    }
    const sessions = await dumpJson(recD());
    const messages = sessions.flatMap((x) => x.messages).filter((m) => m.bodySize > 0);
    assert.ok(messages.length >= 6, `${messages.length} messages with a body`);
    for (const m of messages) {
      assert.ok(m.headers.some((h) => h.name === "Subject" && h.value.trim() === ""));
      assert.ok(m.headers.some((h) => h.name === "X-Test-Marker"));
      assert.equal(m.sender, "<sender@example.test>");
    }
    const ordinary = sent.find((s) => s.subject === "hello through the proxy")!;
    const signed = messages.filter((m) => m.modifications.some((x) => x.type === "insheader"));
    assert.ok(signed.length > 0, "OpenDKIM's signature header is in the structure");
    assert.ok(
      messages.some((m) => m.bodySize === Buffer.byteLength(ordinary.body.replace(/\n/g, "\r\n"))),
    );
  });

  it("closes the filter connection when the MTA disappears mid-session", async () => {
    const before = relay.conns.length;
    const sock = connect({ port: proxyL.port, host: "127.0.0.1" });
    await new Promise<void>((r) => sock.once("connect", () => r()));
    const dec = new FrameDecoder();
    const replies: string[] = [];
    sock.on("data", (d: Buffer) => {
      for (const f of dec.push(new Uint8Array(d))) replies.push(decodeReply(f).type);
    });
    sock.write(encodeCommand({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0 }));
    sock.write(encodeCommand({ type: "connect", hostname: "gone.example", family: "unknown" }));
    sock.write(encodeCommand({ type: "mail", sender: "<gone@example.test>", args: [] }));
    const deadline = Date.now() + 10_000;
    while (replies.length < 3 && Date.now() < deadline) await sleep(10);
    assert.deepEqual(replies, ["optneg", "continue", "continue"]);
    const ends = () => (proxyL.stderr().match(/session end session=\S+ end=mta/g) ?? []).length;
    const n = ends();
    sock.destroy();
    const c = relay.conns[before];
    assert.ok(c, "the proxy connected to the filter");
    await Promise.race([
      c.proxyEnded,
      sleep(10_000).then(() => assert.fail("the proxy kept the filter connection open")),
    ]);
    while (ends() === n && Date.now() < deadline) await sleep(10);
    assert.equal(ends(), n + 1, "the proxy ended the session");
  });

  it("stops gracefully on SIGTERM", async () => {
    assert.ok(await terminate(proxyL), proxyL.stderr());
    assert.ok(await terminate(proxyD), proxyD.stderr());
  });
});
