/**
 * The HTML report of `dump --html FILE`: one self-contained page (inline CSS, inline SVG charts,
 * a small inline script, no external resource) with the statistics of {@link DumpStats},
 * verdicts over time, a reply-latency histogram per stage and a session timeline viewer over a
 * sample of the sessions (the first ones and those not accepted).
 *
 * @module
 */

import type { Outcome } from "./annotate/types.ts";
import { describeDecoded } from "./annotate/render.ts";
import { describeOutcome, type SessionReport } from "./timeline.ts";
import { type AnsiColor, verdictColor } from "../server/colors.ts";
import {
  byStageOrder,
  DumpStats,
  LatencyHistogram,
  type StatsResult,
  type VerdictCounts,
} from "./stats.ts";

/** The terminal palette's colours as the report draws them. */
const HEX: Readonly<Record<AnsiColor, string>> = {
  green: "#2e9d4f",
  red: "#d64541",
  yellow: "#e0a526",
  magenta: "#9b59b6",
  blue: "#3b7dd8",
  cyan: "#5dade2",
  dim: "#95a5a6",
  bold: "#1d2733",
};

/** Verdict colours of the report: the toolkit's one palette ({@link verdictColor}). */
const COLORS: Readonly<Record<Outcome["kind"], string>> = Object.fromEntries(
  (["accept", "reject", "tempfail", "discard", "shutdown", "aborted", "incomplete"] as const)
    .map((k) => [k, HEX[verdictColor(k)]]),
) as Record<Outcome["kind"], string>;
const KINDS = Object.keys(COLORS) as Outcome["kind"][];

/** A session as the timeline viewer shows it. */
interface SampledSession {
  id: string;
  start: number | null;
  peers: string;
  verdicts: string[];
  /** [ms since the session's first frame, "c"|"r", stage, text, latency ms or null]. */
  events: [number, string, string, string, number | null][];
  more: number;
}

/** Options of {@link HtmlReport}. */
export interface HtmlReportOptions {
  /** The report's title (e.g. the files read). */
  readonly title?: string;
  /** Sessions kept for the viewer from the start of the input (default 100). */
  readonly firstSessions?: number;
  /** Sessions not accepted kept for the viewer besides those (default 100). */
  readonly notAccepted?: number;
  /** Events kept per sampled session (default 400). */
  readonly eventsPerSession?: number;
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * Builds the HTML report from sessions as they are read; keeps the statistics and a bounded
 * sample of sessions, never the whole input.
 *
 * @example
 * ```ts
 * import { HtmlReport } from "./report_html.ts";
 * import assert from "node:assert/strict";
 * const report = new HtmlReport({ title: "empty" });
 * assert.match(report.html(), /^<!doctype html>/);
 * ```
 */
export class HtmlReport {
  /** The statistics gathered so far. */
  readonly stats: DumpStats = new DumpStats();
  readonly #sample: SampledSession[] = [];
  readonly #title: string;
  readonly #first: number;
  readonly #notAccepted: number;
  readonly #perSession: number;
  #seen = 0;
  #kept = 0;

  /**
   * Creates an empty report.
   *
   * @param options Title and sample sizes.
   */
  constructor(options: HtmlReportOptions = {}) {
    this.#title = options.title ?? "milterkit dump report";
    this.#first = options.firstSessions ?? 100;
    this.#notAccepted = options.notAccepted ?? 100;
    this.#perSession = options.eventsPerSession ?? 400;
  }

  /**
   * Adds one session (with its events, for latencies and the viewer).
   *
   * @param r The session.
   */
  add(r: SessionReport): void {
    this.stats.add(r);
    const s = r.summary;
    const verdicts = s.messages.map((m) => m.outcome.kind as string);
    if (s.outcome !== undefined) verdicts.unshift(`connection ${s.outcome.kind}`);
    const interesting = s.issues.length > 0 || s.outcome !== undefined ||
      s.messages.some((m) => m.outcome.kind !== "accept");
    const keep = this.#seen++ < this.#first || (interesting && this.#kept++ < this.#notAccepted);
    if (!keep) return;
    const t0 = s.startTime ?? r.events.find((e) => e.time !== undefined)?.time ?? 0;
    const events = r.events.filter((e) => !(e.direction === "to-filter" && e.stage === "macro"));
    this.#sample.push({
      id: r.id,
      start: s.startTime ?? null,
      peers: r.mta || r.filter ? `${r.mta ?? "?"} → ${r.filter ?? "?"}` : "",
      verdicts: [
        ...(s.outcome !== undefined ? [`connection: ${describeOutcome(s.outcome)}`] : []),
        ...s.messages.map((m) =>
          `message ${m.index + 1} ${m.sender ?? ""} → ${
            m.recipients.map((x) => x.address).join(" ")
          }: ${describeOutcome(m.outcome)}`
        ),
      ],
      events: events.slice(0, this.#perSession).map((e) => [
        e.time === undefined ? 0 : Math.round((e.time - t0) * 1000) / 1000,
        e.direction === "to-filter" ? "c" : "r",
        e.stage,
        ("error" in e.decoded ? `(${e.decoded.error})` : describeDecoded(e.decoded, e.direction))
          .slice(0, 160),
        e.latencyMs === undefined ? null : Math.round(e.latencyMs * 1000) / 1000,
      ]),
      more: Math.max(0, events.length - this.#perSession),
    });
  }

  /**
   * The page.
   *
   * @returns A complete HTML document.
   */
  html(): string {
    const s = this.stats.result();
    const data = JSON.stringify(this.#sample).replace(/</g, "\\u003c");
    return htmlPage(
      this.#title,
      span(s),
      `<section class="cards">${cards(s)}</section>
<section><h2>Verdicts over time</h2>${this.#timeChart()}</section>
<section class="two">
<div><h2>Verdicts by stage</h2>${stageTable(s)}</div>
<div><h2>Top reject and tempfail reasons</h2>${reasonsTable(s)}</div>
</section>
<section><h2>Reply latency per stage</h2>${
        latencyTable(s)
      }<div class="hists">${this.#histograms()}</div></section>
<section><h2>Volume per hour (UTC)</h2>${hoursTable(s)}</section>
<section><h2>Sessions</h2>
<p class="sub">${this.#sample.length} of ${s.sessions} sessions: the first ${this.#first} and up to ${this.#notAccepted} not accepted.</p>
<div class="viewer"><select id="session-list" size="16" aria-label="sessions"></select>
<div id="session-view"><p class="sub">Pick a session.</p></div></div></section>`,
      `<script id="sessions" type="application/json">${data}</script>\n<script>${SCRIPT}</script>`,
    );
  }

  #timeChart(): string {
    const slots = this.stats.series.slots();
    if (slots.length === 0) return `<p class="sub" id="verdicts-chart">No messages with times.</p>`;
    const res = this.stats.series.resolutionMs;
    // at most 96 bars: merge slots into wider bars when there are more
    const first = slots[0]!.start;
    const last = slots.at(-1)!.start;
    const wanted = (last - first + res) / 96;
    const width = NICE.find((w) => w >= wanted && w % res === 0) ??
      Math.ceil(wanted / res) * res;
    const bars = new Map<number, VerdictCounts>();
    for (const sl of slots) {
      const b = Math.floor((sl.start - first) / width);
      const c = bars.get(b) ?? {};
      for (const [k, n] of Object.entries(sl.verdicts)) {
        c[k as Outcome["kind"]] = (c[k as Outcome["kind"]] ?? 0) + n;
      }
      bars.set(b, c);
    }
    const count = Math.floor((last - first) / width) + 1;
    const total = (c: VerdictCounts) => Object.values(c).reduce((a, b) => a + (b ?? 0), 0);
    const max = Math.max(1, ...[...bars.values()].map(total));
    const W = 900;
    const H = 220;
    const left = 44;
    const bottom = 28;
    const bw = (W - left - 8) / count;
    const y = (v: number) => (H - bottom) - (v / max) * (H - bottom - 10);
    const parts: string[] = [];
    for (const [b, c] of bars) {
      let acc = 0;
      for (const k of KINDS) {
        const n = c[k] ?? 0;
        if (n === 0) continue;
        const y1 = y(acc + n);
        const y0 = y(acc);
        acc += n;
        parts.push(
          `<rect class="bar" data-kind="${k}" data-count="${n}" x="${
            (left + b * bw + 1).toFixed(1)
          }" y="${y1.toFixed(1)}" width="${Math.max(1, bw - 2).toFixed(1)}" height="${
            Math.max(0.5, y0 - y1).toFixed(1)
          }" fill="${COLORS[k]}"><title>${
            esc(new Date(first + b * width).toISOString())
          }: ${n} ${k}</title></rect>`,
        );
      }
    }
    const ticks = [0, 0.5, 1].map((f) => Math.round(max * f));
    const axis = ticks.map((t) =>
      `<text x="${left - 6}" y="${y(t) + 4}" text-anchor="end">${t}</text><line x1="${left}" x2="${
        W - 8
      }" y1="${y(t)}" y2="${y(t)}" class="grid"/>`
    ).join("");
    const labels = [0, Math.floor((count - 1) / 2), count - 1].filter((v, i, a) =>
      a.indexOf(v) === i
    )
      .map((b, i, all) =>
        `<text x="${left + b * bw + bw / 2}" y="${H - 8}" text-anchor="${
          i === 0 ? "start" : i === all.length - 1 ? "end" : "middle"
        }">${esc(label(first + b * width, width))}</text>`
      ).join("");
    const seen = new Set(slots.flatMap((sl) => Object.keys(sl.verdicts)));
    const legend = KINDS.filter((k) => seen.has(k)).map((k) =>
      `<span class="key"><i style="background:${COLORS[k]}"></i>${k}</span>`
    ).join("");
    return `<svg id="verdicts-chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="verdicts over time">${axis}${
      parts.join("")
    }${labels}</svg><p class="legend">${legend} <span class="sub">one bar per ${
      esc(duration(width))
    }</span></p>`;
  }

  #histograms(): string {
    const figures = [...this.stats.latency.keys()].sort(byStageOrder)
      .map((stage) => histogramFigure(stage, this.stats.latency.get(stage)!));
    return figures.join("") || `<p class="sub">No replies with latencies.</p>`;
  }
}

/**
 * A page of the toolkit's reports: inline CSS, a header, the sections, optional scripts.
 *
 * @param title The title and heading.
 * @param subtitle The line under the heading.
 * @param sections HTML of the `<section>`s.
 * @param scripts HTML of inline `<script>`s after them.
 * @returns A complete, self-contained HTML document.
 */
export function htmlPage(title: string, subtitle: string, sections: string, scripts = ""): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${CSS}</style></head>
<body>
<header><h1>${esc(title)}</h1><p class="sub">${esc(subtitle)}</p></header>
<main>
${sections}
</main>
${scripts}
</body></html>
`;
}

/**
 * A latency histogram as an inline SVG figure (log scale, the non-empty range).
 *
 * @param label What it measures (a stage, `message`).
 * @param h The histogram.
 * @returns A `<figure class="hist">`, or an empty string for an empty histogram.
 */
export function histogramFigure(label: string, h: LatencyHistogram): string {
  const nz = h.buckets.map((n, i) => [n, i] as const).filter(([n]) => n > 0);
  if (nz.length === 0) return "";
  const lo = Math.max(0, nz[0]![1] - 2);
  const hi = Math.min(h.buckets.length - 1, nz.at(-1)![1] + 2);
  const W = 280;
  const H = 120;
  const bw = (W - 10) / (hi - lo + 1);
  const max = Math.max(...h.buckets.slice(lo, hi + 1));
  const bars = h.buckets.slice(lo, hi + 1).map((n, j) => {
    if (n === 0) return "";
    const [a, b] = LatencyHistogram.bucketBounds(lo + j);
    const bh = (n / max) * (H - 30);
    return `<rect class="bar" data-count="${n}" x="${(5 + j * bw).toFixed(1)}" y="${
      (H - 20 - bh).toFixed(1)
    }" width="${Math.max(1, bw - 1).toFixed(1)}" height="${bh.toFixed(1)}"><title>${
      esc(`${fmtMs(a)}–${fmtMs(b)}: ${n}`)
    }</title></rect>`;
  }).join("");
  const [from] = LatencyHistogram.bucketBounds(lo);
  const [, to] = LatencyHistogram.bucketBounds(hi);
  return `<figure class="hist" data-stage="${esc(label)}"><figcaption>${
    esc(label)
  } <span class="sub">${h.count} replies, p50 ${fmtMs(h.percentile(50))}, p99 ${
    fmtMs(h.percentile(99))
  }</span></figcaption><svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${
    esc(label)
  } latency">${bars}<text x="5" y="${H - 5}">${esc(fmtMs(from))}</text><text x="${W - 5}" y="${
    H - 5
  }" text-anchor="end">${esc(fmtMs(to))}</text></svg></figure>`;
}

/**
 * Summary cards (a big number and a label each).
 *
 * @param items Label, value and an optional top-border colour per card.
 * @returns The cards' HTML.
 */
export function statCards(items: readonly [string, number | string, string?][]): string {
  return items.map(([label, value, color]) =>
    `<div class="card"${color ? ` style="border-top-color:${color}"` : ""}><b>${
      esc(String(value))
    }</b><span>${esc(label)}</span></div>`
  ).join("");
}

/**
 * A table.
 *
 * @param head Column headings.
 * @param rows Cells (text).
 * @param numeric Indexes of right-aligned columns.
 * @returns The table's HTML.
 */
export function htmlTable(head: string[], rows: string[][], numeric: number[] = []): string {
  const th = head.map((h, i) => `<th${numeric.includes(i) ? ' class="n"' : ""}>${esc(h)}</th>`)
    .join("");
  const body = rows.map((r) =>
    `<tr>${
      r.map((c, i) => `<td${numeric.includes(i) ? ' class="n"' : ""}>${esc(c)}</td>`).join("")
    }</tr>`
  ).join("");
  return `<table><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>`;
}

/** The colour of a verdict in the reports. */
export function verdictHex(kind: string): string {
  return HEX[verdictColor(kind)];
}

/** Formats milliseconds for people (µs, ms or s, 3 significant digits). */
export function fmtMs(v: number): string {
  return v >= 1000
    ? `${(v / 1000).toPrecision(3)} s`
    : v >= 1
    ? `${v.toPrecision(3)} ms`
    : `${(v * 1000).toPrecision(3)} µs`;
}

function span(s: StatsResult): string {
  if (s.from === undefined) return "no timestamps";
  return `${new Date(s.from).toISOString()} to ${new Date(s.to!).toISOString()}`;
}

function cards(s: StatsResult): string {
  return statCards([
    ["sessions", s.sessions],
    ["messages", s.messages],
    ["recipients", s.recipients],
    ...KINDS.filter((k) => s.verdicts[k] !== undefined).map((k) =>
      [k, s.verdicts[k]!, COLORS[k]] as [string, number, string]
    ),
    ["protocol issues", s.issues],
  ]);
}

function stageTable(s: StatsResult): string {
  const rows = Object.entries(s.byStage)
    .sort((a, b) => byStageOrder(a[0].split("@")[1]!, b[0].split("@")[1]!) || b[1] - a[1])
    .map(([k, n]) => {
      const [kind, stage] = k.split("@");
      return [stage!, kind!, String(n)];
    });
  for (const [k, n] of Object.entries(s.recipientVerdicts)) {
    rows.push(["envrcpt (recipients)", k, String(n)]);
  }
  return rows.length === 0
    ? `<p class="sub">No messages.</p>`
    : htmlTable(["stage", "verdict", "count"], rows, [2]);
}

function reasonsTable(s: StatsResult): string {
  if (s.reasons.length === 0) return `<p class="sub">None.</p>`;
  return htmlTable(["count", "reason"], s.reasons.map((r) => [String(r.count), r.reason]), [0]);
}

function latencyTable(s: StatsResult): string {
  const rows = Object.keys(s.latency).sort(byStageOrder).map((stage) => {
    const l = s.latency[stage]!;
    return [
      stage,
      String(l.count),
      fmtMs(l.meanMs),
      fmtMs(l.p50Ms),
      fmtMs(l.p90Ms),
      fmtMs(l.p99Ms),
      fmtMs(l.maxMs),
    ];
  });
  return htmlTable(["stage", "replies", "mean", "p50", "p90", "p99", "max"], rows, [
    1,
    2,
    3,
    4,
    5,
    6,
  ]);
}

function hoursTable(s: StatsResult): string {
  if (s.hours.length === 0) return `<p class="sub">No messages with times.</p>`;
  return htmlTable(
    ["hour", "messages", "body KiB", "verdicts"],
    s.hours.map((h) => [
      h.hour,
      String(h.messages),
      String(Math.round(h.bodyBytes / 1024)),
      KINDS.filter((k) => h.verdicts[k] !== undefined).map((k) => `${k} ${h.verdicts[k]}`).join(
        ", ",
      ),
    ]),
    [1, 2],
  );
}

function duration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000} d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${ms / 1000} s`;
}

function label(t: number, width: number): string {
  const iso = new Date(t).toISOString();
  return width >= 86_400_000
    ? iso.slice(0, 10)
    : width >= 60_000
    ? iso.slice(5, 16).replace("T", " ")
    : iso.slice(11, 19);
}

/** Bar widths of the verdict chart, in ms. */
const NICE = [
  1_000,
  5_000,
  10_000,
  30_000,
  60_000,
  300_000,
  600_000,
  900_000,
  1_800_000,
  3_600_000,
  10_800_000,
  21_600_000,
  43_200_000,
  86_400_000,
  604_800_000,
];

const CSS = `
:root{--fg:#1d2733;--sub:#5f6b7a;--line:#e3e7ec;--bg:#f6f8fa}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{padding:18px 28px;background:#1d2733;color:#fff}header h1{margin:0;font-size:20px}header .sub{color:#c7d0db;margin:4px 0 0}
main{padding:12px 28px 40px;max-width:1200px}section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:14px 18px;margin:14px 0}
h2{font-size:15px;margin:0 0 10px}.sub{color:var(--sub);font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px;background:none;border:0;padding:0}.card{background:#fff;border:1px solid var(--line);border-top:4px solid #1d2733;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:22px}.card span{color:var(--sub);font-size:12px}
.two{display:grid;grid-template-columns:1fr 1fr;gap:24px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
svg{width:100%;height:auto;font-size:11px;fill:var(--sub)}.grid{stroke:var(--line)}
.legend .key{display:inline-flex;align-items:center;margin-right:12px;font-size:12px}.legend i{width:12px;height:12px;border-radius:2px;margin-right:4px;display:inline-block}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px;margin-top:12px}.hist{margin:0}.hist figcaption{font-weight:600;font-size:13px}.hist rect{fill:#3b7dd8}
.viewer{display:grid;grid-template-columns:320px 1fr;gap:14px}#session-list{width:100%;font:12px ui-monospace,monospace;border:1px solid var(--line)}
#session-view .ev{font:12px ui-monospace,monospace;white-space:pre-wrap}#session-view .c{color:#1d2733}#session-view .r{color:#2364aa}
.lat{display:inline-block;height:8px;background:#e0a526;border-radius:2px;margin-left:6px;vertical-align:middle}
.verdict{margin:2px 0;font-size:13px}
`;

const SCRIPT = `
(function () {
  "use strict";
  var sessions = JSON.parse(document.getElementById("sessions").textContent);
  var list = document.getElementById("session-list");
  var view = document.getElementById("session-view");
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function ms(v) { return v >= 1000 ? (v / 1000).toFixed(2) + " s" : v.toFixed(3) + " ms"; }
  function show(i) {
    var s = sessions[i];
    view.textContent = "";
    view.appendChild(el("h3", "", s.id));
    if (s.peers) view.appendChild(el("p", "sub", s.peers + (s.start ? "  ·  " + new Date(s.start).toISOString() : "")));
    s.verdicts.forEach(function (v) { view.appendChild(el("p", "verdict", v)); });
    var max = 0;
    s.events.forEach(function (e) { if (e[4] !== null && e[4] > max) max = e[4]; });
    var box = el("div", "timeline");
    box.id = "timeline";
    s.events.forEach(function (e) {
      var row = el("div", "ev " + e[1]);
      row.appendChild(document.createTextNode("+" + ms(e[0]).padStart(11) + "  " + (e[1] === "c" ? "→ " : "← ") + e[3]));
      if (e[4] !== null) {
        var bar = el("span", "lat");
        bar.style.width = Math.max(2, Math.round(120 * (max > 0 ? e[4] / max : 0))) + "px";
        bar.title = ms(e[4]);
        row.appendChild(bar);
        row.appendChild(document.createTextNode(" " + ms(e[4])));
      }
      box.appendChild(row);
    });
    if (s.more > 0) box.appendChild(el("p", "sub", s.more + " more frames not kept in the report"));
    view.appendChild(box);
  }
  sessions.forEach(function (s, i) {
    var o = el("option", "", s.id + "  " + s.verdicts.map(function (v) { return v.split(": ").pop(); }).join(", "));
    o.value = String(i);
    list.appendChild(o);
  });
  list.addEventListener("change", function () { show(Number(list.value)); });
  if (sessions.length > 0) { list.value = "0"; show(0); }
  document.body.dataset.ready = "1";
})();
`;
