/**
 * Typed errors. Domain errors extend {@link MilterError}; misuse by the caller (an unencodable
 * argument) throws the built-in `TypeError`/`RangeError`.
 *
 * @module
 */

/**
 * Base class of every error this toolkit raises about milter traffic.
 *
 * @example
 * ```ts
 * import { MilterError, MilterProtocolError } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * assert.ok(new MilterProtocolError("bad", { reason: "malformed" }) instanceof MilterError);
 * ```
 */
export class MilterError extends Error {
  /**
   * Creates the error.
   *
   * @param message What went wrong, sentence case, no trailing period.
   * @param options Standard `ErrorOptions` (`cause`).
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MilterError";
  }
}

/**
 * Why a peer's bytes were refused:
 * - `oversized`: frame length over the configured limit
 * - `empty`: a frame length of 0
 * - `not-milter`: the length bytes are really text or another protocol (HTTP, TLS, SMTP)
 * - `truncated`: the stream ended inside a frame
 * - `malformed`: a payload that does not decode (missing NUL, short fixed field, bad family …)
 * - `unexpected`: a command or response not allowed at this point of the session
 */
export type ProtocolErrorReason =
  | "oversized"
  | "empty"
  | "not-milter"
  | "truncated"
  | "malformed"
  | "unexpected";

/** Details attached to a {@link MilterProtocolError}. */
export interface ProtocolErrorDetails extends ErrorOptions {
  /** Why the bytes were refused. */
  readonly reason: ProtocolErrorReason;
  /** Command/response byte, when known. */
  readonly code?: number;
  /** Byte offset within the payload (or stream) where decoding failed. */
  readonly offset?: number;
}

/**
 * The peer sent something this side cannot accept: bad framing, a payload that does not decode,
 * or a command out of sequence.
 *
 * @example
 * ```ts
 * import { MilterProtocolError } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const e = new MilterProtocolError("Frame of 0 bytes", { reason: "empty" });
 * assert.equal(e.reason, "empty");
 * ```
 */
export class MilterProtocolError extends MilterError {
  /** Why the bytes were refused. */
  readonly reason: ProtocolErrorReason;
  /** Command/response byte, when known. */
  readonly code: number | undefined;
  /** Byte offset where decoding failed, when known. */
  readonly offset: number | undefined;

  /**
   * Creates the error.
   *
   * @param message What was wrong, naming the limit or the field.
   * @param details Reason, code, offset and cause.
   */
  constructor(message: string, details: ProtocolErrorDetails) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "MilterProtocolError";
    this.reason = details.reason;
    this.code = details.code;
    this.offset = details.offset;
  }
}

/**
 * Negotiation failed: the peer's version is too old, or it lacks actions or protocol
 * features the other side requires. `missing` names them.
 *
 * @example
 * ```ts
 * import { MilterNegotiationError } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const e = new MilterNegotiationError("MTA does not offer CHGBODY", ["CHGBODY"]);
 * assert.deepEqual(e.missing, ["CHGBODY"]);
 * ```
 */
export class MilterNegotiationError extends MilterError {
  /** Names of the missing flags (e.g. `["CHGBODY", "QUARANTINE"]`), or the version. */
  readonly missing: readonly string[];

  /**
   * Creates the error.
   *
   * @param message What is missing.
   * @param missing Names of the missing flags.
   * @param options Standard `ErrorOptions`.
   */
  constructor(message: string, missing: readonly string[] = [], options?: ErrorOptions) {
    super(message, options);
    this.name = "MilterNegotiationError";
    this.missing = missing;
  }
}

/**
 * A peer or a handler did not answer within its time limit.
 *
 * @example
 * ```ts
 * import { MilterTimeoutError } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * assert.equal(new MilterTimeoutError("No reply in 30000 ms", 30000).timeoutMs, 30000);
 * ```
 */
export class MilterTimeoutError extends MilterError {
  /** The limit that was exceeded, in milliseconds. */
  readonly timeoutMs: number;

  /**
   * Creates the error.
   *
   * @param message What timed out.
   * @param timeoutMs The limit in milliseconds.
   * @param options Standard `ErrorOptions`.
   */
  constructor(message: string, timeoutMs: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "MilterTimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/**
 * The connection ended (EOF, reset, or a write after close) while the session needed it.
 *
 * @example
 * ```ts
 * import { ConnectionClosedError } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * assert.equal(new ConnectionClosedError("Peer closed").name, "ConnectionClosedError");
 * ```
 */
export class ConnectionClosedError extends MilterError {
  /**
   * Creates the error.
   *
   * @param message What was going on when the connection ended.
   * @param options Standard `ErrorOptions`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectionClosedError";
  }
}

/**
 * A filter handler misbehaved: it threw, returned a verdict that is illegal at this stage or
 * not granted by negotiation, or asked for a modification outside end of message. The engine
 * answers the MTA with the configured fallback instead of sending anything illegal.
 *
 * @example
 * ```ts
 * import { FilterHandlerError } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const e = new FilterHandlerError("discard is not allowed at connect", "connect");
 * assert.equal(e.stage, "connect");
 * ```
 */
export class FilterHandlerError extends MilterError {
  /** The handler (stage) that misbehaved. */
  readonly stage: string;

  /**
   * Creates the error.
   *
   * @param message What the handler did wrong.
   * @param stage The handler name (`connect`, `eom`, …).
   * @param options Standard `ErrorOptions` (`cause`: what the handler threw).
   */
  constructor(message: string, stage: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "FilterHandlerError";
    this.stage = stage;
  }
}

/**
 * The text of whatever was thrown: an Error's message, a string as it is, anything else described
 * without trusting its own conversions, so that a null-prototype object or a `toString` that
 * throws cannot turn one failure into another (a session cut instead of the fallback answer).
 *
 * @param value What was thrown or rejected.
 * @returns One line of text (objects as JSON, at most 200 characters).
 *
 * @example
 * ```ts
 * import { thrownMessage } from "./errors.ts";
 * import assert from "node:assert/strict";
 * assert.equal(thrownMessage(new Error("boom")), "boom");
 * assert.equal(thrownMessage(Object.assign(Object.create(null), { code: 7 })), '{"code":7}');
 * assert.equal(thrownMessage(Object.create(null)), "{}");
 * assert.equal(thrownMessage(42), "42");
 * ```
 */
export function thrownMessage(value: unknown): string {
  try {
    if (value instanceof Error) return String(value.message);
    if (typeof value === "string") return value;
    if (typeof value === "object" && value !== null) {
      const message = (value as { message?: unknown }).message;
      if (typeof message === "string") return message;
      const json = JSON.stringify(value);
      if (json !== undefined) return json.length > 200 ? `${json.slice(0, 200)}…` : json;
    }
    return String(value);
  } catch {
    return `a value that cannot be shown (${typeof value})`;
  }
}

/**
 * Whatever was thrown, as an Error: an Error as it is, anything else wrapped with its text from
 * {@link thrownMessage} (never with `String(value)`, which throws for a null-prototype object).
 *
 * @param value What was thrown or rejected.
 * @returns An Error.
 *
 * @example
 * ```ts
 * import { asError } from "./errors.ts";
 * import assert from "node:assert/strict";
 * const e = new TypeError("x");
 * assert.equal(asError(e), e);
 * assert.equal(asError(Object.create(null)).message, "{}");
 * ```
 */
export function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(thrownMessage(value));
}
