/**
 * `milterkit dump --replay`: plays recorded sessions (one, a list, or `all`) against a filter and
 * compares its answers (`--compare answers`, per command, byte for byte) or its decisions
 * (`--compare verdicts`: verdicts and modifications only), with a summary table when more than
 * one session is replayed.
 *
 * @module
 */

import { connect } from "../server/net.ts";
import { renderReplay, type ReplayReport, replaySession } from "../inspect/replay.ts";
import { readSessions } from "../inspect/sources.ts";
import type { SessionReport } from "../inspect/timeline.ts";
import { compareVerdicts, renderVerdicts, type VerdictComparison } from "../inspect/verdicts.ts";
import { type CliIo, EXIT } from "./types.ts";
import { thrownMessage } from "../wire/errors.ts";

/** Options of {@link replaySessions}. */
export interface ReplayCliOptions {
  /** Session ids (full or after `#`), or `all`. */
  readonly ids: readonly string[];
  /** The filter's socket spec. */
  readonly connect: string;
  /** What to compare. */
  readonly compare: "answers" | "verdicts";
  /** One JSON object per session (and a summary object) instead of text. */
  readonly json: boolean;
  /** Per-reply timeout in ms. */
  readonly timeoutMs: number;
  /** Sessions the other filters (`--from`, `--verdict`, …) let through. */
  readonly select: (r: SessionReport) => boolean;
}

interface Row {
  readonly id: string;
  readonly messages: number;
  readonly recorded: string;
  readonly replayed: string;
  readonly result: string;
  readonly same: boolean;
}

function idMatches(r: SessionReport, id: string): boolean {
  return r.id === id || r.id.slice(r.id.lastIndexOf("#") + 1) === id;
}

function verdictList(c: VerdictComparison, side: "recorded" | "replayed"): string {
  const list = c.decisions.filter((d) => d.message !== undefined && !d.what.includes(" RCPT "));
  if (list.length === 0) return c.decisions[0]?.[side] ?? "";
  return list.map((d) => d[side]).join(", ");
}

function table(rows: readonly Row[]): string {
  const head: Row = {
    id: "session",
    messages: NaN,
    recorded: "recorded",
    replayed: "replayed",
    result: "result",
    same: true,
  };
  const all = [head, ...rows];
  const w = (f: (r: Row) => string) => Math.max(...all.map((r) => f(r).length));
  const msgs = (r: Row) => (Number.isNaN(r.messages) ? "messages" : String(r.messages));
  const cols: ((r: Row) => string)[] = [(r) => r.id, msgs, (r) => r.recorded, (r) => r.replayed];
  const widths = cols.map(w);
  return all.map((r) =>
    cols.map((f, i) => i === 1 ? f(r).padStart(widths[i]!) : f(r).padEnd(widths[i]!)).join("  ") +
    `  ${r.result}`
  ).join("\n") + "\n";
}

/**
 * Replays the selected sessions of `files` one after another and reports.
 *
 * @param files The recordings or captures.
 * @param opts What to replay, against what, and how to compare.
 * @param io Where to write.
 * @returns 0 when every replayed session is the same, 1 otherwise (or when none matched).
 */
export async function replaySessions(
  files: readonly string[],
  opts: ReplayCliOptions,
  io: CliIo,
): Promise<number> {
  const all = opts.ids.includes("all");
  const rows: Row[] = [];
  let failed = false;
  const replayOne = async (session: SessionReport, many: boolean) => {
    let report: ReplayReport;
    try {
      report = await replaySession(session.events, await connect(opts.connect), {
        timeoutMs: opts.timeoutMs,
      });
    } catch (e) {
      const why = thrownMessage(e);
      io.stderr(`milterkit dump: replay of ${session.id}: ${why}\n`);
      rows.push({
        id: session.id,
        messages: session.summary.messages.length,
        recorded: "",
        replayed: "",
        result: `failed: ${why}`,
        same: false,
      });
      return;
    }
    const verdicts = compareVerdicts(report, session.summary);
    const same = opts.compare === "verdicts" ? verdicts.identical : report.identical;
    const title = `replay of ${session.id} against ${opts.connect}`;
    if (opts.json) {
      io.stdout(
        JSON.stringify({
          session: session.id,
          connect: opts.connect,
          compare: opts.compare,
          identical: same,
          ...(opts.compare === "verdicts"
            ? {
              decisions: verdicts.decisions,
              changes: verdicts.changes.length,
              ...(report.error !== undefined ? { error: report.error } : {}),
            }
            : report),
        }) + "\n",
      );
    } else if (!many || !same) {
      io.stdout(
        opts.compare === "verdicts"
          ? renderVerdicts(verdicts, title, report.error)
          : renderReplay(report, title),
      );
      if (many) io.stdout("\n");
    }
    rows.push({
      id: session.id,
      messages: session.summary.messages.length,
      recorded: verdictList(verdicts, "recorded"),
      replayed: verdictList(verdicts, "replayed"),
      result: report.error !== undefined
        ? `incomplete: ${report.error}`
        : same
        ? "same"
        : opts.compare === "verdicts"
        ? `${verdicts.changes.length} decision(s) changed`
        : `${report.differences} answer(s) differ`,
      same,
    });
  };

  const seen = new Set<string>();
  if (all) {
    for (const file of files) {
      try {
        await readSessions(file, async (r) => {
          if (opts.select(r)) await replayOne(r, true);
        }, { seen });
      } catch (e) {
        io.stderr(`milterkit dump: ${file}: ${thrownMessage(e)}\n`);
        failed = true;
      }
    }
  } else {
    const found = new Map<string, SessionReport[]>(opts.ids.map((id) => [id, []]));
    for (const file of files) {
      await readSessions(file, (r) => {
        for (const id of opts.ids) if (idMatches(r, id) && opts.select(r)) found.get(id)!.push(r);
      }, { seen });
    }
    for (const [id, list] of found) {
      if (list.length !== 1) {
        io.stderr(
          `milterkit dump: --replay ${id} matches ${list.length} sessions` +
            (list.length > 1 ? ` (${list.map((r) => r.id).join(", ")}); give the full id\n` : "\n"),
        );
        return EXIT.FAILURE;
      }
    }
    const many = found.size > 1;
    for (const [, [session]] of found) await replayOne(session!, many);
  }
  const many = all || opts.ids.length > 1;
  if (rows.length === 0) {
    io.stderr("milterkit dump: no session matched\n");
    return EXIT.FAILURE;
  }
  const same = rows.filter((r) => r.same).length;
  const summary = `${rows.length} session(s) replayed against ${opts.connect}: ${same} the same, ` +
    `${rows.length - same} different (compared: ${opts.compare})`;
  if (many) {
    if (opts.json) {
      io.stdout(
        JSON.stringify({
          summary: { sessions: rows.length, same, different: rows.length - same },
        }) +
          "\n",
      );
    } else io.stdout(table(rows) + summary + "\n");
  }
  return failed || same !== rows.length ? EXIT.FAILURE : EXIT.OK;
}
