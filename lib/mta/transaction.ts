/**
 * A whole SMTP transaction through a {@link MilterClient}, sent the way Postfix sends it, with
 * the MTA's reaction to each answer (a RCPT reject drops one recipient, an accept at CONNECT
 * accepts the whole session, …) and the message the MTA would deliver.
 *
 * @module
 */

import type { MilterClient } from "./client.ts";
import {
  type CommandResult,
  type FinalReply,
  type MacroInput,
  macroPairs,
  type StageReply,
  type TransactionInput,
  type TransactionOptions,
  type TransactionResult,
  type TransactionStage,
  type TransactionVerdict,
} from "./types.ts";
import { macroKey } from "./negotiate.ts";
import { parseMessage } from "../mail/message.ts";
import { applyModifications, type EnvelopeRecipient } from "../mail/modify.ts";
import {
  type MacroFacts,
  type MacroStageLetter,
  newQueueId,
  postfixMacros,
  sendmailMacros,
} from "./presets.ts";
import type { Modification } from "../wire/types.ts";
import { SMFIP } from "../wire/constants.ts";

interface SessionTrack {
  connected: boolean;
  helo: string | undefined;
  mailSent: boolean;
  session: TransactionVerdict | undefined;
}

const sessions = new WeakMap<MilterClient, SessionTrack>();

function track(client: MilterClient): SessionTrack {
  let t = sessions.get(client);
  if (t === undefined) {
    t = { connected: false, helo: undefined, mailSent: false, session: undefined };
    sessions.set(client, t);
  }
  return t;
}

/** Postfix's texts for answers without their own (milter8.c). */
function smtpReply(v: FinalReply): { type: TransactionVerdict["type"]; reply?: string } {
  switch (v.type) {
    case "reject":
      return { type: "reject", reply: "550 5.7.1 Command rejected" };
    case "tempfail":
      return { type: "tempfail", reply: "451 4.7.1 Service unavailable - try again later" };
    case "shutdown":
      return { type: "shutdown", reply: "421 4.7.0 Server closing connection" };
    case "replycode": {
      // Postfix turns %% into % and drops a lone %.
      const text = v.text.replace(/%(%?)/g, "$1");
      return { type: text.startsWith("4") ? "tempfail" : "reject", reply: text };
    }
    case "skip":
      return { type: "continue" };
    default:
      return { type: v.type };
  }
}

function bracket(address: string): string {
  const t = address.trim();
  return t.startsWith("<") ? t : `<${t}>`;
}

function merge(defaults: [string, string][], extra: MacroInput | undefined): [string, string][] {
  const out = [...defaults];
  for (const [k, v] of macroPairs(extra)) {
    const i = out.findIndex(([n]) => macroKey(n) === macroKey(k));
    if (i >= 0) out[i] = [out[i]![0], v];
    else out.push([k, v]);
  }
  return out;
}

/**
 * Sends one SMTP transaction the way Postfix does and returns what the MTA would do: CONNECT
 * and HELO (once per connection), MAIL, each RCPT, DATA, every header (`D L` before each,
 * folded with LF), EOH, the body in 65535-byte chunks (CRLF line ends), EOM; then ABORT
 * (Postfix style). It stops where the MTA would: at the first reject/tempfail/discard/accept
 * for the message, at an accept of the whole session at CONNECT/HELO (later calls on the same
 * client then return that verdict without traffic), when no recipient is left. A RCPT reject
 * only drops that recipient. Modifications are applied with Postfix's rules.
 *
 * @param client A negotiated client (call several times for several messages).
 * @param tx The transaction.
 * @param options ABORT policy.
 * @returns Per-stage replies, the verdict, modifications and the resulting message.
 * @throws The client's errors ({@link MilterProtocolError}, {@link MilterTimeoutError},
 * {@link ConnectionClosedError}) when the filter misbehaves or goes away.
 *
 * @example
 * ```ts
 * import { endSession, MilterClient, runTransaction } from "@milterkit/milterkit/mta";
 * import { serveConnection } from "@milterkit/milterkit";
 * import { duplexPair } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 * const [mta, filterSide] = duplexPair();
 * const served = serveConnection(filterSide, {
 *   actions: ["addHeader"],
 *   eom(ctx) { ctx.addHeader("X-Checked", "yes"); },
 * });
 * const client = await MilterClient.open(mta);
 * const r = await runTransaction(client, {
 *   connect: { hostname: "[192.0.2.1]", family: "inet", address: "192.0.2.1", port: 4711 },
 *   helo: "client.example.net",
 *   from: "alice@example.net",
 *   rcpts: ["bob@example.com"],
 *   message: new TextEncoder().encode("Subject: hi\r\n\r\nHello\r\n"),
 * });
 * assert.equal(r.verdict.type, "continue");
 * assert.deepEqual(r.result?.message.headers.at(-1), { name: "X-Checked", value: " yes" });
 * await endSession(client);
 * await served;
 * ```
 */
export async function runTransaction(
  client: MilterClient,
  tx: TransactionInput,
  options: TransactionOptions = {},
): Promise<TransactionResult> {
  const t = track(client);
  const queueId = tx.queueId ?? newQueueId();
  const message = parseMessage(tx.message);
  const sender = tx.from === "" ? "<>" : bracket(tx.from);
  const rcpts: EnvelopeRecipient[] = tx.rcpts.map((r) =>
    typeof r === "string"
      ? { recipient: bracket(r), args: [] }
      : { recipient: bracket(r.recipient), args: r.args ?? [] }
  );
  const original = {
    message,
    envelope: { sender, senderArgs: tx.fromArgs ?? [], recipients: rcpts },
  };
  const replies: StageReply[] = [];
  const modifications: Modification[] = [];
  const rejectedRecipients: { recipient: string; reply: string }[] = [];
  const accepted: EnvelopeRecipient[] = [];
  const useDefaults = tx.defaultMacros ?? true;
  let facts: MacroFacts = { ...(tx.connect ? { client: tx.connect } : {}), sender };
  // Sendmail has the queue id from MAIL on; Postfix only after the first accepted RCPT.
  const sendmail = client.mta === "sendmail";
  if (sendmail) facts = { ...facts, queueId };
  const defaults = sendmail ? sendmailMacros : postfixMacros;
  const macros = (stage: MacroStageLetter, f: MacroFacts = facts): [string, string][] =>
    merge(useDefaults ? defaults(stage, f, tx.identity) : [], tx.macros?.[stage]);
  const abortAfter = options.abortAfter ?? client.mta === "postfix";

  const finish = async (
    verdict: TransactionVerdict,
    opts: { apply?: boolean; inMessage?: boolean } = {},
  ): Promise<TransactionResult> => {
    const delivered = verdict.type === "continue" || verdict.type === "accept";
    if (t.mailSent && (abortAfter || opts.inMessage === true) && verdict.scope === "message") {
      await client.abort();
    }
    const envelope = { ...original.envelope, recipients: accepted };
    return {
      replies,
      verdict,
      delivered,
      modifications,
      rejectedRecipients,
      original,
      result: delivered
        ? opts.apply
          ? applyModifications(message, envelope, modifications, {
            mta: client.mta,
            headerLeadingSpace: client.has(SMFIP.HDR_LEADSPC),
            ...(tx.receivedHeader !== undefined ? { receivedHeader: tx.receivedHeader } : {}),
          })
          : applyModifications(message, envelope, [], {
            ...(tx.receivedHeader !== undefined ? { receivedHeader: tx.receivedHeader } : {}),
          })
        : undefined,
      queueId,
    };
  };
  /** Records a reply and returns the verdict that ends the transaction, if any. */
  const step = (stage: TransactionStage, result: CommandResult, detail?: string) => {
    replies.push(detail === undefined ? { stage, result } : { stage, detail, result });
    const s = smtpReply(result.verdict);
    if (s.type === "continue") return undefined;
    const session = stage === "connect" || stage === "helo";
    return { ...s, stage, scope: session ? "session" as const : "message" as const };
  };

  if (t.session !== undefined) {
    accepted.push(...rcpts);
    return await finish(t.session);
  }
  if (tx.connect !== undefined && !t.connected) {
    t.connected = true;
    const v = step("connect", await client.connect(tx.connect, macros("C")));
    if (v) {
      t.session = v;
      if (v.type === "accept") accepted.push(...rcpts);
      return await finish(v);
    }
  }
  if (tx.helo !== undefined && tx.helo !== t.helo) {
    t.helo = tx.helo;
    const v = step("helo", await client.helo(tx.helo, macros("H")), tx.helo);
    if (v) {
      t.session = v;
      if (v.type === "accept") accepted.push(...rcpts);
      return await finish(v);
    }
  }

  t.mailSent = true;
  const mail = step("envfrom", await client.mail(sender, tx.fromArgs ?? [], macros("M")), sender);
  if (mail) {
    if (mail.type === "accept") accepted.push(...rcpts);
    return await finish(mail);
  }
  let assigned = false;
  for (const [n, r] of rcpts.entries()) {
    const f: MacroFacts = { ...facts, recipient: r.recipient, ...(assigned ? { queueId } : {}) };
    const v = step("envrcpt", await client.rcpt(r.recipient, r.args, macros("R", f)), r.recipient);
    if (v === undefined) {
      accepted.push(r);
      assigned = true;
      continue;
    }
    if (v.type === "reject" || v.type === "tempfail") {
      rejectedRecipients.push({ recipient: r.recipient, reply: v.reply ?? "" });
      continue;
    }
    // accept / discard: this and the remaining recipients pass without further events.
    accepted.push(...rcpts.slice(n));
    return await finish(v);
  }
  if (accepted.length === 0) {
    const last = rejectedRecipients.at(-1);
    return await finish(
      {
        type: last?.reply.startsWith("4") ? "tempfail" : "reject",
        stage: "envrcpt",
        scope: "message",
        reply: last?.reply ?? "554 5.5.1 Error: no valid recipients",
      },
      { inMessage: true },
    );
  }
  facts = { ...facts, queueId };

  const data = step("data", await client.data(macros("T")));
  if (data) return await finish(data);
  for (const h of message.headers) {
    const v = step("header", await client.header(h.name, h.value, macros("L")), h.name);
    if (v) return await finish(v);
  }
  const eoh = step("eoh", await client.eoh(macros("N")));
  if (eoh) return await finish(eoh);
  if (message.body.length > 0) {
    const v = step("body", await client.body(message.body, macros("B")));
    if (v) return await finish(v);
  }
  const eom = await client.eom(macros("E"));
  modifications.push(...eom.modifications);
  const result: CommandResult = {
    outcome: "replied",
    verdict: eom.verdict,
    progress: eom.progress,
  };
  const v = step("eom", result) ??
    { type: "continue" as const, stage: "eom" as const, scope: "message" as const };
  return await finish(v, { apply: true });
}

/**
 * Ends the SMTP session on the milter connection as the MTA would: Postfix sends ABORT (when a
 * transaction ever reached MAIL) then QUIT, and just closes after a session-level decision at
 * CONNECT/HELO; Sendmail sends QUIT. Closes the client. Never throws.
 *
 * @param client The client used with {@link runTransaction}.
 *
 * @example
 * ```ts
 * import { endSession, type MilterClient } from "@milterkit/milterkit/mta";
 * async function done(client: MilterClient) {
 *   await endSession(client);
 * }
 * ```
 */
export async function endSession(client: MilterClient): Promise<void> {
  const t = track(client);
  try {
    if (client.closed) return;
    if (client.mta === "postfix") {
      if (t.session !== undefined) return;
      if (t.mailSent) await client.abort();
    }
    await client.quit();
  } catch {
    // The filter is gone: nothing left to tell it.
  } finally {
    sessions.delete(client);
    await client.close();
  }
}

/**
 * Forgets the session state kept for {@link runTransaction} and sends QUIT_NC, so the next
 * transaction starts with a new CONNECT on the same connection (no new OPTNEG).
 *
 * @param client The client.
 *
 * @example
 * ```ts
 * import { newSession, type MilterClient } from "@milterkit/milterkit/mta";
 * async function next(client: MilterClient) {
 *   await newSession(client);
 * }
 * ```
 */
export async function newSession(client: MilterClient): Promise<void> {
  sessions.delete(client);
  await client.quitNc();
}

/**
 * Whether a filter built on libmilter takes QUIT_NC after this transaction. libmilter's state
 * table allows QUIT_NC only right after an end of message answered with CONTINUE (or after an
 * UNKNOWN): an EOM answered with ACCEPT, REJECT, TEMPFAIL or DISCARD, a verdict before EOM, or
 * an ABORT put it back in its HELO state, where QUIT_NC and the next CONNECT are silently
 * ignored and the MTA waits forever. Run the transaction with `abortAfter: false` (no ABORT
 * after a finished message) when QUIT_NC may follow.
 *
 * @param result The transaction that just ended.
 * @returns True when QUIT_NC can follow without losing the filter.
 *
 * @example
 * ```ts
 * import { quitNcAllowedAfter } from "./transaction.ts";
 * import { type TransactionResult } from "@milterkit/milterkit/mta";
 * const next = (r: TransactionResult) => quitNcAllowedAfter(r) ? "QUIT_NC" : "reconnect";
 * ```
 */
export function quitNcAllowedAfter(result: TransactionResult): boolean {
  const last = result.replies.at(-1);
  return result.verdict.stage === "eom" && result.verdict.type === "continue" &&
    last?.stage === "eom" && last.result.outcome === "replied";
}
