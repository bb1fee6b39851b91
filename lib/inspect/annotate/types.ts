/**
 * The data the session annotator produces: annotated events, message and session summaries,
 * outcomes. Plain objects, so they print, compare and serialise.
 *
 * @module
 */

import type {
  Command,
  Direction,
  Frame,
  Modification,
  Reply,
  SymbolList,
} from "../../wire/types.ts";
import type { Issue } from "./check.ts";

/** A frame's decoded form, or why it could not be decoded. */
export type Decoded = Command | Reply | { readonly error: string };

/** One frame of the session with what the annotator learned about it. */
export interface AnnotatedEvent {
  /** Position in the session (0-based, both directions). */
  readonly seq: number;
  /** When the frame was complete (ms since the epoch), when known. */
  readonly time: number | undefined;
  /** Which way it went. */
  readonly direction: Direction;
  /** The raw frame. */
  readonly frame: Frame;
  /** The decoded command or reply, or `{ error }`. */
  readonly decoded: Decoded;
  /**
   * The stage of the command it is or answers (`envfrom`, `eom`, …), the command type for
   * commands that are no stage (`optneg`, `abort`, …), `none` for an unpaired reply.
   */
  readonly stage: string;
  /** For a reply: the `seq` of the command it answers. */
  readonly answers?: number;
  /** For a reply: milliseconds since that command. */
  readonly latencyMs?: number;
  /** For a reply: whether it is the final answer to the command. */
  readonly final?: boolean;
  /** Index of the message (MAIL..EOM/ABORT) the frame belongs to. */
  readonly message?: number;
}

/** How a message, recipient or connection was decided. */
export interface Outcome {
  /** The result; `aborted` (MTA sent ABORT/QUIT), `incomplete` (session ended first). */
  readonly kind:
    | "accept"
    | "reject"
    | "tempfail"
    | "discard"
    | "shutdown"
    | "aborted"
    | "incomplete";
  /** The stage it was decided at (`envfrom`, `envrcpt`, `eom`, …). */
  readonly stage: string;
  /** The reply that decided it (`continue`, `replycode`, …), absent for aborted/incomplete. */
  readonly reply?: Reply["type"];
  /** The SMTP text of a REPLYCODE. */
  readonly text?: string;
  /** The event that decided it. */
  readonly seq?: number;
}

/** Count, total and maximum of reply latencies for one stage. */
export interface LatencyStats {
  /** Number of replies measured. */
  count: number;
  /** Sum in milliseconds. */
  totalMs: number;
  /** Largest in milliseconds. */
  maxMs: number;
}

/** One recipient of a message and what the filter said to it. */
export interface RecipientSummary {
  /** The address as sent (normally `<a@b>`). */
  readonly address: string;
  /** ESMTP arguments. */
  readonly args: readonly string[];
  /** The filter's answer to this RCPT, when it sent one. */
  outcome?: Outcome;
}

/** One transaction (MAIL..EOM or ABORT) of a session. */
export interface MessageSummary {
  /** Position in the session (0-based). */
  readonly index: number;
  /** The `seq` of its first frame. */
  readonly firstSeq: number;
  /** Queue id from the `i` macro, when the MTA sent one. */
  queueId?: string;
  /** Envelope sender as sent, when MAIL was seen. */
  sender?: string;
  /** ESMTP arguments of MAIL. */
  senderArgs: readonly string[];
  /** Recipients in order. */
  readonly recipients: RecipientSummary[];
  /** Headers as the filter saw them. */
  readonly headers: { name: string; value: string }[];
  /** Body bytes sent to the filter. */
  bodySize: number;
  /** Number of BODY frames. */
  bodyChunks: number;
  /** Modifications the filter sent at end of message, in order. */
  readonly modifications: Modification[];
  /** How the message ended. */
  outcome: Outcome;
  /** Reply latency per stage. */
  readonly latency: Record<string, LatencyStats>;
  /** Time of its first frame. */
  startTime: number | undefined;
  /** Time of its last frame. */
  endTime: number | undefined;
}

/** Both OPTNEG words, as sent, and the effective result. */
export interface NegotiationSummary {
  /** What the MTA offered. */
  readonly mta?: { version: number; actions: number; protocol: number };
  /** What the filter answered. */
  filter?: { version: number; actions: number; protocol: number; symlists: readonly SymbolList[] };
}

/** Everything the annotator knows about a session once it has ended. */
export interface SessionSummary {
  /** The negotiation. */
  readonly negotiation: NegotiationSummary;
  /** The CONNECT command, when sent. */
  readonly connect?: Extract<Command, { type: "connect" }>;
  /** HELO names in order. */
  readonly helo: readonly string[];
  /** A decision at CONNECT/HELO that applies to the whole connection. */
  readonly outcome?: Outcome;
  /** The transactions. */
  readonly messages: readonly MessageSummary[];
  /** What the protocol checker found. */
  readonly issues: readonly Issue[];
  /** Frames per direction. */
  readonly frames: { readonly toFilter: number; readonly toMta: number };
  /** How the MTA ended it: QUIT, QUIT_NC, or the stream just ended. */
  readonly ended: "quit" | "quit_nc" | "eof";
  /** Time of the first frame. */
  readonly startTime: number | undefined;
  /** Time of the last frame. */
  readonly endTime: number | undefined;
}

/** Options of {@link SessionAnnotator}. */
export interface AnnotatorOptions {
  /** Keep every event in {@link SessionAnnotator.events} (default true; false saves memory). */
  readonly keepEvents?: boolean;
}
