/**
 * Loading a user's filter script (.ts or .js): the default export (or an export named
 * `filter`) must be a filter object. Unknown keys are reported, so a typo in a handler name
 * does not silently switch an event off.
 *
 * @module
 */

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join, relative, resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { bunScriptBundler, registerBunModules } from "../server/adapters/bun_script.ts";
import {
  isNode,
  nodeSyntaxPosition,
  registerNodeHooks,
  reloadQuery,
} from "../server/adapters/node_script.ts";
import { ResolveError, resolveImport, toolkitSubpath } from "./resolve.ts";
import type { Filter } from "../filter/filter.ts";
import { negotiateFilter, requirementsOf } from "../filter/negotiate.ts";
import { thrownMessage } from "../wire/errors.ts";
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
      throw new ScriptError(
        `${path}: "${key}" must be a function, got ${JSON.stringify(v) ?? typeof v}` +
          (typeof v === "string" ? ` (write ${key}: () => ${JSON.stringify(v)})` : ""),
      );
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

/** A loaded script: its filter and its module (whose `state` a reload hands on). */
export interface LoadedScript {
  /** The validated filter. */
  filter: Filter<unknown, unknown>;
  /** The module namespace. */
  module: Record<string, unknown>;
}

/** Options of {@link loadScript}. */
export interface LoadOptions {
  /** Load a new copy of the script and its local modules (a reload). */
  fresh?: boolean;
  /** Give up when loading (top-level await included) takes longer (default 30000). */
  timeoutMs?: number;
  /** The version being replaced: its `state` export goes to the new version's `restore()`. */
  previous?: LoadedScript;
}

/** The toolkit's entry points, as the running program has them. */
let toolkit: Record<string, object> = {};

/**
 * Tells the loader the toolkit's entry points (`"."`, `"./testing"`, ...), so scripts that
 * import the toolkit by name (`@milterkit/milterkit`, `milterkit`, `jsr:`/`npm:` forms, with
 * subpaths) get the running copy. Called once by the program.
 *
 * @param modules Entry point to module namespace.
 */
export function registerToolkit(modules: Record<string, object>): void {
  toolkit = modules;
  const named: Record<string, object> = {};
  for (const [sub, ns] of Object.entries(modules)) {
    const tail = sub === "." ? "" : sub.slice(1);
    for (
      const name of [
        "@milterkit/milterkit",
        "jsr:@milterkit/milterkit",
        "milterkit",
        "npm:milterkit",
      ]
    ) {
      named[name + tail] = ns;
    }
  }
  if (!registerBunModules(named)) registerNodeHooks(modules, toolkitSubpath);
}

let generation = 0;
let scratch: string | undefined;

/** A private directory for bundled scripts, removed at exit. */
function scratchDir(): string {
  if (scratch === undefined) {
    const dir = mkdtempSync(join(tmpdir(), "milterkit-script-"));
    scratch = dir;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return scratch;
}

/** How a path is shown: relative to the working directory when inside it. */
function shown(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel.startsWith("..") || isAbsolute(rel) || process.cwd() === "/" ? file : rel;
}

/** `file:line:col: message` and the line with a caret under the column. */
export function codeFrame(
  message: string,
  file: string,
  line: number,
  column: number | undefined,
  lineText?: string,
): string {
  let text = lineText;
  if (text === undefined) {
    try {
      text = readFileSync(file, "utf8").split(/\r?\n/)[line - 1];
    } catch {
      text = undefined;
    }
  }
  const at = `${shown(file)}:${line}${column === undefined ? "" : `:${column}`}`;
  if (text === undefined) return `${at}: ${message}`;
  const gutter = `${line} | `;
  const caret = column === undefined
    ? ""
    : `\n${" ".repeat(gutter.length - 2)}| ${text.slice(0, column - 1).replace(/[^\t]/g, " ")}^`;
  return `${at}: ${message}\n${gutter}${text}${caret}`;
}

/** The first position in a stack or message that names a local file. */
function firstLocalPosition(text: string): [string, number, number | undefined] | undefined {
  for (const m of text.matchAll(/(?:file:\/\/)?(\/[^\s():?]+)(?:\?[^\s:]*)?:(\d+)(?::(\d+))?/g)) {
    const file = decodeURIComponent(m[1]!);
    if (file.includes("/node_modules/") || file.startsWith("/$bunfs/") || !existsSync(file)) {
      continue;
    }
    return [file, Number(m[2]), m[3] === undefined ? undefined : Number(m[3])];
  }
  return undefined;
}

/** A one-line reason plus, when a position is known, `file:line:col` and a code frame. */
function describeLoadError(path: string, e: unknown, abs: string): string {
  // A thrown value that is not an Error has no position of its own; an Error made here would
  // point into this file.
  if (!(e instanceof Error)) return `${path}: the script threw ${thrownMessage(e)}`;
  const err = e;
  if (err.name === "SyntaxError" && isNode()) {
    const at = nodeSyntaxPosition(abs);
    if (at !== undefined) return codeFrame(err.message, at.file, at.line, at.column);
  }
  const message = err.message.split("\n")[0]!.replace(/^(file:\/\/)?\/[^\s:]+:\d+\s*$/, "") ||
    err.name;
  const pos = firstLocalPosition(`${err.message}\n${err.stack ?? ""}`);
  if ((err as { code?: string }).code === "ERR_UNKNOWN_FILE_EXTENSION") {
    return `${path}: this Node cannot run .ts scripts (Node 22.18+ can; or write .js, or use the milterkit binary)`;
  }
  return pos === undefined ? `${path}: ${message}` : codeFrame(message, ...pos);
}

function timeBox<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new ScriptError(what())), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Imports the script under the running runtime; local modules are re-read when `fresh`. */
async function importScript(abs: string, path: string, fresh: boolean) {
  const bundle = bunScriptBundler();
  const n = ++generation;
  if (bundle !== undefined) {
    const r = await bundle(abs, (specifier, importer, kind) => {
      let res;
      try {
        res = resolveImport(specifier, importer, { kind });
      } catch (e) {
        // A `require()` of a package that is not installed is how CommonJS packages probe for
        // optional dependencies (`try { require("supports-color") } catch {}` in `debug`): leave
        // it to run time, where it throws into the package's own catch. A missing import stays
        // a load error.
        if (kind === "require" && e instanceof ResolveError) return { external: specifier };
        throw e;
      }
      if (res.kind === "toolkit") {
        // Not the program (a test runner, say): the runtime's own resolution finds the toolkit.
        if (Object.keys(toolkit).length === 0) return undefined;
        if (!(res.subpath in toolkit)) {
          throw new ResolveError(
            `milterkit has no entry point "${res.subpath}" (it has ${
              Object.keys(toolkit).join(", ")
            })`,
          );
        }
        return {
          external: "@milterkit/milterkit" + (res.subpath === "." ? "" : res.subpath.slice(1)),
        };
      }
      if (res.kind === "builtin") return { external: res.specifier };
      if (res.kind === "file") return { path: res.path };
      return undefined;
    });
    if (!r.ok) {
      const shownProblems = r.problems.slice(0, 3).map((p) =>
        p.file === undefined
          ? `${path}: ${p.message}`
          : p.line === undefined
          ? `${shown(p.file)}: ${p.message}`
          : codeFrame(p.message, p.file, p.line, p.column, p.lineText)
      );
      const more = r.problems.length > 3 ? `\n(${r.problems.length - 3} more problems)` : "";
      throw new ScriptError(shownProblems.join("\n") + more);
    }
    const file = join(scratchDir(), `${basename(abs).replace(/\.[^.]*$/, "")}-${n}.mjs`);
    writeFileSync(file, r.code);
    try {
      return await import(pathToFileURL(file).href) as Record<string, unknown>;
    } finally {
      rmSync(file, { force: true });
    }
  }
  const query = registerNodeHooks(toolkit, toolkitSubpath) ? reloadQuery(n) : `?reload=${n}`;
  return await import(pathToFileURL(abs).href + (fresh ? query : "")) as Record<string, unknown>;
}

/**
 * Imports a filter script (and, under Bun and in the binary, everything it imports: its npm
 * packages from the nearest node_modules, local modules, JSON) and checks its shape.
 *
 * @param path Path of the .ts/.js module (relative to the working directory).
 * @param options Reload, time limit, the previous version.
 * @returns The filter and the module.
 * @throws {ScriptError} With `file:line:col` and a code frame when the position is known.
 */
export async function loadScript(path: string, options: LoadOptions = {}): Promise<LoadedScript> {
  const abs = isAbsolute(path) ? path : resolve(path);
  if (!existsSync(abs)) throw new ScriptError(`${path}: no such file`);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const late = () =>
    `${path}: still loading after ${timeoutMs} ms (a top-level await that never settles?); ` +
    `giving up`;
  let mod: Record<string, unknown>;
  try {
    mod = await timeBox(importScript(abs, path, options.fresh ?? false), timeoutMs, late);
  } catch (e) {
    if (e instanceof ScriptError) throw e;
    throw new ScriptError(describeLoadError(path, e, abs), { cause: e });
  }
  const filter = checkFilter(path, mod.default ?? mod.filter);
  const loaded = { filter, module: mod };
  if (options.previous !== undefined && typeof mod.restore === "function") {
    try {
      await timeBox(
        Promise.resolve(mod.restore(options.previous.module.state)),
        timeoutMs,
        () => `${path}: restore() still running after ${timeoutMs} ms`,
      );
    } catch (e) {
      if (e instanceof ScriptError) throw e;
      throw new ScriptError(`${path}: restore() failed: ${describeLoadError(path, e, abs)}`, {
        cause: e,
      });
    }
  }
  return loaded;
}

/**
 * Imports a filter script and checks its shape.
 *
 * @param path Path of the .ts/.js module (relative to the working directory).
 * @param fresh Import a new copy (for reloads) instead of the cached module.
 * @returns The filter.
 */
export async function loadFilter(path: string, fresh = false): Promise<Filter<unknown, unknown>> {
  return (await loadScript(path, { fresh })).filter;
}

/** Checks that a script's export is a filter object: known keys, handlers that are functions. */
function checkFilter(path: string, filter: unknown): Filter<unknown, unknown> {
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
