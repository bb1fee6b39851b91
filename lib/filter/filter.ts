/**
 * The filter API: a filter is a plain object of async handlers plus a few declarations
 * (actions it will use, macros it wants, handlers that never answer). Negotiation is derived
 * from it, so the MTA sends only what the filter needs.
 *
 * @module
 */

import type { FilterLog } from "./log.ts";
import type { Negotiated, Stage } from "../wire/types.ts";
import type { ConnectInfo, EnvelopeAddress, HeaderField } from "../mail/envelope.ts";
import type { Verdict } from "./verdict.ts";

/**
 * What every handler receives: macros, state, and what the session has seen so far.
 *
 * @typeParam C Per-connection state (survives messages).
 * @typeParam M Per-message state (reset on abort and at each new MAIL).
 */
export interface Context<C = DefaultState, M = DefaultState> {
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
  /**
   * The value of the first header called `name` seen so far (case-insensitive), or undefined.
   *
   * @example
   * ```ts
   * import { defineFilter } from "@milterkit/milterkit";
   * defineFilter({
   *   eoh(ctx) {
   *     if (ctx.header("subject")?.includes("[SPAM]")) return "reject";
   *   },
   * });
   * ```
   */
  header(name: string): string | undefined;
  /** The values of every header called `name` seen so far (case-insensitive), in order. */
  headerValues(name: string): string[];
  /** Body bytes of the current message seen so far. */
  readonly bodySize: number;
  /** What was negotiated with the MTA. */
  readonly negotiated: Negotiated;
  /** Aborted when the handler times out or the connection goes away. */
  readonly signal: AbortSignal;
  /** Counts messages on this connection (1 for the first). */
  readonly messageNumber: number;
  /**
   * Writes to the server's log (`milterkit serve`: same format and level as its own lines),
   * tagged with the session and the queue id: `ctx.log.info("scored", { score: 7.5 })`.
   */
  readonly log: FilterLog;
}

/**
 * The context at end of message: everything of {@link Context} plus the modifications
 * negotiation allowed. Modifications are sent, in call order, before the final verdict.
 * Header modifications take their arguments in one order: name, index, value.
 */
export interface EomContext<C = DefaultState, M = DefaultState> extends Context<C, M> {
  /**
   * The whole body when the filter set `bufferBody` (then the type is {@link BufferedEomContext}
   * and the body is never undefined), else undefined.
   */
  readonly body: Uint8Array<ArrayBuffer> | undefined;
  /** True when a buffered body was cut at `maxBodyBytes` (`onBodyLimit: "truncate"`). */
  readonly bodyTruncated: boolean;
  /** Appends a header (action `addHeader`). LF + whitespace folds; CRLF becomes LF. */
  addHeader(name: string, value: string): void;
  /**
   * Inserts a header at position `index` of the whole header list (0 = top of the message,
   * above the MTA's own Received header); action `addHeader`.
   */
  insertHeader(name: string, index: number, value: string): void;
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
 * The end-of-message context of a filter that set `bufferBody`: `body` holds the whole body
 * (up to `maxBodyBytes`) as bytes Web Crypto accepts.
 *
 * @example
 * ```ts
 * import { defineFilter } from "@milterkit/milterkit";
 * defineFilter({
 *   bufferBody: true,
 *   actions: ["addHeader"],
 *   async eom(ctx) {
 *     const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", ctx.body));
 *     ctx.addHeader("X-Body-SHA256", Array.from(sum, (b) => b.toString(16).padStart(2, "0")).join(""));
 *   },
 * });
 * ```
 */
export interface BufferedEomContext<C = DefaultState, M = DefaultState> extends EomContext<C, M> {
  /** The whole body (cut at `maxBodyBytes` when `bodyTruncated`). */
  readonly body: Uint8Array<ArrayBuffer>;
}

/**
 * The state type used when none is declared: an open record, created as `{}`.
 */
export type DefaultState = Record<string, unknown>;

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

/** Events a filter can receive: every {@link Stage} but eom (which always comes). */
export type EventName = Exclude<Stage, "eom">;

/**
 * Verdicts allowed at connect, helo and unknown: neither `"discard"` (there is no message to
 * discard yet) nor `"skip"` (body only).
 */
export type ConnectionVerdict = Exclude<Verdict, "discard" | "skip">;

/** Verdicts allowed from envfrom to eoh and at eom: everything but `"skip"` (body only). */
export type MessageVerdict = Exclude<Verdict, "skip">;

/** Verdicts allowed at body: all of them, `"skip"` included. */
export type BodyVerdict = Verdict;

/**
 * A handler's result: a verdict, or nothing for `"continue"`.
 *
 * @typeParam V The verdicts the handler's stage allows.
 */
export type HandlerResult<V extends Verdict = Verdict> = V | undefined | void;

/** What a handler returns, synchronously or not. */
export type Answer<V extends Verdict = Verdict> = HandlerResult<V> | Promise<HandlerResult<V>>;

/** Macro stages a filter can request macros for (the `SMFIM_*` stages). */
export type MacroStage = Exclude<Stage, "header" | "body" | "unknown">;

/** What a buffering filter does past {@link BufferedBody.maxBodyBytes}. */
export type BodyLimitAction = "tempfail" | "reject" | "accept" | "truncate";

/** The body buffering settings in force for a filter (see {@link bodyBuffering}). */
export interface BodyBuffering {
  /** Most bytes kept. */
  readonly maxBytes: number;
  /** What happens past `maxBytes`. */
  readonly onLimit: BodyLimitAction;
}

/** Default of {@link BufferedBody.maxBodyBytes}: 10 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024;

/**
 * A filter's declarations and handlers, except `bufferBody` and `eom` (whose context depends on
 * it) and the rule on state factories: see {@link Filter}.
 *
 * @typeParam C Per-connection state type.
 * @typeParam M Per-message state type.
 */
export interface FilterOptions<C = DefaultState, M = DefaultState> {
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
  /** Creates the per-connection state (required when `{}` is not a valid `C`). */
  connectionState?(): C;
  /** Creates the per-message state (required when `{}` is not a valid `M`). */
  messageState?(): M;
  /** SMFIC_CONNECT. Neither discard nor skip is a verdict here. */
  connect?(info: ConnectInfo, ctx: Context<C, M>): Answer<ConnectionVerdict>;
  /** SMFIC_HELO (may come more than once). Neither discard nor skip is a verdict here. */
  helo?(name: string, ctx: Context<C, M>): Answer<ConnectionVerdict>;
  /** SMFIC_MAIL: a new message starts. */
  envfrom?(sender: EnvelopeAddress, ctx: Context<C, M>): Answer<MessageVerdict>;
  /** SMFIC_RCPT: reject here refuses only this recipient. */
  envrcpt?(recipient: EnvelopeAddress, ctx: Context<C, M>): Answer<MessageVerdict>;
  /** SMFIC_DATA. */
  data?(ctx: Context<C, M>): Answer<MessageVerdict>;
  /** SMFIC_HEADER, once per header. */
  header?(header: HeaderField, ctx: Context<C, M>): Answer<MessageVerdict>;
  /** SMFIC_EOH. */
  eoh?(ctx: Context<C, M>): Answer<MessageVerdict>;
  /** SMFIC_BODY, once per chunk (up to 65535 bytes); may return `"skip"`. */
  body?(chunk: Uint8Array, ctx: Context<C, M>): Answer<BodyVerdict>;
  /**
   * The body as one stream, started at the first chunk; chunks are not buffered (the MTA waits
   * while the stream is full). Its verdict counts like a body verdict.
   */
  bodyStream?(body: ReadableStream<Uint8Array>, ctx: Context<C, M>): Answer<BodyVerdict>;
  /** The current message was aborted (never called outside a message). */
  abort?(ctx: Context<C, M>): void | Promise<void>;
  /** The connection ended (QUIT, QUIT_NC or EOF). */
  close?(ctx: Context<C, M>): void | Promise<void>;
  /** SMFIC_UNKNOWN: an SMTP command the MTA did not recognise. No discard or skip here. */
  unknown?(line: string, ctx: Context<C, M>): Answer<ConnectionVerdict>;
}

/** `bufferBody` and the eom handler of a filter that buffers the body. */
export interface BufferedBody<C, M> {
  /** Collect the body: `ctx.body` in eom holds it. */
  readonly bufferBody: true;
  /** Most body bytes kept (default 10 MiB). */
  readonly maxBodyBytes?: number;
  /**
   * Past `maxBodyBytes`: `"tempfail"` (default, 452 4.3.4), `"reject"` (552 5.3.4), `"accept"`
   * or `"truncate"` (keep the first `maxBodyBytes`, `ctx.bodyTruncated` is set).
   */
  readonly onBodyLimit?: BodyLimitAction;
  /** SMFIC_BODYEOB: modifications happen here; `ctx.body` is the buffered body. */
  eom?(ctx: BufferedEomContext<C, M>): Answer<MessageVerdict>;
}

/** `bufferBody` and the eom handler of a filter that does not buffer the body. */
export interface UnbufferedBody<C, M> {
  /** No body buffering (the default). */
  readonly bufferBody?: false;
  /** Only with `bufferBody: true`. */
  readonly maxBodyBytes?: never;
  /** Only with `bufferBody: true`. */
  readonly onBodyLimit?: never;
  /** SMFIC_BODYEOB: modifications happen here. */
  eom?(ctx: EomContext<C, M>): Answer<MessageVerdict>;
}

/**
 * The state factories a filter must have: `connectionState` when the runtime default `{}` is
 * not a valid `C`, `messageState` when `{}` is not a valid `M`.
 */
export type StateFactories<C, M> =
  // deno-lint-ignore ban-types
  & ({} extends C ? unknown : { connectionState(): C })
  // deno-lint-ignore ban-types
  & ({} extends M ? unknown : { messageState(): M });

/**
 * A milter filter. Every handler is optional. Negotiation follows from the handlers: the MTA
 * waits for answers only where there is a handler; connect, helo, envelope and headers are
 * still received without a handler (no round trip) to fill the context; other events without
 * a handler are switched off.
 *
 * The types check what the engine would refuse at run time: a verdict a stage does not allow
 * (discard at connect/helo, skip outside body), and a declared state type without its factory.
 * With `bufferBody`, `ctx.body` at eom is a `Uint8Array<ArrayBuffer>`.
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
export type Filter<C = DefaultState, M = DefaultState> =
  & FilterOptions<C, M>
  & (BufferedBody<C, M> | UnbufferedBody<C, M>)
  & StateFactories<C, M>;

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
export function defineFilter<C = DefaultState, M = DefaultState>(
  filter: Filter<C, M>,
): Filter<C, M> {
  return filter;
}

/**
 * The body buffering a filter asked for, with defaults filled in.
 *
 * @param filter The filter.
 * @returns The limits, or undefined when the filter does not buffer the body.
 *
 * @example
 * ```ts
 * import { bodyBuffering } from "./filter.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(bodyBuffering({ bufferBody: true, maxBodyBytes: 100 }),
 *   { maxBytes: 100, onLimit: "tempfail" });
 * assert.equal(bodyBuffering({}), undefined);
 * ```
 */
export function bodyBuffering<C, M>(filter: Filter<C, M>): BodyBuffering | undefined {
  if (!filter.bufferBody) return undefined;
  return {
    maxBytes: filter.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    onLimit: filter.onBodyLimit ?? "tempfail",
  };
}
