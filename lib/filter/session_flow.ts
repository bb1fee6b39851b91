/**
 * Where a session stands in the current message and connection: one state instead of a handful
 * of flags. Pure bookkeeping, used by the session machine.
 *
 * @module
 */

import type { Reply } from "../wire/types.ts";
import type { Stage } from "./verdict.ts";

/**
 * The message state:
 * - `idle`: no message open (before MAIL, after end of message or ABORT);
 * - `open`: a message is open and its events go to the handlers;
 * - `skipping`: open, and the filter answered SKIP: later body chunks bypass the handler;
 * - `decided`: we gave the message its final answer; later events are answered continue.
 */
export type MessageState = "idle" | "open" | "skipping" | "decided";

/** Replies that end the current message (at any stage but RCPT). */
const FINAL_FOR_MESSAGE: ReadonlySet<string> = new Set([
  "accept",
  "reject",
  "tempfail",
  "discard",
  "replycode",
]);

/** The message and connection state of one session, with its transitions. */
export class MessageFlow {
  /** The message state. */
  state: MessageState = "idle";
  /** The connection was accepted or rejected at CONNECT or HELO: later events bypass handlers. */
  connectionDecided = false;
  /** A failure at a no-reply event (or a body limit), to answer at the next replied command. */
  pending: Reply | undefined;

  /** A message is open (MAIL seen, no final answer or abort yet). */
  get inMessage(): boolean {
    return this.state === "open" || this.state === "skipping";
  }

  /** The open message was decided by us. */
  get decided(): boolean {
    return this.state === "decided";
  }

  /** MAIL (or the first command of a message under SMFIP_NOMAIL). */
  start(): void {
    this.state = "open";
    this.pending = undefined;
  }

  /** End of message or ABORT. */
  reset(): void {
    this.state = "idle";
    this.pending = undefined;
  }

  /** Whether an event is answered continue without calling its handler. */
  bypass(stage: Stage, messageStage: boolean): boolean {
    const s = this.state;
    return this.connectionDecided || (messageStage && s === "decided") ||
      (stage === "body" && s === "skipping");
  }

  /**
   * Applies a reply that was sent.
   *
   * @returns True when it ended the open message (report the message's verdict).
   */
  afterReply(stage: Stage, reply: Reply): boolean {
    if (stage === "connect" || stage === "helo") {
      if (reply.type !== "continue") this.connectionDecided = true;
      return false;
    }
    if (stage === "body" && reply.type === "skip") {
      if (this.inMessage) this.state = "skipping";
      return false;
    }
    if (stage === "envrcpt" && reply.type !== "accept") return false;
    if (stage === "unknown") return false;
    if (FINAL_FOR_MESSAGE.has(reply.type) && this.inMessage) {
      this.state = "decided";
      return true;
    }
    return false;
  }
}
