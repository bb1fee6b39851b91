/**
 * A long-running milter server: accepts MTA connections on a listener and serves each with the
 * filter engine, with a connection limit, timeouts, graceful stop, logging and counters.
 * Sessions are isolated: one failing or slow session never affects another.
 *
 * @module
 */

import type { SocketAddress } from "./socket_spec.ts";
import { formatSocketSpec } from "./socket_spec.ts";
import type {
  AdapterName,
  Connection,
  Listener,
  ListenOptions,
  NetworkAdapter,
} from "./adapters/types.ts";
import {
  ConnectionClosedError,
  FilterHandlerError,
  MilterNegotiationError,
  MilterProtocolError,
  MilterTimeoutError,
} from "../wire/errors.ts";
import type { Filter } from "../filter/filter.ts";
import {
  type Fallback,
  serveConnection,
  type ServedSession,
  type SessionEvent,
  type SessionOptions,
} from "../filter/session.ts";
import { errorFrame, errorStack, type Logger, silentLogger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import { filterLogSink, messageLogFields } from "./message_log.ts";
import { attributable, runAsSession } from "./uncaught.ts";
import { LoopWatch } from "./loop_watch.ts";
import { adapterFor, listen as listenSocket } from "./net.ts";

/** Options of {@link listen} and {@link serveListener}. */
export interface ServerOptions extends ListenOptions {
  /** Socket adapter: `"deno"`, `"bun"`, `"node"` or an adapter object (default: the runtime's). */
  readonly adapter?: AdapterName | NetworkAdapter;
  /** Answer when a handler throws, times out or returns something illegal. Default tempfail. */
  readonly fallback?: Fallback;
  /** Largest frame data accepted (default 1 MiB). */
  readonly maxDataSize?: number;
  /** Most connections served at once (default 1000); more are closed at once and logged. */
  readonly maxConnections?: number;
  /** Time a handler may take, except eom (default 25 s, under Postfix's 30 s command timeout). */
  readonly handlerTimeoutMs?: number;
  /** Time the eom handler may take (default 240 s, under Postfix's 300 s content timeout). */
  readonly eomTimeoutMs?: number;
  /** PROGRESS interval while the eom handler runs (default 10 s; 0 disables). */
  readonly progressIntervalMs?: number;
  /** Close a connection idle this long (default 7210 s, libmilter's default). */
  readonly idleTimeoutMs?: number;
  /**
   * Close a connection whose MTA has not taken our output for this long while more waits to be
   * written (default 60 s). Output waiting for a slow MTA is bounded by the socket's buffers.
   */
  readonly writeTimeoutMs?: number;
  /** Time open sessions get to finish on a graceful stop (default 30 s). */
  readonly shutdownGraceMs?: number;
  /** Where to log (default: nowhere). */
  readonly logger?: Logger;
  /** Counters to update (default: a new {@link Metrics}). */
  readonly metrics?: Metrics;
  /**
   * Log a warning (naming the stage and {@link ServerOptions.label}) and count it in the metrics
   * when the event loop is blocked this long, in ms (default 1000; 0: no watch). A CPU-bound
   * handler holds every session of the process and no timeout fires meanwhile.
   */
  readonly blockWarnMs?: number;
  /** What is served (serve passes the script path), named in block warnings as `script`. */
  readonly label?: string;
  /** Also receives every session event, with the session id. */
  readonly onEvent?: (session: number, event: SessionEvent) => void;
  /**
   * Runs each session in its own async context, so that an error nobody caught in a handler's
   * code can fail the handler that session is running (`failSessionOf`, called from the
   * process's error events) and the MTA gets the fallback at once. Costs throughput
   * (AsyncLocalStorage); default false: such errors wait for the handler's timeout.
   */
  readonly traceUncaught?: boolean;
}

/**
 * A running milter server.
 *
 * @example
 * ```ts
 * import { defineFilter, listen } from "@milterkit/milterkit";
 * const server = await listen("inet:0@127.0.0.1", defineFilter({ eom: () => "accept" }));
 * await server.stop();
 * ```
 */
export interface MilterServer {
  /** The address listened on (with the real port when 0 was asked). */
  readonly address: SocketAddress;
  /** Counters. */
  readonly metrics: Metrics;
  /** Connections open now. */
  readonly connections: number;
  /** Resolves when the server has stopped and every session ended. */
  readonly finished: Promise<void>;
  /**
   * Replaces the filter for new connections (sessions in flight keep theirs). The new filter
   * may have other state types than the old one.
   */
  setFilter<C, M>(filter: Filter<C, M>): void;
  /**
   * Stops: no new connections; open sessions get `graceMs` (default `shutdownGraceMs`) to
   * finish; then running handlers are answered with the fallback and connections closed.
   */
  stop(options?: { graceMs?: number }): Promise<void>;
}

/**
 * Listens on a socket spec as Postfix and Sendmail write them (`inet:8890@127.0.0.1`,
 * `inet:127.0.0.1:8890`, `inet6:8890@::1`, `unix:/run/milter.sock`) with the adapter of the
 * running runtime, and serves `filter` on every connection.
 *
 * @param spec Socket spec or address. A host-less `inet:PORT` binds loopback.
 * @param filter The filter.
 * @param options Limits, timeouts, logging.
 * @returns The running server.
 *
 * @example
 * ```ts
 * import { defineFilter, listen } from "@milterkit/milterkit";
 * const server = await listen("inet:0@127.0.0.1", defineFilter({
 *   actions: ["addHeader"],
 *   eom: (ctx) => ctx.addHeader("X-Seen-By", "milterkit"),
 * }));
 * await server.stop({ graceMs: 0 });
 * ```
 */
export async function listen<C, M>(
  spec: string | SocketAddress,
  filter: Filter<C, M>,
  options: ServerOptions = {},
): Promise<MilterServer> {
  const adapter = typeof options.adapter === "string"
    ? await adapterFor(options.adapter)
    : options.adapter;
  const { adapter: _named, ...rest } = options;
  const listener = await listenSocket(spec, adapter ? { ...rest, adapter } : rest);
  return serveListener(listener, filter, options);
}

/** Serves connections with `filter`; with `trace`, each handler call tied to its session. */
function servingWith<C, M>(
  filter: Filter<C, M>,
  trace: boolean,
): (conn: Connection, o: SessionOptions) => Promise<ServedSession> {
  const f = trace ? attributable(filter) : filter;
  return (conn, o) => serveConnection(conn, f, o);
}

const runPlain = <T>(_id: number, fn: () => T): T => fn();

function errorKind(e: Error): string {
  if (e instanceof FilterHandlerError) return "handler";
  if (e instanceof MilterNegotiationError) return "negotiation";
  if (e instanceof MilterTimeoutError) return "timeout";
  if (e instanceof MilterProtocolError) return "protocol";
  if (e instanceof ConnectionClosedError) return "connection";
  return "other";
}

/**
 * Serves a filter on an existing {@link Listener} (from any adapter).
 *
 * @param listener Where connections come from.
 * @param filter The filter.
 * @param options Limits, timeouts, logging.
 * @returns The running server.
 *
 * @example
 * ```ts
 * import { defineFilter, serveListener } from "@milterkit/milterkit";
 * import { listen } from "@milterkit/milterkit/node";
 * const server = serveListener(await listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 }),
 *   defineFilter({}));
 * await server.stop();
 * ```
 */
export function serveListener<C, M>(
  listener: Listener,
  filter: Filter<C, M>,
  options: ServerOptions = {},
): MilterServer {
  const log = options.logger ?? silentLogger;
  const metrics = options.metrics ?? new Metrics();
  const max = options.maxConnections ?? 1000;
  const open = new Map<number, { conn: Connection; stop: AbortController; done: Promise<void> }>();
  // The filter in force, bound to its own state types: a session serves what was current when
  // it started.
  const trace = options.traceUncaught ?? false;
  let serve = servingWith(filter, trace);
  let nextId = 1;
  let stopping: Promise<void> | undefined;
  const address = listener.address;
  const where = formatSocketSpec(address);
  const blockWarnMs = options.blockWarnMs ?? 1000;
  const watch = blockWarnMs > 0
    ? new LoopWatch({
      warnMs: blockWarnMs,
      metrics,
      logger: log,
      fields: options.label === undefined ? {} : { script: options.label },
      sessions: () => open.size,
    })
    : undefined;

  const session = (conn: Connection, id: number): Promise<void> => {
    const stop = new AbortController();
    const started = Date.now();
    const peer = conn.remote ? formatSocketSpec(conn.remote) : undefined;
    if (log.enabled("debug")) log.debug("connection", { session: id, peer });
    const done = (trace ? runAsSession : runPlain)(id, () =>
      serve(conn, {
        fallback: options.fallback ?? "tempfail",
        handlerTimeoutMs: options.handlerTimeoutMs ?? 25_000,
        eomTimeoutMs: options.eomTimeoutMs ?? 240_000,
        progressIntervalMs: options.progressIntervalMs ?? 10_000,
        idleTimeoutMs: options.idleTimeoutMs ?? 7_210_000,
        writeTimeoutMs: options.writeTimeoutMs ?? 60_000,
        signal: stop.signal,
        filterLog: filterLogSink(log, id),
        ...(options.maxDataSize === undefined ? {} : { maxDataSize: options.maxDataSize }),
        onEvent: (e) => {
          switch (e.type) {
            case "reply":
              metrics.verdict(e.reply.type);
              metrics.latency(e.stage, e.latencyMs / 1000);
              watch?.reply(id, e.stage, e.latencyMs);
              break;
            case "message":
              metrics.messages++;
              if (log.enabled("info")) log.info("message", messageLogFields(id, e.record));
              break;
            case "message-aborted":
              if (log.enabled("debug")) log.debug("message", messageLogFields(id, e.record));
              break;
            case "error":
              metrics.error(errorKind(e.error));
              log.warn("session error", {
                session: id,
                peer,
                stage: e.stage,
                error: e.error.message,
                kind: errorKind(e.error),
                at: errorFrame(e.error),
                stack: log.enabled("debug") ? errorStack(e.error) : undefined,
              });
              break;
            case "negotiated":
              log.debug("negotiated", {
                session: id,
                version: e.negotiated.version,
                actions: e.negotiated.actions,
                protocol: e.negotiated.protocol,
              });
              break;
          }
          options.onEvent?.(id, e);
        },
      }).then((summary) => {
        log.info("session end", {
          session: id,
          peer,
          end: summary.end,
          messages: summary.messages,
          ms: Date.now() - started,
        });
      }, (e) => {
        // serveConnection does not reject; this is a last line of defence.
        log.error("session crashed", { session: id, error: e });
      }).finally(() => {
        conn.close();
        open.delete(id);
        metrics.connectionClosed();
      }));
    open.set(id, { conn, stop, done });
    return done;
  };

  const accepting = (async () => {
    log.info("listening", { address: where, maxConnections: max });
    try {
      for await (const conn of listener) {
        if (stopping) {
          conn.close();
          continue;
        }
        if (open.size >= max) {
          metrics.refused++;
          log.warn("connection refused", {
            peer: conn.remote ? formatSocketSpec(conn.remote) : undefined,
            reason: `at the limit of ${max} connections (maxConnections)`,
          });
          // Closing at once lets the MTA apply its own milter_default_action.
          conn.close();
          continue;
        }
        metrics.connectionOpened();
        session(conn, nextId++);
      }
    } catch (e) {
      if (!stopping) log.error("listener failed", { address: where, error: e });
    }
  })();

  let resolveFinished!: () => void;
  const finished = new Promise<void>((r) => (resolveFinished = r));

  const stopServer = (graceMs: number): Promise<void> => {
    if (stopping && graceMs === 0) {
      // A second, impatient stop: end every session now.
      if (open.size > 0) log.warn("closing sessions now", { sessions: open.size });
      for (const s of open.values()) s.stop.abort();
      return stopping;
    }
    stopping ??= (async () => {
      log.info("stopping", { address: where, sessions: open.size, graceMs });
      await listener.close().catch(() => {});
      await accepting;
      const all = Promise.all([...open.values()].map((s) => s.done));
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
      await Promise.race([all, deadline]);
      clearTimeout(timer);
      if (open.size > 0) {
        log.warn("closing sessions at the deadline", { sessions: open.size });
        for (const s of open.values()) s.stop.abort();
        await Promise.all([...open.values()].map((s) => s.done));
      }
      watch?.stop();
      log.info("stopped", { address: where });
      resolveFinished();
    })();
    return stopping;
  };

  return {
    address,
    metrics,
    get connections() {
      return open.size;
    },
    finished,
    setFilter(f) {
      serve = servingWith(f, trace);
    },
    stop: (o) => stopServer(o?.graceMs ?? options.shutdownGraceMs ?? 30_000),
  };
}
