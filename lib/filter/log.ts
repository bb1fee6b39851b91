/**
 * What the filter engine tells a logger: `ctx.log` for handlers (tagged with the queue id by the
 * engine, with the session by the server) and one record per finished message (who, what was
 * decided at which stage, the reply, the changes in brief, how long it took). The engine writes
 * nowhere itself: both go to functions given in the session options.
 *
 * @module
 */

import type { ConnectInfo } from "../mail/envelope.ts";
import type { Modification, Reply, Stage } from "../wire/types.ts";

/** Log levels, most verbose first: of {@link FilterLog} and of the server's logger. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Receives `ctx.log` lines: level, message, fields (the queue id already added as `queue`). */
export type FilterLogSink = (
  level: LogLevel,
  message: string,
  fields: Readonly<Record<string, unknown>>,
) => void;

/**
 * `ctx.log`: writes to the server's log (same format and level as its own lines), tagged with
 * the session and the message's queue id.
 *
 * @example
 * ```ts
 * import { defineFilter } from "@milterkit/milterkit";
 * export default defineFilter({
 *   eom(ctx) {
 *     ctx.log.info("scored", { score: 7.5, sender: ctx.sender?.address });
 *   },
 * });
 * ```
 */
export interface FilterLog {
  /** Written at `--log-level debug` only. */
  debug(message: string, fields?: Readonly<Record<string, unknown>>): void;
  /** Written at the default level. */
  info(message: string, fields?: Readonly<Record<string, unknown>>): void;
  /** Something the admin should look at. */
  warn(message: string, fields?: Readonly<Record<string, unknown>>): void;
  /** Something failed. */
  error(message: string, fields?: Readonly<Record<string, unknown>>): void;
}

/**
 * Creates a {@link FilterLog} writing to `sink` with `tags()` (evaluated per line) added.
 *
 * @param sink Where lines go; without one the log writes nothing.
 * @param tags Fields added to every line, e.g. the current queue id.
 * @returns The log.
 *
 * @example
 * ```ts
 * import { bindFilterLog } from "./log.ts";
 * import assert from "node:assert/strict";
 * const lines: unknown[] = [];
 * const log = bindFilterLog((level, message, fields) => lines.push([level, message, fields]),
 *   () => ({ queue: "4Xy" }));
 * log.warn("slow DNS", { ms: 900 });
 * assert.deepEqual(lines, [["warn", "slow DNS", { queue: "4Xy", ms: 900 }]]);
 * ```
 */
export function bindFilterLog(
  sink: FilterLogSink | undefined,
  tags: () => Readonly<Record<string, unknown>>,
): FilterLog {
  const write = (level: LogLevel) =>
  (
    message: string,
    fields: Readonly<Record<string, unknown>> = {},
  ) => {
    if (sink === undefined) return;
    try {
      sink(level, String(message), { ...tags(), ...fields });
    } catch {
      // A failing logger must not fail the handler that logs.
    }
  };
  return { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") };
}

/**
 * One finished (or aborted) message as the filter engine saw it, for the per-message log line.
 *
 * @example
 * ```ts
 * import type { ServedMessage } from "./log.ts";
 * const line = (m: ServedMessage) => `${m.queueId ?? "-"} ${m.verdict} at ${m.stage}`;
 * ```
 */
export interface ServedMessage {
  /** The message's number on the connection (1 for the first). */
  readonly number: number;
  /** The MTA's queue id (macro `i`), when it sent one. */
  readonly queueId: string | undefined;
  /** The SMTP client, from CONNECT. */
  readonly client: ConnectInfo | undefined;
  /** The envelope sender as the MTA sent it (`<alice@example.com>`). */
  readonly sender: string | undefined;
  /** Recipients this filter did not refuse, as the MTA sent them. */
  readonly recipients: readonly string[];
  /** What the filter answered last: the message's verdict; `abort` when the MTA gave up first. */
  readonly verdict: Reply["type"] | "abort";
  /** The stage of that answer (for `abort`: the last stage the message reached). */
  readonly stage: Stage;
  /** The reply text of a custom reply (`550 5.7.1 …`). */
  readonly reply: string | undefined;
  /** The modifications sent, in brief (`addheader:X-Spam`, `chgheader:Subject[1]`, …). */
  readonly changes: readonly string[];
  /** Body bytes received. */
  readonly bodyBytes: number;
  /** Milliseconds from the first command of the message to the verdict. */
  readonly durationMs: number;
}

/**
 * A modification in a few characters for a log line: the milter name of the change and what it
 * touches, without header values or body bytes.
 *
 * @param m The modification (a streamed body replacement counts as `replbody`).
 * @returns E.g. `addheader:X-Spam`, `delheader:X-Old[1]`, `addrcpt:<bob@example.com>`.
 *
 * @example
 * ```ts
 * import { briefChange } from "./log.ts";
 * import assert from "node:assert/strict";
 * assert.equal(briefChange({ type: "chgheader", name: "Subject", index: 1, value: "x" }),
 *   "chgheader:Subject[1]");
 * ```
 */
export function briefChange(m: Modification | { readonly type: "replbody-stream" }): string {
  switch (m.type) {
    case "addheader":
      return `addheader:${m.name}`;
    case "insheader":
      return `insheader:${m.name}@${m.index}`;
    case "chgheader":
      return `${m.value === "" ? "delheader" : "chgheader"}:${m.name}[${m.index}]`;
    case "addrcpt":
    case "addrcpt_par":
    case "delrcpt":
      return `${m.type}:${m.recipient}`;
    case "chgfrom":
      return `chgfrom:${m.sender}`;
    case "quarantine":
      return `quarantine:${m.reason}`;
    case "replbody":
    case "replbody-stream":
      return "replbody";
  }
}
