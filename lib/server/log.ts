/**
 * Structured logging: one JSON object per line (for log shippers) or one readable text line
 * (for a terminal), with levels. The sink is a function, so the core writes nowhere by itself.
 *
 * @module
 */

import { MilterError } from "../wire/errors.ts";
import { type AnsiColor, paint, verdictColor } from "./colors.ts";
import type { LogLevel } from "../filter/log.ts";

export type { LogLevel };

const RANK: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Fields attached to a log line. */
export type LogFields = Readonly<Record<string, unknown>>;

/**
 * Writes log lines.
 *
 * @example
 * ```ts
 * import { createLogger } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const lines: string[] = [];
 * const log = createLogger({ format: "json", sink: (l) => lines.push(l), now: () => 0 });
 * log.info("listening", { address: "inet:8890@127.0.0.1" });
 * assert.deepEqual(JSON.parse(lines[0]!), {
 *   time: "1970-01-01T00:00:00.000Z", level: "info", event: "listening",
 *   address: "inet:8890@127.0.0.1",
 * });
 * ```
 */
export interface Logger {
  /** The lowest level written. */
  readonly level: LogLevel;
  /** Whether a level would be written (skip building costly fields otherwise). */
  enabled(level: LogLevel): boolean;
  /** Writes a line at `level`. */
  log(level: LogLevel, event: string, fields?: LogFields): void;
  /** Writes at debug level. */
  debug(event: string, fields?: LogFields): void;
  /** Writes at info level. */
  info(event: string, fields?: LogFields): void;
  /** Writes at warn level. */
  warn(event: string, fields?: LogFields): void;
  /** Writes at error level. */
  error(event: string, fields?: LogFields): void;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** `json` (one object per line) or `text`. Default `json`. */
  readonly format?: "json" | "text";
  /** Lowest level written. Default `info`. */
  readonly level?: LogLevel;
  /** Receives each line, without the newline. */
  readonly sink: (line: string) => void;
  /** Clock (ms since epoch), for tests. */
  readonly now?: () => number;
  /** Colour the level and a `verdict` field (the shared palette) in text format. */
  readonly color?: boolean;
}

const COLORS: Readonly<Record<LogLevel, AnsiColor>> = {
  debug: "dim",
  info: "cyan",
  warn: "yellow",
  error: "red",
};

function textValue(v: unknown): string {
  if (typeof v === "string") return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v instanceof Error) return JSON.stringify(v.message);
  // A list of words reads as one: to=<a@example.com>,<b@example.com>
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) {
    return v.length === 0 ? "-" : textValue(v.join(","));
  }
  return JSON.stringify(v) ?? String(v);
}

function jsonSafe(fields: LogFields): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    out[k] = v instanceof Error ? v.message : v;
  }
  return out;
}

/**
 * Creates a {@link Logger}.
 *
 * @param options Format, level and sink.
 * @returns The logger.
 *
 * @example
 * ```ts
 * import { createLogger } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const lines: string[] = [];
 * const log = createLogger({ format: "text", level: "warn", sink: (l) => lines.push(l), now: () => 0 });
 * log.info("hidden");
 * log.warn("slow handler", { stage: "eom", ms: 1200 });
 * assert.equal(lines.length, 1);
 * assert.match(lines[0]!, /WARN +slow handler stage=eom ms=1200/);
 * ```
 */
export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? "info";
  const min = RANK[level];
  const now = options.now ?? Date.now;
  const text = options.format === "text";
  const color = options.color ?? false;
  const write = (lvl: LogLevel, event: string, fields: LogFields = {}) => {
    if (RANK[lvl] < min) return;
    const time = new Date(now()).toISOString();
    if (!text) {
      options.sink(JSON.stringify({ time, level: lvl, event, ...jsonSafe(fields) }));
      return;
    }
    const tag = lvl.toUpperCase().padEnd(5);
    const parts = Object.entries(fields).filter(([, v]) => v !== undefined).map(([k, v]) =>
      k === "verdict" && color
        ? `${k}=${paint(verdictColor(String(v)), textValue(v))}`
        : `${k}=${textValue(v)}`
    );
    const head = paint(COLORS[lvl], tag, color);
    options.sink(`${time} ${head} ${event}${parts.length ? " " + parts.join(" ") : ""}`);
  };
  return {
    level,
    enabled: (l) => RANK[l] >= min,
    log: write,
    debug: (e, f) => write("debug", e, f),
    info: (e, f) => write("info", e, f),
    warn: (e, f) => write("warn", e, f),
    error: (e, f) => write("error", e, f),
  };
}

/**
 * A logger that writes nothing.
 *
 * @example
 * ```ts
 * import { silentLogger } from "@milterkit/milterkit";
 * silentLogger.info("nothing happens");
 * ```
 */
export const silentLogger: Logger = createLogger({ level: "error", sink: () => {} });

/** The innermost cause of an error (what a handler threw, under the engine's wrapper). */
function rootCause(e: unknown): unknown {
  let cur = e;
  for (let i = 0; i < 10 && cur instanceof Error && cur.cause !== undefined; i++) cur = cur.cause;
  return cur;
}

/**
 * Where an error was thrown: the first stack frame of its innermost cause that names a file
 * position, without `file://` (`eom (/etc/milterkit/filter.ts:12:11)`), or undefined for the
 * toolkit's own errors (timeouts, illegal answers, protocol errors).
 *
 * @param e The error, e.g. a handler failure wrapping what the handler threw.
 * @returns The frame, or undefined.
 *
 * @example
 * ```ts
 * import { errorFrame } from "./log.ts";
 * import assert from "node:assert/strict";
 * const e = new Error("boom");
 * e.stack = "Error: boom\n    at JSON.parse (<anonymous>)\n    at eom (file:///f.ts:3:9)";
 * assert.equal(errorFrame(new Error("handler failed", { cause: e })), "eom (/f.ts:3:9)");
 * ```
 */
export function errorFrame(e: unknown): string | undefined {
  // The engine's own errors (a timeout, an illegal answer) point into the engine, not at code
  // the admin can fix.
  if (rootCause(e) instanceof MilterError) return undefined;
  const stack = errorStack(e);
  if (stack === undefined) return undefined;
  for (const line of stack.split("\n")) {
    const m = /^\s+at (.*:\d+:\d+\)?)$/.exec(line);
    if (m && !/\((node|ext|bun):|^(node|ext|bun):/.test(m[1]!)) {
      return m[1]!.replace("file://", "");
    }
  }
  return undefined;
}

/**
 * The stack of an error's innermost cause (the code that threw), for debug output.
 *
 * @param e The error.
 * @returns The stack text, or undefined.
 *
 * @example
 * ```ts
 * import { errorStack } from "./log.ts";
 * const stack = errorStack(new Error("x"));
 * ```
 */
export function errorStack(e: unknown): string | undefined {
  const root = rootCause(e);
  return root instanceof Error && typeof root.stack === "string" ? root.stack : undefined;
}
