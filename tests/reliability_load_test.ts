/**
 * Load over real loopback sockets: 1,000 MTA connections held open at once against one server,
 * each with its own message, and every decision depending on that message (reject when the
 * number is divisible by 3, otherwise add a header echoing it and move the recipient). Every
 * reply is checked against its own message: zero cross-talk, zero lost replies.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter } from "../lib/filter/filter.ts";
import type { MilterClient } from "../lib/mta/client.ts";
import { endSession, runTransaction } from "../lib/mta/transaction.ts";
import type { TransactionResult } from "../lib/mta/types.ts";
import type { AdapterName } from "../lib/server/adapters/types.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { ADAPTERS, added, message, openClient, tx, waitFor } from "./helpers/server_kit.ts";

const SESSIONS = 1000;
/** Messages sent one after the other on each connection (numbers conn * PER + k). */
const PER = 3;

/** The filter: every decision is a function of the message's own number, checked 3 ways. */
function numberFilter() {
  return defineFilter({
    actions: ["addHeader", "addRecipient", "deleteRecipient"],
    bufferBody: true,
    eom(ctx) {
      const n = Number(ctx.headers.find((h) => h.name === "Subject")?.value.trim().slice(4));
      const body = new TextDecoder().decode(ctx.body);
      // Cross-talk check inside the filter: envelope, header and body must name the same n.
      if (
        ctx.sender?.address !== `sender-${n}@example.net` ||
        ctx.recipients.length !== 1 || ctx.recipients[0]!.address !== `rcpt-${n}@example.com` ||
        body !== `Message number ${n}\r\n`
      ) return { code: 554, text: `5.3.0 Cross-talk in message ${n}` };
      if (n % 3 === 0) return { code: 550, text: `5.7.1 Rejected message ${n}` };
      ctx.addHeader("X-Echo", String(n));
      ctx.deleteRecipient(`<rcpt-${n}@example.com>`);
      ctx.addRecipient(`<moved-${n}@example.com>`);
      return "accept";
    },
  });
}

function checkResult(n: number, r: TransactionResult): void {
  if (n % 3 === 0) {
    assert.equal(r.verdict.type, "reject", `message ${n}`);
    assert.equal(r.verdict.reply, `550 5.7.1 Rejected message ${n}`);
    assert.equal(r.delivered, false);
    return;
  }
  assert.equal(r.verdict.type, "accept", `message ${n}: ${r.verdict.reply}`);
  assert.equal(added(r, "X-Echo"), String(n));
  assert.deepEqual(r.result?.envelope.recipients.map((x) => x.recipient), [
    `<moved-${n}@example.com>`,
  ]);
  assert.equal(r.result?.envelope.sender, `<sender-${n}@example.net>`);
}

for (const adapter of ADAPTERS) {
  describe(`${SESSIONS} concurrent sessions over ${adapter} sockets`, () => {
    it(
      `holds them all open, then answers ${PER} messages on each, each on its own`,
      { timeout: 120_000 },
      async () => {
        const server: MilterServer = await listen(
          "inet:0@127.0.0.1",
          numberFilter(),
          { adapter: adapter as AdapterName, maxConnections: SESSIONS + 10, backlog: 2048 },
        );
        const clients: MilterClient[] = [];
        try {
          // Open in waves so the accept queue never overflows, then hold all of them at once.
          for (let i = 0; i < SESSIONS; i += 100) {
            const wave = await Promise.all(
              Array.from({ length: Math.min(100, SESSIONS - i) }, () => openClient(server.address)),
            );
            clients.push(...wave);
          }
          await waitFor(() => server.connections === SESSIONS, `${SESSIONS} open connections`);
          assert.equal(server.connections, SESSIONS);
          // Every connection runs its transaction at the same time.
          const results = await Promise.all(
            clients.map((c, n) =>
              runTransaction(
                c,
                tx(n, {
                  from: `sender-${n}@example.net`,
                  rcpts: [`rcpt-${n}@example.com`],
                  message: message(n, `Message number ${n}\r\n`),
                }),
              )
            ),
          );
          assert.equal(results.length, SESSIONS);
          results.forEach((r, n) => checkResult(n, r));
          const rejected = results.filter((r) => r.verdict.type === "reject").length;
          assert.equal(rejected, Math.ceil(SESSIONS / 3));
          assert.equal(server.metrics.messages, SESSIONS);
          assert.equal(server.metrics.refused, 0);
        } finally {
          await Promise.all(clients.map((c) => endSession(c)));
          await server.stop({ graceMs: 5000 });
        }
        assert.equal(server.connections, 0);
      },
    );
  });
}
