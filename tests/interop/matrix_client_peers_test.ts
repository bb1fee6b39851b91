/**
 * Interop matrix, MTA side: milterkit's MTA engine (`MilterClient` + `runTransaction`) drives
 * real filters nobody on the team wrote: the libmilter C test filter, the same rules on pymilter
 * (libmilter under Python), and OpenDKIM (sign, then verify what milterkit says would be
 * delivered). Each verdict and each modification is what the peer's documented behaviour says
 * (testfilter.c / pyfilter.py header comments; OpenDKIM's opendkim.conf(5)).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { serializeMessage } from "../../lib/mail/message.ts";
import { MilterClient } from "../../lib/mta/client.ts";
import { endSession, runTransaction } from "../../lib/mta/transaction.ts";
import type { TransactionInput, TransactionResult } from "../../lib/mta/types.ts";
import { connect as connectSocket } from "../../lib/server/net.ts";
import { ensurePeers, type PeerProcess, startLibmilterFilter, startOpenDkim } from "./harness.ts";
import { startPymilterFilter } from "./helpers_matrix.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function tx(subject: string, opts: Partial<TransactionInput> = {}): TransactionInput {
  return {
    connect: { hostname: "localhost", family: "inet", address: "127.0.0.1", port: 40000 },
    helo: "client.example.test",
    from: "<sender@example.test>",
    rcpts: ["<user@example.test>"],
    message: enc.encode(
      `From: sender@example.test\r\nTo: user@example.test\r\nSubject: ${subject}\r\n` +
        `Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m-${subject.length}@example.test>\r\n` +
        `\r\nHello from milterkit.\r\n`,
    ),
    ...opts,
  };
}

/** Runs transactions on one fresh milter connection to `peer`. */
async function session(
  peer: PeerProcess,
  txs: TransactionInput[],
): Promise<{ results: TransactionResult[]; client: MilterClient }> {
  const client = await MilterClient.open(await connectSocket(`inet:${peer.port}@127.0.0.1`));
  try {
    const results = [];
    for (const t of txs) results.push(await runTransaction(client, t));
    return { results, client };
  } finally {
    await endSession(client);
  }
}

const header = (r: TransactionResult, name: string): string[] =>
  (r.result?.message.headers ?? []).filter((h) => h.name.toLowerCase() === name.toLowerCase())
    .map((h) => h.value.replace(/^ /, ""));

const PEERS = [
  {
    key: "libmilter",
    label: "libmilter testfilter",
    start: () => startLibmilterFilter(),
    mark: "X-Libmilter-Test",
    first: "X-Libmilter-First",
  },
  {
    key: "pymilter",
    label: "pymilter pyfilter",
    start: () => startPymilterFilter(),
    mark: "X-Pymilter-Test",
    first: "X-Pymilter-First",
  },
] as const;

for (const p of PEERS) {
  describe(`matrix: ${p.key} <- milterkit MTA engine`, () => {
    let peer: PeerProcess | undefined;

    before(async () => {
      ensurePeers();
      peer = await p.start();
    });

    after(async () => {
      await peer?.stop();
    });

    it("negotiation: the filter's actions are in force", async () => {
      const { client } = await session(peer!, []);
      assert.equal(client.negotiated.version, 6);
      // ADDHDRS CHGBODY ADDRCPT DELRCPT CHGHDRS QUARANTINE CHGFROM ADDRCPT_PAR = 0xff
      assert.equal(client.negotiated.actions & 0xff, 0xff);
    });

    it("accept: continue at end of message, marker header added", async () => {
      const { results: [r] } = await session(peer!, [tx("plain")]);
      assert.equal(r!.verdict.type, "continue");
      assert.equal(r!.delivered, true);
      assert.deepEqual(header(r!, p.mark), ["yes"]);
    });

    it("reject at end of message with the filter's 550 text", async () => {
      const { results: [r] } = await session(peer!, [tx("please REJECTME")]);
      assert.deepEqual([r!.verdict.type, r!.verdict.stage], ["reject", "eom"]);
      assert.equal(r!.verdict.reply, `550 5.7.1 Message rejected by ${p.label} (REJECTME)`);
      assert.equal(r!.delivered, false);
    });

    it("tempfail at end of message with the filter's 451 text", async () => {
      const { results: [r] } = await session(peer!, [tx("TEMPFAILME")]);
      assert.deepEqual([r!.verdict.type, r!.verdict.reply], [
        "tempfail",
        "451 4.7.1 Try again later (TEMPFAILME)",
      ]);
    });

    it("discard at end of message", async () => {
      const { results: [r] } = await session(peer!, [tx("DISCARDME")]);
      assert.deepEqual([r!.verdict.type, r!.delivered], ["discard", false]);
    });

    it("reject at MAIL for <early-reject@...>", async () => {
      const { results: [r] } = await session(peer!, [
        tx("early", { from: "<early-reject@example.test>" }),
      ]);
      assert.deepEqual([r!.verdict.type, r!.verdict.stage], ["reject", "envfrom"]);
      assert.equal(r!.verdict.reply, `550 5.7.1 sender refused by ${p.label}`);
    });

    it("quarantine: held with the filter's reason", async () => {
      const { results: [r] } = await session(peer!, [tx("QUARANTINEME")]);
      assert.equal(r!.delivered, true);
      assert.equal(r!.result?.quarantine, `QUARANTINEME seen by ${p.label}`);
    });

    it("every modification is applied to the message and envelope", async () => {
      const { results: [r] } = await session(peer!, [
        tx("please MODIFYME", {
          rcpts: ["<user@example.test>", "<removed@example.test>"],
          message: enc.encode(
            "From: sender@example.test\r\nSubject: please MODIFYME\r\nX-Delete-Me: gone\r\n" +
              "X-Keep-Me: stays\r\n\r\nOriginal body.\r\n",
          ),
        }),
      ]);
      assert.equal(r!.verdict.type, "continue");
      const out = r!.result!;
      assert.deepEqual(header(r!, "Subject"), [`MODIFIED by ${p.label}`]);
      assert.equal(out.message.headers[0]?.name, p.first, "inserted at index 0");
      assert.deepEqual(header(r!, "X-Delete-Me"), []);
      assert.deepEqual(header(r!, "X-Keep-Me"), ["stays"]);
      assert.equal(out.envelope.sender, "<changed-from@example.test>");
      assert.deepEqual(
        out.envelope.recipients.map((x) => `${x.recipient} ${x.args.join(" ")}`.trim()),
        ["<user@example.test>", "<added@example.test>", "<added-par@example.test> NOTIFY=NEVER"],
      );
      assert.equal(out.bodyReplaced, true);
      assert.equal(dec.decode(out.message.body), `This body was replaced by the ${p.label}.\r\n`);
    });

    it("several transactions on one connection keep their own verdicts", async () => {
      const { results } = await session(peer!, [tx("one"), tx("two REJECTME"), tx("three")]);
      assert.deepEqual(results.map((r) => r.verdict.type), ["continue", "reject", "continue"]);
      assert.deepEqual(header(results[2]!, p.mark), ["yes"]);
    });
  });
}

describe("matrix: opendkim <- milterkit MTA engine", () => {
  let signer: PeerProcess | undefined;
  let verifier: PeerProcess | undefined;

  before(async () => {
    ensurePeers();
    signer = await startOpenDkim(undefined, "sign");
    verifier = await startOpenDkim(undefined, "verify");
  });

  after(async () => {
    await signer?.stop();
    await verifier?.stop();
  });

  it("signs, and the message milterkit would deliver verifies (dkim=pass)", async () => {
    const { results: [signed] } = await session(signer!, [tx("sign me")]);
    assert.equal(signed!.verdict.type, "accept"); // OpenDKIM answers SMFIS_ACCEPT at EOM
    const [sig] = header(signed!, "DKIM-Signature");
    assert.ok(sig, "DKIM-Signature inserted");
    assert.match(sig, /d=example\.test;/);
    assert.match(sig, /s=lab;/);
    assert.equal(signed!.modifications[0]?.type, "insheader");

    const { results: [verified] } = await session(verifier!, [
      tx("sign me", { message: serializeMessage(signed!.result!.message) }),
    ]);
    const ar = header(verified!, "Authentication-Results").join("\n");
    assert.match(ar, /dkim=pass/, ar);
  });

  it("a tampered body fails verification (dkim=fail)", async () => {
    const { results: [signed] } = await session(signer!, [tx("tamper")]);
    const tampered = { ...signed!.result!.message, body: enc.encode("Changed on the way.\r\n") };
    const { results: [verified] } = await session(verifier!, [
      tx("tamper", { message: serializeMessage(tampered) }),
    ]);
    const ar = header(verified!, "Authentication-Results").join("\n");
    assert.match(ar, /dkim=fail/, ar);
  });
});
