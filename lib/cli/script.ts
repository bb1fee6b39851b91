/**
 * Loading a user's filter script (.ts or .js): the default export (or an export named
 * `filter`) must be a filter object. Unknown keys are reported, so a typo in a handler name
 * does not silently switch an event off.
 *
 * @module
 */

import { createRequire } from "node:module";
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Filter } from "../filter/filter.ts";
import { negotiateFilter, requirementsOf } from "../filter/negotiate.ts";
import type { Negotiated } from "../wire/types.ts";
import { ACTION_NAMES, flagNames, PROTOCOL_NAMES } from "../wire/constants.ts";

const KNOWN = new Set([
  "name",
  "actions",
  "macros",
  "noReply",
  "observe",
  "ignore",
  "headerLeadingSpace",
  "rejectedRecipients",
  "bufferBody",
  "maxBodyBytes",
  "onBodyLimit",
  "connectionState",
  "messageState",
  "connect",
  "helo",
  "envfrom",
  "envrcpt",
  "data",
  "header",
  "eoh",
  "body",
  "bodyStream",
  "eom",
  "abort",
  "close",
  "unknown",
]);

/** Keys whose value must be a function. */
const FUNCTIONS = [...KNOWN].filter((k) =>
  !["name", "actions", "macros", "noReply", "observe", "ignore", "headerLeadingSpace"].includes(
    k,
  ) &&
  !["rejectedRecipients", "bufferBody", "maxBodyBytes", "onBodyLimit"].includes(k)
);

/**
 * Whether `value` has a filter's shape: an object whose handlers and state factories are
 * functions and whose `bufferBody` is a boolean. (Unknown keys are reported separately.)
 */
function isFilter(value: object, path: string): value is Filter<unknown, unknown> {
  const entries = new Map(Object.entries(value));
  for (const key of FUNCTIONS) {
    const v = entries.get(key);
    if (v !== undefined && typeof v !== "function") {
      throw new ScriptError(`${path}: ${key} must be a function, not ${typeof v}`);
    }
  }
  const buffer = entries.get("bufferBody");
  if (buffer !== undefined && typeof buffer !== "boolean") {
    throw new ScriptError(
      `${path}: bufferBody must be true or false; its limits are maxBodyBytes and onBodyLimit`,
    );
  }
  if (!buffer && (entries.has("maxBodyBytes") || entries.has("onBodyLimit"))) {
    throw new ScriptError(`${path}: maxBodyBytes and onBodyLimit need bufferBody: true`);
  }
  return true;
}

/** Thrown when a script cannot be loaded or does not export a valid filter. */
export class ScriptError extends Error {
  /** @param message What is wrong with the script. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ScriptError";
  }
}

/** The known key within two edits of `key` (case-insensitive), for a "did you mean" hint. */
function nearestKey(key: string): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const known of KNOWN) {
    const d = editDistance(key.toLowerCase(), known.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [known, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        prev[j]! + 1,
        row[j - 1]! + 1,
        prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    prev = row;
  }
  return prev[b.length]!;
}

let generation = 0;

/**
 * Imports a filter script and checks its shape.
 *
 * @param path Path of the .ts/.js module (relative to the working directory).
 * @param fresh Import a new copy (for reloads) instead of the cached module.
 * @returns The filter.
 */
export async function loadFilter(path: string, fresh = false): Promise<Filter<unknown, unknown>> {
  const abs = isAbsolute(path) ? path : resolve(path);
  const url = pathToFileURL(abs).href + (fresh ? `?reload=${++generation}` : "");
  // Deno keys its module cache by URL (the query makes a fresh copy); Bun by path, ignoring the
  // query: it re-reads the file only once the path is out of its (shared CJS/ESM) cache.
  if (fresh) delete createRequire(import.meta.url).cache[abs];
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    throw new ScriptError(
      `Cannot load ${path}: ${e instanceof Error ? e.message : String(e)}`,
      { cause: e },
    );
  }
  const filter = mod.default ?? mod.filter;
  if (typeof filter !== "object" || filter === null) {
    throw new ScriptError(
      `${path} must export a filter object as its default export (export default defineFilter({ ... }))`,
    );
  }
  const unknown = Object.keys(filter).filter((k) => !KNOWN.has(k));
  if (unknown.length > 0) {
    const hints = unknown.map((k) => {
      const near = nearestKey(k);
      return JSON.stringify(k) + (near === undefined ? "" : ` (did you mean "${near}"?)`);
    });
    throw new ScriptError(
      `${path}: unknown filter keys ${hints.join(", ")}; known: ${[...KNOWN].join(", ")}`,
    );
  }
  if (!isFilter(filter, path)) throw new ScriptError(`${path}: not a filter object`);
  try {
    requirementsOf(filter);
  } catch (e) {
    throw new ScriptError(`${path}: ${(e as Error).message}`, { cause: e });
  }
  return filter;
}

/**
 * Describes what a filter will negotiate with a stock Postfix/Sendmail offer (v6, all
 * actions, all protocol bits), for `serve --check`.
 *
 * @param filter The filter.
 * @returns Readable lines.
 */
export function describeFilter<C, M>(filter: Filter<C, M>): string[] {
  const req = requirementsOf(filter);
  const lines = [`filter: ${filter.name ?? "(unnamed)"}`];
  if (typeof filter.eom === "function") lines.push("end of message: answered by the eom handler");
  const by = (mode: string) =>
    Object.entries(req.events).filter(([, m]) => m === mode).map(([e]) => e).join(" ") || "-";
  lines.push(`events answered: ${by("reply")}`);
  lines.push(`events received without reply: ${by("noreply")}`);
  lines.push(`events switched off: ${by("off")}`);
  let n: Negotiated | undefined;
  try {
    n = negotiateFilter({ version: 6, actions: 0x1ff, protocol: 0x1fffff }, req).negotiated;
  } catch (e) {
    lines.push(`negotiation would fail: ${(e as Error).message}`);
  }
  if (n) {
    lines.push(`actions: ${flagNames(n.actions, ACTION_NAMES).join(" ") || "none"}`);
    lines.push(`protocol: ${flagNames(n.protocol, PROTOCOL_NAMES).join(" ") || "none"}`);
    lines.push(
      `OPTNEG reply to Postfix/Sendmail (v6, 0x1ff, 0x1fffff): version ${n.version}, actions 0x${
        n.actions.toString(16)
      }, protocol 0x${n.protocol.toString(16)}`,
    );
    for (const l of n.symlists) lines.push(`macros for stage ${l.stage}: ${l.macros}`);
  }
  return lines;
}
