/**
 * milterkit for filter authors: write a milter filter with {@link defineFilter} and serve it to
 * Postfix or Sendmail with {@link listen}.
 *
 * Other audiences have their own entry points: `@milterkit/milterkit/mta` drives a filter as an
 * MTA would, `/wire` is the protocol codec, `/inspect` reads and shows traffic (proxy,
 * recordings, captures, replay), `/testing` helps test filters, and `/deno`, `/bun`, `/node` are
 * the raw socket adapters.
 *
 * @example
 * ```ts
 * import { defineFilter, listen } from "@milterkit/milterkit";
 * const server = await listen("inet:0@127.0.0.1", defineFilter({
 *   envrcpt: (rcpt) => rcpt.address.endsWith("@old.example") ? "reject" : "continue",
 * }));
 * await server.stop();
 * ```
 *
 * @module
 */

// writing a filter
export {
  type ActionName,
  type Answer,
  type BodyLimitAction,
  type BodyVerdict,
  type BufferedBody,
  type BufferedEomContext,
  type ConnectionVerdict,
  type Context,
  type DefaultState,
  defineFilter,
  type EomContext,
  type EventName,
  type Filter,
  type FilterOptions,
  type HandlerResult,
  type MacroStage,
  type MessageVerdict,
  type StateFactories,
  type UnbufferedBody,
} from "./lib/filter/filter.ts";
export type { ReplyVerdict, Stage, Verdict } from "./lib/filter/verdict.ts";
export type { ConnectInfo, EnvelopeAddress, EsmtpParam, HeaderField } from "./lib/mail/envelope.ts";
export type { Duplex } from "./lib/wire/types.ts";
export { decodeText, encodeText } from "./lib/wire/text.ts";

// serving it
export {
  listen,
  type MilterServer,
  serveListener,
  type ServerOptions,
} from "./lib/server/server.ts";
export {
  type Fallback,
  serveConnection,
  type ServedSession,
  type SessionEvent,
  type SessionOptions,
} from "./lib/filter/session.ts";
export {
  type SocketAddress,
  SocketSpecError,
  type SocketSpecProblem,
} from "./lib/server/socket_spec.ts";
export {
  createLogger,
  type LogFields,
  type Logger,
  type LoggerOptions,
  silentLogger,
} from "./lib/server/log.ts";
export type { FilterLog, FilterLogSink, LogLevel, ServedMessage } from "./lib/filter/log.ts";
export { type Histogram, Metrics, type MetricsData } from "./lib/server/metrics.ts";
export { loggingFilter } from "./lib/server/logging_filter.ts";

// errors
export {
  ConnectionClosedError,
  FilterHandlerError,
  MilterError,
  MilterNegotiationError,
  MilterProtocolError,
  MilterTimeoutError,
} from "./lib/wire/errors.ts";
