/**
 * Types of the MTA-side client: what each command returns, the client's options, and the
 * input and result of `runTransaction()`.
 *
 * @module
 */

import type { MtaPreset } from "./negotiate.ts";
import type { ParsedMessage } from "../mail/message.ts";
import type { AppliedMessage, Envelope } from "../mail/modify.ts";
import type { MacroStageLetter, MtaIdentity } from "./presets.ts";
import type { Command, Modification, MtaStyle, Reply, Stage } from "../wire/types.ts";
import type { ConnectInfo } from "../mail/envelope.ts";

/**
 * Macros for one `D` frame: an object or name/value pairs (order kept). Single-letter names go
 * bare (`i`), longer ones in braces (`{mail_addr}`), as MTAs send them.
 */
export type MacroInput =
  | Readonly<Record<string, string>>
  | Iterable<readonly [name: string, value: string]>;

/** A final answer of the filter to one command. */
export type FinalReply = Extract<
  Reply,
  {
    type:
      | "continue"
      | "accept"
      | "reject"
      | "tempfail"
      | "discard"
      | "skip"
      | "shutdown"
      | "replycode";
  }
>;

/**
 * What happened to one command: `replied` (the filter answered), `no-reply` (sent, but the
 * filter negotiated NR_* for it, so nothing was read), `not-sent` (see `reason`).
 */
export type CommandOutcome = "replied" | "no-reply" | "not-sent";

/**
 * Why a command was not sent: `disabled` (the filter negotiated its NO* bit), `version` (the
 * event does not exist in the negotiated protocol version), `skipped` (the filter answered SKIP
 * to an earlier body chunk), `empty` (an empty body: MTAs never send an empty BODY).
 */
export type NotSentReason = "disabled" | "version" | "skipped" | "empty";

/**
 * The result of one command.
 *
 * @example
 * ```ts
 * import type { CommandResult } from "@milterkit/milterkit/mta";
 * const r: CommandResult = { outcome: "replied", verdict: { type: "continue" }, progress: 0 };
 * ```
 */
export interface CommandResult {
  /** Whether the command was sent and answered. */
  readonly outcome: CommandOutcome;
  /** Set when `outcome` is `not-sent`. */
  readonly reason?: NotSentReason;
  /** The filter's final reply; `{ type: "continue" }` when none was read. */
  readonly verdict: FinalReply;
  /** PROGRESS frames received before the final reply. */
  readonly progress: number;
}

/** The result of `MilterClient.body()`: a {@link CommandResult} plus the frames sent. */
export interface BodyResult extends CommandResult {
  /** BODY frames sent (each ≤ 65535 bytes). */
  readonly chunks: number;
}

/**
 * The result of `MilterClient.eom()`: the final reply and the modifications before it.
 *
 * @example
 * ```ts
 * import type { EomResult } from "@milterkit/milterkit/mta";
 * const r: EomResult = { verdict: { type: "accept" }, modifications: [], progress: 0 };
 * ```
 */
export interface EomResult {
  /** The final reply. */
  readonly verdict: FinalReply;
  /** Modification requests, in the order received. */
  readonly modifications: readonly Modification[];
  /** PROGRESS frames received. */
  readonly progress: number;
}

/**
 * Options of `MilterClient.open()`.
 *
 * @example
 * ```ts
 * import type { ClientOptions } from "@milterkit/milterkit/mta";
 * const o: ClientOptions = { preset: "postfix-2", commandTimeoutMs: 5000 };
 * ```
 */
export interface ClientOptions {
  /**
   * Start from a real MTA's offer and behaviour: `postfix` (default, = `postfix-6`),
   * `postfix-4`, `postfix-3`, `postfix-2` (Postfix `milter_protocol`), `sendmail`.
   */
  readonly preset?: MtaPreset;
  /** Offered protocol version (default from the preset, 6). */
  readonly version?: number;
  /** Offered `SMFIF_*` actions (default 0x1FF). */
  readonly actions?: number;
  /** Offered `SMFIP_*` protocol bits (default 0x1FFFFF). */
  readonly protocol?: number;
  /**
   * Which MTA's rules apply where they differ (default from the preset): `postfix` accepts
   * SHUTDOWN and refuses REPLBODY interleaved with other requests; `sendmail` refuses SHUTDOWN.
   */
  readonly mta?: MtaStyle;
  /**
   * How `D` frames are sent (default: the `mta` style). `postfix`: before every event even when
   * empty, plus `D L` before each header, `D B` before each body chunk and `D U` before UNKNOWN;
   * `sendmail`: only for C H M R T N E and only when there is a macro to send.
   */
  readonly macroStyle?: MtaStyle;
  /** Per-read/write limit for OPTNEG, CONNECT, HELO, MAIL, RCPT, DATA, UNKNOWN (default 30 s). */
  readonly commandTimeoutMs?: number;
  /** Per-read/write limit for HEADER, EOH, BODY, EOM (default 300 s; PROGRESS restarts it). */
  readonly contentTimeoutMs?: number;
  /** Overall limit from sending EOM to the final reply (default 300 s, Sendmail's `T=E`). */
  readonly eomTimeoutMs?: number;
  /** Largest frame data size accepted from the filter (default 1 MiB). */
  readonly maxDataSize?: number;
  /** Called with every command sent (after encoding succeeded). */
  readonly onCommand?: (command: Command) => void;
  /** Called with every response received, before it is judged. */
  readonly onReply?: (reply: Reply) => void;
}

/**
 * Normalises {@link MacroInput} to name/value pairs, keeping the order.
 *
 * @param macros An object, pairs, a Map, or undefined.
 * @returns The pairs (empty for undefined).
 *
 * @example
 * ```ts
 * import { macroPairs } from "./types.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(macroPairs({ i: "Q1" }), [["i", "Q1"]]);
 * assert.deepEqual(macroPairs(new Map([["j", "mx"]])), [["j", "mx"]]);
 * ```
 */
export function macroPairs(macros: MacroInput | undefined): [string, string][] {
  if (macros === undefined) return [];
  if (Symbol.iterator in macros) {
    return [...(macros as Iterable<readonly [string, string]>)].map(([k, v]) => [k, v]);
  }
  return Object.entries(macros as Record<string, string>);
}

/**
 * One SMTP transaction to send.
 *
 * @example
 * ```ts
 * import type { TransactionInput } from "@milterkit/milterkit/mta";
 * const tx: TransactionInput = {
 *   connect: { hostname: "[192.0.2.1]", family: "inet", address: "192.0.2.1", port: 4711 },
 *   helo: "client.example.net",
 *   from: "<alice@example.net>",
 *   rcpts: ["<bob@example.com>"],
 *   message: new TextEncoder().encode("Subject: hi\r\n\r\nHello\r\n"),
 * };
 * ```
 */
export interface TransactionInput {
  /** The SMTP client; sent once per connection (first transaction, or after QUIT_NC). */
  readonly connect?: ConnectInfo;
  /** HELO/EHLO name; sent when it differs from the last one sent on this connection. */
  readonly helo?: string;
  /** MAIL FROM address (`<a@b>`; brackets are added when missing; `""` or `<>` = null sender). */
  readonly from: string;
  /** MAIL FROM ESMTP arguments (`SIZE=300`). */
  readonly fromArgs?: readonly string[];
  /** RCPT TO addresses, optionally with ESMTP arguments. */
  readonly rcpts:
    readonly (string | { readonly recipient: string; readonly args?: readonly string[] })[];
  /** The message (RFC 5322 bytes, dot-unstuffed, CRLF or LF line ends). */
  readonly message: Uint8Array;
  /**
   * Macros per `D` letter, merged over Postfix's defaults (a name given here replaces the
   * default of the same name); `R` applies to every recipient.
   */
  readonly macros?: Partial<Record<MacroStageLetter, MacroInput>>;
  /** Send Postfix's default macros (default true). */
  readonly defaultMacros?: boolean;
  /** Host name, daemon name/address, version and mailer for the default macros. */
  readonly identity?: MtaIdentity;
  /** `i` once assigned (default: a random Postfix-style id). */
  readonly queueId?: string;
  /** The MTA's own first Received header, for INSHEADER positions and the result. */
  readonly receivedHeader?: string;
}

/** Options of `runTransaction()`. */
export interface TransactionOptions {
  /**
   * Send ABORT once the transaction is over (Postfix does after every transaction that reached
   * MAIL; Sendmail only while the filter is still inside the message). Default: by `client.mta`.
   */
  readonly abortAfter?: boolean;
}

/** The stages of a transaction: every {@link Stage} but unknown. */
export type TransactionStage = Exclude<Stage, "unknown">;

/**
 * One command of the transaction and what became of it.
 *
 * @example
 * ```ts
 * import type { StageReply } from "@milterkit/milterkit/mta";
 * const s: StageReply = {
 *   stage: "envrcpt", detail: "<b@c>",
 *   result: { outcome: "replied", verdict: { type: "reject" }, progress: 0 },
 * };
 * ```
 */
export interface StageReply {
  /** The stage. */
  readonly stage: TransactionStage;
  /** The recipient, header name, … the command was about. */
  readonly detail?: string;
  /** What the client got. */
  readonly result: CommandResult;
}

/**
 * The MTA's decision about the message: `continue` / `accept` (delivered), `reject` /
 * `tempfail` (refused with `reply`), `discard` (silently dropped), `shutdown` (421 and
 * disconnect). `scope: "session"` when decided at CONNECT/HELO for the whole connection.
 *
 * @example
 * ```ts
 * import type { TransactionVerdict } from "@milterkit/milterkit/mta";
 * const v: TransactionVerdict = { type: "reject", stage: "eom", scope: "message", reply: "550 5.7.1 No" };
 * ```
 */
export interface TransactionVerdict {
  /** The decision. */
  readonly type: "continue" | "accept" | "reject" | "tempfail" | "discard" | "shutdown";
  /** Where it was taken. */
  readonly stage: TransactionStage;
  /** Whether it concerns the whole SMTP session or this message. */
  readonly scope: "session" | "message";
  /** The SMTP reply the client would get for reject/tempfail/shutdown. */
  readonly reply?: string;
}

/**
 * Everything about one transaction.
 *
 * @example
 * ```ts
 * import type { TransactionResult } from "@milterkit/milterkit/mta";
 * function delivered(r: TransactionResult): boolean {
 *   return r.delivered && r.result !== undefined;
 * }
 * ```
 */
export interface TransactionResult {
  /** Every command sent (or skipped), in order, with its outcome. */
  readonly replies: readonly StageReply[];
  /** The MTA's decision. */
  readonly verdict: TransactionVerdict;
  /** Whether the MTA would deliver the message (continue/accept, maybe held). */
  readonly delivered: boolean;
  /** The filter's modification requests (end of message). */
  readonly modifications: readonly Modification[];
  /** Recipients the filter refused, with the SMTP reply. */
  readonly rejectedRecipients: readonly { readonly recipient: string; readonly reply: string }[];
  /** The message and envelope as received. */
  readonly original: { readonly message: ParsedMessage; readonly envelope: Envelope };
  /** What would be delivered (modifications applied), when `delivered`. */
  readonly result: AppliedMessage | undefined;
  /** The queue id used for `i`. */
  readonly queueId: string;
}
