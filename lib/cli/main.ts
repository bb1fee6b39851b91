/**
 * The dispatcher of the `milterkit` binary: global `--help`/`--version`, `help SUBCOMMAND`,
 * and the mapping of errors to exit codes (0 ok, 1 failure, 2 usage). Nothing here exits the
 * process; `cli.ts` does.
 *
 * @module
 */

import { SocketSpecError } from "../server/socket_spec.ts";
import { asError } from "../wire/errors.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";

import { VERSION } from "./version.ts";

function overview(commands: readonly Subcommand[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return `milterkit ${VERSION}: a toolkit for the Sendmail milter protocol (Postfix, Sendmail)

Usage: milterkit COMMAND [options]

Commands:
${commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n")}

  help COMMAND   show the help of a command (same as milterkit COMMAND --help)

Options:
  -h, --help     show this help
  -V, --version  show the version

Exit codes: 0 success (send: accepted), 1 failure (send: rejected or discarded),
2 bad usage, 3 send: temporary failure, 130/143 stopped by SIGINT/SIGTERM.
`;
}

/**
 * Runs the binary's command line.
 *
 * @param args Arguments after the program name.
 * @param io Output, environment, signals.
 * @param commands The subcommands.
 * @returns The exit code.
 */
export async function main(
  args: readonly string[],
  io: CliIo,
  commands: readonly Subcommand[],
): Promise<number> {
  const [first, ...rest] = args;
  if (first === undefined || first === "-h" || first === "--help") {
    io.stdout(overview(commands));
    return first === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (first === "-V" || first === "--version") {
    io.stdout(`milterkit ${VERSION}\n`);
    return EXIT.OK;
  }
  if (first === "help") {
    const cmd = commands.find((c) => c.name === rest[0]);
    if (!cmd) {
      io.stdout(overview(commands));
      return rest[0] === undefined ? EXIT.OK : EXIT.USAGE;
    }
    io.stdout(cmd.usage);
    return EXIT.OK;
  }
  const cmd = commands.find((c) => c.name === first);
  if (!cmd) {
    io.stderr(
      `milterkit: unknown command ${JSON.stringify(first)}\n` +
        `Commands: ${commands.map((c) => c.name).join(", ")}; "milterkit --help" shows more.\n`,
    );
    return EXIT.USAGE;
  }
  try {
    if (cmd.stopsOnSignal) return await cmd.run(rest, io);
    // A command ended by a signal is abandoned, not awaited: whatever it still prints (a read
    // cut short by the signal, say) would follow the "stopped by" line, so its output ends there.
    const own: CliIo = {
      ...io,
      stdout: (t) => void (io.signal.aborted || io.stdout(t)),
      stderr: (t) => void (io.signal.aborted || io.stderr(t)),
    };
    return await untilSignal(cmd, cmd.run(rest, own), io);
  } catch (e) {
    const err = asError(e);
    if (isUsageError(err)) {
      io.stderr(`milterkit ${cmd.name}: ${oneLine(err.message)}\n${usageHint(cmd)}`);
      return EXIT.USAGE;
    }
    io.stderr(`milterkit ${cmd.name}: ${err.message}\n`);
    if (io.env.MILTERKIT_DEBUG && err.stack) io.stderr(err.stack + "\n");
    return EXIT.FAILURE;
  }
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGINT: 2, SIGTERM: 15 };

/**
 * A subcommand that does not watch the signal itself ends when one arrives: one line and exit
 * 128 + its number, even while it waits on something that never comes.
 */
function untilSignal(cmd: Subcommand, running: Promise<number>, io: CliIo): Promise<number> {
  if (io.signal.aborted) return Promise.resolve(stopped(cmd, io));
  return new Promise<number>((resolve, reject) => {
    const onAbort = () => resolve(stopped(cmd, io));
    io.signal.addEventListener("abort", onAbort, { once: true });
    const done = () => io.signal.removeEventListener("abort", onAbort);
    running.then((code) => {
      done();
      resolve(code);
    }, (e) => {
      done();
      reject(e);
    });
  });
}

function stopped(cmd: Subcommand, io: CliIo): number {
  const reason = io.signal.reason;
  const name = typeof reason === "string" && reason in SIGNAL_NUMBERS ? reason : "SIGTERM";
  io.stderr(`milterkit ${cmd.name}: stopped by ${name}\n`);
  return 128 + SIGNAL_NUMBERS[name]!;
}

/**
 * Errors in what the user typed (exit 2): bad options, bad socket specs. Runtime failures
 * (a filter that is down, a script that throws) are exit 1.
 */
function isUsageError(e: Error): boolean {
  return e instanceof UsageError || e instanceof SocketSpecError || isParseArgsError(e);
}

/** The first line of the usage and where the rest is, instead of the whole help. */
function usageHint(cmd: Subcommand): string {
  const first = cmd.usage.split("\n", 1)[0]!;
  return `${first}\n"milterkit ${cmd.name} --help" lists every option.\n`;
}

/** A usage message on one line, without the option parser's advice on `--` quoting. */
function oneLine(message: string): string {
  return message.replace(/\. To specify a positional argument.*$/s, "")
    .split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "").join(" ");
}

function isParseArgsError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}
