import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { serveConnection } from "../lib/filter/session.ts";
import { MilterClient } from "../lib/mta/client.ts";
import { runTransaction } from "../lib/mta/transaction.ts";
import { decodeCommand } from "../lib/wire/command_codec.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { loadSession } from "./helpers/captures.ts";

/** Macro names per stage letter, in order, from an MTA→filter byte stream. */
function macroNames(bytes: Uint8Array): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const f of new FrameDecoder().push(bytes)) {
    const c = decodeCommand(f);
    if (c.type === "macro" && c.macros.length > 0) out[c.stage] ??= c.macros.map(([k]) => k);
  }
  return out;
}

describe("runTransaction with the sendmail preset", () => {
  it("sends Sendmail 8.17's macro names per stage, as in the recorded Sendmail session", async () => {
    const [mta, filterSide] = duplexPair();
    const seen: Uint8Array[] = [];
    // Record what reaches the filter: tee the MTA's bytes before the engine reads them.
    const [tapA, tapB] = filterSide.readable.tee();
    void (async () => {
      for await (const c of tapB) seen.push(c);
    })();
    const served = serveConnection({ readable: tapA, writable: filterSide.writable }, {
      connect() {},
      helo() {},
      envfrom() {},
      envrcpt() {},
      eom() {},
    });
    const client = await MilterClient.open(mta, { preset: "sendmail" });
    const r = await runTransaction(client, {
      connect: { hostname: "localhost", family: "inet", address: "127.0.0.1", port: 4000 },
      helo: "client.example.test",
      from: "sender@example.test",
      rcpts: ["user@example.test"],
      message: new TextEncoder().encode("Subject: x\r\n\r\nbody\r\n"),
      queueId: "6ALIQsCY017002",
    });
    assert.equal(r.verdict.type, "continue");
    await client.quit();
    await client.close();
    await served;
    const ours = macroNames(Uint8Array.from(seen.flatMap((c) => [...c])));
    const recorded = macroNames(loadSession("sendmail-libmilter", "pcap.s0").toFilter);
    assert.deepEqual(ours, recorded);
    assert.deepEqual(ours.M, ["i", "{mail_mailer}", "{mail_host}", "{mail_addr}"]);
  });
});
