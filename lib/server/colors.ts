/**
 * The one terminal palette of the toolkit: verdicts have the same colour wherever they are
 * shown (`serve`'s log, `proxy`'s summaries, `dump`'s timelines, `send`'s result): accepted
 * green, rejected red, temporary failures yellow, discarded magenta. Whether to colour at all is
 * the caller's decision (a terminal, no `NO_COLOR`, no `--no-color`).
 *
 * @module
 */

/** SGR codes of the colours used. */
export const ANSI = {
  bold: 1,
  dim: 2,
  red: 31,
  green: 32,
  yellow: 33,
  blue: 34,
  magenta: 35,
  cyan: 36,
} as const;

/** A colour of the palette. */
export type AnsiColor = keyof typeof ANSI;

/**
 * Wraps `text` in the colour's escape codes when `on`, else returns it unchanged.
 *
 * @param color The colour.
 * @param text The text.
 * @param on Whether colour is wanted.
 * @returns The text, coloured or not.
 *
 * @example
 * ```ts
 * import { paint } from "./colors.ts";
 * import assert from "node:assert/strict";
 * assert.equal(paint("red", "reject", false), "reject");
 * assert.equal(paint("red", "reject", true), "\x1b[31mreject\x1b[0m");
 * ```
 */
export function paint(color: AnsiColor, text: string, on = true): string {
  return on ? `\x1b[${ANSI[color]}m${text}\x1b[0m` : text;
}

/**
 * The colour of a verdict word, as the milter replies and the outcomes name them: `accept` and
 * `continue` (at end of message: delivered) green, `reject` red, `tempfail` and `shutdown`
 * yellow, `discard` magenta, anything else (`aborted`, `incomplete`, `skip`) dim.
 *
 * @param verdict The verdict word.
 * @returns Its colour.
 *
 * @example
 * ```ts
 * import { verdictColor } from "./colors.ts";
 * import assert from "node:assert/strict";
 * assert.equal(verdictColor("tempfail"), "yellow");
 * ```
 */
export function verdictColor(verdict: string): AnsiColor {
  switch (verdict) {
    case "accept":
    case "continue":
      return "green";
    case "reject":
      return "red";
    case "tempfail":
    case "shutdown":
      return "yellow";
    case "discard":
      return "magenta";
    default:
      return "dim";
  }
}
