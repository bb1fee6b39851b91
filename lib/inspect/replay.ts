/**
 * Replays the MTA side of a recorded session against a filter and compares the filter's answers
 * with the recorded ones, command by command: the regression test of a filter change, or "does
 * the new version still answer like the old one did on this real traffic".
 *
 * The recorded commands go out in their order, each with the macros of the `D` frame recorded
 * before it, through {@link MilterClient}: so what the new filter negotiates is honoured (events
 * it switches off are not sent, replies it declines are not read, its macro lists filter the
 * names). The offer is the recorded MTA's OPTNEG, the macro habits (Postfix or Sendmail) are
 * read from the recording.
 *
 * @module
 */

import type { AnnotatedEvent } from "./annotate/types.ts";
import { describeDecoded } from "./annotate/render.ts";
import { MilterClient } from "../mta/client.ts";
import { diffOps } from "../mail/diff.ts";
import type { CommandResult, EomResult, MacroInput } from "../mta/types.ts";
import { encodeReply } from "../wire/reply_codec.ts";
import type { Command, Duplex, MtaStyle, Reply } from "../wire/types.ts";
import { SMFIP } from "../wire/constants.ts";
import { STAGE_LETTER, stageOf } from "../wire/command_bits.ts";
import { thrownMessage } from "../wire/errors.ts";

/**
 * One recorded command and the answers it got then and now.
 *
 * @example
 * ```ts
 * import type { ReplayStep } from "@milterkit/milterkit/inspect";
 * const s: ReplayStep = {
 *   seq: 4, command: "MAIL <a@b>", recorded: ["CONTINUE"], replayed: ["CONTINUE"], same: true,
 * };
 * ```
 */
export interface ReplayStep {
  /** The command's position in the recorded session (both directions counted). */
  readonly seq: number;
  /** The command, described (`MAIL <a@b>`). */
  readonly command: string;
  /** What the recorded filter answered: modifications in order, then the final reply. */
  readonly recorded: readonly string[];
  /** What the filter answers now, in the same form (`(no reply)`, `(not sent: disabled)`). */
  readonly replayed: readonly string[];
  /** Whether both answers are byte for byte the same. */
  readonly same: boolean;
  /** The command's stage (`envfrom`, `envrcpt`, `eom`, …), or its type (`abort`, `macro`). */
  readonly stage?: string;
  /** Index of the recorded message (MAIL..EOM) the command belongs to. */
  readonly message?: number;
  /**
   * What each answer decided, in a form that ignores wording: `continue`, `accept`, `reject`,
   * `tempfail`, `discard`, `shutdown`, `skip`, `reject 550 5.7.1` (a REPLYCODE's codes), or
   * `none` (no reply, not sent, progress only).
   */
  readonly decision?: { readonly recorded: string; readonly replayed: string };
}

/**
 * The result of {@link replaySession}.
 *
 * @example
 * ```ts
 * import type { ReplayReport } from "@milterkit/milterkit/inspect";
 * const changed = (r: ReplayReport) => r.steps.filter((s) => !s.same).map((s) => s.command);
 * ```
 */
export interface ReplayReport {
  /** Every recorded command that expects or may get an answer, in order. */
  readonly steps: readonly ReplayStep[];
  /** Number of steps whose answers differ. */
  readonly differences: number;
  /** True when every answer is the same and the replay ran to the end. */
  readonly identical: boolean;
  /** Why the replay stopped early (the filter failed or hung up), if it did. */
  readonly error?: string;
  /** The MTA habits used for macros: read from the recording. */
  readonly style: MtaStyle;
}

/** Options of {@link replaySession}. */
export interface ReplayOptions {
  /** Per-reply timeout in ms (default 30000). */
  readonly timeoutMs?: number;
}

/** A recorded answer: its description and exact bytes. */
interface Answer {
  readonly text: string;
  readonly bytes: string;
  /** The reply, when there is one. */
  readonly reply?: Reply;
}

function answer(r: Reply): Answer {
  return { text: describeDecoded(r, "to-mta"), bytes: encodeReply(r).join(","), reply: r };
}

/**
 * What a final reply decided, ignoring its wording: a REPLYCODE becomes `reject` or `tempfail`
 * with its SMTP and enhanced codes (`reject 550 5.7.1`).
 *
 * @param r The final reply, or `undefined` when there was none.
 * @returns The decision word.
 *
 * @example
 * ```ts
 * import { decisionOf } from "./replay.ts";
 * import assert from "node:assert/strict";
 * assert.equal(decisionOf({ type: "replycode", text: "550 5.7.1 Spam" }), "reject 550 5.7.1");
 * assert.equal(decisionOf({ type: "continue" }), "continue");
 * ```
 */
export function decisionOf(r: Reply | undefined): string {
  if (r === undefined || r.type === "progress") return "none";
  if (r.type !== "replycode") return r.type;
  const m = /^([245])(\d\d)(?:[ -]+([245]\.\d{1,3}\.\d{1,3}))?/.exec(r.text);
  if (m === null) return "replycode";
  const kind = m[1] === "5" ? "reject" : m[1] === "4" ? "tempfail" : "continue";
  return m[3] === undefined ? `${kind} ${m[1]}${m[2]}` : `${kind} ${m[1]}${m[2]} ${m[3]}`;
}

const NO_REPLY: Answer = { text: "(no reply)", bytes: "" };

/** Postfix sends `D` frames for L, B and U and sends empty ones; Sendmail never does. */
function styleOf(commands: readonly Command[]): MtaStyle {
  return commands.some((c) =>
      c.type === "macro" && ("LBU".includes(c.stage) || c.macros.length === 0)
    )
    ? "postfix"
    : "sendmail";
}

function resultAnswers(r: CommandResult): Answer[] {
  if (r.outcome === "not-sent") return [{ text: `(not sent: ${r.reason})`, bytes: "-" }];
  if (r.outcome === "no-reply") return [NO_REPLY];
  return [answer(r.verdict)];
}

function eomAnswers(r: EomResult): Answer[] {
  return [...r.modifications.map((m) => answer(m as Reply)), answer(r.verdict)];
}

/**
 * Plays the MTA side of a recorded session against a filter and compares the answers.
 *
 * @param events The recorded session's annotated frames (e.g. `annotateStreams(pair).events`,
 * or a `SessionReport`'s `events`).
 * @param conn A fresh connection to the filter; it is closed when the replay ends.
 * @param options Timeouts.
 * @returns Per command: recorded answer, new answer, and whether they are the same.
 *
 * @example
 * ```ts
 * import { annotateStreams, replaySession } from "@milterkit/milterkit/inspect";
 * import { encodeCommand, encodeReply } from "@milterkit/milterkit/wire";
 * import { serveConnection } from "@milterkit/milterkit";
 * import { duplexPair } from "@milterkit/milterkit/testing";
 * import assert from "node:assert/strict";
 * const cat = (xs: Uint8Array[]) => Uint8Array.from(xs.flatMap((x) => [...x]));
 * const recorded = annotateStreams({
 *   toFilter: cat([
 *     encodeCommand({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0 }),
 *     encodeCommand({ type: "mail", sender: "<a@b>", args: [] }),
 *     encodeCommand({ type: "quit" }),
 *   ]),
 *   toMta: cat([
 *     encodeReply({ type: "optneg", version: 6, actions: 0, protocol: 0 }),
 *     encodeReply({ type: "continue" }),
 *   ]),
 * });
 * const [mta, filterSide] = duplexPair();
 * const served = serveConnection(filterSide, { envfrom: () => "reject" });
 * const report = await replaySession(recorded.events, mta);
 * await served;
 * assert.equal(report.identical, false);
 * assert.deepEqual(report.steps.find((s) => s.command === "MAIL <a@b>")?.replayed, ["REJECT"]);
 * ```
 */
export async function replaySession(
  events: readonly AnnotatedEvent[],
  conn: Duplex,
  options: ReplayOptions = {},
): Promise<ReplayReport> {
  const commands = events.filter((e) => e.direction === "to-filter" && !("error" in e.decoded));
  const recordedAnswers = new Map<number, Answer[]>();
  for (const e of events) {
    if (e.direction !== "to-mta" || e.answers === undefined || "error" in e.decoded) continue;
    const list = recordedAnswers.get(e.answers) ?? [];
    if ((e.decoded as Reply).type !== "progress") list.push(answer(e.decoded as Reply));
    recordedAnswers.set(e.answers, list);
  }
  const style = styleOf(commands.map((e) => e.decoded as Command));
  const bySeq = new Map(commands.map((e) => [e.seq, e]));
  const steps: ReplayStep[] = [];
  const step = (seq: number, command: string, now: Answer[], recorded?: Answer[]) => {
    const then = recorded ?? recordedAnswers.get(seq) ?? [NO_REPLY];
    const same = then.length === now.length && then.every((a, i) => a.bytes === now[i]!.bytes);
    const e = bySeq.get(seq);
    steps.push({
      seq,
      command,
      ...(e !== undefined
        ? {
          stage: (e.decoded as Command).type === "macro"
            ? command.toLowerCase()
            : stageOf((e.decoded as Command).type) ?? (e.decoded as Command).type,
        }
        : {}),
      ...(e?.message !== undefined ? { message: e.message } : {}),
      decision: {
        recorded: decisionOf(then.at(-1)?.reply),
        replayed: decisionOf(now.at(-1)?.reply),
      },
      recorded: then.map((a) => a.text),
      replayed: now.map((a, i) =>
        !same && a.text === then[i]?.text && a.bytes !== then[i]?.bytes
          ? `${a.text} (other bytes)`
          : a.text
      ),
      same,
    });
  };
  const report = (error?: string): ReplayReport => {
    const differences = steps.filter((s) => !s.same).length;
    return {
      steps,
      differences,
      identical: differences === 0 && error === undefined,
      ...(error !== undefined ? { error } : {}),
      style,
    };
  };

  const first = commands[0];
  if (first === undefined || (first.decoded as Command).type !== "optneg") {
    await conn.writable.abort().catch(() => {});
    await conn.readable.cancel().catch(() => {});
    return report("The recording has no OPTNEG from the MTA to start from");
  }
  const offer = first.decoded as Extract<Command, { type: "optneg" }>;
  const recordedLeadSpace = events.some((e) =>
    e.direction === "to-mta" && !("error" in e.decoded) && e.decoded.type === "optneg" &&
    (e.decoded.protocol & SMFIP.HDR_LEADSPC) !== 0
  );
  let client: MilterClient;
  try {
    client = await MilterClient.open(conn, {
      version: offer.version,
      actions: offer.actions,
      protocol: offer.protocol,
      mta: style,
      macroStyle: style,
      commandTimeoutMs: options.timeoutMs ?? 30_000,
      contentTimeoutMs: options.timeoutMs ?? 30_000,
      eomTimeoutMs: options.timeoutMs ?? 30_000,
    });
  } catch (e) {
    step(first.seq, describeDecoded(offer, "to-filter"), [{ text: `(${message(e)})`, bytes: "!" }]);
    return report(message(e));
  }
  step(first.seq, describeDecoded(offer, "to-filter"), [answer(client.requested)]);

  let macros: { stage: string; pairs: MacroInput; seq: number } | undefined;
  /** The macros recorded for this command's letter, once. */
  const take = (letter: string): MacroInput | undefined => {
    const m = macros?.stage === letter ? macros.pairs : undefined;
    macros = undefined;
    return m;
  };
  /**
   * A `D` frame whose command is missing was sent for an event the recorded filter switched
   * off (Postfix does that): DATA and EOH are sent again the same way, so a filter that now
   * wants them gets them (and that shows as a difference).
   */
  const orphan = async (): Promise<void> => {
    const m = macros;
    macros = undefined;
    const off: Answer[] = [{ text: "(not sent: disabled)", bytes: "-" }];
    if (m?.stage === "T") step(m.seq, "DATA", resultAnswers(await client.data(m.pairs)), off);
    else if (m?.stage === "N") step(m.seq, "EOH", resultAnswers(await client.eoh(m.pairs)), off);
  };
  try {
    for (const e of commands.slice(1)) {
      const c = e.decoded as Command;
      const text = describeDecoded(c, "to-filter");
      if (c.type === "macro") {
        if (macros !== undefined) await orphan();
        macros = { stage: c.stage, pairs: c.macros, seq: e.seq };
        continue;
      }
      const stage = stageOf(c.type);
      const letter = stage === undefined ? undefined : STAGE_LETTER[stage];
      if (macros !== undefined && macros.stage !== letter) await orphan();
      switch (c.type) {
        case "connect": {
          const info = c.family === "unknown"
            ? { hostname: c.hostname, family: c.family }
            : { hostname: c.hostname, family: c.family, address: c.address, port: c.port };
          step(e.seq, text, resultAnswers(await client.connect(info, take("C"))));
          break;
        }
        case "helo":
          step(e.seq, text, resultAnswers(await client.helo(c.name, take("H"))));
          break;
        case "mail":
          step(e.seq, text, resultAnswers(await client.mail(c.sender, c.args, take("M"))));
          break;
        case "rcpt":
          step(e.seq, text, resultAnswers(await client.rcpt(c.recipient, c.args, take("R"))));
          break;
        case "data":
          step(e.seq, text, resultAnswers(await client.data(take("T"))));
          break;
        case "header": {
          // The MTA took one leading space off unless the recorded filter asked for it.
          const raw = recordedLeadSpace ? c.value : ` ${c.value}`;
          step(e.seq, text, resultAnswers(await client.header(c.name, raw, take("L"))));
          break;
        }
        case "eoh":
          step(e.seq, text, resultAnswers(await client.eoh(take("N"))));
          break;
        case "body":
          step(e.seq, text, resultAnswers(await client.body(c.chunk, take("B"))));
          break;
        case "eom":
          step(e.seq, text, eomAnswers(await client.eom(take("E"))));
          break;
        case "unknown":
          step(e.seq, text, resultAnswers(await client.unknown(c.line, take("U"))));
          break;
        case "abort":
          await client.abort();
          break;
        case "quit_nc":
          await client.quitNc();
          break;
        case "quit":
          await client.quit();
          return report();
        default:
          // optneg again or a raw command: not something an MTA sends mid-session
          return report(`Cannot replay ${text}`);
      }
    }
    await client.close();
    return report();
  } catch (e) {
    await client.close();
    return report(message(e));
  }
}

function message(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${thrownMessage(e)}` : thrownMessage(e);
}

/**
 * Renders a replay report as text: one line per command (`=` same, `≠` different), and for a
 * difference the recorded and new answers as a line diff (`-` recorded only, `+` new only).
 *
 * @param report The report.
 * @param title The first line (which session, against which filter).
 * @returns The text, ending with a newline.
 *
 * @example
 * ```ts
 * import { renderReplay } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * const text = renderReplay({
 *   steps: [{ seq: 2, command: "MAIL <a@b>", recorded: ["CONTINUE"], replayed: ["REJECT"], same: false }],
 *   differences: 1, identical: false, style: "postfix",
 * }, "replay");
 * assert.match(text, /- CONTINUE\n.*\+ REJECT/);
 * ```
 */
export function renderReplay(report: ReplayReport, title: string): string {
  const out = [`${title} (${report.style} macros)`];
  for (const s of report.steps) {
    if (s.same) {
      out.push(`= ${s.command} -> ${s.recorded.join(", ")}`);
      continue;
    }
    out.push(`≠ ${s.command}`);
    for (const op of diffOps(s.recorded, s.replayed)) out.push(`    ${op.kind} ${op.line}`);
  }
  if (report.error !== undefined) out.push(`stopped: ${report.error}`);
  out.push(
    report.identical
      ? `result: identical (${report.steps.length} answers compared)`
      : `result: ${report.differences} of ${report.steps.length} answers differ` +
        (report.error !== undefined ? ", replay incomplete" : ""),
  );
  return out.join("\n") + "\n";
}
