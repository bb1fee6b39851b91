/**
 * The MTA side of the protocol: {@link MilterClient} drives any filter (milterkit's, libmilter
 * filters, OpenDKIM, Rspamd) the way Postfix or Sendmail would, and is strict about what the
 * filter gets wrong. Used by `milterkit send`, `proxy`, `bench` and the tests.
 *
 * @module
 */

import { concatBytes } from "../wire/concat.ts";
import { judgeOptnegReply, MTA_OFFERS } from "./negotiate.ts";
import type { MtaOffer } from "./negotiate.ts";
import { FrameChannel } from "./io.ts";
import { ReplyJudge, STAGE_COMMAND } from "./replies.ts";
import { macroCommand } from "./macros.ts";
import type {
  BodyResult,
  ClientOptions,
  CommandResult,
  EomResult,
  FinalReply,
  MacroInput,
  NotSentReason,
} from "./types.ts";
import { encodeCommand } from "../wire/command_codec.ts";
import { ConnectionClosedError, MilterProtocolError } from "../wire/errors.ts";
import { decodeReply } from "../wire/reply_codec.ts";
import { encodeText } from "../wire/text.ts";
import type {
  Command,
  Duplex,
  Modification,
  MtaStyle,
  Negotiated,
  Reply,
  Stage,
} from "../wire/types.ts";
import { DEFAULT_MAX_FRAME_DATA, MILTER_CHUNK_SIZE, SMFIP } from "../wire/constants.ts";
import type { ConnectInfo } from "../mail/envelope.ts";

const CONTINUE: FinalReply = { type: "continue" };

/**
 * An MTA-side milter connection. Create it with {@link MilterClient.open} (which negotiates),
 * then call one method per SMTP event; each sends the stage's macros first, honours what was
 * negotiated (NO* events are not sent, NR_* replies are not read, events missing from the
 * negotiated version are dropped) and reads exactly one final reply. Everything illegal from the
 * filter raises a {@link MilterProtocolError} with reason `unexpected`; after any error the
 * client is unusable (like Postfix, which stops talking to a failed filter) and should be
 * closed.
 *
 * @example
 * ```ts
 * import { MilterClient } from "@milterkit/milterkit/mta";
 * import { serveConnection } from "@milterkit/milterkit";
 * import { duplexPair } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 * const [mta, filterSide] = duplexPair();
 * const served = serveConnection(filterSide, {
 *   actions: ["addHeader"],
 *   eom(ctx) { ctx.addHeader("X-Seen", "yes"); return "accept"; },
 * });
 * const client = await MilterClient.open(mta);
 * await client.connect({ hostname: "client.example", family: "inet", address: "192.0.2.1", port: 4711 });
 * await client.mail("<a@example.org>");
 * await client.rcpt("<b@example.com>");
 * await client.header("Subject", " hi");
 * await client.body("Hello\r\n");
 * const eom = await client.eom();
 * assert.equal(eom.verdict.type, "accept");
 * assert.deepEqual(eom.modifications, [{ type: "addheader", name: "X-Seen", value: "yes" }]);
 * await client.quit();
 * await served;
 * ```
 */
export class MilterClient {
  /** What is in force after negotiation. */
  readonly negotiated: Negotiated;
  /** The filter's OPTNEG reply as it came (what it asked for). */
  readonly requested: Extract<Reply, { type: "optneg" }>;
  /** The offer that was sent. */
  readonly offer: MtaOffer;
  /** Macro names the filter asked for per `D` stage letter (absent stage: all given). */
  readonly macroLists: ReadonlyMap<string, ReadonlySet<string>>;
  /** Accepted oddities of the filter's negotiation, for logs. */
  readonly warnings: readonly string[];
  /** Which MTA's rules apply where they differ. */
  readonly mta: MtaStyle;
  /** How `D` frames are sent. */
  readonly macroStyle: MtaStyle;

  readonly #ch: FrameChannel;
  readonly #opts: ClientOptions;
  readonly #commandMs: number;
  readonly #contentMs: number;
  readonly #eomMs: number;
  #failure: unknown;
  #bodySkipped = false;
  #lastReplied = "SMFIC_OPTNEG";

  private constructor(
    ch: FrameChannel,
    options: ClientOptions,
    offer: MtaOffer,
    outcome: ReturnType<typeof judgeOptnegReply>,
    mta: MtaStyle,
  ) {
    this.#ch = ch;
    this.#opts = options;
    this.offer = offer;
    this.negotiated = outcome.negotiated;
    this.requested = outcome.requested;
    this.macroLists = outcome.macroLists;
    this.warnings = outcome.warnings;
    this.mta = mta;
    this.macroStyle = options.macroStyle ?? mta;
    this.#commandMs = options.commandTimeoutMs ?? 30_000;
    this.#contentMs = options.contentTimeoutMs ?? 300_000;
    this.#eomMs = options.eomTimeoutMs ?? 300_000;
  }

  /**
   * Connects the protocol: sends OPTNEG and judges the filter's reply (milter-protocol.md §4.7):
   * the reply must be an OPTNEG, its version ≤ the offer (a lower one is honoured: no DATA
   * below 4, no UNKNOWN below 3), its actions ⊆ the offer, and protocol bits outside the offer
   * are refused unless they only remove events or replies (NO*, NR_*).
   *
   * @param conn The connection to the filter.
   * @param options Offer, MTA style, timeouts, observers.
   * @returns The ready client. On failure the connection is closed.
   * @throws {MilterNegotiationError} naming the offending version or flags.
   * @throws {MilterProtocolError} when the first reply is not an OPTNEG or does not decode.
   * @throws {MilterTimeoutError} when the filter does not answer within `commandTimeoutMs`.
   * @throws {ConnectionClosedError} when the filter hangs up.
   */
  static async open(conn: Duplex, options: ClientOptions = {}): Promise<MilterClient> {
    const preset = options.preset ?? "postfix";
    const base = MTA_OFFERS[preset] ?? MTA_OFFERS.postfix;
    const offer: MtaOffer = {
      version: options.version ?? base.version,
      actions: options.actions ?? base.actions,
      protocol: options.protocol ?? base.protocol,
    };
    const mta: MtaStyle = options.mta ?? (preset === "sendmail" ? "sendmail" : "postfix");
    const ch = new FrameChannel(conn, options.maxDataSize ?? DEFAULT_MAX_FRAME_DATA);
    const ms = options.commandTimeoutMs ?? 30_000;
    try {
      const cmd: Command = { type: "optneg", ...offer };
      await ch.write(encodeCommand(cmd), ms, "SMFIC_OPTNEG");
      options.onCommand?.(cmd);
      const reply = decodeReply(await ch.read({ timeoutMs: ms, what: "the OPTNEG reply" }));
      options.onReply?.(reply);
      const outcome = judgeOptnegReply(offer, reply, options.macroStyle ?? mta);
      return new MilterClient(ch, options, offer, outcome, mta);
    } catch (e) {
      await ch.close(0);
      throw e;
    }
  }

  /** Whether a protocol bit is in force. */
  has(bit: number): boolean {
    return (this.negotiated.protocol & bit) !== 0;
  }

  /** Whether {@link close} was called or the connection failed. */
  get closed(): boolean {
    return this.#ch.closed || this.#failure !== undefined;
  }

  /**
   * Sends CONNECT (after `D C`).
   *
   * @param info Client host name, family, address and port.
   * @param macros Connect-stage macros (`j`, `{daemon_name}`, `_`, …).
   * @returns The filter's answer.
   */
  async connect(info: ConnectInfo, macros?: MacroInput): Promise<CommandResult> {
    const cmd: Command = info.family === "unknown"
      ? { type: "connect", hostname: info.hostname, family: "unknown" }
      : {
        type: "connect",
        hostname: info.hostname,
        family: info.family,
        port: info.port ?? 0,
        address: info.address ?? "",
      };
    return await this.#event("connect", "C", macros, cmd, SMFIP.NOCONNECT, SMFIP.NR_CONN);
  }

  /**
   * Sends HELO (after `D H`).
   *
   * @param name The HELO/EHLO argument.
   * @param macros HELO-stage macros (TLS macros).
   * @returns The filter's answer.
   */
  async helo(name: string, macros?: MacroInput): Promise<CommandResult> {
    return await this.#event(
      "helo",
      "H",
      macros,
      { type: "helo", name },
      SMFIP.NOHELO,
      SMFIP.NR_HELO,
    );
  }

  /**
   * Sends MAIL (after `D M`) and starts a message.
   *
   * @param sender The sender as written in MAIL FROM, normally `<a@b>` (`<>` for bounces).
   * @param args ESMTP arguments, one per string (`SIZE=300`).
   * @param macros Envelope-from macros (`{mail_addr}`, …).
   * @returns The filter's answer.
   */
  async mail(
    sender: string,
    args: readonly string[] = [],
    macros?: MacroInput,
  ): Promise<CommandResult> {
    this.#bodySkipped = false;
    return await this.#event(
      "envfrom",
      "M",
      macros,
      { type: "mail", sender, args },
      SMFIP.NOMAIL,
      SMFIP.NR_MAIL,
    );
  }

  /**
   * Sends RCPT (after `D R`).
   *
   * @param recipient The recipient as written in RCPT TO (`<b@c>`).
   * @param args ESMTP arguments, one per string (`NOTIFY=NEVER`).
   * @param macros Envelope-recipient macros.
   * @returns The filter's answer (a reject concerns this recipient only).
   */
  async rcpt(
    recipient: string,
    args: readonly string[] = [],
    macros?: MacroInput,
  ): Promise<CommandResult> {
    return await this.#event(
      "envrcpt",
      "R",
      macros,
      { type: "rcpt", recipient, args },
      SMFIP.NORCPT,
      SMFIP.NR_RCPT,
    );
  }

  /**
   * Sends DATA (after `D T`); not sent at all (nor its macros) below protocol version 4.
   *
   * @param macros DATA-stage macros.
   * @returns The filter's answer.
   */
  async data(macros?: MacroInput): Promise<CommandResult> {
    if (this.negotiated.version < 4) return this.#notSent("version");
    return await this.#event("data", "T", macros, { type: "data" }, SMFIP.NODATA, SMFIP.NR_DATA);
  }

  /**
   * Sends one header (Postfix style: after `D L`). The caller gives the raw value, i.e. every
   * byte after the colon with folds joined by LF (no CR, no final newline); this method removes
   * exactly one leading space, as both MTAs do, unless SMFIP_HDR_LEADSPC was negotiated. With
   * NOHDRS nothing is sent, macros included (Postfix).
   *
   * @param name Field name without the colon.
   * @param rawValue The text after the colon, e.g. `" Hello"`.
   * @param macros Macros for the `D L` frame (Postfix sends the end-of-header list).
   * @returns The filter's answer.
   */
  async header(name: string, rawValue: string, macros?: MacroInput): Promise<CommandResult> {
    if (this.has(SMFIP.NOHDRS)) return this.#notSent("disabled");
    const value = !this.has(SMFIP.HDR_LEADSPC) && rawValue.startsWith(" ")
      ? rawValue.slice(1)
      : rawValue;
    return await this.#event(
      "header",
      "L",
      macros,
      { type: "header", name, value },
      0,
      SMFIP.NR_HDR,
    );
  }

  /**
   * Sends EOH (after `D N`); with NOEOH nothing is sent, macros included (Postfix).
   *
   * @param macros End-of-header macros.
   * @returns The filter's answer.
   */
  async eoh(macros?: MacroInput): Promise<CommandResult> {
    if (this.has(SMFIP.NOEOH)) return this.#notSent("disabled");
    return await this.#event("eoh", "N", macros, { type: "eoh" }, 0, SMFIP.NR_EOH);
  }

  /**
   * Sends body bytes as BODY frames of at most 65535 bytes (Postfix style: each after `D B`),
   * never an empty one. Stops at the first answer other than continue. After a SKIP answer no
   * more body is sent for this message. With NOBODY nothing is sent, macros included.
   *
   * @param chunk Body bytes with CRLF line ends, dot-unstuffed (a string is UTF-8 encoded).
   * @param macros Macros for each `D B` frame (Postfix sends the end-of-message list).
   * @returns The last answer and how many frames were sent.
   */
  async body(chunk: Uint8Array | string, macros?: MacroInput): Promise<BodyResult> {
    const bytes = typeof chunk === "string" ? encodeText(chunk) : chunk;
    if (this.has(SMFIP.NOBODY)) return { ...this.#notSent("disabled"), chunks: 0 };
    if (this.#bodySkipped) return { ...this.#notSent("skipped"), chunks: 0 };
    if (bytes.length === 0) return { ...this.#notSent("empty"), chunks: 0 };
    let progress = 0;
    let chunks = 0;
    let last: CommandResult = this.#notSent("empty");
    for (let p = 0; p < bytes.length; p += MILTER_CHUNK_SIZE) {
      const piece = bytes.subarray(p, Math.min(bytes.length, p + MILTER_CHUNK_SIZE));
      last = await this.#event(
        "body",
        "B",
        macros,
        { type: "body", chunk: piece },
        0,
        SMFIP.NR_BODY,
      );
      chunks++;
      progress += last.progress;
      if (last.verdict.type === "skip") this.#bodySkipped = true;
      if (last.verdict.type !== "continue") break;
    }
    return { ...last, progress, chunks };
  }

  /**
   * Sends end of message (after `D E`) and collects the modifications up to the final reply;
   * PROGRESS restarts the per-read timer but not the overall `eomTimeoutMs`.
   *
   * @param macros End-of-message macros.
   * @returns Final reply, modifications in order, progress count.
   * @throws {MilterProtocolError} (reason `unexpected`) for a modification whose action was not
   * negotiated, REPLBODY chunks interleaved with other responses (Postfix), or an illegal reply.
   * @throws {MilterTimeoutError} when a read or the whole EOM exceeds its limit.
   */
  async eom(macros?: MacroInput): Promise<EomResult> {
    const mods: Modification[] = [];
    await this.#readyToSend("SMFIC_BODYEOB");
    const bytes = this.#withMacros("E", macros, { type: "eom" });
    this.#bodySkipped = false;
    return await this.#guard(async () => {
      await this.#ch.write(bytes.bytes, this.#contentMs, "SMFIC_BODYEOB");
      for (const c of bytes.commands) this.#opts.onCommand?.(c);
      const r = await this.#readFinal("eom", this.#contentMs, mods, Date.now() + this.#eomMs);
      return { verdict: r.verdict, modifications: mods, progress: r.progress };
    });
  }

  /**
   * Sends UNKNOWN (after `D U` in Postfix style); not sent below protocol version 3.
   *
   * @param line The whole SMTP command line, without CRLF.
   * @param macros Macros for `D U` (Postfix: `milter_unknown_command_macros`, empty by default).
   * @returns The filter's answer (the MTA rejects the command whatever it is).
   */
  async unknown(line: string, macros?: MacroInput): Promise<CommandResult> {
    if (this.negotiated.version < 3) return this.#notSent("version");
    return await this.#event(
      "unknown",
      "U",
      macros,
      { type: "unknown", line },
      SMFIP.NOUNKNOWN,
      SMFIP.NR_UNKN,
    );
  }

  /** Sends ABORT: the filter forgets the current message (never answered). */
  async abort(): Promise<void> {
    this.#bodySkipped = false;
    await this.#send({ type: "abort" }, "SMFIC_ABORT");
  }

  /** Sends QUIT and closes the connection. Quietly only closes after an earlier failure. */
  async quit(): Promise<void> {
    if (this.#failure === undefined && !this.#ch.closed) {
      await this.#send({ type: "quit" }, "SMFIC_QUIT").catch(() => {});
    }
    await this.close();
  }

  /**
   * Sends QUIT_NC: the filter ends this SMTP session but keeps the connection; the next
   * command is a new CONNECT, without a new OPTNEG. Only for filters known to support it
   * (libmilter ignores it after an EOM answered with ACCEPT).
   */
  async quitNc(): Promise<void> {
    this.#bodySkipped = false;
    await this.#send({ type: "quit_nc" }, "SMFIC_QUIT_NC");
  }

  /** Releases the connection (the filter sees EOF). Never throws; safe to call twice. */
  async close(): Promise<void> {
    await this.#ch.close();
  }

  // ── internals ────────────────────────────────────────────────────────────────────────────

  #notSent(reason: NotSentReason): CommandResult {
    this.#ready("a command");
    return { outcome: "not-sent", reason, verdict: CONTINUE, progress: 0 };
  }

  #ready(what: string): void {
    if (this.#failure !== undefined) {
      throw new ConnectionClosedError(
        `Cannot send ${what}: the filter connection failed earlier (${
          (this.#failure as Error)?.message ?? String(this.#failure)
        })`,
        { cause: this.#failure },
      );
    }
    if (this.#ch.closed) {
      throw new ConnectionClosedError(`Cannot send ${what}: the client is closed`);
    }
  }

  /** {@link #ready}, plus a check that the filter did not send a stray response meanwhile. */
  async #readyToSend(what: string): Promise<void> {
    this.#ready(what);
    let stray: boolean;
    try {
      stray = await this.#ch.poll();
    } catch (e) {
      this.#fail(e);
      throw e;
    }
    if (stray) {
      const e = new MilterProtocolError(
        `Filter sent a response nobody asked for after the reply to ${this.#lastReplied}`,
        { reason: "unexpected" },
      );
      this.#fail(e);
      throw e;
    }
  }

  /**
   * A failure ends the conversation, as in Postfix: later commands are refused and the
   * connection is released at once, so the filter sees it end instead of waiting forever.
   */
  #fail(e: unknown): void {
    this.#failure ??= e;
    void this.#ch.close(0);
  }

  async #guard<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      this.#fail(e);
      throw e;
    }
  }

  async #send(cmd: Command, name: string): Promise<void> {
    await this.#readyToSend(name);
    await this.#guard(async () => {
      await this.#ch.write(encodeCommand(cmd), this.#commandMs, name);
      this.#opts.onCommand?.(cmd);
    });
  }

  #withMacros(
    letter: string,
    macros: MacroInput | undefined,
    cmd: Command | undefined,
  ): { bytes: Uint8Array; commands: Command[] } {
    const macro = macroCommand(letter, macros, this.macroLists, this.macroStyle);
    const commands = [...(macro ? [macro] : []), ...(cmd ? [cmd] : [])];
    return { bytes: concatBytes(commands.map(encodeCommand)), commands };
  }

  async #event(
    stage: Stage,
    letter: string,
    macros: MacroInput | undefined,
    cmd: Command,
    disableBit: number,
    noReplyBit: number,
  ): Promise<CommandResult> {
    const name = STAGE_COMMAND[stage];
    await this.#readyToSend(name);
    const content = stage === "header" || stage === "eoh" || stage === "body";
    const ms = content ? this.#contentMs : this.#commandMs;
    const disabled = disableBit !== 0 && this.has(disableBit);
    const out = this.#withMacros(letter, macros, disabled ? undefined : cmd);
    return await this.#guard(async () => {
      if (out.bytes.length > 0) {
        await this.#ch.write(out.bytes, ms, name);
        for (const c of out.commands) this.#opts.onCommand?.(c);
      }
      if (disabled) {
        return { outcome: "not-sent", reason: "disabled", verdict: CONTINUE, progress: 0 };
      }
      if (this.has(noReplyBit)) return { outcome: "no-reply", verdict: CONTINUE, progress: 0 };
      const r = await this.#readFinal(stage, ms, undefined, undefined);
      return { outcome: "replied", verdict: r.verdict, progress: r.progress };
    });
  }

  async #readFinal(
    stage: Stage,
    timeoutMs: number,
    mods: Modification[] | undefined,
    deadline: number | undefined,
  ): Promise<{ verdict: FinalReply; progress: number }> {
    const name = STAGE_COMMAND[stage];
    const judge = new ReplyJudge({
      stage,
      actions: this.negotiated.actions,
      protocol: this.negotiated.protocol,
      mta: this.mta,
    });
    let progress = 0;
    while (true) {
      const frame = await this.#ch.read({
        timeoutMs,
        limit: timeoutMs === this.#commandMs ? "commandTimeoutMs" : "contentTimeoutMs",
        what: `the reply to ${name}`,
        ...(deadline !== undefined ? { deadline, deadlineMs: this.#eomMs } : {}),
      });
      const reply = decodeReply(frame);
      this.#opts.onReply?.(reply);
      this.#lastReplied = name;
      const j = judge.judge(reply);
      if (j.kind === "final") return { verdict: j.verdict, progress };
      if (j.kind === "progress") progress++;
      else mods?.push(j.modification);
    }
  }
}
