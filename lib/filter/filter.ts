/**
 * The filter API: a filter is a plain object of async handlers plus a few declarations
 * (actions it will use, macros it wants, handlers that never answer). Negotiation is derived
 * from it, so the MTA sends only what the filter needs.
 *
 * @module
 */

import type { Negotiated } from "../wire/types.ts";
import type { ConnectInfo, EnvelopeAddress, HeaderField } from "../mail/envelope.ts";
import type { Verdict } from "./verdict.ts";

/**
 * What every handler receives: macros, state, and what the session has seen so far.
 *
 * @typeParam C Per-connection state (survives messages).
 * @typeParam M Per-message state (reset on abort and at each new MAIL).
 */
export interface Context<C = Record<string, unknown>, M = Record<string, unknown>> {
  /**
   * Looks up a macro visible at this stage (this stage's and earlier stages'); `x` and `{x}`
   * are the same name.
   */
  macro(name: string): string | undefined;
  /** All macros visible at this stage, names as the MTA sent them. */
  readonly macros: ReadonlyMap<string, string>;
  /** Per-connection state, created by `Filter.connectionState()` (default `{}`). */
  readonly connection: C;
  /** Per-message state, created by `Filter.messageState()` (default `{}`). */
  readonly message: M;
  /** Connection info, once CONNECT was seen. */
  readonly client: ConnectInfo | undefined;
  /** The last HELO/EHLO name. */
  readonly helo: string | undefined;
  /** The sender of the current message. */
  readonly sender: EnvelopeAddress | undefined;
  /** Recipients of the current message that this filter did not reject. */
  readonly recipients: readonly EnvelopeAddress[];
  /** Headers of the current message seen so far. */
  readonly headers: readonly HeaderField[];
  /** Body bytes of the current message seen so far. */
  readonly bodySize: number;
  /** What was negotiated with the MTA. */
  readonly negotiated: Negotiated;
  /** Aborted when the handler times out or the connection goes away. */
  readonly signal: AbortSignal;
  /** Counts messages on this connection (1 for the first). */
  readonly messageNumber: number;
}

/**
 * The context at end of message: everything of {@link Context} plus the modifications
 * negotiation allowed. Modifications are sent, in call order, before the final verdict.
 */
export interface EomContext<C = Record<string, unknown>, M = Record<string, unknown>>
  extends Context<C, M> {
  /** The whole body, when the filter set `bufferBody` (else undefined). */
  readonly body: Uint8Array | undefined;
  /** True when a buffered body was cut at `bufferBody.maxBytes` (`onLimit: "truncate"`). */
  readonly bodyTruncated: boolean;
  /** Appends a header (action `addHeader`). LF + whitespace folds; CRLF becomes LF. */
  addHeader(name: string, value: string): void;
  /** Inserts a header at `index` (0 = top of the message, above the MTA's Received). */
  insertHeader(index: number, name: string, value: string): void;
  /** Changes the `index`-th (1-based) header called `name`; appended if missing. */
  changeHeader(name: string, index: number, value: string): void;
  /** Deletes the `index`-th (1-based) header called `name`. */
  deleteHeader(name: string, index: number): void;
  /** Adds a recipient; with `args` (e.g. `"NOTIFY=NEVER"`) it needs `addRecipientWithArgs`. */
  addRecipient(recipient: string, args?: string): void;
  /** Removes a recipient, given as the MTA sent it (`EnvelopeAddress.raw`). */
  deleteRecipient(recipient: string): void;
  /** Changes the envelope sender, with optional ESMTP arguments. */
  changeSender(sender: string, args?: string): void;
  /** Replaces the body (string, bytes, or a stream sent in 65535-byte chunks). */
  replaceBody(body: string | Uint8Array | ReadableStream<Uint8Array>): void;
  /** Puts the message on hold with a reason (not a verdict: the handler still returns one). */
  quarantine(reason: string): void;
  /** Sends a PROGRESS keep-alive now, restarting the MTA's timeout. */
  progress(): Promise<void>;
}

/**
 * Names of the modifications a filter may declare in {@link Filter.actions}.
 */
export type ActionName =
  | "addHeader"
  | "changeHeader"
  | "replaceBody"
  | "addRecipient"
  | "addRecipientWithArgs"
  | "deleteRecipient"
  | "changeSender"
  | "quarantine";

/** Events a filter can receive. */
export type EventName =
  | "connect"
  | "helo"
  | "envfrom"
  | "envrcpt"
  | "data"
  | "header"
  | "eoh"
  | "body"
  | "unknown";

/** A handler's result: a verdict, or nothing for `"continue"`. */
export type HandlerResult = Verdict | undefined | void;

/** A handler: may be sync or async. */
export type Handler<A extends unknown[]> = (
  ...args: A
) => HandlerResult | Promise<HandlerResult>;

/** Macro stages a filter can request macros for (the `SMFIM_*` stages). */
export type MacroStage = "connect" | "helo" | "envfrom" | "envrcpt" | "data" | "eoh" | "eom";

/**
 * A milter filter. Every handler is optional. Negotiation follows from the handlers: the MTA
 * waits for answers only where there is a handler; connect, helo, envelope and headers are
 * still received without a handler (no round trip) to fill the context; other events without
 * a handler are switched off.
 *
 * @typeParam C Per-connection state type.
 * @typeParam M Per-message state type.
 *
 * @example
 * ```ts
 * import { defineFilter } from "@milterkit/milterkit";
 * export default defineFilter({
 *   name: "no-spam-subjects",
 *   actions: ["addHeader"],
 *   header({ name, value }) {
 *     if (name.toLowerCase() === "subject" && /viagra/i.test(value)) {
 *       return { code: 550, enhanced: "5.7.1", text: "No thanks" };
 *     }
 *   },
 *   eom(ctx) {
 *     ctx.addHeader("X-Filtered-By", "milterkit");
 *   },
 * });
 * ```
 */
export interface Filter<C = Record<string, unknown>, M = Record<string, unknown>> {
  /** Name for logs and `--check`. */
  readonly name?: string;
  /** Modifications the filter will use at end of message; requested in negotiation. */
  readonly actions?: readonly ActionName[];
  /** Macros to ask the MTA for, per stage (`SMFIF_SETSYMLIST`). */
  readonly macros?: Readonly<Partial<Record<MacroStage, readonly string[]>>>;
  /** Handlers that never answer: negotiated as `SMFIP_NR_*`, so the MTA does not wait. */
  readonly noReply?: readonly EventName[];
  /**
   * Events to receive without a handler and without replies. connect, helo, envfrom, envrcpt
   * and header are observed by default (they fill the context); list data, eoh, unknown or
   * body here to receive them too.
   */
  readonly observe?: readonly EventName[];
  /** Events to switch off entirely (`SMFIP_NO*`), e.g. `["header"]` when headers don't matter. */
  readonly ignore?: readonly EventName[];
  /** Ask for header values exactly as written, leading space included (`SMFIP_HDR_LEADSPC`). */
  readonly headerLeadingSpace?: boolean;
  /** Also receive recipients the MTA already rejected (`SMFIP_RCPT_REJ`). */
  readonly rejectedRecipients?: boolean;
  /**
   * Collect the body for `eom` (`ctx.body`): `true`, or limits. Past `maxBytes` (default
   * 10 MiB) `onLimit` decides: `"tempfail"` (default, 452 4.3.4), `"reject"` (552 5.3.4),
   * `"accept"` or `"truncate"` (keep the first `maxBytes`, `ctx.bodyTruncated` is set).
   */
  readonly bufferBody?: boolean | {
    readonly maxBytes?: number;
    readonly onLimit?: "tempfail" | "reject" | "accept" | "truncate";
  };
  /** Creates the per-connection state. */
  connectionState?(): C;
  /** Creates the per-message state. */
  messageState?(): M;
  /** SMFIC_CONNECT. */
  connect?(info: ConnectInfo, ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_HELO (may come more than once). */
  helo?(name: string, ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_MAIL: a new message starts. */
  envfrom?(sender: EnvelopeAddress, ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_RCPT: reject here refuses only this recipient. */
  envrcpt?(
    recipient: EnvelopeAddress,
    ctx: Context<C, M>,
  ): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_DATA. */
  data?(ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_HEADER, once per header. */
  header?(header: HeaderField, ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_EOH. */
  eoh?(ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_BODY, once per chunk (up to 65535 bytes); may return `"skip"`. */
  body?(chunk: Uint8Array, ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
  /**
   * The body as one stream, started at the first chunk; chunks are not buffered (the MTA waits
   * while the stream is full). Its verdict counts like a body verdict.
   */
  bodyStream?(
    body: ReadableStream<Uint8Array>,
    ctx: Context<C, M>,
  ): HandlerResult | Promise<HandlerResult>;
  /** SMFIC_BODYEOB: modifications happen here. */
  eom?(ctx: EomContext<C, M>): HandlerResult | Promise<HandlerResult>;
  /** The current message was aborted (never called outside a message). */
  abort?(ctx: Context<C, M>): void | Promise<void>;
  /** The connection ended (QUIT, QUIT_NC or EOF). */
  close?(ctx: Context<C, M>): void | Promise<void>;
  /** SMFIC_UNKNOWN: an SMTP command the MTA did not recognise. */
  unknown?(line: string, ctx: Context<C, M>): HandlerResult | Promise<HandlerResult>;
}

/**
 * Identity function that gives a filter object its types (handy in `.js` scripts and for
 * inference of the state types).
 *
 * @param filter The filter.
 * @returns The same object.
 *
 * @example
 * ```ts
 * import { defineFilter } from "@milterkit/milterkit";
 * const f = defineFilter({
 *   connectionState: () => ({ messages: 0 }),
 *   envfrom(_sender, ctx) { ctx.connection.messages++; },
 * });
 * ```
 */
export function defineFilter<C = Record<string, unknown>, M = Record<string, unknown>>(
  filter: Filter<C, M>,
): Filter<C, M> {
  return filter;
}
