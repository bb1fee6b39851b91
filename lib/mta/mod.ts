/**
 * Drive any milter filter as an MTA would: {@link MilterClient} speaks the protocol over any
 * `{ readable, writable }` pair, {@link runTransaction} sends a whole message stage by stage the
 * way Postfix or Sendmail do, and the message model applies the filter's modifications to the
 * message and shows the difference.
 *
 * Connect with a socket adapter (`@milterkit/milterkit/node` works in Node, Deno and Bun).
 *
 * @example
 * ```ts
 * import { endSession, MilterClient, runTransaction } from "@milterkit/milterkit/mta";
 * import { connect } from "@milterkit/milterkit/node";
 * import { defineFilter, listen } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 *
 * const server = await listen("inet:0@127.0.0.1", defineFilter({ eom: () => "accept" }));
 * const client = await MilterClient.open(await connect(server.address), { preset: "postfix" });
 * const result = await runTransaction(client, {
 *   from: "alice@example.com",
 *   rcpts: ["bob@example.org"],
 *   message: new TextEncoder().encode("Subject: hi\r\n\r\nhello\r\n"),
 * });
 * assert.equal(result.verdict.type, "accept");
 * await endSession(client);
 * await server.stop();
 * ```
 *
 * @module
 */

export { MilterClient } from "./client.ts";
export { endSession, newSession, runTransaction } from "./transaction.ts";
export type {
  BodyResult,
  ClientOptions,
  CommandOutcome,
  CommandResult,
  EomResult,
  FinalReply,
  MacroInput,
  NotSentReason,
  StageReply,
  TransactionInput,
  TransactionOptions,
  TransactionResult,
  TransactionStage,
  TransactionVerdict,
} from "./types.ts";
export { MTA_OFFERS, type MtaOffer, type MtaPreset, type NegotiationOutcome } from "./negotiate.ts";
export {
  DEFAULT_IDENTITY,
  type MacroFacts,
  type MacroStageLetter,
  type MtaIdentity,
  newQueueId,
  postfixMacros,
  sendmailMacros,
} from "./presets.ts";

// the message model
export {
  formatHeaderField,
  type MessageHeader,
  type ParsedMessage,
  parseHeaderField,
  parseMessage,
  serializeMessage,
  toCrlf,
} from "../mail/message.ts";
export {
  type AppliedMessage,
  applyModifications,
  type ApplyOptions,
  type Envelope,
  type EnvelopeRecipient,
} from "../mail/modify.ts";
export { diffLines, type DiffOptions, messageDiff } from "../mail/diff.ts";
export { parseAddress, parseEsmtpArgs, splitAddress, splitEsmtpArgs } from "../mail/esmtp.ts";
export type { ConnectInfo, EnvelopeAddress, EsmtpParam, HeaderField } from "../mail/envelope.ts";
