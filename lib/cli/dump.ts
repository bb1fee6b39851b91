/**
 * `milterkit dump FILE...`: decode milter sessions from proxy recordings, raw byte-stream
 * files, per-segment `.jsonl` logs and pcap/pcapng captures, and show them as timelines or
 * JSON, optionally checked against the protocol rules.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Outcome } from "../inspect/annotate/annotator.ts";
import { readSessions } from "../inspect/sources.ts";
import { renderTimeline, type SessionReport, sessionToJson } from "../inspect/timeline.ts";
import { COLOR_OPTIONS, wantColor } from "./color.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";
import { replaySessions } from "./dump_replay.ts";
import { writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { HtmlReport } from "../inspect/report_html.ts";
import { renderStats } from "../inspect/stats.ts";
import { thrownMessage } from "../wire/errors.ts";

const USAGE = `Usage: milterkit dump FILE... [options]

Decode milter sessions and show each one as a timeline: negotiation, connect
info, then per message the envelope, headers, body size, every reply with its
latency, every modification and the verdict.

FILE can be (detected by content, several may be given):
  a recording written by "milterkit proxy --record"   (JSON Lines)
  a pcap or pcapng capture (any port; milter found by content; Ethernet,
    loopback, raw IP, Linux cooked SLL/SLL2; IPv4 and IPv6)
  X.to-filter.bin / X.to-mta.bin byte streams (the sibling file is found
    automatically); a single stream file alone, its direction guessed
  a per-segment .jsonl log ({"t","dir","len","hex"} per line)
Anything else (text, an empty file, random bytes, a damaged capture header)
is refused with one line on stderr and exit 1; damaged lines of a recording
are skipped with a note.

Options:
      --json            one JSON object per session and line instead of text
      --session ID      only this session (full id such as capture.pcap#s1,
                        or the part after "#"); may be repeated
      --from ADDR       only sessions with a message from ADDR (substring,
                        case-insensitive)
      --rcpt ADDR       only sessions with a message to ADDR (substring)
      --verdict KIND    only sessions with a message (or connection) whose
                        verdict is KIND: accept, reject, tempfail, discard,
                        shutdown, aborted, incomplete
      --raw             show every frame, macros included, with its bytes
      --stats           instead of timelines: counts by verdict and by stage,
                        top reject reasons, reply latency percentiles per
                        stage, messages per hour (with --json: one object)
      --html FILE       write a self-contained HTML report to FILE: the
                        statistics, verdicts over time, latency histograms
                        per stage and a viewer of sampled session timelines
      --check           print only the sessions with protocol checker
                        findings, then a summary line; exit 1 if any
      --color WHEN      auto (default: when stdout is a terminal, unless NO_COLOR
                        is set), always, never
      --no-color        same as --color never
      --replay SESSION  play the MTA side of SESSION (id as for --session)
                        against the filter at --connect and show where its
                        answers differ from the recorded ones; repeat it or
                        give a list (s1,s3), or "all" for every session (the
                        other filters apply), for a summary table
  -c, --connect SPEC    the filter to replay against (inet:PORT@HOST, unix:PATH)
      --compare WHAT    answers (default): every answer, byte for byte;
                        verdicts: only the decisions (connection, message and
                        recipient verdicts) and the modifications, ignoring
                        negotiation, macros and reply wording
      --timeout MS      per-reply timeout of the replay (default 30000)
  -h, --help            show this help

Exit codes: 0 done (with --replay: every session the same), 1 a file could not
be read, no session matched, --check found issues, or a replayed session
differs; 2 bad usage.

Examples:
  milterkit dump traffic.pcap
  milterkit dump recording.jsonl --verdict reject --from @example.com
  milterkit dump capture.pcapng --session s3 --raw
  milterkit dump session.to-filter.bin              # pairs with session.to-mta.bin
  milterkit dump --check --json recordings/*.jsonl | jq .issues
  milterkit dump --stats /var/log/milter/*.jsonl
  milterkit dump today.jsonl --html report.html
  milterkit dump recording.jsonl --replay s3 --connect inet:8890@127.0.0.1
  milterkit dump yesterday.jsonl --replay all --compare verdicts -c inet:8891@127.0.0.1
`;

const VERDICTS = ["accept", "reject", "tempfail", "discard", "shutdown", "aborted", "incomplete"];

function matches(
  r: SessionReport,
  want: { sessions: string[]; from?: string; rcpt?: string; verdict?: string },
): boolean {
  if (
    want.sessions.length > 0 &&
    !want.sessions.some((s) => r.id === s || r.id.slice(r.id.lastIndexOf("#") + 1) === s)
  ) return false;
  if (want.from === undefined && want.rcpt === undefined && want.verdict === undefined) return true;
  const has = (hay: string | undefined, needle: string | undefined) =>
    needle === undefined || (hay ?? "").toLowerCase().includes(needle.toLowerCase());
  const kind = (o: Outcome | undefined) => want.verdict === undefined || o?.kind === want.verdict;
  const s = r.summary;
  if (
    s.messages.length === 0 && want.from === undefined && want.rcpt === undefined &&
    kind(s.outcome)
  ) return true;
  return s.messages.some((m) =>
    has(m.sender, want.from) &&
    (want.rcpt === undefined || m.recipients.some((x) => has(x.address, want.rcpt))) &&
    (kind(m.outcome) || (want.verdict !== undefined && kind(s.outcome)))
  );
}

/** One line for a file that could not be read: the message, no class name or stack. */
function describeError(e: unknown): string {
  if (!(e instanceof Error)) return thrownMessage(e);
  const code = (e as { code?: unknown }).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EISDIR") return "is a directory, not a file";
  if (code === "EACCES") return "permission denied";
  return e.message.split("\n")[0]!;
}

/** `milterkit dump`. */
export const dumpCommand: Subcommand = {
  name: "dump",
  summary: "decode sessions from recordings, byte streams and pcap/pcapng captures",
  usage: USAGE,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        json: { type: "boolean", default: false },
        session: { type: "string", multiple: true, default: [] },
        from: { type: "string" },
        rcpt: { type: "string" },
        verdict: { type: "string" },
        raw: { type: "boolean", default: false },
        check: { type: "boolean", default: false },
        ...COLOR_OPTIONS,
        stats: { type: "boolean", default: false },
        html: { type: "string" },
        replay: { type: "string", multiple: true },
        connect: { type: "string", short: "c" },
        compare: { type: "string", default: "answers" },
        timeout: { type: "string", default: "30000" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.stdout(USAGE);
      return EXIT.OK;
    }
    if (positionals.length === 0) throw new UsageError("Expected at least one FILE");
    if (values.verdict !== undefined && !VERDICTS.includes(values.verdict)) {
      throw new UsageError(
        `--verdict must be one of ${VERDICTS.join(", ")}, got ${values.verdict}`,
      );
    }
    const color = wantColor(io, values);
    if (values.compare !== "answers" && values.compare !== "verdicts") {
      throw new UsageError(`--compare must be answers or verdicts, got ${values.compare}`);
    }
    const select = (r: SessionReport) => matches(r, { ...values, sessions: values.session });
    if (values.replay !== undefined || values.connect !== undefined) {
      if (values.replay === undefined) throw new UsageError("--connect needs --replay SESSION");
      if (values.connect === undefined) throw new UsageError("--replay needs --connect SPEC");
      const timeoutMs = Number(values.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
        throw new UsageError(`--timeout needs a positive whole number, got ${values.timeout}`);
      }
      const ids = values.replay.flatMap((r) => r.split(",")).map((x) => x.trim()).filter(Boolean);
      if (ids.length === 0) throw new UsageError("--replay needs a session id, a list or all");
      return await replaySessions(positionals, {
        ids,
        connect: values.connect,
        compare: values.compare,
        json: values.json,
        timeoutMs,
        select,
      }, io);
    }
    const summarise = values.stats || values.html !== undefined;
    const report = summarise
      ? new HtmlReport({ title: `milterkit dump ${positionals.map((f) => basename(f)).join(" ")}` })
      : undefined;
    let failed = false;
    let shown = 0;
    let issues = 0;
    let withIssues = 0;
    const seen = new Set<string>();
    for (const file of positionals) {
      const show = (r: SessionReport) => {
        if (!select(r)) return;
        shown++;
        issues += r.summary.issues.length;
        if (r.summary.issues.length > 0) withIssues++;
        if (report !== undefined) report.add(r);
        else if (values.json) {
          io.stdout(
            JSON.stringify(sessionToJson(r, { events: values.raw, raw: values.raw })) + "\n",
          );
        } else if (values.check) {
          const found = r.summary.issues;
          if (found.length === 0) return;
          io.stdout(`${r.id}: ${found.length} issue(s)\n`);
          for (const i of found) io.stdout(`  #${i.seq} ${i.rule}: ${i.message}\n`);
        } else {
          io.stdout((shown > 1 ? "\n" : "") + renderTimeline(r, { color, raw: values.raw }));
        }
      };
      try {
        const result = await readSessions(file, show, {
          seen,
          keepEvents: (!values.json && !values.check) || values.raw || summarise,
        });
        for (const note of result.notes) io.stderr(`milterkit dump: ${file}: note: ${note}\n`);
        if (result.damaged) failed = true;
        if (result.sessions === 0 && result.kind !== "stream") {
          io.stderr(`milterkit dump: ${file}: no milter session found (${result.kind})\n`);
        }
      } catch (e) {
        io.stderr(`milterkit dump: ${file}: ${describeError(e)}\n`);
        failed = true;
      }
    }
    if (shown === 0 && !failed) {
      io.stderr("milterkit dump: no session matched\n");
      return EXIT.FAILURE;
    }
    if (report !== undefined) {
      if (values.stats) {
        const s = report.stats.result();
        io.stdout(values.json ? JSON.stringify({ stats: s }) + "\n" : renderStats(s));
      }
      if (values.html !== undefined) {
        try {
          await writeFile(values.html, report.html());
        } catch (e) {
          io.stderr(`milterkit dump: cannot write ${values.html}: ${describeError(e)}\n`);
          return EXIT.FAILURE;
        }
        io.stderr(`milterkit dump: wrote ${values.html} (${shown} sessions)\n`);
      }
      return failed ? EXIT.FAILURE : EXIT.OK;
    }
    if (values.check && !values.json) {
      io.stdout(
        `${shown} session(s) checked: ${
          withIssues === 0 ? "no issues" : `${withIssues} with ${issues} issue(s)`
        }\n`,
      );
    }
    return failed || (values.check && issues > 0) ? EXIT.FAILURE : EXIT.OK;
  },
};
