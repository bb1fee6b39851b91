/**
 * Server counters (connections, messages, verdicts, errors, handler latency) readable as an
 * object and in the Prometheus text exposition format.
 *
 * @module
 */

/** Latency histogram bucket bounds, in seconds. */
const BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30] as const;

/** One latency histogram. */
export interface Histogram {
  /** Counts per bucket bound (cumulative, like Prometheus), same order as `bounds`. */
  readonly counts: number[];
  /** Bucket upper bounds in seconds. */
  readonly bounds: readonly number[];
  /** Observations. */
  count: number;
  /** Sum of observed seconds. */
  sum: number;
}

/** Every counter of a {@link Metrics} as plain data, as {@link Metrics.data} returns it. */
export interface MetricsData {
  /** Connections accepted. */
  readonly connections: number;
  /** Connections open. */
  readonly active: number;
  /** Connections refused at the limit. */
  readonly refused: number;
  /** Messages that reached a verdict. */
  readonly messages: number;
  /** Final replies per kind. */
  readonly verdicts: Readonly<Record<string, number>>;
  /** Errors per kind. */
  readonly errors: Readonly<Record<string, number>>;
  /** Handler latency per stage: cumulative bucket counts (bounds as in {@link Histogram}). */
  readonly handlerLatency: Readonly<
    Record<
      string,
      { readonly counts: readonly number[]; readonly count: number; readonly sum: number }
    >
  >;
  /** Largest recent event-loop lag, seconds. */
  readonly eventLoopLag: number;
  /** Times the event loop was blocked past the threshold. */
  readonly eventLoopBlocks: number;
  /** Seconds blocked past the threshold. */
  readonly eventLoopBlockedSeconds: number;
}

/**
 * Counters of a milter server.
 *
 * @example
 * ```ts
 * import { Metrics } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * const m = new Metrics();
 * m.connectionOpened();
 * m.verdict("reject");
 * m.latency("eom", 0.02);
 * assert.equal(m.snapshot().verdicts.reject, 1);
 * assert.match(m.prometheus(), /milterkit_verdicts_total\{verdict="reject"\} 1/);
 * ```
 */
export class Metrics {
  /** Connections accepted since start. */
  connections = 0;
  /** Connections open now. */
  active = 0;
  /** Connections refused because of the connection limit. */
  refused = 0;
  /** Messages that reached a verdict. */
  messages = 0;
  /** Final replies per kind (continue, accept, reject, tempfail, discard, replycode, …). */
  readonly verdicts: Record<string, number> = {};
  /** Errors per kind (handler, protocol, negotiation, timeout, connection). */
  readonly errors: Record<string, number> = {};
  /** Handler latency per stage. */
  readonly handlerLatency: Record<string, Histogram> = {};
  /** Largest event-loop lag seen lately, in seconds (see `lib/server/loop_watch.ts`). */
  eventLoopLag = 0;
  /** Times the event loop was blocked past the warning threshold. */
  eventLoopBlocks = 0;
  /** Seconds the event loop spent blocked past the threshold, in total. */
  eventLoopBlockedSeconds = 0;

  /** Counts an accepted connection. */
  connectionOpened(): void {
    this.connections++;
    this.active++;
  }

  /** Counts a closed connection. */
  connectionClosed(): void {
    this.active--;
  }

  /** Counts a final reply (at any stage). */
  verdict(kind: string): void {
    this.verdicts[kind] = (this.verdicts[kind] ?? 0) + 1;
  }

  /** Counts an error of a kind. */
  error(kind: string): void {
    this.errors[kind] = (this.errors[kind] ?? 0) + 1;
  }

  /** Records how long a stage's handler took, in seconds. */
  latency(stage: string, seconds: number): void {
    const h = this.handlerLatency[stage] ??= {
      counts: BUCKETS.map(() => 0),
      bounds: BUCKETS,
      count: 0,
      sum: 0,
    };
    h.count++;
    h.sum += seconds;
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) h.counts[i]!++;
  }

  /**
   * Adds another server's counters to these (workers of one `serve`): counters and histograms
   * add up, the event-loop lag is the largest of the two.
   *
   * @param other Counters as {@link Metrics.data} returns them (they travel as JSON).
   *
   * @example
   * ```ts
   * import { Metrics } from "@milterkit/milterkit";
   * import assert from "node:assert/strict";
   * const a = new Metrics(), b = new Metrics();
   * a.messages = 2;
   * b.messages = 3;
   * b.latency("eom", 0.02);
   * const sum = new Metrics();
   * sum.add(a.data());
   * sum.add(b.data());
   * assert.equal(sum.messages, 5);
   * assert.equal(sum.handlerLatency.eom?.count, 1);
   * ```
   */
  add(other: MetricsData): void {
    this.connections += other.connections;
    this.active += other.active;
    this.refused += other.refused;
    this.messages += other.messages;
    for (const [k, v] of Object.entries(other.verdicts)) {
      this.verdicts[k] = (this.verdicts[k] ?? 0) + v;
    }
    for (const [k, v] of Object.entries(other.errors)) this.errors[k] = (this.errors[k] ?? 0) + v;
    for (const [stage, h] of Object.entries(other.handlerLatency)) {
      const mine = this.handlerLatency[stage] ??= {
        counts: BUCKETS.map(() => 0),
        bounds: BUCKETS,
        count: 0,
        sum: 0,
      };
      mine.count += h.count;
      mine.sum += h.sum;
      h.counts.forEach((c, i) => (mine.counts[i] = (mine.counts[i] ?? 0) + c));
    }
    this.eventLoopLag = Math.max(this.eventLoopLag, other.eventLoopLag);
    this.eventLoopBlocks += other.eventLoopBlocks;
    this.eventLoopBlockedSeconds += other.eventLoopBlockedSeconds;
  }

  /** Every counter, histogram buckets included, as plain data (JSON-safe; see {@link add}). */
  data(): MetricsData {
    return {
      ...this.snapshot(),
      handlerLatency: Object.fromEntries(
        Object.entries(this.handlerLatency).map((
          [k, h],
        ) => [k, { counts: [...h.counts], count: h.count, sum: h.sum }]),
      ),
      eventLoopLag: this.eventLoopLag,
      eventLoopBlocks: this.eventLoopBlocks,
      eventLoopBlockedSeconds: this.eventLoopBlockedSeconds,
    };
  }

  /** A plain copy of every counter. */
  snapshot(): {
    connections: number;
    active: number;
    refused: number;
    messages: number;
    verdicts: Record<string, number>;
    errors: Record<string, number>;
    handlerLatency: Record<string, { count: number; sum: number }>;
  } {
    return {
      connections: this.connections,
      active: this.active,
      refused: this.refused,
      messages: this.messages,
      verdicts: { ...this.verdicts },
      errors: { ...this.errors },
      handlerLatency: Object.fromEntries(
        Object.entries(this.handlerLatency).map(([k, h]) => [k, { count: h.count, sum: h.sum }]),
      ),
    };
  }

  /** The counters in Prometheus text format (version 0.0.4). */
  prometheus(): string {
    const out: string[] = [];
    const counter = (name: string, help: string, value: number, type = "counter") => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`);
    };
    counter("milterkit_connections_total", "Milter connections accepted.", this.connections);
    counter("milterkit_connections_active", "Milter connections open now.", this.active, "gauge");
    counter("milterkit_connections_refused_total", "Connections over the limit.", this.refused);
    counter("milterkit_messages_total", "Messages that reached a verdict.", this.messages);
    out.push("# HELP milterkit_verdicts_total Final replies sent, by kind.");
    out.push("# TYPE milterkit_verdicts_total counter");
    for (const [k, v] of Object.entries(this.verdicts)) {
      out.push(`milterkit_verdicts_total{verdict="${k}"} ${v}`);
    }
    out.push("# HELP milterkit_errors_total Errors, by kind.");
    out.push("# TYPE milterkit_errors_total counter");
    for (const [k, v] of Object.entries(this.errors)) {
      out.push(`milterkit_errors_total{kind="${k}"} ${v}`);
    }
    counter(
      "milterkit_event_loop_lag_seconds",
      "Largest event-loop delay in the last 10 s (a CPU-bound handler shows here).",
      this.eventLoopLag,
      "gauge",
    );
    counter(
      "milterkit_event_loop_blocks_total",
      "Times the event loop was blocked past the warning threshold.",
      this.eventLoopBlocks,
    );
    counter(
      "milterkit_event_loop_blocked_seconds_total",
      "Time the event loop spent blocked past the threshold.",
      this.eventLoopBlockedSeconds,
    );
    out.push("# HELP milterkit_handler_seconds Time filter handlers took, by stage.");
    out.push("# TYPE milterkit_handler_seconds histogram");
    for (const [stage, h] of Object.entries(this.handlerLatency)) {
      h.bounds.forEach((b, i) => {
        out.push(`milterkit_handler_seconds_bucket{stage="${stage}",le="${b}"} ${h.counts[i]}`);
      });
      out.push(`milterkit_handler_seconds_bucket{stage="${stage}",le="+Inf"} ${h.count}`);
      out.push(`milterkit_handler_seconds_sum{stage="${stage}"} ${h.sum}`);
      out.push(`milterkit_handler_seconds_count{stage="${stage}"} ${h.count}`);
    }
    return out.join("\n") + "\n";
  }
}
