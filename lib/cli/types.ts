/**
 * The contract between `cli.ts` and the subcommands: a subcommand is data plus a `run`
 * function that returns an exit code. Nothing below `cli.ts` exits the process.
 *
 * @module
 */

/** Where a subcommand writes and what it may read from its environment. */
export interface CliIo {
  /** Writes to standard output (no newline added). */
  readonly stdout: (text: string) => void;
  /** Writes to standard error (no newline added). */
  readonly stderr: (text: string) => void;
  /** True when standard output is a terminal (colour, live display). */
  readonly isTty: boolean;
  /** True when standard error is a terminal (colour in logs). */
  readonly errIsTty?: boolean;
  /** Environment variables. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * Aborted on SIGINT/SIGTERM (the reason is the signal's name): long-running subcommands stop
   * gracefully when it fires.
   */
  readonly signal: AbortSignal;
  /** Standard input as a byte stream. */
  readonly stdin: () => ReadableStream<Uint8Array>;
  /**
   * Subscribes to a process signal (SIGINT, SIGTERM, SIGHUP); returns the unsubscribe
   * function. Absent where signals cannot be observed (tests).
   */
  readonly onSignal?: (name: "SIGINT" | "SIGTERM" | "SIGHUP", fn: () => void) => () => void;
  /**
   * The command that runs this binary again (program, then leading arguments such as a script
   * path), for `serve --workers`. Absent where the binary cannot start copies of itself.
   */
  readonly self?: readonly string[];
  /**
   * Receives errors nobody caught (unhandled rejections, exceptions thrown in timers) instead
   * of the runtime printing them and exiting; returns the unsubscribe function. Absent in tests.
   */
  readonly onUncaught?: (
    fn: (error: unknown, kind: "unhandled rejection" | "uncaught exception") => void,
  ) => () => void;
  /** Reads a file (for scripts and inputs). */
  readonly readFile?: (path: string) => Promise<Uint8Array>;
}

/** Exit codes of the binary. */
export const EXIT = {
  /** Success (for `send`: the message was accepted). */
  OK: 0,
  /** Failure (for `send`: rejected). */
  FAILURE: 1,
  /** Bad usage: unknown option, missing argument. */
  USAGE: 2,
  /** For `send`: the message was temporarily failed. */
  TEMPFAIL: 3,
} as const;

/** One subcommand of `milterkit`. */
export interface Subcommand {
  /** The word after `milterkit`. */
  readonly name: string;
  /** One line for the overview in `milterkit --help`. */
  readonly summary: string;
  /** The full `--help` text. */
  readonly usage: string;
  /**
   * True when `run` watches {@link CliIo.signal} and stops gracefully on its own (serve, proxy,
   * bench). Otherwise a SIGINT or SIGTERM ends the subcommand at once: one line, exit 128 + the
   * signal's number, whatever it was waiting for (a FIFO nobody writes, a filter that never
   * answers).
   */
  readonly stopsOnSignal?: boolean;
  /** Runs the subcommand with its own arguments (after the name); resolves to an exit code. */
  run(args: string[], io: CliIo): Promise<number>;
}

/**
 * Thrown by a subcommand for bad usage; `cli.ts` prints the message and the usage, exit 2.
 *
 * @example
 * ```ts
 * import { UsageError } from "./types.ts";
 * const e = new UsageError("--listen needs a value");
 * ```
 */
export class UsageError extends Error {
  /** @param message What is wrong with the arguments. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}
