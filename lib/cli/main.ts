/**
 * The dispatcher of the `milterkit` binary: global `--help`/`--version`, `help SUBCOMMAND`,
 * and the mapping of errors to exit codes (0 ok, 1 failure, 2 usage). Nothing here exits the
 * process; `cli.ts` does.
 *
 * @module
 */

import { MilterError } from "../wire/errors.ts";
import { ScriptError } from "./script.ts";
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
2 bad usage, 3 send: temporary failure.
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
    io.stderr(`milterkit: unknown command ${JSON.stringify(first)}\n\n${overview(commands)}`);
    return EXIT.USAGE;
  }
  try {
    return await cmd.run(rest, io);
  } catch (e) {
    if (e instanceof UsageError || isParseArgsError(e)) {
      io.stderr(`milterkit ${cmd.name}: ${(e as Error).message}\n\n${cmd.usage}`);
      return EXIT.USAGE;
    }
    const err = e instanceof Error ? e : new Error(String(e));
    const label = err instanceof MilterError || err instanceof ScriptError ? err.name : "error";
    io.stderr(`milterkit ${cmd.name}: ${label}: ${err.message}\n`);
    if (io.env.MILTERKIT_DEBUG && err.stack) io.stderr(err.stack + "\n");
    return EXIT.FAILURE;
  }
}

function isParseArgsError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("ERR_PARSE_ARGS");
}
