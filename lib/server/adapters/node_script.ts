/**
 * Loading user scripts under Node (the `dist/milterkit.mjs` build): module hooks map the
 * toolkit's own names to the running copy, and give every local module of a reloaded script
 * the reload's generation, so a reload re-reads them. Packages in `node_modules` resolve as
 * Node resolves them.
 *
 * @module
 */

import * as nodeModule from "node:module";
import process from "node:process";

const REGISTRY = Symbol.for("milterkit.self");
const QUERY = "milterkit-gen";

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
  const versions = process.versions as Record<string, string | undefined>;
  if (versions.bun !== undefined || versions.deno !== undefined) return false;
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
