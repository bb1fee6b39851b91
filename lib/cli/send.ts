/**
 * `milterkit send --connect SPEC [MESSAGE.eml|-]`: act as the MTA against any filter and show
 * what it decides and changes.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { MilterClient } from "../mta/client.ts";
import { endSession, newSession, quitNcAllowedAfter, runTransaction } from "../mta/transaction.ts";
import type { MacroInput, TransactionInput, TransactionResult } from "../mta/types.ts";
import { messageDiff } from "../mail/diff.ts";
import { serializeMessage } from "../mail/message.ts";
import type { MacroStageLetter } from "../mta/presets.ts";
import { connect } from "../server/net.ts";
import { parseSocketSpec } from "../server/socket_spec.ts";
import { paint, verdictColor } from "../server/colors.ts";
import { COLOR_OPTIONS, wantColor } from "./color.ts";
import type { Connection } from "../server/adapters/types.ts";
import { decodeText, displayText } from "../wire/text.ts";
import type { Modification, Reply } from "../wire/types.ts";
import { ACTION_NAMES, flagNames, PROTOCOL_NAMES } from "../wire/constants.ts";
import { asError } from "../wire/errors.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";

const USAGE = `Usage: milterkit send --connect SPEC [MESSAGE.eml|-] [options]

Act as the MTA: negotiate with the filter at SPEC, send one SMTP transaction
(connect, helo, mail, rcpt, data, headers, body, end of message) as Postfix would,
and print the verdict at every stage, each modification, and the message that
would be delivered after applying them, with a diff against the input.
Without MESSAGE (or with -) the message is read from standard input.

Options:
  -c, --connect SPEC         the filter: inet:PORT@HOST, inet:HOST:PORT, unix:PATH
      --from ADDR [ARGS]     envelope sender, ESMTP args after a space
                             (default: the From header's address, else <>)
      --rcpt ADDR [ARGS]     recipient, repeatable, e.g. --rcpt "bob@x NOTIFY=NEVER"
                             (default: the To header's addresses)
      --client-ip IP         SMTP client address (default 127.0.0.1; IPv6 allowed)
      --client-name NAME     SMTP client host name (default [IP])
      --client-port PORT     SMTP client port (default 40000)
      --helo NAME            HELO/EHLO argument (default client.example.test)
      --macro STAGE:NAME=V   macro for a stage (connect, helo, mail, rcpt, data, eoh,
                             eom, or the letter C H M R T N E), repeatable; replaces
                             the MTA's default of the same name
      --no-default-macros    send only --macro macros, not the MTA's defaults (Postfix's, or Sendmail's with --mta sendmail)
      --mta PRESET           postfix (default), postfix-2, postfix-3, postfix-4, sendmail
      --protocol-version N   offered protocol version (default from --mta)
      --actions HEX          offered SMFIF_* actions (default 0x1ff)
      --protocol HEX         offered SMFIP_* bits (default 0x1fffff)
      --count N              send the message N times on one connection (default 1)
      --quit-nc              between the copies, end the SMTP session with QUIT_NC
                             and start a new one on the same connection; where
                             libmilter would ignore QUIT_NC (after an end of message
                             not answered with continue) a new connection is opened,
                             as Postfix and Sendmail do for every SMTP session
      --timeout MS           per-reply timeout (default 30000)
      --json                 print one JSON document instead of text
      --color WHEN           colour the verdicts: auto (on a terminal, unless NO_COLOR
                             is set), always, never
      --no-color             same as --color never
  -h, --help                 show this help

Exit status: 0 the message would be delivered, 1 rejected or discarded,
3 temporarily refused, 2 bad usage, 1 for errors talking to the filter.

Examples:
  milterkit send -c inet:8890@127.0.0.1 message.eml
  milterkit send -c unix:/run/opendkim/opendkim.sock message.eml --from alice@example.com --json
  printf 'Subject: test\\n\\nhi\\n' | milterkit send -c inet:127.0.0.1:8890 --rcpt bob@example.com
`;

const STAGES: Readonly<Record<string, MacroStageLetter>> = {
  connect: "C",
  helo: "H",
  mail: "M",
  envfrom: "M",
  rcpt: "R",
  envrcpt: "R",
  data: "T",
  eoh: "N",
  eom: "E",
  header: "L",
  body: "B",
};

function splitArgs(spec: string): { address: string; args: string[] } {
  const [address = "", ...args] = spec.trim().split(/\s+/);
  return { address, args };
}

function addressesOf(value: string | undefined): string[] {
  if (value === undefined) return [];
  const out: string[] = [];
  for (const m of value.matchAll(/<([^<>\s]+@[^<>\s]+)>|([^\s<>,;:"]+@[^\s<>,;:"]+)/g)) {
    out.push(m[1] ?? m[2]!);
  }
  return out;
}

function parseMacros(list: readonly string[]): Partial<Record<MacroStageLetter, MacroInput>> {
  const out: Partial<Record<MacroStageLetter, [string, string][]>> = {};
  for (const item of list) {
    const m = /^([A-Za-z]+):([^=]+)=(.*)$/s.exec(item);
    const stage = m
      ? STAGES[m[1]!.toLowerCase()] ?? (/^[CHMRTNELBU]$/.test(m[1]!) ? m[1] : undefined)
      : undefined;
    if (!m || stage === undefined) {
      throw new UsageError(
        `--macro must look like STAGE:NAME=VALUE (e.g. mail:{auth_authen}=joe), got ${item}`,
      );
    }
    (out[stage as MacroStageLetter] ??= []).push([m[2]!, m[3]!]);
  }
  return out;
}

function hex(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v.startsWith("0x") ? v : `0x${v}`);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new UsageError(`--${name} needs a hex number`);
  }
  return n;
}

function describeReply(r: Reply): string {
  switch (r.type) {
    case "replycode":
      return `replycode "${displayText(r.text).replaceAll("\r\n", "\\r\\n")}"`;
    default:
      return r.type;
  }
}

function describeModification(m: Modification): string {
  switch (m.type) {
    case "addheader":
      return `add header ${m.name}: ${displayText(m.value)}`;
    case "insheader":
      return `insert header ${m.name} at #${m.index}: ${displayText(m.value)}`;
    case "chgheader":
      return m.value === ""
        ? `delete header ${m.name} #${m.index}`
        : `change header ${m.name} #${m.index}: ${displayText(m.value)}`;
    case "replbody":
      return `replace body chunk (${m.chunk.length} bytes)`;
    case "addrcpt":
      return `add recipient ${m.recipient}`;
    case "addrcpt_par":
      return `add recipient ${m.recipient}${m.args ? ` ${m.args}` : ""}`;
    case "delrcpt":
      return `delete recipient ${m.recipient}`;
    case "chgfrom":
      return `change sender to ${m.sender}${m.args ? ` ${m.args}` : ""}`;
    case "quarantine":
      return `quarantine: ${m.reason}`;
  }
}

/** How an SMTP session after the first began with --quit-nc. */
interface SessionStart {
  /** QUIT_NC on the same connection, or a new connection (QUIT, connect, OPTNEG). */
  readonly how: "quit_nc" | "reconnect";
  /** The previous transaction's verdict that made QUIT_NC unusable. */
  readonly after?: string;
}

function errorText(e: Error): string {
  return e.message;
}

function exitFor(r: TransactionResult): number {
  if (r.delivered) return EXIT.OK;
  return r.verdict.type === "tempfail" || r.verdict.type === "shutdown"
    ? EXIT.TEMPFAIL
    : EXIT.FAILURE;
}

function jsonResult(r: TransactionResult): unknown {
  const bytes = (b: Uint8Array) => ({ size: b.length });
  return {
    verdict: r.verdict,
    delivered: r.delivered,
    stages: r.replies.map((s) => ({
      stage: s.stage,
      detail: s.detail,
      outcome: s.result.outcome,
      reason: s.result.reason,
      reply: s.result.verdict,
      progress: s.result.progress || undefined,
    })),
    modifications: r.modifications.map((m) =>
      m.type === "replbody" ? { type: m.type, ...bytes(m.chunk) } : m
    ),
    rejectedRecipients: r.rejectedRecipients,
    envelope: r.result?.envelope ?? r.original.envelope,
    quarantine: r.result?.quarantine,
    message: r.result ? decodeText(serializeMessage(r.result.message)) : undefined,
    diff: r.result ? messageDiff(r.original.message, r.result.message) : undefined,
    queueId: r.queueId,
  };
}

/** `milterkit send`. */
export const sendCommand: Subcommand = {
  name: "send",
  summary: "send a message through any filter as an MTA would, show verdicts and changes",
  usage: USAGE,
  async run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        connect: { type: "string", short: "c" },
        from: { type: "string" },
        rcpt: { type: "string", multiple: true, default: [] },
        "client-ip": { type: "string", default: "127.0.0.1" },
        "client-name": { type: "string" },
        "client-port": { type: "string", default: "40000" },
        helo: { type: "string", default: "client.example.test" },
        macro: { type: "string", multiple: true, default: [] },
        "no-default-macros": { type: "boolean", default: false },
        mta: { type: "string", default: "postfix" },
        "protocol-version": { type: "string" },
        actions: { type: "string" },
        protocol: { type: "string" },
        count: { type: "string", default: "1" },
        "quit-nc": { type: "boolean", default: false },
        timeout: { type: "string", default: "30000" },
        json: { type: "boolean", default: false },
        ...COLOR_OPTIONS,
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.stdout(USAGE);
      return EXIT.OK;
    }
    const color = wantColor(io, values);
    if (!values.connect) throw new UsageError("--connect SPEC is required");
    const filterAt = parseSocketSpec(values.connect);
    if (positionals.length > 1) throw new UsageError("Expected at most one MESSAGE");
    const presets = ["postfix", "postfix-2", "postfix-3", "postfix-4", "postfix-6", "sendmail"];
    if (!presets.includes(values.mta!)) {
      throw new UsageError(`--mta must be one of ${presets.join(", ")}`);
    }
    const count = Number(values.count);
    if (!Number.isInteger(count) || count < 1) {
      throw new UsageError("--count needs a whole number ≥ 1");
    }
    const port = Number(values["client-port"]);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new UsageError("--client-port needs 0..65535");
    }
    const timeout = Number(values.timeout);
    if (!Number.isInteger(timeout) || timeout < 1) {
      throw new UsageError("--timeout needs milliseconds ≥ 1");
    }
    const version = values["protocol-version"] === undefined
      ? undefined
      : Number(values["protocol-version"]);
    if (version !== undefined && !(version >= 2 && version <= 6)) {
      throw new UsageError("--protocol-version must be 2..6");
    }

    const source = positionals[0];
    let message: Uint8Array;
    if (source === undefined || source === "-") {
      message = new Uint8Array(await new Response(io.stdin()).arrayBuffer());
    } else if (io.readFile) {
      message = await io.readFile(source).catch((e) => {
        const code = (e as { code?: string }).code;
        throw new UsageError(
          `Cannot read ${source}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`,
        );
      });
    } else throw new UsageError("Reading files is not available here");

    // Envelope defaults come from the message's headers, as a user would expect.
    const headerText = decodeText(message.subarray(0, Math.min(message.length, 64 * 1024)));
    const headerOf = (name: string) =>
      new RegExp(`^${name}:([^\\n]*(?:\\n[ \\t][^\\n]*)*)`, "im").exec(
        headerText.split(/\r?\n\r?\n/)[0] ?? "",
      )?.[1];
    const from = values.from !== undefined
      ? splitArgs(values.from)
      : { address: addressesOf(headerOf("From"))[0] ?? "", args: [] };
    const rcpts = values.rcpt!.length > 0
      ? values.rcpt!.map(splitArgs)
      : addressesOf(headerOf("To")).map((address) => ({ address, args: [] as string[] }));
    if (rcpts.length === 0) {
      throw new UsageError("No recipient: give --rcpt (the message has no To header)");
    }
    const ip = values["client-ip"]!;
    const family = ip.includes(":") ? "inet6" as const : "inet" as const;

    const clientOptions = {
      preset: (values.mta === "postfix" ? "postfix" : values.mta) as "postfix",
      commandTimeoutMs: timeout,
      ...(version === undefined ? {} : { version }),
      ...(values.actions === undefined ? {} : { actions: hex("actions", values.actions) }),
      ...(values.protocol === undefined ? {} : { protocol: hex("protocol", values.protocol) }),
    };
    const tx: TransactionInput = {
      connect: { hostname: values["client-name"] ?? `[${ip}]`, family, address: ip, port },
      helo: values.helo!,
      from: from.address,
      fromArgs: from.args,
      rcpts: rcpts.map((r) => ({ recipient: r.address, args: r.args })),
      message,
      macros: parseMacros(values.macro!),
      defaultMacros: !values["no-default-macros"],
    };
    const quitNc = values["quit-nc"]!;
    const results: TransactionResult[] = [];
    /** How each SMTP session after the first began (--quit-nc), by transaction index. */
    const starts = new Map<number, SessionStart>();
    let first: MilterClient | undefined;
    let failure: Error | undefined;
    let open: { conn: Connection; client?: MilterClient } | undefined;
    const dial = async () => {
      open = { conn: await connect(filterAt, { timeoutMs: timeout }) };
      open.client = await MilterClient.open(open.conn, clientOptions);
      first ??= open.client;
      return open.client;
    };
    const hangUp = async () => {
      if (open?.client) await endSession(open.client);
      await open?.client?.close().catch(() => {});
      open?.conn.close();
      open = undefined;
    };
    try {
      let client = await dial();
      for (let i = 0; i < count; i++) {
        if (i > 0 && quitNc) {
          if (quitNcAllowedAfter(results.at(-1)!)) {
            await newSession(client);
            starts.set(i, { how: "quit_nc" });
          } else {
            // libmilter would ignore QUIT_NC (and the CONNECT after it) here: start the new
            // session as Postfix and Sendmail always do, on a new connection.
            const prev = results.at(-1)!.verdict;
            await hangUp();
            client = await dial();
            starts.set(i, { how: "reconnect", after: `${prev.type} at ${prev.stage}` });
          }
        }
        const r = await runTransaction(client, tx, quitNc ? { abortAfter: false } : {});
        results.push(r);
        if (r.verdict.scope === "session" && !r.delivered && !quitNc) break;
      }
    } catch (e) {
      // Keep what finished: the results so far are printed with the error.
      failure = asError(e);
    } finally {
      await hangUp().catch(() => {});
    }
    // Nothing finished: the error alone is the answer (exit 1).
    if (failure && results.length === 0) throw failure;
    const client = first;

    if (values.json) {
      io.stdout(
        JSON.stringify(
          {
            negotiated: client && {
              version: client.negotiated.version,
              actions: flagNames(client.negotiated.actions, ACTION_NAMES),
              protocol: flagNames(client.negotiated.protocol, PROTOCOL_NAMES),
              macros: client.negotiated.symlists,
            },
            warnings: client?.warnings,
            transactions: results.map((r, i) => ({
              ...(starts.has(i) ? { session: starts.get(i) } : {}),
              ...(jsonResult(r) as Record<string, unknown>),
            })),
            error: failure ? errorText(failure) : undefined,
          },
          null,
          2,
        ) + "\n",
      );
    } else {
      const out: string[] = [];
      if (client) {
        out.push(
          `negotiated: version ${client.negotiated.version}, actions ${
            flagNames(client.negotiated.actions, ACTION_NAMES).join(" ") || "none"
          }, protocol ${flagNames(client.negotiated.protocol, PROTOCOL_NAMES).join(" ") || "none"}`,
        );
        for (const w of client.warnings) out.push(`warning: ${w}`);
      }
      results.forEach((r, i) => {
        if (results.length > 1 || failure) {
          out.push(`--- message ${i + 1} (queue id ${r.queueId})`);
        }
        const start = starts.get(i);
        if (start) {
          out.push(
            start.how === "quit_nc"
              ? "  new SMTP session: QUIT_NC, same connection"
              : `  new SMTP session: new connection (libmilter ignores QUIT_NC after ${start.after})`,
          );
        }
        for (const s of r.replies) {
          const what = s.result.outcome === "replied"
            ? describeReply(s.result.verdict)
            : s.result.outcome === "no-reply"
            ? "(no reply negotiated)"
            : `(not sent: ${s.result.reason})`;
          out.push(
            `  ${s.stage.padEnd(7)} ${s.detail ? displayText(s.detail) + " " : ""}-> ${what}`,
          );
        }
        for (const m of r.modifications) out.push(`  modification: ${describeModification(m)}`);
        for (const rr of r.rejectedRecipients) {
          out.push(`  recipient refused: ${rr.recipient} (${rr.reply})`);
        }
        out.push(
          `verdict: ${
            paint(verdictColor(r.verdict.type), r.verdict.type, color)
          } at ${r.verdict.stage}${r.verdict.reply ? ` "${r.verdict.reply}"` : ""}` +
            (r.delivered ? " (would be delivered)" : ""),
        );
        if (r.result) {
          if (r.result.quarantine !== undefined) {
            out.push(`held in quarantine: ${r.result.quarantine}`);
          }
          const env = r.result.envelope;
          out.push(
            `envelope: from ${env.sender} to ${env.recipients.map((x) => x.recipient).join(", ")}`,
          );
          const diff = messageDiff(r.original.message, r.result.message);
          out.push(diff === "" ? "message unchanged" : `changes:\n${diff.trimEnd()}`);
        }
      });
      io.stdout(out.join("\n") + "\n");
    }
    if (failure) {
      io.stderr(`milterkit send: ${errorText(failure)}\n`);
      return EXIT.FAILURE;
    }
    return results.length === 0 ? EXIT.FAILURE : exitFor(results.at(-1)!);
  },
};
