/**
 * `milterkit serve [SCRIPT] [options]`: serve a scripted filter, or without a script the
 * built-in filter that accepts everything and logs each event.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Filter } from "../filter/filter.ts";
import type { Fallback } from "../filter/session.ts";
import { createLogger, errorFrame, errorStack, type LogLevel } from "../server/log.ts";
import { failSessionOf } from "../server/uncaught.ts";
import { loggingFilter } from "../server/logging_filter.ts";
import { listen, type MilterServer } from "../server/server.ts";
import { parseSocketSpec } from "../server/socket_spec.ts";
import { describeFilter, type LoadedScript, loadScript } from "./script.ts";
import { startStatusHttp, type StatusServer } from "./status_http.ts";
import {
  checkWorkers,
  parseWorkers,
  runWorker,
  supervise,
  withFields,
  workerArgsOf,
  workerNumber,
} from "./workers.ts";
import { COLOR_OPTIONS, wantColor } from "./color.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";
import { thrownMessage } from "../wire/errors.ts";

const USAGE = `Usage: milterkit serve [SCRIPT] [options]

Serve a milter filter written as a .ts or .js module whose default export is a
filter object (see examples/). Without SCRIPT, serve the built-in filter that
accepts every message and logs every event decoded: point your MTA at it to see
what it sends.

Options:
  -l, --listen SPEC          socket to listen on (default inet:8890@127.0.0.1)
                             inet:PORT@HOST, inet:HOST:PORT, inet6:PORT@HOST,
                             unix:PATH, local:PATH
      --fallback KIND        answer when a handler throws, hangs or misbehaves:
                             tempfail (default), reject, accept, continue
      --handler-timeout MS   time a handler may take (default 25000)
      --eom-timeout MS       time the end-of-message handler may take (default 240000)
      --progress MS          PROGRESS keep-alive interval during eom (default 10000, 0 off)
      --idle-timeout MS      close connections idle this long (default 7210000)
      --write-timeout MS     close a connection whose MTA takes none of our output for this
                             long (default 60000)
      --max-connections N    connections served at once (default 1000); more are closed
      --workers N            processes serving the same TCP port (default 1; auto: one
                             per core); SIGHUP, SIGTERM and the metrics port cover all
      --block-warn MS        warn (naming the stage and script) when a handler holds the
                             event loop this long (default 1000, 0 off)
      --trace-uncaught       answer the session whose handler caused an error nobody
                             caught (unawaited rejection, throw in a timer) with the
                             fallback at once; costs throughput (default: the error is
                             logged and the handler's timeout answers)
      --max-frame BYTES      largest frame accepted (default 1048576)
      --unix-mode MODE       permissions of a unix socket, octal (default 660)
      --shutdown-grace MS    time sessions get to finish on SIGTERM (default 30000)
      --log-format FORMAT    text or json (default: text when stderr is a terminal,
                             else json)
      --log-level LEVEL      debug, info (default), warn, error
      --color WHEN           colour text logs: auto (on a terminal, unless NO_COLOR
                             is set), always, never
      --no-color             same as --color never
      --metrics-port PORT    serve Prometheus metrics on http://127.0.0.1:PORT/metrics
                             and health on /health (200 serving, 503 stopping)
      --metrics-host HOST    bind address of the metrics port (default 127.0.0.1)
      --load-timeout MS      time loading SCRIPT may take, top-level await included
                             (default 30000)
      --check                load and validate SCRIPT, print what it negotiates, exit
  -h, --help                 show this help

SCRIPT may import npm packages installed in a node_modules beside it (or above),
local .ts/.js modules and JSON; the toolkit's own names (@milterkit/milterkit,
milterkit, with jsr:/npm: prefixes and subpaths) get this program's copy.

Logs (stderr): one line per message (queue id, client, sender, recipients,
verdict and stage, reply, changes, ms), the filter's ctx.log lines tagged with
session and queue id, handler errors with where they were thrown (the stack at
--log-level debug), and errors nobody caught, all in --log-format.

Signals: SIGTERM/SIGINT stop gracefully (a second one stops at once); SIGHUP
re-reads SCRIPT and its local modules for new connections without dropping
sessions in flight; a broken new version is reported and the running one kept.
Module-level state starts afresh on reload unless the script exports \`state\`
and a \`restore(previous)\` function that takes the old version's state over.

Examples:
  milterkit serve                                   # log what Postfix sends
  milterkit serve examples/tag_suspicious.ts --listen inet:8891@127.0.0.1
  milterkit serve my_filter.ts --listen unix:/run/milterkit/filter.sock --log-format json
  milterkit serve my_filter.ts --check
  milterkit serve my_filter.ts --workers auto --listen inet:8890@0.0.0.0 --metrics-port 9464

Postfix (main.cf):   smtpd_milters = inet:127.0.0.1:8890
Sendmail (.mc):      INPUT_MAIL_FILTER(\`milterkit', \`S=inet:8890@127.0.0.1, F=T')
`;

function int(name: string, v: string | undefined, min = 0): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    throw new UsageError(`--${name} needs a whole number ≥ ${min}, got ${JSON.stringify(v)}`);
  }
  return n;
}

function fallbackOf(v: string | undefined): Fallback | undefined {
  if (v === undefined) return undefined;
  if (v === "tempfail" || v === "reject" || v === "accept" || v === "continue") return v;
  throw new UsageError(`--fallback must be tempfail, reject, accept or continue, got ${v}`);
}

/** `milterkit serve`. */
export const serveCommand: Subcommand = {
  name: "serve",
  stopsOnSignal: true,
  summary: "serve a scripted filter (or log everything the MTA sends)",
  usage: USAGE,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        listen: { type: "string", short: "l", default: "inet:8890@127.0.0.1" },
        fallback: { type: "string" },
        "handler-timeout": { type: "string" },
        "eom-timeout": { type: "string" },
        progress: { type: "string" },
        "idle-timeout": { type: "string" },
        "write-timeout": { type: "string" },
        "max-connections": { type: "string" },
        "max-frame": { type: "string" },
        "unix-mode": { type: "string" },
        "shutdown-grace": { type: "string" },
        "log-format": { type: "string" },
        "log-level": { type: "string", default: "info" },
        ...COLOR_OPTIONS,
        "metrics-port": { type: "string" },
        "metrics-host": { type: "string", default: "127.0.0.1" },
        "load-timeout": { type: "string" },
        workers: { type: "string" },
        "block-warn": { type: "string" },
        "trace-uncaught": { type: "boolean", default: false },
        check: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.stdout(USAGE);
      return EXIT.OK;
    }
    if (positionals.length > 1) {
      throw new UsageError(`Expected at most one SCRIPT, got ${positionals.length}`);
    }
    const script = positionals[0];
    const listenAt = parseSocketSpec(values.listen!);
    // Logs go to standard error: text when a person watches it, JSON for a file or a shipper.
    const format = values["log-format"] ?? ((io.errIsTty ?? io.isTty) ? "text" : "json");
    if (format !== "text" && format !== "json") {
      throw new UsageError(`--log-format must be text or json, got ${format}`);
    }
    const level = values["log-level"] as LogLevel;
    if (!["debug", "info", "warn", "error"].includes(level)) {
      throw new UsageError(`--log-level must be debug, info, warn or error, got ${level}`);
    }
    const unixMode = values["unix-mode"] === undefined
      ? undefined
      : Number.parseInt(values["unix-mode"], 8);
    if (
      unixMode !== undefined && (!Number.isInteger(unixMode) || unixMode < 0 || unixMode > 0o777)
    ) {
      throw new UsageError(`--unix-mode must be an octal mode such as 660`);
    }
    const options = {
      fallback: fallbackOf(values.fallback),
      handlerTimeoutMs: int("handler-timeout", values["handler-timeout"]),
      eomTimeoutMs: int("eom-timeout", values["eom-timeout"]),
      progressIntervalMs: int("progress", values.progress),
      idleTimeoutMs: int("idle-timeout", values["idle-timeout"]),
      writeTimeoutMs: int("write-timeout", values["write-timeout"]),
      maxConnections: int("max-connections", values["max-connections"], 1),
      maxDataSize: int("max-frame", values["max-frame"], 1),
      shutdownGraceMs: int("shutdown-grace", values["shutdown-grace"]),
      blockWarnMs: int("block-warn", values["block-warn"]),
      traceUncaught: values["trace-uncaught"] || undefined,
      unixMode,
    };
    const metricsPort = int("metrics-port", values["metrics-port"]);
    const worker = workerNumber(io.env);
    const workers = worker === undefined ? parseWorkers(values.workers) : 1;
    checkWorkers(workers, listenAt, io.self);
    const baseLog = createLogger({
      format,
      level,
      // --color is checked in either format; it only colours text.
      color: wantColor(io, values, io.errIsTty ?? false) && format === "text",
      sink: (line) => io.stderr(line + "\n"),
    });
    const log = worker === undefined ? baseLog : withFields(baseLog, { worker });
    if (workers > 1 && !values.check) {
      return await supervise({
        count: workers,
        listen: values.listen!,
        workerArgs: (listen) => workerArgsOf(values, positionals, { listen, "log-format": format }),
        self: io.self,
        metricsPort,
        metricsHost: values["metrics-host"]!,
        log,
      }, io);
    }
    // Errors nobody caught (a handler's unawaited rejection, a throw in its timer) are logged
    // in the log's format; the session that caused them, when known, gets the fallback.
    const offUncaught = io.onUncaught?.((error, kind) => {
      log.error(kind, {
        session: failSessionOf(error, kind),
        error: thrownMessage(error),
        at: errorFrame(error),
        stack: log.enabled("debug") ? errorStack(error) : undefined,
      });
    });

    const loadTimeoutMs = int("load-timeout", values["load-timeout"], 1);
    let current: LoadedScript | undefined;
    let filter: Filter<unknown, unknown>;
    if (script === undefined) filter = loggingFilter(log);
    else {
      current = await loadScript(script, { timeoutMs: loadTimeoutMs });
      filter = current.filter;
    }
    if (values.check) {
      io.stdout(describeFilter(filter).join("\n") + "\n");
      return EXIT.OK;
    }

    const clean = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
    const server: MilterServer = await listen(listenAt, filter, {
      ...clean,
      logger: log,
      label: script ?? "built-in",
      // Workers share the port: SO_REUSEPORT (Bun, Deno); node:cluster shares it by itself.
      ...(worker === undefined ? {} : { reusePort: true }),
    });
    const reload = async () => {
      if (script === undefined) return;
      try {
        const next = await loadScript(script, {
          fresh: true,
          timeoutMs: loadTimeoutMs,
          previous: current,
        });
        current = next;
        server.setFilter(next.filter);
        log.info("reloaded", { script });
      } catch (e) {
        log.error("reload failed, keeping the running filter", {
          script,
          error: (e as Error).message,
        });
        throw e;
      }
    };
    if (worker !== undefined) return await runWorker({ server, reload, log }, io);

    let stops = 0;
    let draining = false;
    let status: StatusServer | undefined;
    if (metricsPort !== undefined) {
      status = await startStatusHttp(metricsPort, values["metrics-host"]!, {
        metrics: () => server.metrics.prometheus(),
        health: () => draining ? { ok: false, text: "stopping" } : { ok: true, text: "serving" },
      });
      log.info("metrics", { url: status.url });
    }
    const stop = () => {
      stops++;
      draining = true;
      void server.stop(stops > 1 ? { graceMs: 0 } : undefined);
    };
    const unsubscribe = [
      offUncaught,
      io.onSignal?.("SIGTERM", stop),
      io.onSignal?.("SIGINT", stop),
      io.onSignal?.("SIGHUP", () => void reload().catch(() => {})),
    ];
    io.signal.addEventListener("abort", () => {
      draining = true;
      void server.stop();
    }, { once: true });
    await server.finished;
    for (const u of unsubscribe) u?.();
    await status?.close();
    return EXIT.OK;
  },
};
