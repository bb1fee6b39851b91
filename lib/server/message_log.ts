/**
 * The server's per-message log line and the destination of `ctx.log`: both go to the server's
 * {@link Logger}, tagged with the session, so `grep session=12` or a queue id finds everything
 * about one SMTP session or one message.
 *
 * @module
 */

import type { FilterLogSink, ServedMessage } from "../filter/log.ts";
import { displayText } from "../wire/text.ts";
import type { LogFields, Logger } from "./log.ts";

/**
 * The fields of the per-message line: time comes from the logger; then session, queue id,
 * client, sender, recipients, verdict and stage, reply text, changes in brief and duration. A
 * custom reply shows as `reject` or `tempfail`, with its text in `reply`. A custom reply shows as `reject` or `tempfail`, with its text in `reply`.
 *
 * @param session The server's session number.
 * @param m What the filter engine recorded.
 * @returns Fields for `logger.info("message", …)`.
 *
 * @example
 * ```ts
 * import { messageLogFields } from "./message_log.ts";
 * import assert from "node:assert/strict";
 * const f = messageLogFields(3, {
 *   number: 1, queueId: "4XyZ", client: undefined, sender: "<a@example.com>",
 *   recipients: ["<b@example.org>"], verdict: "reject", stage: "eom", reply: undefined,
 *   changes: [], bodyBytes: 120, durationMs: 4.26,
 * });
 * assert.equal(f.queue, "4XyZ");
 * assert.equal(f.ms, 4.3);
 * ```
 */
export function messageLogFields(session: number, m: ServedMessage): LogFields {
  const c = m.client;
  const host = c === undefined ? undefined : displayText(c.hostname);
  // A 5xx/4xx custom reply is a reject/tempfail to the admin; the text says which.
  const verdict = m.verdict === "replycode"
    ? (m.reply?.startsWith("4") ? "tempfail" : "reject")
    : m.verdict;
  return {
    session,
    queue: m.queueId,
    client: c === undefined || host === `[${c.address}]` ? host : `${host}[${c.address ?? ""}]`,
    from: m.sender === undefined ? undefined : displayText(m.sender),
    to: m.recipients.map(displayText),
    verdict,
    stage: m.stage,
    reply: m.reply === undefined ? undefined : displayText(m.reply),
    changes: m.changes.length > 0 ? m.changes.map(displayText) : undefined,
    ms: Math.round(m.durationMs * 10) / 10,
  };
}

/**
 * Where `ctx.log` writes for one session: the logger's `filter` event with the session, the
 * queue id and the message (`msg`), then the handler's own fields.
 *
 * @param log The server's logger.
 * @param session The server's session number.
 * @returns The sink for the session's `filterLog` option.
 *
 * @example
 * ```ts
 * import { createLogger } from "@milterkit/milterkit";
 * import { filterLogSink } from "./message_log.ts";
 * import assert from "node:assert/strict";
 * const lines: string[] = [];
 * const log = createLogger({ format: "text", sink: (l) => lines.push(l), now: () => 0 });
 * filterLogSink(log, 7)("warn", "slow DNS", { queue: "4XyZ", ms: 900 });
 * assert.equal(lines[0], '1970-01-01T00:00:00.000Z WARN  filter session=7 queue=4XyZ msg="slow DNS" ms=900');
 * ```
 */
export function filterLogSink(log: Logger, session: number): FilterLogSink {
  return (level, message, fields) => {
    if (!log.enabled(level)) return;
    const { queue, session: _s, msg: _m, ...rest } = fields;
    log.log(level, "filter", { session, queue, msg: message, ...rest });
  };
}
