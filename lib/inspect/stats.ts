/**
 * Statistics over many sessions, gathered one session at a time (memory does not grow with the
 * number of messages): counts by verdict and by the stage that decided, the most frequent
 * reject and tempfail reasons, reply latency per stage as a log-scale histogram with
 * percentiles, and messages and verdicts per hour.
 *
 * @module
 */

import type { Outcome } from "./annotate/types.ts";
import type { SessionReport } from "./timeline.ts";
import { NO_EVENT_BIT, stageOf } from "../wire/command_bits.ts";
import type { CommandType } from "../wire/types.ts";

/** Histogram buckets per decade of milliseconds (each about 12 % wide). */
const PER_DECADE = 20;
/** The first bucket starts at 1 µs; the last ends past 1000 s. */
const LOW = -3;
const DECADES = 9;
const BUCKETS = PER_DECADE * DECADES;

/**
 * Reply latencies of one stage on a log scale: bounded memory, percentiles within about 6 %.
 *
 * @example
 * ```ts
 * import { LatencyHistogram } from "./stats.ts";
 * import assert from "node:assert/strict";
 * const h = new LatencyHistogram();
 * for (let i = 1; i <= 100; i++) h.add(i);
 * const p50 = h.percentile(50);
 * assert.ok(p50 > 45 && p50 < 55);
 * ```
 */
export class LatencyHistogram {
  /** Number of latencies added. */
  count: number = 0;
  /** Their sum in ms. */
  totalMs: number = 0;
  /** The smallest, in ms. */
  minMs: number = Infinity;
  /** The largest, in ms. */
  maxMs: number = 0;
  /** Counts per bucket (see {@link LatencyHistogram.bucketBounds}). */
  readonly buckets: number[] = new Array<number>(BUCKETS).fill(0);

  /**
   * Adds one latency.
   *
   * @param ms Milliseconds (negative values count as 0).
   */
  add(ms: number): void {
    if (!Number.isFinite(ms)) return;
    ms = Math.max(0, ms);
    this.count++;
    this.totalMs += ms;
    this.minMs = Math.min(this.minMs, ms);
    this.maxMs = Math.max(this.maxMs, ms);
    const i = Math.floor((Math.log10(Math.max(ms, 10 ** LOW)) - LOW) * PER_DECADE);
    this.buckets[Math.min(BUCKETS - 1, Math.max(0, i))]!++;
  }

  /**
   * The lower and upper bound of bucket `i` in ms.
   *
   * @param i Bucket index.
   * @returns `[from, to)`.
   */
  static bucketBounds(i: number): [number, number] {
    return [10 ** (LOW + i / PER_DECADE), 10 ** (LOW + (i + 1) / PER_DECADE)];
  }

  /**
   * The latency below which `p` percent of them lie (geometric middle of its bucket, clamped
   * to the smallest and largest seen).
   *
   * @param p Percent, 0..100.
   * @returns Milliseconds (0 when empty).
   */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.buckets[i]!;
      if (seen >= rank) {
        const [a, b] = LatencyHistogram.bucketBounds(i);
        return Math.min(this.maxMs, Math.max(this.minMs, Math.sqrt(a * b)));
      }
    }
    return this.maxMs;
  }
}

/** Counts of message verdicts. */
export type VerdictCounts = Partial<Record<Outcome["kind"], number>>;

/** Slot widths a {@link VerdictSeries} coarsens through, in ms. */
const RESOLUTIONS = [1_000, 10_000, 60_000, 600_000, 3_600_000, 86_400_000, 604_800_000];
/** Most slots a {@link VerdictSeries} keeps before it coarsens. */
const MAX_SLOTS = 2000;

/**
 * Message verdicts over time in slots that widen (1 s, 10 s, 1 min, 10 min, 1 h, 1 day, 1 week)
 * when there would be more than 2000: bounded memory whatever the span.
 *
 * @example
 * ```ts
 * import { VerdictSeries } from "./stats.ts";
 * import assert from "node:assert/strict";
 * const v = new VerdictSeries();
 * v.add(1_000, "accept");
 * v.add(1_500, "reject");
 * assert.deepEqual(v.slots(), [{ start: 1_000, verdicts: { accept: 1, reject: 1 } }]);
 * ```
 */
export class VerdictSeries {
  #level = 0;
  #slots = new Map<number, VerdictCounts>();

  /** Width of a slot in ms. */
  get resolutionMs(): number {
    return RESOLUTIONS[this.#level]!;
  }

  /**
   * Counts one verdict at a time.
   *
   * @param time Milliseconds since the epoch.
   * @param kind The verdict.
   */
  add(time: number, kind: Outcome["kind"], n = 1): void {
    const r = this.resolutionMs;
    const start = Math.floor(time / r) * r;
    let slot = this.#slots.get(start);
    if (slot === undefined) {
      slot = {};
      this.#slots.set(start, slot);
    }
    bump(slot, kind, n);
    while (this.#slots.size > MAX_SLOTS && this.#level < RESOLUTIONS.length - 1) this.#coarsen();
  }

  #coarsen(): void {
    const old = this.#slots;
    this.#level++;
    this.#slots = new Map();
    for (const [start, counts] of old) {
      for (const [k, n] of Object.entries(counts)) this.add(start, k as Outcome["kind"], n);
    }
  }

  /**
   * The slots in time order.
   *
   * @returns Start (ms) and counts per slot.
   */
  slots(): { start: number; verdicts: VerdictCounts }[] {
    return [...this.#slots].sort((a, b) => a[0] - b[0]).map(([start, verdicts]) => ({
      start,
      verdicts: { ...verdicts },
    }));
  }
}

/** What {@link DumpStats.result} returns (plain data, ready for JSON). */
export interface StatsResult {
  /** Sessions seen. */
  readonly sessions: number;
  /** Messages (MAIL..EOM or ABORT) seen. */
  readonly messages: number;
  /** Recipients seen. */
  readonly recipients: number;
  /** Time of the first and last frame (ms since the epoch), when known. */
  readonly from?: number;
  /** See `from`. */
  readonly to?: number;
  /** Message verdicts. */
  readonly verdicts: VerdictCounts;
  /** Connection-level decisions (at CONNECT or HELO), for sessions that had them. */
  readonly connectionVerdicts: VerdictCounts;
  /** `verdict@stage` counts of messages (`reject@rcpt` is not one: see recipients). */
  readonly byStage: Readonly<Record<string, number>>;
  /** Recipient decisions other than continue, `verdict` counts. */
  readonly recipientVerdicts: VerdictCounts;
  /** Reject and tempfail reasons (reply text, or the bare verdict), most frequent first. */
  readonly reasons: readonly { reason: string; count: number }[];
  /** Reply latency per stage. */
  readonly latency: Readonly<
    Record<
      string,
      { count: number; meanMs: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number }
    >
  >;
  /** Per hour (ISO, `2026-11-29T14:00Z`): messages, body bytes and message verdicts. */
  readonly hours: readonly {
    hour: string;
    messages: number;
    bodyBytes: number;
    verdicts: VerdictCounts;
  }[];
  /** Protocol checker findings in all. */
  readonly issues: number;
}

const HOUR = 3_600_000;

function bump<K extends string>(o: Partial<Record<K, number>>, k: K, n = 1): void {
  o[k] = (o[k] ?? 0) + n;
}

/** Rounds to 3 significant digits for reports. */
function round(ms: number): number {
  return ms === 0 ? 0 : Number(ms.toPrecision(3));
}

/**
 * Gathers statistics from sessions as they are read.
 *
 * @example
 * ```ts
 * import { DumpStats } from "./stats.ts";
 * const stats = new DumpStats();
 * // for each SessionReport r (with events, for latencies): stats.add(r);
 * console.log(stats.result().messages); // 0
 * ```
 */
export class DumpStats {
  #sessions = 0;
  #messages = 0;
  #recipients = 0;
  #issues = 0;
  #from: number | undefined;
  #to: number | undefined;
  readonly #verdicts: VerdictCounts = {};
  readonly #connection: VerdictCounts = {};
  readonly #byStage: Record<string, number> = {};
  readonly #rcpt: VerdictCounts = {};
  readonly #reasons = new Map<string, number>();
  /** Latency histograms by stage. */
  readonly latency: Map<string, LatencyHistogram> = new Map();
  /** Message verdicts over time. */
  readonly series: VerdictSeries = new VerdictSeries();
  /** Per hour start (ms): messages, bytes, verdicts. */
  readonly #hours = new Map<
    number,
    { messages: number; bodyBytes: number; verdicts: VerdictCounts }
  >();

  /**
   * Adds one session.
   *
   * @param r The session; its events (when kept) give the latencies.
   */
  add(r: SessionReport): void {
    const s = r.summary;
    this.#sessions++;
    this.#issues += s.issues.length;
    for (const t of [s.startTime, s.endTime]) {
      if (t === undefined || Number.isNaN(t)) continue;
      this.#from = Math.min(this.#from ?? t, t);
      this.#to = Math.max(this.#to ?? t, t);
    }
    if (s.outcome !== undefined) {
      bump(this.#connection, s.outcome.kind);
      this.#reason(s.outcome);
    }
    for (const m of s.messages) {
      this.#messages++;
      bump(this.#verdicts, m.outcome.kind);
      bump(this.#byStage, `${m.outcome.kind}@${m.outcome.stage}`);
      this.#reason(m.outcome);
      for (const rc of m.recipients) {
        this.#recipients++;
        if (rc.outcome !== undefined && rc.outcome.kind !== "accept") {
          bump(this.#rcpt, rc.outcome.kind);
          this.#reason(rc.outcome);
        }
      }
      const t = m.startTime ?? s.startTime;
      if (t !== undefined && !Number.isNaN(t)) {
        const h = Math.floor(t / HOUR) * HOUR;
        let slot = this.#hours.get(h);
        if (slot === undefined) {
          slot = { messages: 0, bodyBytes: 0, verdicts: {} };
          this.#hours.set(h, slot);
        }
        slot.messages++;
        slot.bodyBytes += m.bodySize;
        bump(slot.verdicts, m.outcome.kind);
        this.series.add(t, m.outcome.kind);
      }
    }
    for (const e of r.events) {
      if (e.latencyMs === undefined || e.final === false) continue;
      let h = this.latency.get(e.stage);
      if (h === undefined) {
        h = new LatencyHistogram();
        this.latency.set(e.stage, h);
      }
      h.add(e.latencyMs);
    }
  }

  #reason(o: Outcome): void {
    if (o.kind !== "reject" && o.kind !== "tempfail") return;
    const reason = o.text !== undefined && o.text !== "" ? o.text.slice(0, 200) : o.kind;
    this.#reasons.set(reason, (this.#reasons.get(reason) ?? 0) + 1);
  }

  /**
   * The statistics so far.
   *
   * @param topReasons How many reasons to list (default 10).
   * @returns Plain data.
   */
  result(topReasons = 10): StatsResult {
    const latency: Record<string, StatsResult["latency"][string]> = {};
    for (const [stage, h] of this.latency) {
      latency[stage] = {
        count: h.count,
        meanMs: round(h.totalMs / Math.max(1, h.count)),
        p50Ms: round(h.percentile(50)),
        p90Ms: round(h.percentile(90)),
        p99Ms: round(h.percentile(99)),
        maxMs: round(h.maxMs),
      };
    }
    return {
      sessions: this.#sessions,
      messages: this.#messages,
      recipients: this.#recipients,
      ...(this.#from !== undefined ? { from: this.#from, to: this.#to! } : {}),
      verdicts: { ...this.#verdicts },
      connectionVerdicts: { ...this.#connection },
      byStage: { ...this.#byStage },
      recipientVerdicts: { ...this.#rcpt },
      reasons: [...this.#reasons].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
        .slice(0, topReasons).map(([reason, count]) => ({ reason, count })),
      latency,
      hours: [...this.#hours].sort((a, b) => a[0] - b[0]).map(([h, v]) => ({
        hour: new Date(h).toISOString().slice(0, 13) + ":00Z",
        messages: v.messages,
        bodyBytes: v.bodyBytes,
        verdicts: { ...v.verdicts },
      })),
      issues: this.#issues,
    };
  }
}

/** Stages in protocol order (the protocol's event table, with OPTNEG, EOM and ABORT). */
export const STAGE_ORDER: readonly string[] = [
  "optneg",
  ...(Object.keys(NO_EVENT_BIT) as CommandType[]).flatMap((k) => {
    const stage = stageOf(k) ?? k;
    return stage === "body" ? ["body", "eom"] : [stage];
  }),
  "abort",
];

/** Sorts stage names in protocol order (unknown names last, alphabetically). */
export function byStageOrder(a: string, b: string): number {
  const i = STAGE_ORDER.indexOf(a);
  const j = STAGE_ORDER.indexOf(b);
  return (i < 0 ? 99 : i) - (j < 0 ? 99 : j) || (a < b ? -1 : a > b ? 1 : 0);
}

function pct(n: number, of: number): string {
  return of === 0 ? "" : ` (${((100 * n) / of).toFixed(1)} %)`;
}

/**
 * Renders statistics as text.
 *
 * @param s The statistics.
 * @returns Lines ending with a newline.
 *
 * @example
 * ```ts
 * import { DumpStats, renderStats } from "./stats.ts";
 * console.log(renderStats(new DumpStats().result()));
 * ```
 */
export function renderStats(s: StatsResult): string {
  const out: string[] = [];
  const span = s.from !== undefined
    ? `, ${new Date(s.from).toISOString()} to ${new Date(s.to!).toISOString()}`
    : "";
  out.push(`${s.sessions} sessions, ${s.messages} messages, ${s.recipients} recipients${span}`);
  out.push("", "verdicts (messages):");
  const kinds = Object.entries(s.verdicts).sort((a, b) => b[1] - a[1]);
  for (const [k, n] of kinds) {
    out.push(`  ${k.padEnd(12)} ${String(n).padStart(8)}${pct(n, s.messages)}`);
  }
  if (kinds.length === 0) out.push("  (none)");
  const conn = Object.entries(s.connectionVerdicts);
  if (conn.length > 0) {
    out.push("", "connection-level decisions (at CONNECT or HELO):");
    for (const [k, n] of conn) out.push(`  ${k.padEnd(12)} ${String(n).padStart(8)}`);
  }
  const rc = Object.entries(s.recipientVerdicts);
  if (rc.length > 0) {
    out.push("", "recipients refused:");
    for (const [k, n] of rc) {
      out.push(`  ${k.padEnd(12)} ${String(n).padStart(8)}${pct(n, s.recipients)}`);
    }
  }
  out.push("", "by stage (message verdict@stage that decided):");
  const stages = Object.entries(s.byStage).sort((a, b) =>
    byStageOrder(a[0].split("@")[1]!, b[0].split("@")[1]!) || b[1] - a[1]
  );
  for (const [k, n] of stages) out.push(`  ${k.padEnd(20)} ${String(n).padStart(8)}`);
  if (s.reasons.length > 0) {
    out.push("", "top reject/tempfail reasons:");
    for (const r of s.reasons) out.push(`  ${String(r.count).padStart(8)}  ${r.reason}`);
  }
  out.push("", "reply latency per stage (ms):");
  out.push(
    `  ${"stage".padEnd(8)} ${"count".padStart(8)} ${"mean".padStart(8)} ${"p50".padStart(8)} ${
      "p90".padStart(8)
    } ${"p99".padStart(8)} ${"max".padStart(8)}`,
  );
  for (const stage of Object.keys(s.latency).sort(byStageOrder)) {
    const l = s.latency[stage]!;
    out.push(
      `  ${stage.padEnd(8)} ${String(l.count).padStart(8)} ${String(l.meanMs).padStart(8)} ${
        String(l.p50Ms).padStart(8)
      } ${String(l.p90Ms).padStart(8)} ${String(l.p99Ms).padStart(8)} ${
        String(l.maxMs).padStart(8)
      }`,
    );
  }
  if (s.hours.length > 0) {
    out.push("", "per hour (UTC):");
    for (const h of s.hours) {
      const v = Object.entries(h.verdicts).map(([k, n]) => `${k} ${n}`).join(", ");
      out.push(
        `  ${h.hour}  ${String(h.messages).padStart(7)} messages ${
          String(Math.round(h.bodyBytes / 1024)).padStart(9)
        } KiB  ${v}`,
      );
    }
  }
  out.push("", `protocol issues: ${s.issues}`);
  return out.join("\n") + "\n";
}
