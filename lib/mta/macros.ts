/**
 * Which macros go into the `D` frame before an MTA command: the filter's SETSYMLIST lists
 * decide the names, the MTA style decides whether a frame is sent at all.
 *
 * @module
 */

import { macroKey } from "./negotiate.ts";
import { type MacroInput, macroPairs } from "./types.ts";
import type { Command, MtaStyle } from "../wire/types.ts";

/**
 * Builds the `D` frame for one event, or decides that none is sent.
 *
 * - The list the filter asked for in its OPTNEG reply (per `SMFIM_*` stage) filters the names;
 *   `D L` (before each header) uses the end-of-header list and `D B` (before each body chunk)
 *   the end-of-message list, as Postfix does; a stage without a list gets every macro given.
 * - `postfix` style sends the frame even when empty; `sendmail` style only sends C H M R T N E
 *   frames and only when at least one macro is left.
 *
 * @param letter The command letter the macros belong to (`C`, `H`, `M`, `R`, `T`, `L`, `N`,
 * `B`, `E`, `U`).
 * @param macros The macros the caller has for this event.
 * @param lists The filter's lists by stage letter (from negotiation).
 * @param style The MTA whose habits to copy.
 * @returns The `macro` command, or undefined when no frame is sent.
 *
 * @example
 * ```ts
 * import { macroCommand } from "./macros.ts";
 * import assert from "node:assert/strict";
 * const lists = new Map([["M", new Set(["{mail_addr}"])]]);
 * const m = macroCommand("M", { "{mail_addr}": "a@b", "{mail_host}": "b" }, lists, "postfix");
 * assert.deepEqual(m, { type: "macro", stage: "M", macros: [["{mail_addr}", "a@b"]] });
 * assert.equal(macroCommand("H", {}, lists, "sendmail"), undefined);
 * ```
 */
export function macroCommand(
  letter: string,
  macros: MacroInput | undefined,
  lists: ReadonlyMap<string, ReadonlySet<string>>,
  style: MtaStyle,
): Command | undefined {
  if (style === "sendmail" && "LBU".includes(letter)) return undefined;
  const list = letter === "L" ? "N" : letter === "B" ? "E" : letter;
  let pairs = macroPairs(macros);
  const wanted = lists.get(list);
  if (wanted !== undefined) pairs = pairs.filter(([n]) => wanted.has(macroKey(n)));
  if (style === "sendmail" && pairs.length === 0) return undefined;
  return { type: "macro", stage: letter, macros: pairs };
}
