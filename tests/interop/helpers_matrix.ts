/**
 * Helpers of the interoperability matrix (tests/interop/matrix_*_test.ts): the peers that
 * harness.ts does not start (pymilter, Sendmail, miltertest), marked messages that tests sharing
 * one mailbox find again, and byte-exact reads of what was delivered.
 *
 * Test names follow one convention so scripts/interop_table.ts can build the table from JUnit
 * XML: the describe is `matrix: <peer> <- <side>` and each `it` names one scenario.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { freePort, run } from "./helpers_process.ts";
import {
  headerValues,
  type PostfixInstance,
  type SmtpMessage,
  type SmtpReply,
  SmtpSession,
  type SmtpStage,
} from "./harness.ts";
import {
  defineFilter,
  type EomContext,
  type Filter,
  type MessageVerdict,
} from "../../lib/filter/filter.ts";
import type { Verdict } from "../../lib/filter/verdict.ts";

export {
  ensureExtraPeers,
  mboxCopies,
  mboxWait,
  type MiltertestRun,
  runMiltertest,
  type SendmailInstance,
  startPymilterFilter,
  startSendmail,
} from "./helpers_matrix_peers.ts";

/** The runtime running the tests: "deno", "bun" or "node". */
export const RUNTIME: "deno" | "bun" | "node" = "Deno" in globalThis
  ? "deno"
  : "Bun" in globalThis
  ? "bun"
  : "node";

let seq = 0;

/** A test message with a unique `X-Test-Marker` header, LF line ends (sendMail makes CRLF). */
export function marked(
  subject: string,
  extraHeaders = "",
  body = "Original body.\n",
): { marker: string; data: string } {
  const marker = `x${process.pid}-${Date.now()}-${++seq}`;
  return {
    marker,
    data: `From: sender@example.test\nTo: user@example.test\nSubject: ${subject}\n` +
      `X-Test-Marker: ${marker}\n${extraHeaders}\n${body}`,
  };
}

/** A delivered copy as raw bytes and as latin1 text (one char per byte). */
export interface RawCopy {
  file: string;
  bytes: Uint8Array;
  /** latin1 view: byte-exact, one character per byte. */
  latin1: string;
}

function newFiles(maildir: string): string[] {
  const dir = `${maildir}/new`;
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => !n.startsWith(".")).map((n) => `${dir}/${n}`);
}

/**
 * Waits up to `timeoutMs` for `count` copies carrying `marker` in a Postfix Maildir (0: returns
 * what is there after a short settle, to prove absence after a later message arrived).
 */
export async function copiesIn(
  maildir: string,
  marker: string,
  count: number,
  timeoutMs = 10_000,
): Promise<RawCopy[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const mine: RawCopy[] = [];
    for (const file of newFiles(maildir)) {
      const bytes = new Uint8Array(readFileSync(file));
      const latin1 = Buffer.from(bytes).toString("latin1");
      if (latin1.includes(`X-Test-Marker: ${marker}\n`)) mine.push({ file, bytes, latin1 });
    }
    if (mine.length >= count || Date.now() > deadline) return mine;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Header field names of a delivered copy, in order. */
export function headerNames(text: string): string[] {
  const head = text.replace(/\r\n/g, "\n").split("\n\n")[0] ?? "";
  return head.split("\n").filter((l) => /^[^\s:]+:/.test(l)).map((l) => l.slice(0, l.indexOf(":")));
}

/** The body of a delivered copy (after the first empty line), LF line ends. */
export function bodyOf(text: string): string {
  const t = text.replace(/\r\n/g, "\n");
  const cut = t.indexOf("\n\n");
  return cut < 0 ? "" : t.slice(cut + 2);
}

/** `Delivered-To` of a Postfix copy. */
export function deliveredTo(text: string): string {
  return headerValues(text, "Delivered-To")[0] ?? "";
}

/**
 * Adds an SMTP listener on [::1]:port to a running Postfix instance (its master.cf binds
 * 127.0.0.1 only) and reloads it; the instance must have `inet_protocols = all`.
 */
export async function addIpv6Smtpd(mta: PostfixInstance): Promise<number> {
  const port = await freePort();
  const cf = `${mta.dir}/etc/master.cf`;
  const text = readFileSync(cf, "utf8");
  const line = `[::1]:${port} inet n - n - - smtpd\n`;
  await run("bash", [
    "-c",
    `printf '%s' "$1" >>"$2" && touch -d "@$(($(date +%s) - 5))" "$2" && postfix -c "$3" reload`,
    "_",
    line,
    cf,
    `${mta.dir}/etc`,
  ]);
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const tcp6 = readFileSync("/proc/net/tcp6", "latin1");
    if (tcp6.split("\n").some((l) => l.includes(`:${hex} `) && / 0A /.test(l))) return port;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Postfix did not listen on [::1]:${port} (master.cf had ${text.length} bytes)`);
}

/** Stages a scripted filter can answer at. */
export type MatrixStage =
  | "connect"
  | "helo"
  | "mail"
  | "rcpt"
  | "data"
  | "header"
  | "eoh"
  | "body"
  | "eom";

/** Every stage, in SMTP order. */
export const STAGES: readonly MatrixStage[] = [
  "connect",
  "helo",
  "mail",
  "rcpt",
  "data",
  "header",
  "eoh",
  "body",
  "eom",
];

/**
 * What the scripted filter does for the next connections: answer `verdict` at `stage` (header:
 * at Subject; body: at the first chunk), and run `eom` at end of message (modifications).
 * Tests set it before each message; tests of one file run one after the other.
 */
export interface Plan {
  stage?: MatrixStage;
  verdict?: Verdict;
  /** Only recipients whose address starts with this get `verdict` at rcpt (default: all). */
  rcptPrefix?: string;
  eom?: (ctx: EomContext<Record<string, unknown>, { chunks: number }>) => MessageVerdict | void;
  /** Stages the filter saw, in order (reset by `resetPlan`). */
  seen: MatrixStage[];
}

/** Clears a plan for the next test. */
export function resetPlan(plan: Plan, next: Omit<Plan, "seen"> = {}): void {
  delete plan.stage;
  delete plan.verdict;
  delete plan.rcptPrefix;
  delete plan.eom;
  Object.assign(plan, next);
  plan.seen.length = 0;
}

/** A milterkit filter driven by `plan`, with every handler and every action. */
export function scriptedFilter(plan: Plan): Filter<Record<string, unknown>, { chunks: number }> {
  // Tests choose a verdict legal at its stage; the type of each handler says which those are.
  const at = (stage: MatrixStage): never | undefined => {
    plan.seen.push(stage);
    return plan.stage === stage ? plan.verdict as never : undefined;
  };
  return defineFilter<Record<string, unknown>, { chunks: number }>({
    name: "matrix",
    messageState: () => ({ chunks: 0 }),
    actions: [
      "addHeader",
      "changeHeader",
      "replaceBody",
      "addRecipient",
      "addRecipientWithArgs",
      "deleteRecipient",
      "changeSender",
      "quarantine",
    ],
    connect: () => at("connect"),
    helo: () => at("helo"),
    envfrom: () => at("mail"),
    envrcpt: (rcpt) => {
      if (plan.rcptPrefix && !rcpt.address.startsWith(plan.rcptPrefix)) {
        plan.seen.push("rcpt");
        return undefined;
      }
      return at("rcpt");
    },
    data: () => at("data"),
    header: (h) => (h.name.toLowerCase() === "subject" ? at("header") : undefined),
    eoh: () => at("eoh"),
    body: (_chunk, ctx) => (ctx.message.chunks++ === 0 ? at("body") : undefined),
    eom: (ctx) => {
      const v = at("eom");
      const fromPlan = plan.eom?.(ctx);
      return v ?? fromPlan ?? undefined;
    },
  });
}

/** Where an SMTP attempt ended, whatever happened (refused greeting, closed connection...). */
export interface SmtpOutcome {
  /** "greeting" (not 220), "helo" (EHLO refused), a transaction stage, or "closed". */
  where: "greeting" | "helo" | SmtpStage | "closed";
  code: number;
  text: string;
  /** Replies to RCPT. */
  rcpts: SmtpReply[];
  transcript: string;
}

function lastServerLine(transcript: string): { code: number; text: string } {
  const lines = transcript.split("\n").filter((l) => l.startsWith("S: "));
  const m = /^S: (\d{3})[ -]?(.*)$/.exec(lines.at(-1) ?? "");
  return m ? { code: Number(m[1]), text: m[2] ?? "" } : { code: 0, text: "" };
}

/** Sends one message on a new connection and reports where it ended; never throws on SMTP. */
export async function attempt(
  port: number,
  msg: SmtpMessage,
  opts: { host?: string; helo?: string } = {},
): Promise<SmtpOutcome> {
  let session: SmtpSession;
  try {
    session = await SmtpSession.open(port, opts);
  } catch (err) {
    const text = String((err as Error).message);
    return { where: "greeting", ...lastServerLine(text), rcpts: [], transcript: text };
  }
  try {
    if (session.ehlo.code !== 250) {
      return { where: "helo", ...session.ehlo, rcpts: [], transcript: session.transcript };
    }
    const r = await session.send(msg);
    return { where: r.stage, code: r.code, text: r.text, rcpts: r.rcpts, transcript: r.transcript };
  } catch {
    return {
      where: "closed",
      ...lastServerLine(session.transcript),
      rcpts: [],
      transcript: session.transcript,
    };
  } finally {
    await session.close();
  }
}
