/**
 * Golden test of the MTA side against real Postfix 3.7.11 traffic (tests/data/captures, else
 * /work/shared/captures).
 *
 * For every Postfix session recorded against the libmilter C test filter:
 * 1. the transactions Postfix sent are rebuilt from the capture's MTA→filter frames (client
 *    address and port, HELO, envelope, headers, body, and the values behind the macros: `j`,
 *    `{daemon_name}`, `{daemon_addr}`, `v`, `{mail_mailer}`, the queue id `i`);
 * 2. a fake filter replays the capture's filter→MTA frames, one recorded answer per command
 *    that expects one;
 * 3. `runTransaction` + `endSession` (Postfix style) drive it; a transaction the SMTP client
 *    abandoned with RSET (MAIL/RCPT then ABORT) is driven with `mail`/`rcpt`/`abort` directly.
 *
 * Compared: the bytes our client sent must equal the capture's MTA→filter stream exactly,
 * frame for frame, macros included (which macros are sent when: `i` only after the first
 * accepted recipient, `D L` before each header, `D T` even under NODATA, no `D T` below
 * version 4, `A` after every transaction and `A Q` at the end).
 *
 * Where Postfix delivered the message (`delivered-1.eml` of the first session): the message
 * produced by `applyModifications` (given Postfix's own Received header taken from that file)
 * must equal the delivered headers and body, except the headers the local delivery agent adds
 * afterwards (Return-Path, X-Original-To, Delivered-To). Line ends are compared as CRLF.
 *
 * Sendmail and miltertest captures are not used here: they are not Postfix style.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import type { TransactionResult } from "../lib/mta/types.ts";
import { FINAL_REPLIES } from "../lib/wire/command_bits.ts";
import { decodeCommand } from "../lib/wire/command_codec.ts";
import { encodeFrame, FrameDecoder } from "../lib/wire/frame.ts";
import { type MessageHeader, parseMessage } from "../lib/mail/message.ts";
import { type MtaIdentity, postfixMacros } from "../lib/mta/presets.ts";
import { decodeReply } from "../lib/wire/reply_codec.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { encodeText } from "../lib/wire/text.ts";
import type { Command, Duplex, Frame } from "../lib/wire/types.ts";
import { SMFIP } from "../lib/wire/constants.ts";
import type { ConnectInfo } from "../lib/mail/envelope.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const local = new URL("./data/captures/", import.meta.url);
const root = existsSync(local) ? local : new URL("file:///work/shared/captures/");

const REPLIED = new Set([
  "connect",
  "helo",
  "mail",
  "rcpt",
  "data",
  "header",
  "eoh",
  "body",
  "eom",
  "unknown",
]);

function frames(bytes: Uint8Array): Frame[] {
  const d = new FrameDecoder();
  const out = d.push(bytes);
  d.finish();
  return out;
}

interface Tx {
  from: string;
  fromArgs: string[];
  rcpts: { recipient: string; args: string[] }[];
  headers: [string, string][];
  body: Uint8Array[];
  queueId?: string;
  eom: boolean;
  allContinue: boolean;
}

interface Recon {
  offer: { version: number; actions: number; protocol: number };
  identity: MtaIdentity;
  connect?: ConnectInfo;
  helo?: string;
  txs: Tx[];
}

/** Rebuilds what Postfix sent from the decoded MTA→filter commands and the answer groups. */
function reconstruct(cmds: Command[], groups: Frame[][], leadspc: boolean): Recon {
  const first = cmds[0]!;
  assert.equal(first.type, "optneg");
  const recon: Recon = {
    offer: { version: first.version, actions: first.actions, protocol: first.protocol },
    identity: {},
    txs: [],
  };
  let tx: Tx | undefined;
  let g = 0;
  for (const c of cmds.slice(1)) {
    let answer: string | undefined;
    if (REPLIED.has(c.type)) answer = decodeReply(groups[g++]!.at(-1)!).type;
    switch (c.type) {
      case "macro": {
        const m = new Map(c.macros);
        if (c.stage === "C") {
          recon.identity = {
            hostname: m.get("j")!,
            daemonName: m.get("{daemon_name}")!,
            daemonAddr: m.get("{daemon_addr}")!,
            version: m.get("v")!,
          };
        }
        if (c.stage === "M" && m.has("{mail_mailer}")) {
          recon.identity = { ...recon.identity, mailer: m.get("{mail_mailer}")! };
        }
        if (tx && m.has("i")) tx.queueId = m.get("i")!;
        break;
      }
      case "connect":
        recon.connect = c.family === "unknown"
          ? { hostname: c.hostname, family: c.family }
          : { hostname: c.hostname, family: c.family, port: c.port!, address: c.address! };
        break;
      case "helo":
        recon.helo = c.name;
        break;
      case "mail":
        tx = {
          from: c.sender,
          fromArgs: [...c.args],
          rcpts: [],
          headers: [],
          body: [],
          eom: false,
          allContinue: true,
        };
        recon.txs.push(tx);
        break;
      case "rcpt":
        tx!.rcpts.push({ recipient: c.recipient, args: [...c.args] });
        break;
      case "header":
        tx!.headers.push([c.name, leadspc ? c.value : ` ${c.value}`]);
        break;
      case "body":
        tx!.body.push(c.chunk);
        break;
      case "eom":
        tx!.eom = true;
        break;
      case "abort":
        tx = undefined;
        break;
    }
    if (tx && answer !== undefined && answer !== "continue") tx.allContinue = false;
  }
  return recon;
}

/** Groups the filter's frames (after OPTNEG) into one answer per replied command. */
function answerGroups(toMta: Frame[]): Frame[][] {
  const groups: Frame[][] = [];
  let cur: Frame[] = [];
  for (const f of toMta.slice(1)) {
    cur.push(f);
    if (FINAL_REPLIES.has(decodeReply(f).type)) {
      groups.push(cur);
      cur = [];
    }
  }
  assert.equal(cur.length, 0, "capture ends inside an answer");
  return groups;
}

/** Replays the recorded answers and records every byte the client sends. */
function replayFilter(conn: Duplex, optneg: Frame, groups: Frame[][]) {
  const received: Uint8Array[] = [];
  const done = (async () => {
    const w = conn.writable.getWriter();
    const d = new FrameDecoder();
    let g = 0;
    try {
      for await (const chunk of conn.readable) {
        received.push(chunk.slice());
        for (const f of d.push(chunk)) {
          const c = decodeCommand(f);
          const answer = c.type === "optneg"
            ? [optneg]
            : REPLIED.has(c.type)
            ? groups[g++] ?? []
            : [];
          for (const a of answer) await w.write(encodeFrame(a.code, a.payload));
        }
      }
    } finally {
      await w.close().catch(() => {});
    }
  })();
  return { received, done };
}

function sessions(): { dir: string; stem: string }[] {
  const out: { dir: string; stem: string }[] = [];
  for (const dir of readdirSync(root).sort()) {
    if (!dir.startsWith("postfix-") || dir.includes(".")) continue;
    for (const f of readdirSync(new URL(`${dir}/`, root)).sort()) {
      if (f.endsWith(".to-filter.bin")) {
        out.push({ dir, stem: f.slice(0, -".to-filter.bin".length) });
      }
    }
  }
  return out;
}

function read(dir: string, file: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(`${dir}/${file}`, root)));
}

const TRACE = new Set(["return-path", "x-original-to", "delivered-to"]);

async function drive(dir: string, stem: string, receivedHeader?: string) {
  const toFilter = read(dir, `${stem}.to-filter.bin`);
  const toMtaFrames = frames(read(dir, `${stem}.to-mta.bin`));
  const groups = answerGroups(toMtaFrames);
  const cmds = frames(toFilter).map(decodeCommand);
  const optneg = decodeReply(toMtaFrames[0]!);
  assert.equal(optneg.type, "optneg");
  const recon = reconstruct(cmds, groups, (optneg.protocol & SMFIP.HDR_LEADSPC) !== 0);
  const [mta, filterSide] = duplexPair(1 << 20);
  const fake = replayFilter(filterSide, toMtaFrames[0]!, groups);
  const client = await MilterClient.open(mta, { ...recon.offer, commandTimeoutMs: 5000 });
  const results: TransactionResult[] = [];
  for (const tx of recon.txs) {
    if (!tx.eom && tx.allContinue) {
      // Abandoned by the SMTP client (RSET): MAIL, RCPTs, then Postfix's ABORT.
      const sender = tx.from;
      await client.mail(sender, tx.fromArgs, postfixMacros("M", { sender }, recon.identity));
      for (const r of tx.rcpts) {
        await client.rcpt(
          r.recipient,
          r.args,
          postfixMacros("R", { sender, recipient: r.recipient }, recon.identity),
        );
      }
      await client.abort();
      continue;
    }
    const head = tx.headers.map(([n, v]) => `${n}:${v.replaceAll("\n", "\r\n")}\r\n`).join("");
    const message = concatBytes([encodeText(head + "\r\n"), ...tx.body]);
    results.push(
      await runTransaction(client, {
        ...(recon.connect ? { connect: recon.connect } : {}),
        ...(recon.helo !== undefined ? { helo: recon.helo } : {}),
        from: tx.from,
        fromArgs: tx.fromArgs,
        rcpts: tx.rcpts,
        message,
        identity: recon.identity,
        ...(tx.queueId !== undefined ? { queueId: tx.queueId } : {}),
        ...(receivedHeader !== undefined ? { receivedHeader } : {}),
      }),
    );
  }
  await endSession(client);
  await fake.done;
  return { sent: concatBytes(fake.received), expected: toFilter, cmds, results, client };
}

function deliveredHeaders(
  bytes: Uint8Array,
): { received: string; expected: MessageHeader[]; body: Uint8Array } {
  const m = parseMessage(bytes);
  const r = m.headers.find((h) => h.name.toLowerCase() === "received")!;
  return {
    received: `${r.name}:${r.value}`,
    expected: m.headers.filter((h) => !TRACE.has(h.name.toLowerCase())),
    body: m.body,
  };
}

describe("MilterClient replays real Postfix sessions", () => {
  const all = sessions();
  it("finds the recorded Postfix sessions", () => {
    assert.ok(all.length >= 9, `only ${all.length} Postfix sessions under ${root}`);
  });

  for (const { dir, stem } of all) {
    it(`${dir}/${stem}: sends the same bytes as Postfix, frame for frame`, async () => {
      const { sent, expected, cmds } = await drive(dir, stem);
      const ours = frames(sent).map(decodeCommand);
      assert.deepEqual(ours, cmds);
      assert.deepEqual(sent, expected);
    });
  }

  for (const dir of [...new Set(all.map((s) => s.dir))]) {
    if (!existsSync(new URL(`${dir}/delivered-1.eml`, root))) continue;
    const stem = all.find((s) => s.dir === dir)!.stem;
    it(`${dir}/${stem}: applyModifications gives the message Postfix delivered`, async () => {
      const delivered = deliveredHeaders(read(dir, "delivered-1.eml"));
      const { results, client } = await drive(dir, stem, delivered.received);
      assert.equal(client.has(SMFIP.HDR_LEADSPC), false);
      const r = results[0]!;
      assert.ok(r.delivered && r.result, `not delivered: ${JSON.stringify(r.verdict)}`);
      assert.deepEqual(r.result.message.headers, delivered.expected);
      assert.deepEqual(r.result.message.body, delivered.body);
      if (dir === "postfix-libmilter-actions") {
        assert.deepEqual(r.result.envelope.recipients.map((x) => x.recipient), [
          "<user@example.test>",
          "<added@example.test>",
        ]);
        assert.equal(r.result.bodyReplaced, true);
        assert.deepEqual(r.modifications.map((m) => m.type), [
          "addheader",
          "chgheader",
          "insheader",
          "addrcpt",
          "replbody",
        ]);
      }
    });
  }

  it("postfix-libmilter-actions: verdicts of the four sessions are what Postfix did", async () => {
    if (!existsSync(new URL("postfix-libmilter-actions/", root))) return;
    const verdicts = [];
    for (const stem of ["pcap.s0", "pcap.s1", "pcap.s2", "pcap.s3"]) {
      const { results } = await drive("postfix-libmilter-actions", stem);
      verdicts.push(results.map((r) => [r.verdict.type, r.verdict.stage, r.verdict.reply ?? ""]));
    }
    assert.deepEqual(verdicts, [
      [["continue", "eom", ""]],
      [["tempfail", "eom", "451 4.7.1 Try again later (TEMPFAILME)"]],
      [["discard", "eom", ""]],
      [["reject", "envfrom", "550 5.7.1 sender refused by libmilter testfilter"]],
    ]);
  });
});
