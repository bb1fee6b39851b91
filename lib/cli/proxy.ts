/**
 * `milterkit proxy --listen SPEC --upstream SPEC`: a transparent tap between an MTA and a
 * filter that shows the traffic decoded and records it.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { SessionAnnotator } from "../inspect/annotate/annotator.ts";
import type { AnnotatedEvent } from "../inspect/annotate/types.ts";
import { decodedToJson, describeDecoded } from "../inspect/annotate/render.ts";
import { formatSocketSpec, parseSocketSpec } from "../server/socket_spec.ts";
import type { Connection } from "../server/adapters/types.ts";
import { createLogger } from "../server/log.ts";
import { connect, listen } from "../server/net.ts";
import { proxyConnection, type UpstreamFailurePolicy } from "../inspect/proxy.ts";
import { RecordingWriter } from "../inspect/recording.ts";
import { RecordingFile } from "../inspect/recording_file.ts";
import { LoopGuard, upstreamLoops } from "../inspect/proxy_loop.ts";
import { formatMessageRecord, messageRecord } from "../inspect/proxy_summary.ts";
import { displayText } from "../wire/text.ts";
import { paint } from "../server/colors.ts";
import { COLOR_OPTIONS, wantColor } from "./color.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";
import { VERSION } from "./version.ts";
import type { Direction } from "../wire/types.ts";

const USAGE = `Usage: milterkit proxy --listen SPEC --upstream SPEC [options]

Sit between an MTA and a filter: the MTA connects to the proxy, the proxy
connects to the real filter and forwards every byte unchanged both ways (the
filter's negotiation is what the MTA sees). Every frame is shown decoded, with
the time the filter took to answer, and a summary line per message.

Options:
  -l, --listen SPEC              where the MTA connects (e.g. inet:8891@127.0.0.1)
  -u, --upstream SPEC            the real filter (e.g. inet:8890@127.0.0.1, unix:/run/f.sock)
  -r, --record FILE              append a recording (JSON Lines: raw bytes of both
                                 directions with timestamps, and decoded events);
                                 read it with milterkit dump FILE
      --redact                   leave header values and body bytes out of the recording
      --rotate-size BYTES        start a new recording file past this size (FILE.1, FILE.2, …)
      --rotate-keep N            rotated files kept (default 5)
      --record-buffer BYTES      recording held in memory while the disk is slow
                                 (default 8388608); past it lines are dropped

      --on-upstream-failure KIND what the MTA is told when the filter is down or dies:
                                 tempfail (default), accept, reject, or close (the MTA
                                 then applies its own milter_default_action)
      --connect-timeout MS       time to reach the filter (default 5000)
      --shutdown-grace MS        time sessions get to finish on SIGTERM (default 30000);
                                 then their connections are closed
      --max-connections N        MTA connections relayed at once (default 500; each
                                 uses two file descriptors); more are closed at once
      --quiet                    no per-frame lines, only message summaries and notes
      --json                     one JSON object per line instead of text
      --color WHEN               auto (default: on a terminal, unless NO_COLOR is set),
                                 always, never
      --no-color                 same as --color never
  -h, --help                     show this help

Signals: SIGTERM/SIGINT stop accepting and let open sessions finish (a second
one stops at once).

The recording never holds up mail: lines are written in batches without
waiting for the disk (a kill loses at most the last few milliseconds). When
the disk is full, fails or cannot keep up, the error is logged once per cause,
lines are dropped and counted, writing is retried every second, and sessions
that lost lines are marked incomplete in the recording.

Examples:
  milterkit proxy -l inet:8891@127.0.0.1 -u inet:8890@127.0.0.1
  milterkit proxy -l inet:8891@127.0.0.1 -u unix:/run/opendkim/opendkim.sock -r dkim.jsonl --redact

Then point Postfix at the proxy: smtpd_milters = inet:127.0.0.1:8891
`;

const ARROW: Readonly<Record<Direction, string>> = { "to-filter": "→", "to-mta": "←" };

/** `milterkit proxy`. */
export const proxyCommand: Subcommand = {
  name: "proxy",
  stopsOnSignal: true,
  summary: "relay an MTA to a filter unchanged while showing and recording the traffic",
  usage: USAGE,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        listen: { type: "string", short: "l" },
        upstream: { type: "string", short: "u" },
        record: { type: "string", short: "r" },
        redact: { type: "boolean", default: false },
        "rotate-size": { type: "string", default: "0" },
        "rotate-keep": { type: "string", default: "5" },
        "record-buffer": { type: "string", default: String(8 << 20) },
        "on-upstream-failure": { type: "string", default: "tempfail" },
        "connect-timeout": { type: "string", default: "5000" },
        "shutdown-grace": { type: "string", default: "30000" },
        "max-connections": { type: "string", default: "500" },
        quiet: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        ...COLOR_OPTIONS,
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.stdout(USAGE);
      return EXIT.OK;
    }
    if (positionals.length > 0) throw new UsageError(`Unexpected argument ${positionals[0]}`);
    if (!values.listen) throw new UsageError("--listen SPEC is required");
    if (!values.upstream) throw new UsageError("--upstream SPEC is required");
    const listenAt = parseSocketSpec(values.listen);
    const upstreamAt = parseSocketSpec(values.upstream);
    const policy = values["on-upstream-failure"] as UpstreamFailurePolicy;
    if (!["tempfail", "accept", "reject", "close"].includes(policy)) {
      throw new UsageError("--on-upstream-failure must be tempfail, accept, reject or close");
    }
    const num = (name: string, v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} needs a whole number`);
      return n;
    };
    const rotateSize = num("rotate-size", values["rotate-size"]!);
    const rotateKeep = Math.max(1, num("rotate-keep", values["rotate-keep"]!));
    const recordBuffer = num("record-buffer", values["record-buffer"]!);
    const connectTimeout = num("connect-timeout", values["connect-timeout"]!);
    const shutdownGrace = num("shutdown-grace", values["shutdown-grace"]!);
    const maxConnections = Math.max(1, num("max-connections", values["max-connections"]!));
    if (upstreamLoops(listenAt, upstreamAt)) {
      throw new UsageError(
        `--upstream ${values.upstream} is the proxy's own --listen address: it would relay to itself`,
      );
    }
    const color = wantColor(io, values);
    const upstream = values.upstream;
    const log = createLogger({
      format: values.json ? "json" : "text",
      color,
      sink: (l) => io.stderr(l + "\n"),
    });

    let file: RecordingFile | undefined;
    if (values.record) {
      try {
        file = new RecordingFile(values.record, {
          rotateSize,
          rotateKeep,
          maxQueuedBytes: recordBuffer,
          onProblem: (p) =>
            p.kind === "failed"
              ? log.error(p.message, { cause: p.cause, lostLines: p.lostLines })
              : log.warn(p.message, { cause: p.cause, lostLines: p.lostLines }),
        });
      } catch (e) {
        throw new UsageError(`--record ${values.record}: ${(e as Error).message}`);
      }
    }
    const recorder = file
      ? new RecordingWriter((l) => file.write(l), {
        redact: values.redact,
        header: { tool: `milterkit ${VERSION}`, upstream },
        // The proxy annotates each session once and hands the events over (redaction needs
        // the writer's own decoding of the redacted frames).
        events: values.redact,
        lostLines: () => file.lostLines,
      })
      : undefined;

    const listener = await listen(listenAt);
    const where = formatSocketSpec(listener.address);
    log.info("proxy listening", { listen: where, upstream, record: values.record, policy });
    const print = (line: string) => io.stdout(line + "\n");
    const sessions = new Set<Promise<void>>();
    let next = 1;

    const clock = () => performance.timeOrigin + performance.now();
    const open = new Set<Connection>();
    const handle = async (conn: Connection) => {
      const id = `s${next++}`;
      const started = clock();
      const annotator = new SessionAnnotator({ keepEvents: false });
      let printed = 0;
      let mails = 0;
      const mta = conn.remote ? formatSocketSpec(conn.remote) : "?";
      let forget = () => {};
      recorder?.start(id, { mta, filter: upstream, time: started });
      if (!values.json && !values.quiet) print(`[${id}] connection from ${mta}`);
      const show = (e: AnnotatedEvent) => {
        if (values.quiet) return;
        const lat = e.latencyMs !== undefined ? ` (${e.latencyMs.toFixed(1)} ms)` : "";
        if (values.json) {
          print(JSON.stringify({
            type: "frame",
            session: id,
            t: e.time,
            dir: e.direction,
            stage: e.stage,
            frame: describeDecoded(e.decoded, e.direction),
            decoded: decodedToJson(e.decoded),
            latencyMs: e.latencyMs,
          }));
          return;
        }
        const text = displayText(describeDecoded(e.decoded, e.direction));
        const t = e.time !== undefined ? `+${(e.time - started).toFixed(0)}ms` : "";
        const line = `[${id} ${t}] ${ARROW[e.direction]} ${text}${lat}`;
        print(e.direction === "to-mta" ? paint("cyan", line, color) : line);
      };
      const summarise = () => {
        const s = annotator.summary();
        for (const m of s.messages.slice(printed)) {
          if (m.outcome.kind === "incomplete") break;
          printed++;
          const r = messageRecord(id, m, s);
          print(values.json ? JSON.stringify(r) : formatMessageRecord(r, color));
        }
      };
      const summary = await proxyConnection(conn, {
        onUpstreamFailure: policy,
        connectUpstream: async () => {
          const up = await connect(upstreamAt, { timeoutMs: connectTimeout });
          forget = loops.add(up.local);
          return up;
        },
        admit: () =>
          loops.isOwn(conn.remote)
            ? `refused: this connection comes from the proxy itself (--upstream ${upstream} leads back to it)`
            : undefined,
        onChunk: (dir, time, bytes) => {
          try {
            recorder?.data(id, dir, bytes, time);
          } catch (e) {
            log.error("recording failed", { session: id, error: e });
          }
        },
        onRawFrame: (dir, time, frame) => {
          const e = dir === "to-filter"
            ? annotator.pushCommand(frame, time)
            : annotator.pushReply(frame, time);
          show(e);
          if (!values.redact) recorder?.event(id, e);
          // A summary is built only when a message may just have been decided: its final
          // answer at end of message, or the ABORT/QUIT after a message not yet printed (one
          // rejected at RCPT, say). Building one costs more than annotating a frame.
          const type = "error" in e.decoded ? "" : e.decoded.type;
          if (type === "mail") mails++;
          else if (
            (dir === "to-mta" && e.final && e.stage === "eom") ||
            ((type === "abort" || type === "quit") && printed < mails)
          ) {
            summarise();
          }
        },
        onNote: (m, err) => {
          log.warn(m, { session: id, error: err?.message });
          recorder?.note(m, id);
        },
        now: clock,
      });
      forget();
      if (printed < mails) summarise();
      for (const issue of annotator.issues) {
        log.warn("protocol issue", { session: id, rule: issue.rule, detail: issue.message });
      }
      recorder?.end(id, { reason: summary.end });
      log.info("session end", {
        session: id,
        end: summary.end,
        fallback: summary.fallback || undefined,
        toFilter: summary.bytes["to-filter"],
        toMta: summary.bytes["to-mta"],
        ms: Math.round(clock() - started),
      });
      conn.close();
    };

    let graceTimer: ReturnType<typeof setTimeout> | undefined;
    const stop = () => {
      void listener.close();
      if (sessions.size > 0) {
        log.info("stopping: waiting for open sessions", {
          sessions: sessions.size,
          graceMs: shutdownGrace,
        });
      }
      graceTimer = setTimeout(() => {
        for (const c of open) c.close();
      }, shutdownGrace);
    };
    io.signal.addEventListener("abort", stop, { once: true });
    const loops = new LoopGuard();
    let refused = 0;
    for await (const conn of listener) {
      if (open.size >= maxConnections) {
        // A loop through another proxy, or a flood: never run out of file descriptors.
        if (refused++ === 0) {
          log.warn("too many connections: closing new ones at once", { max: maxConnections });
        }
        conn.close();
        continue;
      }
      open.add(conn);
      const p = handle(conn).catch((e) => log.error("session failed", { error: e }));
      sessions.add(p);
      void p.finally(() => {
        // Whatever went wrong (a recording error, a bug), the MTA is never left hanging.
        conn.close();
        sessions.delete(p);
        open.delete(conn);
      });
    }
    await Promise.all(sessions);
    clearTimeout(graceTimer);
    if (file) {
      await file.close();
      const { lines, lostLines, causes } = file.stats;
      if (lostLines > 0) log.warn("recording incomplete", { lines, lostLines, ...causes });
    }
    log.info("proxy stopped", { listen: where, ...(refused ? { refusedOverLimit: refused } : {}) });
    return EXIT.OK;
  },
};
