/**
 * Loading user scripts under Node (the `dist/milterkit.mjs` build): module hooks map the
 * toolkit's own names to the running copy, and give every local module of a reloaded script
 * the reload's generation, so a reload re-reads them. Packages in `node_modules` resolve as
 * Node resolves them.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import * as nodeModule from "node:module";
import { dirname, resolve as resolvePath } from "node:path";
import process from "node:process";

const REGISTRY = Symbol.for("milterkit.self");
const QUERY = "milterkit-gen";

/** True under Node (not Bun or Deno, which also set `process.versions.node`). */
export function isNode(): boolean {
  const versions = process.versions as Record<string, string | undefined>;
  return versions.bun === undefined && versions.deno === undefined;
}

/**
 * Installs the hooks once (Node 20.6+). `toolkitSubpath` maps a specifier to an entry point
 * of `modules` (it must be self-contained: its source runs in the hooks' thread).
 *
 * @param modules Entry point (`"."`, `"./testing"`, ...) to its exports.
 * @param toolkitSubpath The specifier test.
 * @returns False when this is not Node or the hooks API is missing.
 */
export function registerNodeHooks(
  modules: Record<string, object>,
  toolkitSubpath: (specifier: string) => string | undefined,
): boolean {
  if (!isNode()) return false;
  const register = (nodeModule as { register?: (url: string, o: unknown) => void }).register;
  if (register === undefined) return false;
  const g = globalThis as Record<symbol, unknown>;
  if (g[REGISTRY] !== undefined) return true;
  g[REGISTRY] = modules;
  const names = Object.fromEntries(
    Object.entries(modules).map(([k, v]) => [k, Object.keys(v)]),
  );
  const hooks = `
const toolkitSubpath = ${toolkitSubpath.toString()};
const KEY = ${JSON.stringify(REGISTRY.description)};
let names = {};
export function initialize(data) { names = data; }
export async function resolve(specifier, context, next) {
  const sub = toolkitSubpath(specifier);
  if (sub !== undefined) {
    if (!(sub in names)) throw new Error("milterkit has no entry point " + sub + " (" + Object.keys(names).join(", ") + ")");
    return { url: "milterkit-self:" + sub, shortCircuit: true };
  }
  const r = await next(specifier, context);
  const parent = context.parentURL && context.parentURL.startsWith("file:") ? new URL(context.parentURL) : undefined;
  const gen = parent && parent.searchParams.get(${JSON.stringify(QUERY)});
  if (gen && r.url.startsWith("file:") && !r.url.includes("/node_modules/")) {
    const u = new URL(r.url);
    u.searchParams.set(${JSON.stringify(QUERY)}, gen);
    return { ...r, url: u.href };
  }
  return r;
}
export async function load(url, context, next) {
  if (url.startsWith("milterkit-self:")) {
    const sub = url.slice("milterkit-self:".length);
    const lines = ["const m = globalThis[Symbol.for(" + JSON.stringify(KEY) + ")][" + JSON.stringify(sub) + "];"];
    for (const k of names[sub]) lines.push("export const " + k + " = m[" + JSON.stringify(k) + "];");
    return { format: "module", source: lines.join("\\n"), shortCircuit: true };
  }
  return next(url, context);
}
`;
  register("data:text/javascript," + encodeURIComponent(hooks), { data: names });
  return true;
}

/** The query that marks a module (and, through the hooks, its local imports) as reload `n`. */
export function reloadQuery(n: number): string {
  return `?${QUERY}=${n}`;
}

/**
 * Where a syntax error is, for Node, whose import errors do not say: `node --check` on the
 * script and then on the local modules it imports (relative specifiers, breadth first), until
 * one fails.
 *
 * @param entry Absolute path of the script.
 * @returns The file and 1-based line and column, or undefined when no file fails the check.
 */
export function nodeSyntaxPosition(
  entry: string,
): { file: string; line: number; column: number | undefined } | undefined {
  const seen = new Set<string>();
  const queue = [entry];
  while (queue.length > 0 && seen.size < 200) {
    const file = queue.shift()!;
    if (seen.has(file) || !existsSync(file)) continue;
    seen.add(file);
    const r = spawnSync(process.execPath, ["--check", file], { encoding: "utf8" });
    if (r.status !== 0) {
      const lines = (r.stderr ?? "").split("\n");
      const at = lines.findIndex((l) => l.startsWith(file + ":"));
      if (at < 0) return undefined;
      const caret = lines[at + 2]?.indexOf("^") ?? -1;
      return {
        file,
        line: Number(lines[at]!.slice(file.length + 1)),
        column: caret < 0 ? undefined : caret + 1,
      };
    }
    const source = readFileSync(file, "utf8");
    for (const m of source.matchAll(/(?:from|import)\s*\(?\s*["'](\.\.?\/[^"']+)["']/g)) {
      queue.push(resolvePath(dirname(file), m[1]!));
    }
  }
  return undefined;
}
