/**
 * `milterkit dump FILE...`: decode milter sessions from proxy recordings, raw byte-stream
 * files, per-segment `.jsonl` logs and pcap/pcapng captures, and show them as timelines or
 * JSON, optionally checked against the protocol rules.
 *
 * @module
 */

import { open, readFile, stat } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { annotateStreams, type StreamPair } from "../inspect/annotate/feed.ts";
import type { Outcome } from "../inspect/annotate/annotator.ts";
import { FrameDecoder } from "../wire/frame.ts";
import { connect } from "../server/net.ts";
import { readCapture } from "../inspect/capture/pcap.ts";
import { SNIFF_BYTES, sniffInput } from "../inspect/capture/sniff.ts";
import { renderReplay, replaySession } from "../inspect/replay.ts";
import { readRecording, readSegmentLog } from "../inspect/recording.ts";
import { findMilterConversations, looksLikeMtaStream } from "../inspect/capture/tcp.ts";
import { renderTimeline, type SessionReport, sessionToJson } from "../inspect/timeline.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";

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
      --check           print only the protocol checker's findings; exit 1
                        if any session has one
      --color WHEN      auto (default: when stdout is a terminal), always, never
      --replay SESSION  play the MTA side of SESSION (id as for --session)
                        against the filter at --connect and show, per command,
                        where its answers differ from the recorded ones
  -c, --connect SPEC    the filter to replay against (inet:PORT@HOST, unix:PATH)
      --timeout MS      per-reply timeout of the replay (default 30000)
  -h, --help            show this help

Exit codes: 0 done (with --replay: every answer the same), 1 a file could not
be read, no session matched, --check found issues, or the replayed answers
differ; 2 bad usage.

Examples:
  milterkit dump traffic.pcap
  milterkit dump recording.jsonl --verdict reject --from @example.com
  milterkit dump capture.pcapng --session s3 --raw
  milterkit dump session.to-filter.bin              # pairs with session.to-mta.bin
  milterkit dump --check --json recordings/*.jsonl | jq .issues
  milterkit dump recording.jsonl --replay s3 --connect inet:8890@127.0.0.1
`;

const VERDICTS = ["accept", "reject", "tempfail", "discard", "shutdown", "aborted", "incomplete"];

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

function report(
  id: string,
  pair: StreamPair,
  extra: { mta?: string; filter?: string; notes?: readonly string[] },
): SessionReport {
  const a = annotateStreams(pair);
  return {
    id,
    ...(extra.mta !== undefined ? { mta: extra.mta } : {}),
    ...(extra.filter !== undefined ? { filter: extra.filter } : {}),
    notes: extra.notes ?? [],
    summary: a.summary(),
    events: a.events,
  };
}

/** The first {@link SNIFF_BYTES} of a file and its size. */
async function head(file: string): Promise<{ head: Uint8Array; size: number }> {
  const fh = await open(file, "r");
  try {
    const size = (await fh.stat()).size;
    const buf = new Uint8Array(Math.min(size, SNIFF_BYTES));
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return { head: buf.subarray(0, got), size };
  } finally {
    await fh.close();
  }
}

/** Reads one FILE into session reports; `seen` avoids dumping a .bin pair twice. */
async function load(file: string, seen: Set<string>): Promise<SessionReport[]> {
  const name = basename(file);
  const sniffed = await head(file);
  const kind = sniffInput(sniffed.head, sniffed.size);
  const bin = kind === "stream" ? /^(.*)\.(to-filter|to-mta)\.bin$/.exec(file) : null;
  if (bin) {
    const [, stem, dir] = bin;
    if (seen.has(stem!)) return [];
    seen.add(stem!);
    const other = `${stem}.${dir === "to-filter" ? "to-mta" : "to-filter"}.bin`;
    const mine = new Uint8Array(await readFile(file));
    let theirs = (await exists(other)) ? new Uint8Array(await readFile(other)) : undefined;
    if (
      theirs !== undefined && theirs.length > 0 && sniffInput(theirs, theirs.length) !== "stream"
    ) {
      theirs = undefined;
    }
    const notes = theirs ? [] : [`Only the ${dir} direction (${basename(other)} not found)`];
    const empty = new Uint8Array(0);
    const pair = dir === "to-filter"
      ? { toFilter: mine, toMta: theirs ?? empty }
      : { toFilter: theirs ?? empty, toMta: mine };
    return [report(basename(stem!), pair, { notes })];
  }
  const bytes = new Uint8Array(await readFile(file));
  if (kind === "pcap" || kind === "pcapng") {
    const capture = readCapture(bytes);
    const convs = findMilterConversations(capture.packets);
    return convs.map((c, i) =>
      report(`${name}#s${c.index}`, c, {
        mta: `${c.mta.address}:${c.mta.port}`,
        filter: `${c.filter.address}:${c.filter.port}`,
        notes: [...(i === 0 ? capture.notes : []), ...c.notes],
      })
    );
  }
  if (kind === "recording") {
    const rec = readRecording(new TextDecoder().decode(bytes));
    return rec.sessions.map((s, i) =>
      report(`${name}#${s.id}`, s, {
        ...(s.mta !== undefined ? { mta: s.mta } : {}),
        ...(s.filter !== undefined ? { filter: s.filter } : {}),
        notes: [
          ...(i === 0 ? rec.notes : []),
          ...s.notes,
          ...(s.endReason === undefined ? ["The recording stops before this session ended"] : []),
        ],
      })
    );
  }
  if (kind === "segment-log") {
    const log = readSegmentLog(new TextDecoder().decode(bytes));
    return [report(name.replace(/\.jsonl$/, ""), log, { notes: log.notes })];
  }
  const toFilter = guessMtaSide(bytes);
  const empty = new Uint8Array(0);
  return [
    report(name, toFilter ? { toFilter: bytes, toMta: empty } : { toFilter: empty, toMta: bytes }, {
      notes: [
        `Only one direction; guessed ${toFilter ? "MTA to filter" : "filter to MTA"} from content`,
      ],
    }),
  ];
}

/**
 * Guesses whether a lone stream came from the MTA: both sides start with a 13-byte OPTNEG, so
 * the frames after it decide (commands are upper-case letters, replies are not).
 */
function guessMtaSide(bytes: Uint8Array): boolean {
  let frames: { code: number }[] = [];
  try {
    frames = new FrameDecoder({ maxDataSize: 16 * 1024 * 1024 }).push(bytes).slice(1, 20);
  } catch {
    // undecodable: fall back to the first frame alone
  }
  if (frames.length === 0) return looksLikeMtaStream(bytes);
  const upper = frames.filter((f) => f.code >= 0x41 && f.code <= 0x5a).length;
  return upper * 2 > frames.length;
}

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

/** `--replay SESSION --connect SPEC`: exit 0 when every answer is the same, 1 otherwise. */
async function replay(
  files: string[],
  id: string,
  spec: string,
  opts: { json: boolean; timeoutMs: number },
  io: CliIo,
): Promise<number> {
  const seen = new Set<string>();
  const found: SessionReport[] = [];
  for (const file of files) {
    for (const r of await load(file, seen)) {
      if (matches(r, { sessions: [id] })) found.push(r);
    }
  }
  if (found.length !== 1) {
    io.stderr(
      `milterkit dump: --replay ${id} matches ${found.length} sessions` +
        (found.length > 1 ? ` (${found.map((r) => r.id).join(", ")}); give the full id\n` : "\n"),
    );
    return EXIT.FAILURE;
  }
  const session = found[0]!;
  const report = await replaySession(session.events, await connect(spec), {
    timeoutMs: opts.timeoutMs,
  });
  if (opts.json) {
    io.stdout(JSON.stringify({ session: session.id, connect: spec, ...report }) + "\n");
  } else io.stdout(renderReplay(report, `replay of ${session.id} against ${spec}`));
  return report.identical ? EXIT.OK : EXIT.FAILURE;
}

/** One line for a file that could not be read: the message, no class name or stack. */
function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
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
        color: { type: "string", default: "auto" },
        replay: { type: "string" },
        connect: { type: "string", short: "c" },
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
    if (!["auto", "always", "never"].includes(values.color)) {
      throw new UsageError(`--color must be auto, always or never, got ${values.color}`);
    }
    const color = values.color === "always" ||
      (values.color === "auto" && io.isTty && io.env.NO_COLOR === undefined);
    if (values.replay !== undefined || values.connect !== undefined) {
      if (values.replay === undefined) throw new UsageError("--connect needs --replay SESSION");
      if (values.connect === undefined) throw new UsageError("--replay needs --connect SPEC");
      const timeoutMs = Number(values.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) {
        throw new UsageError(`--timeout needs a positive whole number, got ${values.timeout}`);
      }
      return await replay(positionals, values.replay, values.connect, {
        json: values.json,
        timeoutMs,
      }, io);
    }
    let failed = false;
    let shown = 0;
    let issues = 0;
    const seen = new Set<string>();
    for (const file of positionals) {
      let reports: SessionReport[];
      try {
        reports = await load(file, seen);
      } catch (e) {
        io.stderr(`milterkit dump: ${file}: ${describeError(e)}\n`);
        failed = true;
        continue;
      }
      for (const r of reports) {
        if (!matches(r, { ...values, sessions: values.session })) continue;
        shown++;
        issues += r.summary.issues.length;
        if (values.json) {
          io.stdout(
            JSON.stringify(sessionToJson(r, { events: values.raw, raw: values.raw })) + "\n",
          );
        } else if (values.check) {
          const found = r.summary.issues;
          io.stdout(`${r.id}: ${found.length === 0 ? "no issues" : `${found.length} issue(s)`}\n`);
          for (const i of found) io.stdout(`  #${i.seq} ${i.rule}: ${i.message}\n`);
        } else {
          io.stdout((shown > 1 ? "\n" : "") + renderTimeline(r, { color, raw: values.raw }));
        }
      }
    }
    if (shown === 0 && !failed) {
      io.stderr("milterkit dump: no session matched\n");
      return EXIT.FAILURE;
    }
    return failed || (values.check && issues > 0) ? EXIT.FAILURE : EXIT.OK;
  },
};
