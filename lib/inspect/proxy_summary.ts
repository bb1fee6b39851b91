/**
 * The per-message summary `milterkit proxy` prints: one structured record per decided message
 * (time, session, message number, queue id, client, envelope, verdict, changes, latency), as
 * JSON or as one line of text. Messages are numbered from 1 within their session, as `dump`
 * numbers them, in both forms.
 *
 * @module
 */

import type { MessageSummary, Outcome, SessionSummary } from "./annotate/types.ts";
import type { Reply } from "../wire/types.ts";
import { decodedToJson } from "./annotate/render.ts";
import { describeOutcome } from "./timeline.ts";
import { paint, verdictColor } from "../server/colors.ts";
import { displayText } from "../wire/text.ts";

/** One decided message, as `proxy --json` prints it. */
export interface MessageRecord {
  /** Always `message` (the other JSON lines are `frame` lines). */
  readonly type: "message";
  /** When the verdict came (ISO 8601, UTC). */
  readonly time: string;
  /** The proxy's session id (the recording's session id). */
  readonly session: string;
  /** Message number in the session, from 1 (as `dump` shows it). */
  readonly message: number;
  /** The MTA's queue id (Postfix and Sendmail send it in the `i` macro). */
  readonly queueId?: string;
  /** The SMTP client from CONNECT: `hostname [address]`. */
  readonly client?: string;
  /** Envelope sender as sent. */
  readonly from?: string;
  /** Recipients, each with the filter's answer when it was not plain acceptance. */
  readonly to: readonly { address: string; verdict?: string; text?: string }[];
  /** `accept`, `reject`, `tempfail`, `discard` or `shutdown`. */
  readonly verdict: Outcome["kind"];
  /** The command it was decided at (`eom`, `rcpt`, …). */
  readonly stage: string;
  /** The reply that decided it (`continue`, `replycode`, …). */
  readonly reply?: Reply["type"];
  /** The SMTP reply text, for a REPLYCODE. */
  readonly text?: string;
  /** Modifications the filter made, in order (byte fields as `{ size }`). */
  readonly changes: readonly Record<string, unknown>[];
  /** Body bytes the filter was sent. */
  readonly bodyBytes: number;
  /** The filter's reply time per stage, summed over the stage's commands (ms). */
  readonly latencyMs: Readonly<Record<string, number>>;
  /** From the message's first frame to its verdict (ms). */
  readonly durationMs?: number;
}

const round = (x: number) => Math.round(x * 100) / 100;

/**
 * Builds the record of a decided message.
 *
 * @param session The session id.
 * @param m The message (from {@link SessionAnnotator.summary}).
 * @param s The session summary, for the client (optional).
 * @returns The record.
 *
 * @example
 * ```ts
 * import { messageRecord } from "./proxy_summary.ts";
 * import { SessionAnnotator } from "@milterkit/milterkit/inspect";
 * import { FrameDecoder, encodeCommand, encodeReply } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const frame = (b: Uint8Array) => new FrameDecoder().push(b)[0]!;
 * const a = new SessionAnnotator();
 * a.pushCommand(frame(encodeCommand({ type: "mail", sender: "<a@example.com>", args: [] })), 1000);
 * a.pushReply(frame(encodeReply({ type: "reject" })), 1002);
 * const r = messageRecord("s1", a.summary().messages[0]!);
 * assert.equal(r.message, 1);
 * assert.equal(r.verdict, "reject");
 * assert.equal(r.time, "1970-01-01T00:00:01.002Z");
 * ```
 */
export function messageRecord(
  session: string,
  m: MessageSummary,
  s?: Pick<SessionSummary, "connect">,
): MessageRecord {
  const t = m.endTime ?? m.startTime;
  const latencyMs: Record<string, number> = {};
  for (const [stage, l] of Object.entries(m.latency)) latencyMs[stage] = round(l.totalMs);
  return {
    type: "message",
    time: t !== undefined ? new Date(t).toISOString() : "",
    session,
    message: m.index + 1,
    ...(m.queueId !== undefined ? { queueId: m.queueId } : {}),
    ...(s?.connect ? { client: `${s.connect.hostname} [${s.connect.address}]` } : {}),
    ...(m.sender !== undefined ? { from: m.sender } : {}),
    to: m.recipients.map((r) =>
      r.outcome && r.outcome.kind !== "accept"
        ? {
          address: r.address,
          verdict: r.outcome.kind,
          ...(r.outcome.text !== undefined ? { text: r.outcome.text } : {}),
        }
        : { address: r.address }
    ),
    verdict: m.outcome.kind,
    stage: m.outcome.stage,
    ...(m.outcome.reply !== undefined ? { reply: m.outcome.reply } : {}),
    ...(m.outcome.text !== undefined ? { text: m.outcome.text } : {}),
    changes: m.modifications.map((x) => decodedToJson(x)),
    bodyBytes: m.bodySize,
    latencyMs,
    ...(m.startTime !== undefined && m.endTime !== undefined
      ? { durationMs: round(m.endTime - m.startTime) }
      : {}),
  };
}

/**
 * The text form of a record: one line.
 *
 * @param r The record.
 * @param color Paint the verdict in the shared palette (a terminal).
 * @returns `[s1] message 1 2026-11-29T12:00:00.000Z queue=4XyZ: from=… to=… verdict=…`.
 *
 * @example
 * ```ts
 * import { formatMessageRecord } from "./proxy_summary.ts";
 * import assert from "node:assert/strict";
 * const line = formatMessageRecord({
 *   type: "message", time: "2026-11-29T12:00:00.000Z", session: "s1", message: 1, queueId: "4XyZ",
 *   from: "<a@example.com>", to: [{ address: "<b@example.com>" }], verdict: "accept", stage: "eom",
 *   reply: "continue", changes: [], bodyBytes: 10, latencyMs: {},
 * });
 * assert.equal(line, "[s1] message 1 2026-11-29T12:00:00.000Z queue=4XyZ: from=<a@example.com> to=<b@example.com> verdict=ACCEPT (continue at eom) body=10B");
 * ```
 */
export function formatMessageRecord(r: MessageRecord, color = false): string {
  const rcpts = r.to.map((x) => x.verdict ? `${x.address}(${x.verdict})` : x.address).join(",");
  const lat = Object.entries(r.latencyMs).map(([stage, ms]) => `${stage}=${ms.toFixed(1)}ms`)
    .join(" ");
  const mods = r.changes.length ? ` changes=${r.changes.map((x) => x.type).join(",")}` : "";
  const verdict = describeOutcome({
    kind: r.verdict,
    stage: r.stage,
    ...(r.reply !== undefined ? { reply: r.reply } : {}),
    ...(r.text !== undefined ? { text: r.text } : {}),
  });
  return `[${r.session}] message ${r.message}${r.time ? ` ${r.time}` : ""}${
    r.queueId !== undefined ? ` queue=${displayText(r.queueId)}` : ""
  }: from=${displayText(r.from ?? "?")} to=${displayText(rcpts) || "-"} verdict=${
    paint(verdictColor(r.verdict), displayText(verdict), color)
  }${mods} body=${r.bodyBytes}B${lat ? ` latency[${lat}]` : ""}`;
}
