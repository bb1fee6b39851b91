/**
 * Types of the session engine shared by the state machine and its driver.
 *
 * @module
 */

import type { Negotiated, Reply } from "../wire/types.ts";
import type { ReplyVerdict, Stage } from "./verdict.ts";
import type { FilterLogSink, ServedMessage } from "./log.ts";

/** What the MTA is told when a handler fails: a verdict, or a custom reply. */
export type Fallback = "tempfail" | "reject" | "accept" | "continue" | ReplyVerdict;

/**
 * Something that happened in a session, for logs and metrics.
 *
 * @example
 * ```ts
 * import type { SessionEvent } from "@milterkit/milterkit";
 * const log = (e: SessionEvent) => { if (e.type === "error") console.error(e.error.message); };
 * ```
 */
export type SessionEvent =
  | { readonly type: "negotiated"; readonly negotiated: Negotiated }
  | {
    readonly type: "reply";
    readonly stage: Stage;
    readonly reply: Reply;
    readonly latencyMs: number;
  }
  | { readonly type: "error"; readonly error: Error; readonly stage?: Stage }
  | {
    readonly type: "message";
    readonly verdict: Reply["type"];
    readonly number: number;
    /** Who, what, at which stage, the changes in brief and the time taken. */
    readonly record: ServedMessage;
  }
  /** The MTA aborted a message before any verdict (RSET, no valid recipient, QUIT). */
  | { readonly type: "message-aborted"; readonly record: ServedMessage }
  | { readonly type: "progress"; readonly stage: Stage };

/** Options of the machine (the I/O-free part of the session options). */
export interface MachineOptions {
  readonly fallback?: Fallback;
  readonly maxDataSize?: number;
  readonly handlerTimeoutMs?: number;
  readonly eomTimeoutMs?: number;
  readonly onEvent?: (event: SessionEvent) => void;
  /** Where `ctx.log` writes (default: nowhere). */
  readonly filterLog?: FilterLogSink;
  /** The signal handlers see as `ctx.signal`, or a function making it when first asked for. */
  readonly signal: AbortSignal | (() => AbortSignal);
  /** Writes the output now (used by `ctx.progress()` while the eom handler runs). */
  readonly flush: () => Promise<void>;
  /** Commands served before `run` returns a `yield` step (default 256). */
  readonly budget?: number;
  /** Output bytes buffered before `run` returns a `flush` step (default 64 KiB). */
  readonly outputLimit?: number;
}

/** A handler's promise the driver must await (under its time limit) and hand back. */
export interface WaitStep {
  readonly kind: "wait";
  /** The promise. */
  promise: PromiseLike<unknown>;
  /** The stage it belongs to (for error messages). */
  stage: Stage;
  /** Time limit in ms (0: none), and the option that set it. */
  limitMs: number;
  limitName: string;
  /** Send PROGRESS while waiting (the eom handler). */
  keepAlive: boolean;
}

/** What the driver must do next. */
export type Step =
  | { readonly kind: "input" | "yield" | "flush" | "quit" | "closed" }
  | WaitStep;
