/**
 * Runs one transaction through a filter over in-memory streams with the MTA engine, as Postfix
 * would send it: the same path a real MTA takes, without sockets.
 */
import type { Filter } from "../../lib/filter/filter.ts";
import { serveConnection } from "../../lib/filter/session.ts";
import { MilterClient } from "../../lib/mta/client.ts";
import { endSession, runTransaction } from "../../lib/mta/transaction.ts";
import type { TransactionInput, TransactionResult } from "../../lib/mta/types.ts";
import { duplexPair } from "../../lib/testing/mod.ts";

export async function drive(
  // deno-lint-ignore no-explicit-any
  filter: Filter<any, any>,
  tx: Partial<Omit<TransactionInput, "message">> & { message: string | Uint8Array },
): Promise<TransactionResult> {
  const [mta, filterSide] = duplexPair();
  const served = serveConnection(filterSide, filter);
  const client = await MilterClient.open(mta);
  try {
    return await runTransaction(client, {
      connect: { hostname: "[192.0.2.10]", family: "inet", address: "192.0.2.10", port: 40000 },
      helo: "client.example.test",
      from: "sender@example.test",
      rcpts: ["user@example.test"],
      ...tx,
      message: typeof tx.message === "string" ? new TextEncoder().encode(tx.message) : tx.message,
    });
  } finally {
    await endSession(client).catch(() => {});
    await served;
  }
}

/** The delivered message as text (CRLF kept), or undefined. */
export function deliveredText(r: TransactionResult): string | undefined {
  if (!r.result) return undefined;
  const { headers, body } = r.result.message;
  return headers.map((h) => `${h.name}:${h.value.replaceAll("\n", "\r\n")}\r\n`).join("") + "\r\n" +
    new TextDecoder().decode(body);
}
