/**
 * The state a filter session keeps (connection and message) and the context objects handed to
 * handlers, including the end-of-message modification queue with its checks.
 *
 * @module
 */

import { FilterHandlerError } from "../wire/errors.ts";
import type { ActionName, Answer, Context, EomContext, Filter, MessageVerdict } from "./filter.ts";
import { ACTION_BITS } from "./negotiate.ts";
import { MacroStore } from "./macros.ts";
import { bindFilterLog, type FilterLog, type FilterLogSink } from "./log.ts";
import { encodeText } from "../wire/text.ts";
import type { Modification, Negotiated } from "../wire/types.ts";
import { SMFIP } from "../wire/constants.ts";
import type { ConnectInfo, EnvelopeAddress, HeaderField } from "../mail/envelope.ts";

/** A queued modification; a streamed body is expanded into REPLBODY chunks when sent. */
export type QueuedModification =
  | Modification
  | { readonly type: "replbody-stream"; readonly stream: ReadableStream<Uint8Array> };

/**
 * Everything a session knows, shared by all contexts of one connection.
 * Internal: the filter engine owns it; handlers see it through {@link Context}.
 */
export class SessionState<C, M> {
  readonly macros: MacroStore = new MacroStore();
  negotiated: Negotiated = { version: 0, actions: 0, protocol: 0, symlists: [] };
  client: ConnectInfo | undefined;
  helo: string | undefined;
  connection: C;
  message: M;
  sender: EnvelopeAddress | undefined;
  recipients: EnvelopeAddress[] = [];
  headers: HeaderField[] = [];
  bodySize = 0;
  bodyChunks: Uint8Array[] = [];
  bodyBuffered = 0;
  bodyTruncated = false;
  messageNumber = 0;
  #signal: AbortSignal | (() => AbortSignal);
  readonly #filter: Filter<C, M>;

  /** `ctx.log`: lines tagged with the current queue id. */
  readonly log: FilterLog;

  /**
   * @param signal `ctx.signal`, or a function that makes it when a handler first asks (most
   *   sessions never do, and an `AbortSignal` is not free to make).
   */
  constructor(
    filter: Filter<C, M>,
    signal: AbortSignal | (() => AbortSignal),
    logSink?: FilterLogSink,
  ) {
    this.log = bindFilterLog(logSink, () => {
      const queue = this.macros.get("i");
      return queue === undefined ? {} : { queue };
    });
    this.#filter = filter;
    this.#signal = signal;
    this.connection = filter.connectionState ? filter.connectionState() : ({} as C);
    this.message = filter.messageState ? filter.messageState() : ({} as M);
  }

  /** The session's signal (`ctx.signal`). */
  get signal(): AbortSignal {
    const s = this.#signal;
    return typeof s === "function" ? (this.#signal = s()) : s;
  }

  /** Starts a new message (MAIL). */
  newMessage(sender: EnvelopeAddress | undefined): void {
    this.resetMessage();
    this.sender = sender;
    this.messageNumber++;
  }

  /** Forgets the current message (abort, end of message). */
  resetMessage(): void {
    this.message = this.#filter.messageState ? this.#filter.messageState() : ({} as M);
    this.sender = undefined;
    this.recipients = [];
    this.headers = [];
    this.bodySize = 0;
    this.bodyChunks = [];
    this.bodyBuffered = 0;
    this.bodyTruncated = false;
  }

  /** Starts a new SMTP session on the same socket (QUIT_NC). */
  resetConnection(): void {
    this.resetMessage();
    this.macros.clear();
    this.client = undefined;
    this.helo = undefined;
    this.messageNumber = 0;
    this.connection = this.#filter.connectionState ? this.#filter.connectionState() : ({} as C);
  }

  /** The whole buffered body, in one `ArrayBuffer`-backed array (what Web Crypto takes). */
  body(): Uint8Array<ArrayBuffer> {
    const only = this.bodyChunks.length === 1 ? this.bodyChunks[0]! : undefined;
    if (only !== undefined && isOnArrayBuffer(only)) return only;
    const out = new Uint8Array(this.bodyBuffered);
    let p = 0;
    for (const c of this.bodyChunks) {
      out.set(c, p);
      p += c.length;
    }
    this.bodyChunks = [out];
    return out;
  }
}

function isOnArrayBuffer(bytes: Uint8Array): bytes is Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer;
}

/** A handler's context: a live view on the session state. */
export class ContextView<C, M> implements Context<C, M> {
  protected readonly state: SessionState<C, M>;

  constructor(state: SessionState<C, M>) {
    this.state = state;
  }

  macro(name: string): string | undefined {
    return this.state.macros.get(name);
  }
  get macros(): ReadonlyMap<string, string> {
    return this.state.macros.all();
  }
  get connection(): C {
    return this.state.connection;
  }
  get message(): M {
    return this.state.message;
  }
  get client(): ConnectInfo | undefined {
    return this.state.client;
  }
  get helo(): string | undefined {
    return this.state.helo;
  }
  get sender(): EnvelopeAddress | undefined {
    return this.state.sender;
  }
  get recipients(): readonly EnvelopeAddress[] {
    return this.state.recipients;
  }
  get headers(): readonly HeaderField[] {
    return this.state.headers;
  }
  header(name: string): string | undefined {
    const lower = name.toLowerCase();
    return this.state.headers.find((h) => h.name.toLowerCase() === lower)?.value;
  }
  headerValues(name: string): string[] {
    const lower = name.toLowerCase();
    return this.state.headers.filter((h) => h.name.toLowerCase() === lower).map((h) => h.value);
  }
  get bodySize(): number {
    return this.state.bodySize;
  }
  get negotiated(): Negotiated {
    return this.state.negotiated;
  }
  get signal(): AbortSignal {
    return this.state.signal;
  }
  get messageNumber(): number {
    return this.state.messageNumber;
  }
  get log(): FilterLog {
    return this.state.log;
  }
}

const HEADER_NAME = /^[\x21-\x39\x3b-\x7e]+$/;

/**
 * The end-of-message context: collects modifications, checking each when it is asked for.
 * `B` is the body's type: `Uint8Array<ArrayBuffer>` for a buffering filter, else `undefined`.
 */
export class EomContextView<
  C,
  M,
  B extends Uint8Array<ArrayBuffer> | undefined = Uint8Array<ArrayBuffer> | undefined,
> extends ContextView<C, M> implements EomContext<C, M> {
  /** Modifications in call order. */
  readonly queue: QueuedModification[] = [];
  readonly #progress: () => Promise<void>;
  readonly #body: B;

  constructor(state: SessionState<C, M>, body: B, progress: () => Promise<void>) {
    super(state);
    this.#body = body;
    this.#progress = progress;
  }

  get body(): B {
    return this.#body;
  }
  get bodyTruncated(): boolean {
    return this.state.bodyTruncated;
  }

  #need(action: ActionName, method: string): void {
    if ((this.state.negotiated.actions & ACTION_BITS[action]) === 0) {
      throw new FilterHandlerError(
        `ctx.${method}() needs the action "${action}": add it to the filter's actions`,
        "eom",
      );
    }
  }

  #fail(message: string): never {
    throw new FilterHandlerError(message, "eom");
  }

  #name(name: string, method: string): void {
    if (!HEADER_NAME.test(name)) {
      this.#fail(
        `ctx.${method}(): header name ${JSON.stringify(name)} is empty or not a field name`,
      );
    }
  }

  #value(value: string, method: string): string {
    if (value.includes("\0")) this.#fail(`ctx.${method}(): header value contains NUL`);
    let v = value.replaceAll("\r\n", "\n");
    if (v.includes("\r")) this.#fail(`ctx.${method}(): header value contains a bare CR`);
    if (/\n(?![ \t])/.test(v)) {
      this.#fail(`ctx.${method}(): a folded header line must start with a space or tab`);
    }
    if (v.endsWith("\n")) v = v.trimEnd();
    const leadspc = (this.state.negotiated.protocol & SMFIP.HDR_LEADSPC) !== 0;
    return leadspc && v !== "" && !/^[ \t]/.test(v) ? ` ${v}` : v;
  }

  #index(index: number, min: number, method: string): void {
    if (!Number.isInteger(index) || index < min || index > 0xffffffff) {
      this.#fail(`ctx.${method}(): index ${index} must be an integer ≥ ${min}`);
    }
  }

  #address(addr: string, what: string, method: string): void {
    if (addr === "" || /[\0\r\n]/.test(addr)) {
      this.#fail(
        `ctx.${method}(): ${what} ${JSON.stringify(addr)} is empty or holds CR, LF or NUL`,
      );
    }
  }

  #args(args: string | undefined, method: string): void {
    if (args !== undefined && /[\0\r\n]/.test(args)) {
      this.#fail(`ctx.${method}(): ESMTP arguments hold CR, LF or NUL`);
    }
  }

  addHeader(name: string, value: string): void {
    this.#need("addHeader", "addHeader");
    this.#name(name, "addHeader");
    this.queue.push({ type: "addheader", name, value: this.#value(value, "addHeader") });
  }

  insertHeader(name: string, index: number, value: string): void {
    this.#need("addHeader", "insertHeader");
    this.#name(name, "insertHeader");
    this.#index(index, 0, "insertHeader");
    this.queue.push({ type: "insheader", index, name, value: this.#value(value, "insertHeader") });
  }

  changeHeader(name: string, index: number, value: string): void {
    this.#need("changeHeader", "changeHeader");
    this.#name(name, "changeHeader");
    this.#index(index, 1, "changeHeader");
    const v = this.#value(value, "changeHeader");
    if (v.trim() === "") this.#fail("ctx.changeHeader(): empty value; use ctx.deleteHeader()");
    this.queue.push({ type: "chgheader", index, name, value: v });
  }

  deleteHeader(name: string, index: number): void {
    this.#need("changeHeader", "deleteHeader");
    this.#name(name, "deleteHeader");
    this.#index(index, 1, "deleteHeader");
    this.queue.push({ type: "chgheader", index, name, value: "" });
  }

  addRecipient(recipient: string, args?: string): void {
    this.#address(recipient, "recipient", "addRecipient");
    this.#args(args, "addRecipient");
    if (args === undefined) {
      this.#need("addRecipient", "addRecipient");
      this.queue.push({ type: "addrcpt", recipient });
    } else {
      this.#need("addRecipientWithArgs", "addRecipient");
      this.queue.push({ type: "addrcpt_par", recipient, args });
    }
  }

  deleteRecipient(recipient: string): void {
    this.#need("deleteRecipient", "deleteRecipient");
    this.#address(recipient, "recipient", "deleteRecipient");
    this.queue.push({ type: "delrcpt", recipient });
  }

  changeSender(sender: string, args?: string): void {
    this.#need("changeSender", "changeSender");
    if (/[\0\r\n]/.test(sender)) this.#fail("ctx.changeSender(): sender holds CR, LF or NUL");
    this.#args(args, "changeSender");
    this.queue.push(
      args === undefined ? { type: "chgfrom", sender } : { type: "chgfrom", sender, args },
    );
  }

  replaceBody(body: string | Uint8Array | ReadableStream<Uint8Array>): void {
    this.#need("replaceBody", "replaceBody");
    // A second replacement supersedes the first: REPLBODY frames must stay contiguous.
    const i = this.queue.findIndex((m) => m.type === "replbody" || m.type === "replbody-stream");
    if (i >= 0) this.queue.splice(i, 1);
    if (typeof body === "string") {
      const crlf = body.replace(/\r?\n/g, "\r\n");
      this.queue.push({ type: "replbody", chunk: encodeText(crlf) });
    } else if (body instanceof Uint8Array) {
      this.queue.push({ type: "replbody", chunk: body });
    } else {
      this.queue.push({ type: "replbody-stream", stream: body });
    }
  }

  quarantine(reason: string): void {
    this.#need("quarantine", "quarantine");
    if (reason === "" || /[\0\r\n]/.test(reason)) {
      this.#fail("ctx.quarantine(): the reason must be one non-empty line");
    }
    this.queue.push({ type: "quarantine", reason });
  }

  progress(): Promise<void> {
    return this.#progress();
  }
}

/**
 * A fresh end-of-message context for `filter` and the call of its eom handler with it, or
 * undefined when the filter has no eom handler. A buffering filter's context holds the body.
 */
export function bindEom<C, M>(
  filter: Filter<C, M>,
  state: SessionState<C, M>,
  progress: () => Promise<void>,
): { readonly ctx: EomContextView<C, M>; readonly call: () => Answer<MessageVerdict> } | undefined {
  if (filter.bufferBody) {
    if (!filter.eom) return undefined;
    const ctx = new EomContextView(state, state.body(), progress);
    return { ctx, call: () => filter.eom?.(ctx) };
  }
  if (!filter.eom) return undefined;
  const ctx = new EomContextView(state, undefined, progress);
  return { ctx, call: () => filter.eom?.(ctx) };
}
