/**
 * Comparing what a filter decided, not how it said it: from a {@link ReplayReport}, the verdict
 * of the connection, of each message and of each recipient, and the modifications of each
 * accepted message, recorded against replayed. Negotiation, macros, reply wording and
 * answers that decide nothing (CONTINUE versus not asked) are left out, so the differences
 * left are the ones that change what happens to mail: the regression test of a new filter
 * version against yesterday's traffic.
 *
 * @module
 */

import type { ReplayReport, ReplayStep } from "./replay.ts";
import type { SessionSummary } from "./annotate/types.ts";

/** One decision of a session, recorded and replayed. */
export interface DecisionPair {
  /** What was decided: `connection`, `message 1 <a@b>`, `message 1 RCPT <c@d>`. */
  readonly what: string;
  /** 1-based message number, absent for the connection. */
  readonly message?: number;
  /** The recorded decision (`accept`, `reject 550 5.7.1`, `tempfail`, `discard`, …). */
  readonly recorded: string;
  /** The replayed decision. */
  readonly replayed: string;
  /** Modifications of an accepted message, recorded then replayed (absent elsewhere). */
  readonly modifications?: { readonly recorded: string[]; readonly replayed: string[] };
  /** Whether anything differs. */
  readonly changed: boolean;
}

/** The result of {@link compareVerdicts}. */
export interface VerdictComparison {
  /** Every decision, in session order. */
  readonly decisions: readonly DecisionPair[];
  /** Those that changed. */
  readonly changes: readonly DecisionPair[];
  /** No decision changed and the replay ran to the end. */
  readonly identical: boolean;
}

/** Decisions that let the transaction go on. */
const GOES_ON = new Set(["continue", "none", "skip", "progress"]);

function decisive(d: string): boolean {
  return !GOES_ON.has(d);
}

function stripNote(text: string): string {
  return text.replace(/ \(other bytes\)$/, "");
}

/**
 * Compares the decisions of a replay with the recorded ones.
 *
 * @param report A replay report (its steps carry `stage`, `message` and `decision`).
 * @param summary The recorded session's summary, to name messages by their sender.
 * @returns Every decision and those that changed.
 *
 * @example
 * ```ts
 * import { compareVerdicts } from "./verdicts.ts";
 * import assert from "node:assert/strict";
 * const c = compareVerdicts({
 *   steps: [{
 *     seq: 4, command: "MAIL <a@b>", recorded: ["CONTINUE"], replayed: ["REJECT"], same: false,
 *     stage: "envfrom", message: 0, decision: { recorded: "continue", replayed: "reject" },
 *   }],
 *   differences: 1, identical: false, style: "postfix",
 * });
 * assert.equal(c.changes[0]?.what, "message 1");
 * assert.equal(c.changes[0]?.replayed, "reject");
 * ```
 */
export function compareVerdicts(
  report: ReplayReport,
  summary?: SessionSummary,
): VerdictComparison {
  const decisions: DecisionPair[] = [];
  const connection = report.steps.filter((s) => s.message === undefined && s.stage !== "optneg");
  const first = (steps: readonly ReplayStep[], side: "recorded" | "replayed") =>
    steps.map((s) => s.decision?.[side] ?? "none").find(decisive) ?? "continue";
  const conn = { recorded: first(connection, "recorded"), replayed: first(connection, "replayed") };
  decisions.push({ what: "connection", ...conn, changed: conn.recorded !== conn.replayed });
  const byMessage = new Map<number, ReplayStep[]>();
  for (const s of report.steps) {
    if (s.message === undefined) continue;
    const list = byMessage.get(s.message) ?? [];
    list.push(s);
    byMessage.set(s.message, list);
  }
  for (const [m, steps] of [...byMessage].sort((a, b) => a[0] - b[0])) {
    const sender = summary?.messages[m]?.sender;
    const label = `message ${m + 1}${sender !== undefined ? ` ${sender}` : ""}`;
    const main = steps.filter((s) => s.stage !== "envrcpt");
    const eom = steps.find((s) => s.stage === "eom");
    const verdict = (side: "recorded" | "replayed"): string => {
      const d = main.map((s) => s.decision?.[side] ?? "none").find(decisive);
      if (d !== undefined) return d;
      return eom === undefined ? "incomplete" : "accept";
    };
    const recorded = verdict("recorded");
    const replayed = verdict("replayed");
    const mods = eom === undefined ? undefined : {
      recorded: recorded === "accept" || recorded === "discard"
        ? eom.recorded.slice(0, -1).map(stripNote)
        : [],
      replayed: replayed === "accept" || replayed === "discard"
        ? eom.replayed.slice(0, -1).map(stripNote)
        : [],
    };
    const modsChanged = mods !== undefined &&
      (mods.recorded.length !== mods.replayed.length ||
        mods.recorded.some((x, i) => x !== mods.replayed[i]));
    decisions.push({
      what: label,
      message: m + 1,
      recorded,
      replayed,
      ...(mods !== undefined && (mods.recorded.length > 0 || mods.replayed.length > 0)
        ? { modifications: mods }
        : {}),
      changed: recorded !== replayed || modsChanged,
    });
    for (const r of steps.filter((s) => s.stage === "envrcpt")) {
      const one = (side: "recorded" | "replayed") => {
        const d = r.decision?.[side] ?? "none";
        return decisive(d) ? d : "accept";
      };
      const rec = one("recorded");
      const rep = one("replayed");
      decisions.push({
        what: `message ${m + 1} ${r.command}`,
        message: m + 1,
        recorded: rec,
        replayed: rep,
        changed: rec !== rep,
      });
    }
  }
  const changes = decisions.filter((d) => d.changed);
  return { decisions, changes, identical: changes.length === 0 && report.error === undefined };
}

/**
 * Renders a verdict comparison: one line per changed decision (`≠`), modifications as a
 * `-`/`+` list, and a result line.
 *
 * @param c The comparison.
 * @param title The first line.
 * @param error Why the replay stopped early, if it did.
 * @returns The text, ending with a newline.
 *
 * @example
 * ```ts
 * import { renderVerdicts } from "./verdicts.ts";
 * import assert from "node:assert/strict";
 * const text = renderVerdicts({ decisions: [], changes: [], identical: true }, "s1");
 * assert.match(text, /no decision changed/);
 * ```
 */
export function renderVerdicts(c: VerdictComparison, title: string, error?: string): string {
  const out = [title];
  for (const d of c.changes) {
    out.push(
      d.recorded === d.replayed
        ? `≠ ${d.what}: ${d.recorded}, modifications changed`
        : `≠ ${d.what}: ${d.recorded} -> ${d.replayed}`,
    );
    const m = d.modifications;
    if (m !== undefined) {
      const gone = m.recorded.filter((x) => !m.replayed.includes(x));
      const added = m.replayed.filter((x) => !m.recorded.includes(x));
      for (const x of gone) out.push(`    - ${x}`);
      for (const x of added) out.push(`    + ${x}`);
      if (gone.length === 0 && added.length === 0 && d.recorded === d.replayed) {
        out.push("    (the same modifications in another order or number)");
      }
    }
  }
  if (error !== undefined) out.push(`stopped: ${error}`);
  out.push(
    c.changes.length === 0
      ? `result: no decision changed (${c.decisions.length} compared)`
      : `result: ${c.changes.length} of ${c.decisions.length} decisions changed`,
  );
  return out.join("\n") + "\n";
}
