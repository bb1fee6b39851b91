/** Proxy recordings built in tests. */
import { RecordingWriter } from "../../lib/inspect/recording.ts";
import { encodeCommand } from "../../lib/wire/command_codec.ts";
import { encodeReply } from "../../lib/wire/reply_codec.ts";
import type { Direction, Reply } from "../../lib/wire/types.ts";
import type { TransactionInput } from "../../lib/mta/types.ts";
import type { Filter } from "../../lib/filter/filter.ts";
import { serveConnection } from "../../lib/filter/session.ts";
import { proxyConnection } from "../../lib/inspect/proxy.ts";
import { MilterClient } from "../../lib/mta/client.ts";
import { endSession, runTransaction } from "../../lib/mta/transaction.ts";
import { duplexPair } from "../../lib/testing/mod.ts";

/** The lines of a recording of session `id`: OPTNEG both ways, MAIL <x@y>, then `replies`. */
export function mailRecording(
  id: string,
  peers: { mta?: string; filter?: string },
  replies: Reply[],
): string[] {
  const lines: string[] = [];
  const w = new RecordingWriter((l) => lines.push(l));
  w.start(id, peers);
  w.data(
    id,
    "to-filter",
    encodeCommand({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff }),
  );
  w.data(id, "to-mta", encodeReply({ type: "optneg", version: 6, actions: 1, protocol: 0 }));
  w.data(id, "to-filter", encodeCommand({ type: "mail", sender: "<x@y>", args: [] }));
  for (const r of replies) w.data(id, "to-mta", encodeReply(r));
  w.end(id);
  return lines;
}

/**
 * Runs one Postfix-style transaction of the MTA engine against `filter` through the proxy core
 * (as `proxy --record` sees it), handing every relayed chunk to `onChunk`.
 */
export async function relayTransaction(
  filter: Filter,
  tx: Omit<TransactionInput, "connect" | "helo"> & Partial<TransactionInput>,
  onChunk: (d: Direction, bytes: Uint8Array) => void,
): Promise<void> {
  const [mtaEnd, proxyEnd] = duplexPair();
  const relayed = proxyConnection(proxyEnd, {
    connectUpstream: () => {
      const [a, b] = duplexPair();
      void serveConnection(b, filter);
      return Promise.resolve(a);
    },
    onChunk: (d, _t, b) => onChunk(d, b.slice()),
  });
  const client = await MilterClient.open(mtaEnd);
  await runTransaction(client, {
    connect: { hostname: "c.example", family: "inet", address: "192.0.2.7", port: 4711 },
    helo: "c.example",
    ...tx,
  });
  await endSession(client);
  await relayed;
}
