/**
 * A test harness for filter authors: runs a message through a filter in process, with the real
 * filter engine on one end and the real MTA engine (Postfix's or Sendmail's behaviour) on the
 * other, over in-memory streams. No sockets, no MTA to install; what the filter sees and what
 * the MTA does with its answers is what production does.
 *
 * @module
 */

import type { Filter } from "../filter/filter.ts";
import { serveConnection, type ServedSession, type SessionOptions } from "../filter/session.ts";
import { STAGE_LETTER } from "../wire/command_bits.ts";
import { FilterHandlerError } from "../wire/errors.ts";
import { decodeText, encodeText } from "../wire/text.ts";
import type { Modification, Stage } from "../wire/types.ts";
import type { ConnectInfo } from "../mail/envelope.ts";
import { type ParsedMessage, serializeMessage } from "../mail/message.ts";
import type { Envelope } from "../mail/modify.ts";
import { MilterClient } from "../mta/client.ts";
import type { MtaPreset } from "../mta/negotiate.ts";
import type { MacroStageLetter } from "../mta/presets.ts";
import { endSession, runTransaction } from "../mta/transaction.ts";
import type {
  CommandOutcome,
  FinalReply,
  MacroInput,
  TransactionInput,
  TransactionResult,
  TransactionStage,
  TransactionVerdict,
} from "../mta/types.ts";
import { duplexPair } from "./streams.ts";

/**
 * A message given in parts: headers (in order) and a body. Line ends may be LF or CRLF.
 *
 * @example
 * ```ts
 * import type { MessageParts } from "@milterkit/milterkit/testing";
 * const m: MessageParts = { headers: { Subject: "hi", From: "<a@example.net>" }, body: "Hello\n" };
 * ```
 */
export interface MessageParts {
  /** Header fields as an object or name/value pairs (pairs allow repeated names). */
  readonly headers?:
    | Readonly<Record<string, string>>
    | readonly (readonly [name: string, value: string])[];
  /** The body (text or bytes). */
  readonly body?: string | Uint8Array;
}

/**
 * One message to run through a filter, with its envelope and macros. Everything has a default,
 * so `{}` runs a small message from `sender@example.test` to `rcpt@example.test`.
 *
 * @example
 * ```ts
 * import type { TestMessage } from "@milterkit/milterkit/testing";
 * const m: TestMessage = {
 *   message: "Subject: hi\n\nHello\n",
 *   from: "alice@example.net",
 *   rcpts: ["bob@example.com", "carol@example.com"],
 *   client: "203.0.113.9",
 *   macros: { envfrom: { "{auth_authen}": "alice" } },
 * };
 * ```
 */
export interface TestMessage {
  /**
   * The message: the bytes or text of an `.eml` (LF or CRLF line ends), or {@link MessageParts}.
   * Default: `Subject: test` and a one-line body.
   */
  readonly message?: string | Uint8Array | MessageParts;
  /** MAIL FROM (brackets optional; `""` is the null sender). Default `sender@example.test`. */
  readonly from?: string;
  /** MAIL FROM ESMTP arguments, e.g. `["SIZE=1000"]`. */
  readonly fromArgs?: readonly string[];
  /** RCPT TO addresses, optionally with ESMTP arguments. Default `["rcpt@example.test"]`. */
  readonly rcpts?: TransactionInput["rcpts"];
  /**
   * The SMTP client: an IPv4/IPv6 address (host name `[address]`, port 4711) or a full
   * {@link ConnectInfo}. Default `192.0.2.1`. Sent once per connection.
   */
  readonly client?: string | ConnectInfo;
  /** HELO/EHLO name. Default `client.example.test`. */
  readonly helo?: string;
  /**
   * Macros per stage, merged over the MTA's defaults (`j`, `{daemon_name}`, `i`, `{mail_addr}`
   * …; a name given here wins). `envrcpt` applies to every recipient.
   */
  readonly macros?: Partial<Record<Stage, MacroInput>>;
  /** The queue id (`i`). Default: a random one in the MTA's style. */
  readonly queueId?: string;
}

/** Options of {@link testFilter} and {@link FilterTest.open}. */
export interface FilterTestOptions {
  /**
   * Which MTA to be: `"postfix"` (default), `"sendmail"`, or a Postfix `milter_protocol` preset
   * (`"postfix-2"` …). Negotiation, macros and how modifications are applied follow it.
   */
  readonly mta?: MtaPreset;
  /**
   * What to do when a handler throws, hangs past `handlerTimeoutMs`, returns an illegal verdict
   * or uses an action it did not declare. `"throw"` (default): the test run rejects with that
   * error (a {@link FilterHandlerError} whose `cause` is what the handler threw). `"collect"`:
   * the MTA gets the fallback as in production, and the error is in `TestResult.errors`.
   */
  readonly handlerErrors?: "throw" | "collect";
  /** Fallback, handler timeouts, frame limit: as for `serveConnection`. */
  readonly session?: Omit<SessionOptions, "signal" | "onEvent">;
  /** How long the MTA side waits for any answer (default 30 s). */
  readonly timeoutMs?: number;
}

/**
 * What one stage of the transaction got.
 *
 * @example
 * ```ts
 * import type { StageResult } from "@milterkit/milterkit/testing";
 * const s: StageResult = { stage: "envrcpt", detail: "<b@example.com>", outcome: "replied", verdict: "reject", reply: undefined };
 * ```
 */
export interface StageResult {
  /** The stage. */
  readonly stage: TransactionStage;
  /** The recipient, header name, … the command was about. */
  readonly detail?: string;
  /** `replied`, `no-reply` (the filter does not answer this stage) or `not-sent`. */
  readonly outcome: CommandOutcome;
  /** The filter's answer (`continue` when it did not answer). */
  readonly verdict: FinalReply["type"];
  /** The text of a custom reply (`replycode`), e.g. `"550 5.7.1 No thanks"`. */
  readonly reply: string | undefined;
}

/**
 * The outcome of running one message through a filter.
 */
export interface TestResult {
  /**
   * What the MTA decided: `continue`/`accept` (delivered), `reject`, `tempfail`, `discard`,
   * `shutdown`.
   */
  readonly verdict: TransactionVerdict["type"];
  /** The stage the decision was taken at (`eom` when the message went all the way). */
  readonly stage: TransactionStage;
  /** The SMTP reply the client gets for reject, tempfail and shutdown. */
  readonly reply: string | undefined;
  /** Whether the MTA delivers the message. */
  readonly delivered: boolean;
  /** Every stage in order, with the filter's answer. */
  readonly stages: readonly StageResult[];
  /** The modifications the filter asked for at end of message, in order. */
  readonly modifications: readonly Modification[];
  /** The message as delivered (modifications applied), when delivered. */
  readonly message: ParsedMessage | undefined;
  /** The envelope as delivered (sender and recipients after changes), when delivered. */
  readonly envelope: Envelope | undefined;
  /** The quarantine reason, when the filter put the message on hold. */
  readonly quarantine: string | undefined;
  /** Recipients the filter refused, with the SMTP reply. */
  readonly rejectedRecipients: readonly { readonly recipient: string; readonly reply: string }[];
  /** Handler errors the engine answered with the fallback (with `handlerErrors: "collect"`). */
  readonly errors: readonly FilterHandlerError[];
  /** Everything the MTA engine recorded, for what the fields above leave out. */
  readonly transaction: TransactionResult;
  /**
   * The first value of header `name` in the delivered message (case-insensitive), without the
   * space after the colon; undefined when absent or not delivered.
   */
  header(name: string): string | undefined;
  /** Every value of header `name` in the delivered message, in order. */
  headerValues(name: string): string[];
  /** The answer of the first stage called `stage` (and about `detail`, when given). */
  at(stage: TransactionStage, detail?: string): StageResult | undefined;
  /** The delivered message as text (CRLF line ends), when delivered. */
  text(): string | undefined;
}

const DEFAULT_MESSAGE = "Subject: test\r\n\r\nHello from the milterkit test harness.\r\n";

/** The bytes of a message given as text, bytes or parts. */
function messageBytes(m: TestMessage["message"]): Uint8Array {
  if (m === undefined) return encodeText(DEFAULT_MESSAGE);
  if (typeof m === "string") return encodeText(m);
  if (m instanceof Uint8Array) return m;
  const pairs = m.headers === undefined
    ? []
    : Array.isArray(m.headers)
    ? m.headers
    : Object.entries(m.headers);
  const head = encodeText(pairs.map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n");
  const body = typeof m.body === "string" ? encodeText(m.body) : m.body ?? new Uint8Array(0);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

function connectInfo(client: TestMessage["client"]): ConnectInfo {
  if (typeof client === "object") return client;
  const address = client ?? "192.0.2.1";
  return {
    hostname: `[${address}]`,
    family: address.includes(":") ? "inet6" : "inet",
    address,
    port: 4711,
  };
}

function transactionInput(m: TestMessage): TransactionInput {
  const macros: Partial<Record<MacroStageLetter, MacroInput>> = {};
  for (const [stage, value] of Object.entries(m.macros ?? {})) {
    const letter = STAGE_LETTER[stage as Stage];
    if (letter === undefined) {
      throw new TypeError(
        `Unknown stage ${JSON.stringify(stage)} in macros; known: ${
          Object.keys(STAGE_LETTER).join(", ")
        }`,
      );
    }
    if (value !== undefined) macros[letter] = value;
  }
  return {
    connect: connectInfo(m.client),
    helo: m.helo ?? "client.example.test",
    from: m.from ?? "sender@example.test",
    ...(m.fromArgs ? { fromArgs: m.fromArgs } : {}),
    rcpts: m.rcpts ?? ["rcpt@example.test"],
    message: messageBytes(m.message),
    macros,
    ...(m.queueId === undefined ? {} : { queueId: m.queueId }),
  };
}

function fieldValue(value: string): string {
  return value.replace(/^[ \t]/, "");
}

function toResult(t: TransactionResult, errors: readonly FilterHandlerError[]): TestResult {
  const stages: StageResult[] = t.replies.map((r) => ({
    stage: r.stage,
    ...(r.detail === undefined ? {} : { detail: r.detail }),
    outcome: r.result.outcome,
    verdict: r.result.verdict.type,
    reply: r.result.verdict.type === "replycode" ? r.result.verdict.text : undefined,
  }));
  const delivered = t.result;
  const matching = (name: string) => {
    const lower = name.toLowerCase();
    return (delivered?.message.headers ?? []).filter((h) => h.name.toLowerCase() === lower);
  };
  return {
    verdict: t.verdict.type,
    stage: t.verdict.stage,
    reply: t.verdict.reply,
    delivered: t.delivered,
    stages,
    modifications: t.modifications,
    message: delivered?.message,
    envelope: delivered?.envelope,
    quarantine: delivered?.quarantine,
    rejectedRecipients: t.rejectedRecipients,
    errors,
    transaction: t,
    header: (name) => {
      const h = matching(name)[0];
      return h === undefined ? undefined : fieldValue(h.value);
    },
    headerValues: (name) => matching(name).map((h) => fieldValue(h.value)),
    at: (stage, detail) =>
      stages.find((s) => s.stage === stage && (detail === undefined || s.detail === detail)),
    text: () => delivered && decodeText(serializeMessage(delivered.message)),
  };
}

/** Errors the engine reports that are policy, not a handler's fault (a body over its limit). */
function isPolicy(e: Error): boolean {
  return e.message.includes("(maxBodyBytes)");
}

/**
 * One filter connection in a test: the filter engine and an MTA engine joined in memory. Run
 * several messages on it to test what a filter keeps per connection; {@link close} ends the
 * SMTP session (the filter's close handler runs).
 *
 * @example
 * ```ts
 * import { defineFilter } from "@milterkit/milterkit";
 * import { FilterTest } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 *
 * const t = await FilterTest.open(defineFilter({
 *   actions: ["addHeader"],
 *   connectionState: () => ({ messages: 0 }),
 *   eom(ctx) {
 *     ctx.addHeader("X-Message-Number", String(++ctx.connection.messages));
 *   },
 * }));
 * assert.equal((await t.run({})).header("X-Message-Number"), "1");
 * assert.equal((await t.run({})).header("X-Message-Number"), "2");
 * assert.equal((await t.close()).messages, 2);
 * ```
 */
export class FilterTest {
  readonly #client: MilterClient;
  readonly #served: Promise<ServedSession>;
  readonly #errors: FilterHandlerError[];
  readonly #throw: boolean;

  private constructor(
    client: MilterClient,
    served: Promise<ServedSession>,
    errors: FilterHandlerError[],
    rethrow: boolean,
  ) {
    this.#client = client;
    this.#served = served;
    this.#errors = errors;
    this.#throw = rethrow;
  }

  /**
   * Starts the filter engine with `filter` and connects an MTA engine to it (negotiation
   * included).
   *
   * @param filter The filter under test.
   * @param options Which MTA to be, what to do with handler errors, engine options.
   * @returns The open connection.
   * @throws {MilterNegotiationError} when the filter asks for what the MTA does not offer.
   */
  static async open<C, M>(
    filter: Filter<C, M>,
    options: FilterTestOptions = {},
  ): Promise<FilterTest> {
    const [mta, filterSide] = duplexPair();
    const errors: FilterHandlerError[] = [];
    const served = serveConnection(filterSide, filter, {
      ...options.session,
      onEvent: (e) => {
        if (e.type === "error" && e.error instanceof FilterHandlerError) errors.push(e.error);
      },
    });
    const ms = options.timeoutMs ?? 30_000;
    try {
      const client = await MilterClient.open(mta, {
        preset: options.mta ?? "postfix",
        commandTimeoutMs: ms,
        contentTimeoutMs: ms,
        eomTimeoutMs: ms,
      });
      return new FilterTest(client, served, errors, (options.handlerErrors ?? "throw") === "throw");
    } catch (e) {
      const s = await served;
      throw s.error ?? e;
    }
  }

  /**
   * Runs one message (connect and helo only the first time) and reports what became of it.
   *
   * @param message The message, envelope and macros (all optional).
   * @returns Verdict, stages, modifications and the delivered message.
   * @throws {FilterHandlerError} when a handler failed and `handlerErrors` is `"throw"`.
   */
  async run(message: TestMessage = {}): Promise<TestResult> {
    const before = this.#errors.length;
    const t = await runTransaction(this.#client, transactionInput(message));
    const errors = this.#errors.slice(before);
    const fault = errors.find((e) => !isPolicy(e));
    if (this.#throw && fault !== undefined) throw fault;
    return toResult(t, errors);
  }

  /**
   * Ends the session (QUIT) and waits for the filter engine to finish.
   *
   * @returns How the filter engine's session ended, with the number of messages it decided.
   */
  async close(): Promise<ServedSession> {
    await endSession(this.#client);
    return await this.#served;
  }
}

/**
 * Runs one message through a filter in process and reports what the MTA would do: the verdict
 * and where it was taken, each stage's answer, the modifications, and the message and envelope
 * as delivered (modifications applied the way the MTA applies them).
 *
 * @param filter The filter under test.
 * @param message The message (`.eml` text or bytes, or parts), envelope and macros.
 * @param options Which MTA to be (default Postfix), handler errors, engine options.
 * @returns The result.
 * @throws {FilterHandlerError} when a handler failed (unless `handlerErrors: "collect"`).
 *
 * @example
 * ```ts
 * import { defineFilter } from "@milterkit/milterkit";
 * import { testFilter } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 *
 * const filter = defineFilter({
 *   actions: ["addHeader", "changeHeader"],
 *   envrcpt: (rcpt) => rcpt.address.endsWith("@old.example") ? "reject" : undefined,
 *   eom(ctx) {
 *     if (/viagra/i.test(ctx.header("subject") ?? "")) {
 *       ctx.changeHeader("Subject", 1, `[SPAM] ${ctx.header("subject")}`);
 *       ctx.addHeader("X-Spam", "yes");
 *     }
 *   },
 * });
 *
 * const r = await testFilter(filter, {
 *   message: "Subject: cheap viagra\nFrom: <a@example.net>\n\nBuy now\n",
 *   rcpts: ["bob@example.com", "carol@old.example"],
 * });
 * assert.equal(r.verdict, "continue");
 * assert.equal(r.header("Subject"), "[SPAM] cheap viagra");
 * assert.equal(r.header("X-Spam"), "yes");
 * assert.deepEqual(r.envelope?.recipients.map((x) => x.recipient), ["<bob@example.com>"]);
 * assert.equal(r.at("envrcpt", "<carol@old.example>")?.verdict, "reject");
 * ```
 */
export async function testFilter<C, M>(
  filter: Filter<C, M>,
  message: TestMessage = {},
  options: FilterTestOptions = {},
): Promise<TestResult> {
  const t = await FilterTest.open(filter, options);
  try {
    return await t.run(message);
  } finally {
    await t.close();
  }
}
