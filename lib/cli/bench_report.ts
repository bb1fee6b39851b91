/**
 * What `milterkit bench` prints: latency quantiles (rounded for JSON), a latency histogram in
 * text, and the `--html` page.
 *
 * @module
 */

import { LatencyHistogram } from "../inspect/stats.ts";
import {
  fmtMs,
  histogramFigure,
  htmlPage,
  htmlTable,
  statCards,
  verdictHex,
} from "../inspect/report_html.ts";
import { paint, verdictColor } from "../server/colors.ts";
import { formatSocketSpec, type SocketAddress } from "../server/socket_spec.ts";

/** Latency samples of one stage, in milliseconds. */
export class Samples {
  readonly values: number[] = [];
  add(ms: number): void {
    this.values.push(ms);
  }
  /** Exact quantiles, rounded to the microsecond. */
  quantiles(): { count: number; p50: number; p90: number; p99: number; max: number } {
    const v = this.values.sort((a, b) => a - b);
    const q = (p: number) => v.length ? v[Math.min(v.length - 1, Math.floor(p * v.length))]! : 0;
    return {
      count: v.length,
      p50: round3(q(0.5)),
      p90: round3(q(0.9)),
      p99: round3(q(0.99)),
      max: round3(v.at(-1) ?? 0),
    };
  }
  /** The samples as a log-scale histogram. */
  histogram(): LatencyHistogram {
    const h = new LatencyHistogram();
    for (const v of this.values) h.add(v);
    return h;
  }
}

/** Rounds to 3 decimals (milliseconds to the microsecond). */
export function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** Histogram rows: at most `rows` ranges between the fastest and slowest sample. */
export function histogramRows(
  h: LatencyHistogram,
  rows = 12,
): { fromMs: number; toMs: number; count: number }[] {
  const nz = h.buckets.flatMap((n, i) => (n > 0 ? [i] : []));
  if (nz.length === 0) return [];
  const lo = nz[0]!;
  const hi = nz.at(-1)!;
  const per = Math.max(1, Math.ceil((hi - lo + 1) / rows));
  const out: { fromMs: number; toMs: number; count: number }[] = [];
  for (let i = lo; i <= hi; i += per) {
    let count = 0;
    for (let j = i; j < Math.min(hi + 1, i + per); j++) count += h.buckets[j]!;
    out.push({
      fromMs: Number(LatencyHistogram.bucketBounds(i)[0].toPrecision(3)),
      toMs: Number(LatencyHistogram.bucketBounds(Math.min(hi, i + per - 1))[1].toPrecision(3)),
      count,
    });
  }
  return out;
}

/** The histogram as text: one bar per range. */
export function renderHistogram(h: LatencyHistogram, width = 40): string[] {
  const rows = histogramRows(h);
  const max = Math.max(1, ...rows.map((r) => r.count));
  return rows.map((r) =>
    `  ${`${fmtMs(r.fromMs)} – ${fmtMs(r.toMs)}`.padStart(22)}  ${
      "█".repeat(Math.round((r.count / max) * width)).padEnd(width)
    } ${String(r.count).padStart(7)} ${((100 * r.count) / h.count).toFixed(1).padStart(5)} %`
  );
}

/** The result of a bench run, as printed with `--json`. */
export interface BenchResult {
  readonly connect: SocketAddress;
  readonly connections: number;
  readonly seconds: number;
  readonly messages: number;
  readonly messagesPerSecond: number;
  readonly message: ReturnType<Samples["quantiles"]>;
  readonly stages: Record<string, ReturnType<Samples["quantiles"]>>;
  readonly histogram: ReturnType<typeof histogramRows>;
  readonly verdicts: Record<string, number>;
  readonly errors: Record<string, number>;
}

/** The text report. */
export function renderBenchText(
  r: BenchResult,
  message: LatencyHistogram,
  color: boolean,
): string {
  const f = (x: number) => x.toFixed(2).padStart(8);
  return [
    `${r.messages} messages in ${
      r.seconds.toFixed(1)
    } s over ${r.connections} connections: ${r.messagesPerSecond} msg/s`,
    `verdicts: ${
      Object.entries(r.verdicts).map(([k, v]) => `${paint(verdictColor(k), k, color)} ${v}`)
        .join(", ") || "none"
    }` +
    (Object.keys(r.errors).length
      ? `; errors: ${Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(", ")}`
      : ""),
    `latency ms      count      p50      p90      p99      max`,
    ...[["message", r.message] as const, ...Object.entries(r.stages)].map(([k, q]) =>
      `${k.padEnd(10)} ${String(q.count).padStart(9)} ${f(q.p50)} ${f(q.p90)} ${f(q.p99)} ${
        f(q.max)
      }`
    ),
    "message latency:",
    ...renderHistogram(message),
  ].join("\n") + "\n";
}

/** The `--html` page: cards, the quantile table and a histogram per stage. */
export function renderBenchHtml(
  r: BenchResult,
  histograms: ReadonlyMap<string, LatencyHistogram>,
): string {
  const rows = [["message", r.message] as const, ...Object.entries(r.stages)].map(([k, q]) => [
    k,
    String(q.count),
    fmtMs(q.p50),
    fmtMs(q.p90),
    fmtMs(q.p99),
    fmtMs(q.max),
  ]);
  const figures = [...histograms].map(([k, h]) => histogramFigure(k, h)).join("");
  return htmlPage(
    "milterkit bench",
    `${
      formatSocketSpec(r.connect)
    }: ${r.messages} messages in ${r.seconds} s over ${r.connections} connections`,
    `<section class="cards">${
      statCards([
        ["messages/s", r.messagesPerSecond],
        ["messages", r.messages],
        ["connections", r.connections],
        ...Object.entries(r.verdicts).map(([k, v]) =>
          [k, v, verdictHex(k)] as [string, number, string]
        ),
        ["errors", Object.values(r.errors).reduce((a, b) => a + b, 0)],
      ])
    }</section>
<section><h2>Latency (from sending a command to the filter's final answer)</h2>${
      htmlTable(["", "count", "p50", "p90", "p99", "max"], rows, [1, 2, 3, 4, 5])
    }<div class="hists">${figures}</div></section>`,
  );
}
