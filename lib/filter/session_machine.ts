/**
 * The filter session as a state machine without I/O: bytes in, replies out. It decodes frames,
 * tracks the connection and message state leniently (Postfix's extra ABORTs, macros for
 * switched-off events, repeated HELO, QUIT_NC reuse), calls the handlers, validates what they
 * return and encodes the answers into an output buffer. A handler that answers synchronously is
 * run inline: a whole chunk of commands is served without a promise, a timer or a listener. When
 * a handler returns a promise, {@link SessionMachine.run} returns a `wait` step and the driver
 * (`session.ts`: sockets, timers) hands the outcome back with `settle` or `fail`.
 *
 * @module
 */

import { FilterHandlerError, MilterProtocolError, thrownMessage } from "../wire/errors.ts";
import { encodeReply } from "../wire/reply_codec.ts";
import type { Command } from "../wire/types.ts";
import { SMFIP } from "../wire/constants.ts";
import { parseAddress, parseEsmtpArgs } from "../mail/esmtp.ts";
import type { EnvelopeAddress } from "../mail/envelope.ts";
import type { Filter } from "./filter.ts";
import { negotiateFilter, requirementsOf } from "./negotiate.ts";
import type { MachineOptions } from "./session_types.ts";
import { NO_FRAMES } from "./session_core.ts";
import { MessageMachine } from "./session_message.ts";

export type { Fallback, MachineOptions, SessionEvent, Step, WaitStep } from "./session_types.ts";

/**
 * One MTA connection's filter session, fed with bytes by a driver.
 *
 * @example
 * ```ts ignore
 * const m = new SessionMachine(filter, { signal, flush });
 * m.push(bytes);
 * for (let step = m.run(); step.kind !== "input"; step = m.run()) {
 *   if (step.kind === "wait") m.settle(await step.promise);
 * }
 * const replies = m.takeOutput();
 * ```
 */
export class SessionMachine<C, M> extends MessageMachine<C, M> {
  protected readonly requirements: ReturnType<typeof requirementsOf>;
  protected optnegReply: Uint8Array | undefined;

  constructor(filter: Filter<C, M>, opts: MachineOptions) {
    super(filter, opts);
    let req = REQUIREMENTS.get(filter);
    if (req === undefined) REQUIREMENTS.set(filter, req = requirementsOf(filter));
    this.requirements = req;
  }

  /**
   * Ends the session on the filter side (after QUIT, EOF, an error or a signal): abort handler
   * for an open message, then close handler. `run` returns `closed` when done.
   */
  close(): void {
    this.frames = NO_FRAMES;
    this.quit = false;
    this.eomOut = undefined;
    if (this.cont !== undefined) {
      // A handler is still pending: it is abandoned (its wait failed already, or never will).
      this.cont = undefined;
    }
    this.endConnection(() => (this.closed = true));
  }

  protected command(cmd: Command): void {
    const st = this.state;
    if (cmd.type === "optneg") return this.negotiate(cmd);
    if (cmd.type === "macro") return st.macros.set(cmd.stage, cmd.macros);
    if (this.negotiatedAs === undefined) {
      throw new MilterProtocolError(
        `Expected SMFIC_OPTNEG first, got ${cmd.type.toUpperCase()}`,
        { reason: "unexpected" },
      );
    }
    const f = this.filter;
    const ctx = this.ctx;
    switch (cmd.type) {
      case "connect":
        return this.abortMessage(() => {
          st.macros.enter("C");
          const { type: _t, rawAddress: _r, ...info } = cmd;
          st.client = info;
          this.event("connect", () => f.connect?.(info, ctx));
        });
      case "helo":
        return this.abortMessage(() => {
          st.macros.enter("H");
          st.helo = cmd.name;
          this.event("helo", () => f.helo?.(cmd.name, ctx));
        });
      case "mail":
        return this.abortMessage(() => {
          st.macros.enter("M");
          const sender = envelope(cmd.sender, cmd.args);
          this.startMessage(sender);
          this.event("envfrom", () => f.envfrom?.(sender, ctx));
        });
      case "rcpt": {
        st.macros.enter("R");
        this.ensureMessage();
        const rcpt = envelope(cmd.recipient, cmd.args);
        this.evRcpt = rcpt;
        return this.event("envrcpt", () => f.envrcpt?.(rcpt, ctx));
      }
      case "data":
        st.macros.enter("T");
        this.ensureMessage();
        return this.event("data", () => f.data?.(ctx));
      case "header": {
        st.macros.enter("L");
        this.ensureMessage();
        const h = { name: cmd.name, value: cmd.value };
        st.headers.push(h);
        return this.event("header", () => f.header?.(h, ctx));
      }
      case "eoh":
        st.macros.enter("N");
        this.ensureMessage();
        return this.event("eoh", () => f.eoh?.(ctx));
      case "body":
        st.macros.enter("B");
        this.ensureMessage();
        return this.body(cmd.chunk);
      case "eom":
        st.macros.enter("E");
        this.ensureMessage();
        if (cmd.chunk && cmd.chunk.length > 0) this.collect(cmd.chunk);
        return this.eom();
      case "unknown":
        st.macros.enter("U");
        return this.event("unknown", () => f.unknown?.(cmd.line, ctx));
      case "abort":
        return this.abortMessage(NOTHING);
      case "quit":
        this.quit = true;
        return;
      case "quit_nc":
        return this.endConnection(() => {
          st.resetConnection();
          this.flow.connectionDecided = false;
        });
      case "raw":
        return this.emit({
          type: "error",
          error: new MilterProtocolError(
            `Ignored unknown command byte 0x${cmd.code.toString(16)} (${cmd.payload.length} bytes)`,
            { reason: "unexpected", code: cmd.code },
          ),
        });
    }
  }

  protected negotiate(cmd: Command & { type: "optneg" }): void {
    if (this.optnegReply !== undefined) {
      // A repeated OPTNEG (after QUIT_NC, or a confused MTA): answer the same again.
      return this.write(this.optnegReply);
    }
    // A failed negotiation throws: libmilter closes the connection and so do we; the MTA then
    // applies its own failure policy (Postfix: milter_default_action).
    const { reply, negotiated } = negotiateFilter(cmd, this.requirements);
    this.negotiatedAs = negotiated;
    this.state.negotiated = negotiated;
    this.skipNegotiated = (negotiated.protocol & SMFIP.SKIP) !== 0;
    this.optnegReply = encodeReply(reply);
    this.write(this.optnegReply);
    this.emit({ type: "negotiated", negotiated });
  }

  /** Ends an open message: abort handler (only inside a message), then reset; then `then`. */
  protected abortMessage(then: () => void): void {
    const f = this.filter;
    if (this.flow.inMessage) {
      const record = this.record("abort", this.messageStage, undefined, []);
      this.emit({ type: "message-aborted", record });
    }
    if (!this.flow.inMessage || !f.abort) {
      this.resetMessage();
      return then();
    }
    this.call("eom", () => f.abort!(this.ctx), (_v, e, failed) => {
      if (failed) this.handlerFailed("abort", e);
      this.resetMessage();
      then();
    });
  }

  /** Ends the SMTP session on the filter side: abort an open message, then close handler. */
  protected endConnection(then: () => void): void {
    if (this.negotiatedAs === undefined) return then();
    this.abortMessage(() => {
      const f = this.filter;
      if (!f.close) return then();
      this.call("eom", () => f.close!(this.ctx), (_v, e, failed) => {
        if (failed) this.handlerFailed("close", e);
        then();
      });
    });
  }

  protected handlerFailed(name: "abort" | "close", e: unknown): void {
    this.emit({
      type: "error",
      error: new FilterHandlerError(
        `The ${name} handler failed: ${thrownMessage(e)}`,
        name,
        { cause: e },
      ),
    });
  }
}

/** What each filter needs from negotiation, worked out once per filter object. */
const REQUIREMENTS = new WeakMap<object, ReturnType<typeof requirementsOf>>();
const NOTHING = (): void => {};

function envelope(raw: string, args: readonly string[]): EnvelopeAddress {
  return { address: parseAddress(raw).address, raw, args, params: parseEsmtpArgs(args) };
}
