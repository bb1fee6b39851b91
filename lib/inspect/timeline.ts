/**
 * Renders an annotated session for people (a text timeline, optionally coloured) and for
 * programs (one JSON object per session).
 *
 * @module
 */

import { type AnsiColor, paint as paintText, verdictColor } from "../server/colors.ts";
import type {
  AnnotatedEvent,
  MessageSummary,
  Outcome,
  SessionSummary,
} from "./annotate/annotator.ts";
import { decodedToJson, describeDecoded } from "./annotate/render.ts";
import { ACTION_NAMES, flagNames, PROTOCOL_NAMES } from "../wire/constants.ts";

/** A session ready to render: the annotator's output plus where it came from. */
export interface SessionReport {
  /** Id shown to the user and matched by `--session` (e.g. `capture.pcap#s1`; sessions count from 1 in captures and recordings alike). */
  readonly id: string;
  /** The MTA peer, when known (`127.0.0.1:45518`). */
  readonly mta?: string;
  /** The filter peer, when known. */
  readonly filter?: string;
  /** Notes from reading the source (gaps, truncation). */
  readonly notes: readonly string[];
  /** The annotator's summary. */
  readonly summary: SessionSummary;
  /** The annotated frames, in order. */
  readonly events: readonly AnnotatedEvent[];
}

/** Options of {@link renderTimeline}. */
export interface TimelineOptions {
  /** Use ANSI colours (default false). */
  readonly color?: boolean;
  /** Show every frame, macros included, with its bytes in hex. */
  readonly raw?: boolean;
}

function iso(t: number | undefined): string {
  return t === undefined || Number.isNaN(t) ? "" : new Date(t).toISOString();
}

function ms(v: number | undefined): string {
  if (v === undefined) return "";
  return v < 10 ? `${v.toFixed(3)} ms` : `${v.toFixed(1)} ms`;
}

function hexdump(b: Uint8Array, max = 64): string {
  const shown = [...b.subarray(0, max)].map((x) => x.toString(16).padStart(2, "0")).join(" ");
  return b.length > max ? `${shown} … (${b.length} bytes)` : shown;
}

/**
 * Names the outcome of a message or recipient in one short phrase.
 *
 * @param o The outcome.
 * @returns E.g. `REJECT 550 5.7.1 text (at eom)`.
 *
 * @example
 * ```ts
 * import { describeOutcome } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.equal(describeOutcome({ kind: "accept", stage: "eom", reply: "continue" }), "ACCEPT (continue at eom)");
 * ```
 */
export function describeOutcome(o: Outcome): string {
  const kind = o.kind.toUpperCase();
  if (o.text !== undefined) return `${kind} ${o.text.replaceAll("\r\n", " / ")} (at ${o.stage})`;
  if (o.reply !== undefined) return `${kind} (${o.reply} at ${o.stage})`;
  return `${kind} (after ${o.stage})`;
}

/**
 * Renders a session as a readable timeline: the negotiation with flag names, connect info,
 * then per message the envelope, headers, body size, each reply with its latency, each
 * modification and the verdict; then the checker's issues.
 *
 * @param report The session.
 * @param options Colour and raw mode.
 * @returns Text ending with a newline.
 *
 * @example
 * ```ts
 * import { annotateStreams, renderTimeline } from "@milterkit/milterkit/inspect";
 * import { encodeCommand } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const a = annotateStreams({ toFilter: encodeCommand({ type: "quit" }), toMta: new Uint8Array(0) });
 * const text = renderTimeline({ id: "s0", notes: [], summary: a.summary(), events: a.events });
 * assert.match(text, /QUIT/);
 * ```
 */
export function renderTimeline(report: SessionReport, options: TimelineOptions = {}): string {
  const paint = (code: AnsiColor, s: string) => paintText(code, s, options.color ?? false);
  const outcomeColor = (o: Outcome): AnsiColor => verdictColor(o.kind);
  const s = report.summary;
  const out: string[] = [];
  const peers = report.mta || report.filter
    ? `  ${report.mta ?? "?"} -> ${report.filter ?? "?"}`
    : "";
  out.push(paint("bold", `== session ${report.id}${peers}  ${iso(s.startTime)}`.trimEnd()));
  const n = s.negotiation;
  if (n.mta) {
    out.push(
      `negotiation: MTA v${n.mta.version} actions=0x${n.mta.actions.toString(16)} protocol=0x${
        n.mta.protocol.toString(16)
      }`,
    );
  }
  if (n.filter) {
    const f = n.filter;
    out.push(
      `  filter v${f.version} actions=[${flagNames(f.actions, ACTION_NAMES).join(" ")}]` +
        ` protocol=[${flagNames(f.protocol, PROTOCOL_NAMES).join(" ")}]` +
        (f.symlists.length
          ? ` macros=${f.symlists.map((l) => `${l.stage}:"${l.macros}"`).join(",")}`
          : ""),
    );
  }
  if (s.connect) {
    const c = s.connect;
    out.push(
      `connect: ${c.hostname} (${c.family}${
        c.address !== undefined ? ` ${c.address} port ${c.port}` : ""
      })`,
    );
  }
  if (s.helo.length) out.push(`helo: ${s.helo.join(", ")}`);
  if (s.outcome) {
    out.push(`connection: ${paint(outcomeColor(s.outcome), describeOutcome(s.outcome))}`);
  }

  const lineOf = new Map<number, number>();
  const hasSub = new Set<number>();
  let current: number | undefined;
  const footer = (m: MessageSummary) => {
    out.push(
      `  body: ${m.bodySize} bytes in ${m.bodyChunks} chunk${m.bodyChunks === 1 ? "" : "s"}`,
    );
    for (const r of m.recipients) {
      if (r.outcome && r.outcome.kind !== "accept") {
        out.push(
          `  recipient ${r.address}: ${paint(outcomeColor(r.outcome), describeOutcome(r.outcome))}`,
        );
      }
    }
    out.push(`  verdict: ${paint(outcomeColor(m.outcome), describeOutcome(m.outcome))}`);
  };
  for (const e of report.events) {
    const d = e.decoded;
    const isMacro = !("error" in d) && d.type === "macro";
    if (isMacro && !options.raw) continue;
    if (e.direction === "to-filter" && e.message !== current && !isMacro) {
      if (current !== undefined) footer(s.messages[current]!);
      current = e.message;
      if (current !== undefined) {
        const m = s.messages[current]!;
        out.push(
          paint("bold", `-- message ${current + 1}${m.queueId ? ` (queue id ${m.queueId})` : ""}`),
        );
      }
    }
    const indent = current !== undefined ? "  " : "";
    const text = describeDecoded(d, e.direction);
    const hex = options.raw ? paint("dim", `\n${indent}      ${hexdump(e.frame.payload)}`) : "";
    if (e.direction === "to-filter") {
      lineOf.set(e.seq, out.length);
      out.push(`${indent}${options.raw ? `#${e.seq} ` : ""}${text}${hex}`);
      continue;
    }
    const lat = e.latencyMs !== undefined ? paint("dim", ` (${ms(e.latencyMs)})`) : "";
    const at = e.answers !== undefined ? lineOf.get(e.answers) : undefined;
    if (at !== undefined && e.final && !hasSub.has(e.answers!) && !options.raw) {
      out[at] += ` -> ${text}${lat}`;
    } else {
      if (e.answers !== undefined) hasSub.add(e.answers);
      out.push(`${indent}    ${e.answers === undefined ? "<! " : "<- "}${text}${lat}${hex}`);
    }
  }
  if (current !== undefined) footer(s.messages[current]!);
  for (const m of s.messages) {
    if (m.index !== current && !report.events.some((e) => e.message === m.index)) footer(m);
  }
  out.push(`ended: ${s.ended}  frames: ${s.frames.toFilter} to filter, ${s.frames.toMta} to MTA`);
  for (const note of report.notes) out.push(paint("yellow", `note: ${note}`));
  if (s.issues.length === 0) out.push("issues: none");
  for (const i of s.issues) out.push(paint("red", `issue #${i.seq} ${i.rule}: ${i.message}`));
  return out.join("\n") + "\n";
}

/**
 * Turns a session into one JSON-serialisable object: peers, negotiation (with flag names),
 * connect, messages (envelope, headers, body size, modifications, verdict, latency), issues;
 * with `events: true` also every frame (summary, and hex when `raw`).
 *
 * @param report The session.
 * @param options Include events, and raw bytes in them.
 * @returns The object.
 *
 * @example
 * ```ts
 * import { annotateStreams, sessionToJson } from "@milterkit/milterkit/inspect";
 * import { encodeCommand } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const a = annotateStreams({ toFilter: encodeCommand({ type: "quit" }), toMta: new Uint8Array(0) });
 * const json = sessionToJson({ id: "s0", notes: [], summary: a.summary(), events: a.events });
 * assert.equal(json.id, "s0");
 * ```
 */
export function sessionToJson(
  report: SessionReport,
  options: { events?: boolean; raw?: boolean } = {},
): Record<string, unknown> {
  const s = report.summary;
  const flags = (w: { version: number; actions: number; protocol: number }) => ({
    version: w.version,
    actions: w.actions,
    protocol: w.protocol,
    actionNames: flagNames(w.actions, ACTION_NAMES),
    protocolNames: flagNames(w.protocol, PROTOCOL_NAMES),
  });
  return {
    id: report.id,
    ...(report.mta !== undefined ? { mta: report.mta } : {}),
    ...(report.filter !== undefined ? { filter: report.filter } : {}),
    start: iso(s.startTime) || undefined,
    end: iso(s.endTime) || undefined,
    negotiation: {
      ...(s.negotiation.mta ? { mta: flags(s.negotiation.mta) } : {}),
      ...(s.negotiation.filter
        ? { filter: { ...flags(s.negotiation.filter), symlists: s.negotiation.filter.symlists } }
        : {}),
    },
    connect: s.connect,
    helo: s.helo,
    outcome: s.outcome,
    messages: s.messages.map((m) => ({
      ...m,
      modifications: m.modifications.map((x) => decodedToJson(x)),
    })),
    ended: s.ended,
    frames: s.frames,
    issues: s.issues,
    notes: report.notes,
    ...(options.events
      ? {
        events: report.events.map((e) => ({
          seq: e.seq,
          time: e.time,
          dir: e.direction,
          stage: e.stage,
          summary: describeDecoded(e.decoded, e.direction),
          ...(e.answers !== undefined ? { answers: e.answers } : {}),
          ...(e.latencyMs !== undefined ? { latencyMs: e.latencyMs } : {}),
          ...(e.message !== undefined ? { message: e.message } : {}),
          ...(options.raw
            ? {
              code: e.frame.code,
              hex: [...e.frame.payload].map((x) => x.toString(16).padStart(2, "0")).join(""),
            }
            : {}),
        })),
      }
      : {}),
  };
}
