/**
 * Whether a subcommand colours its output: the same rule in `serve`, `proxy`, `dump`, `send` and
 * `bench`. `--no-color` or `--color never` turn colour off, `--color always` on; otherwise
 * colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org) or
 * `TERM=dumb`.
 *
 * @module
 */

import { type CliIo, UsageError } from "./types.ts";

/** The `--color` and `--no-color` options, for `parseArgs`. */
export const COLOR_OPTIONS = {
  color: { type: "string", default: "auto" },
  "no-color": { type: "boolean", default: false },
} as const;

/**
 * Decides whether to colour.
 *
 * @param io The environment (NO_COLOR, TERM) and terminals.
 * @param values The parsed `--color` and `--no-color`.
 * @param tty Whether the stream coloured is a terminal (default: standard output).
 * @returns True to colour.
 * @throws {UsageError} for a `--color` other than auto, always or never.
 *
 * @example
 * ```ts
 * import { wantColor } from "./color.ts";
 * const on = wantColor({ env: { NO_COLOR: "1" }, isTty: true } as never, { color: "auto" });
 * ```
 */
export function wantColor(
  io: Pick<CliIo, "env" | "isTty">,
  values: { readonly color?: string; readonly "no-color"?: boolean },
  tty: boolean = io.isTty,
): boolean {
  const when = values.color ?? "auto";
  if (when !== "auto" && when !== "always" && when !== "never") {
    throw new UsageError(`--color must be auto, always or never, got ${when}`);
  }
  if (values["no-color"] || when === "never") return false;
  if (when === "always") return true;
  if ((io.env.NO_COLOR ?? "") !== "" || io.env.TERM === "dumb") return false;
  return tty;
}
