/**
 * Resolving a filter script's imports as Node, Bun and Deno would, for runtimes that cannot do
 * it themselves (the compiled binary): the toolkit's own names map to the binary's copy, a
 * `deno.json` "imports" map or a `package.json` "imports" field beside the script applies, and
 * bare specifiers come from the nearest `node_modules` (its `exports` map, `main`, index files).
 *
 * @module
 */

import { existsSync, readFileSync, statSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, resolve as resolvePath } from "node:path";

/** The toolkit's JSR and npm package names. */
export const PACKAGE_NAMES: readonly string[] = ["@milterkit/milterkit", "milterkit"];

/**
 * The entry point a specifier names when it is one of the toolkit's own names, in any form:
 * `@milterkit/milterkit[/sub]`, `milterkit[/sub]`, `jsr:@milterkit/milterkit[@version][/sub]`,
 * `npm:milterkit[@version][/sub]`. Self-contained (no outer references): the Node build embeds
 * its source in a module hook.
 *
 * @param specifier An import specifier.
 * @returns `"."` or `"./sub"`, or undefined when the specifier is not the toolkit.
 */
export function toolkitSubpath(specifier: string): string | undefined {
  const m = /^(?:jsr:\/?|npm:\/?)?(@milterkit\/milterkit|milterkit)(?:@[^/]*)?(\/.*)?$/.exec(
    specifier,
  );
  if (m === null) return undefined;
  if (specifier.startsWith("jsr:") && m[1] !== "@milterkit/milterkit") return undefined;
  if (specifier.startsWith("npm:") && m[1] !== "milterkit") return undefined;
  return m[2] === undefined ? "." : "." + m[2];
}

/** What an import turned into. */
export type Resolution =
  /** The toolkit's entry point `subpath` (`"."`, `"./testing"`, ...). */
  | { kind: "toolkit"; subpath: string }
  /** A runtime built-in module, imported as named. */
  | { kind: "builtin"; specifier: string }
  /** A file on disk. */
  | { kind: "file"; path: string }
  /** Left to the runtime's own resolution (relative and absolute paths). */
  | { kind: "default" };

/** Thrown when an import cannot be resolved; the message says what was looked for. */
export class ResolveError extends Error {
  /** @param message What could not be found. */
  constructor(message: string) {
    super(message);
    this.name = "ResolveError";
  }
}

const BUILTINS = new Set(builtinModules);

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(readFileSync(path, "utf8"));
    return typeof v === "object" && v !== null ? v as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

const isFile = (p: string) => {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
};

/** A file as CommonJS `require` finds it: exact, with an extension, or a directory's index. */
function fileOrIndex(path: string): string | undefined {
  for (const ext of ["", ".js", ".json", ".cjs", ".mjs", ".ts"]) {
    if (isFile(path + ext)) return path + ext;
  }
  const main = readJson(join(path, "package.json"))?.main;
  if (typeof main === "string") {
    const viaMain = fileOrIndex(join(path, main));
    if (viaMain !== undefined) return viaMain;
  }
  for (const index of ["index.js", "index.json", "index.cjs", "index.mjs"]) {
    if (isFile(join(path, index))) return join(path, index);
  }
  return undefined;
}

/** Resolves one target of an `exports`/`imports` map under the given conditions. */
function mapTarget(target: unknown, star: string, conditions: readonly string[]): string | null {
  if (typeof target === "string") return target.replaceAll("*", star);
  if (Array.isArray(target)) {
    for (const t of target) {
      const r = mapTarget(t, star, conditions);
      if (r !== null) return r;
    }
    return null;
  }
  if (typeof target === "object" && target !== null) {
    for (const [key, value] of Object.entries(target)) {
      if (key === "default" || conditions.includes(key)) {
        const r = mapTarget(value, star, conditions);
        if (r !== null) return r;
      }
    }
  }
  return null;
}

/** Looks `key` up in an `exports` or `imports` map, with `*` patterns (longest prefix wins). */
function lookupMap(
  map: Record<string, unknown>,
  key: string,
  conditions: readonly string[],
): string | null {
  if (key in map && !key.includes("*")) return mapTarget(map[key], "", conditions);
  let best: [string, string] | undefined;
  for (const pattern of Object.keys(map)) {
    const star = pattern.indexOf("*");
    if (star < 0) continue;
    const [pre, post] = [pattern.slice(0, star), pattern.slice(star + 1)];
    if (
      key.startsWith(pre) && key.endsWith(post) && key.length >= pattern.length - 1 &&
      (best === undefined || pre.length > best[0].length)
    ) {
      best = [pattern, key.slice(pre.length, key.length - post.length)];
    }
  }
  return best === undefined ? null : mapTarget(map[best[0]], best[1], conditions);
}

/** Splits `@scope/name/sub` or `name/sub` into the package name and `"."`/`"./sub"`. */
function splitPackage(specifier: string): [string, string] {
  const parts = specifier.split("/");
  const n = specifier.startsWith("@") ? 2 : 1;
  const rest = parts.slice(n).join("/");
  return [parts.slice(0, n).join("/"), rest === "" ? "." : "./" + rest];
}

/** Resolves a bare specifier from the nearest `node_modules` above `fromDir`. */
function fromNodeModules(specifier: string, fromDir: string, conditions: readonly string[]) {
  const [name, subpath] = splitPackage(specifier);
  for (let dir = fromDir;; dir = dirname(dir)) {
    const pkgDir = join(dir, "node_modules", name);
    if (existsSync(pkgDir)) {
      const pkg = readJson(join(pkgDir, "package.json")) ?? {};
      if (pkg.exports !== undefined && pkg.exports !== null) {
        const exp = pkg.exports;
        const map = typeof exp === "object" && !Array.isArray(exp) &&
            Object.keys(exp).some((k) => k.startsWith("."))
          ? exp as Record<string, unknown>
          : { ".": exp };
        const target = lookupMap(map, subpath, conditions);
        if (target === null) {
          throw new ResolveError(
            `package "${name}" (${pkgDir}) does not export "${subpath}"`,
          );
        }
        return resolvePath(pkgDir, target);
      }
      const found = fileOrIndex(join(pkgDir, subpath));
      if (found === undefined) {
        throw new ResolveError(`cannot find "${specifier}" in ${pkgDir}`);
      }
      return found;
    }
    if (dirname(dir) === dir) break;
  }
  throw new ResolveError(
    `cannot find package "${name}" in any node_modules from ${fromDir} up ` +
      `(install it beside the script: npm install ${name})`,
  );
}

/** The `imports` map of the nearest `deno.json` at or above `dir`, with its directory. */
function denoImports(dir: string): [Record<string, unknown>, string] | undefined {
  for (let d = dir;; d = dirname(d)) {
    const file = join(d, "deno.json");
    if (existsSync(file)) {
      const imports = readJson(file)?.imports;
      return typeof imports === "object" && imports !== null
        ? [imports as Record<string, unknown>, d]
        : undefined;
    }
    if (dirname(d) === d) return undefined;
  }
}

/** The nearest `package.json` at or above `dir`, with its directory. */
function nearestPackageJson(dir: string): [Record<string, unknown>, string] | undefined {
  for (let d = dir;; d = dirname(d)) {
    const pkg = readJson(join(d, "package.json"));
    if (pkg !== undefined) return [pkg, d];
    if (dirname(d) === d) return undefined;
  }
}

/** Options of {@link resolveImport}. */
export interface ResolveOptions {
  /** `"require"` for `require()` calls (CommonJS conditions), else `"import"`. */
  kind?: "import" | "require";
}

/**
 * Resolves `specifier` imported by the file `importer` the way Node and Bun do, after the
 * toolkit's own names and an import map beside the importer.
 *
 * @param specifier The import specifier as written.
 * @param importer Absolute path of the importing file.
 * @param options Import or require.
 * @returns What the specifier names.
 * @throws {ResolveError} When a bare specifier is not installed or not exported.
 *
 * @example
 * ```ts
 * import { resolveImport } from "./resolve.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(resolveImport("jsr:@milterkit/milterkit@0.1/testing", "/srv/f.ts"), {
 *   kind: "toolkit",
 *   subpath: "./testing",
 * });
 * assert.deepEqual(resolveImport("node:fs", "/srv/f.ts"), { kind: "builtin", specifier: "node:fs" });
 * ```
 */
export function resolveImport(
  specifier: string,
  importer: string,
  options: ResolveOptions = {},
): Resolution {
  const conditions = ["bun", "node", options.kind ?? "import", "module"];
  const fromDir = dirname(importer);
  const inPackage = importer.includes("/node_modules/");
  let spec = specifier;
  const self = toolkitSubpath(spec);
  if (self !== undefined) return { kind: "toolkit", subpath: self };
  if (spec.startsWith("node:") || spec.startsWith("bun:") || BUILTINS.has(spec)) {
    return { kind: "builtin", specifier: spec };
  }
  if (!inPackage) {
    const map = denoImports(fromDir);
    if (map !== undefined) {
      const [imports, base] = map;
      const key = spec in imports
        ? spec
        : Object.keys(imports).filter((k) => k.endsWith("/") && spec.startsWith(k))
          .sort((a, b) => b.length - a.length)[0];
      const target = key === undefined ? undefined : imports[key];
      if (key !== undefined && typeof target === "string") {
        const mapped = target + spec.slice(key.length);
        if (mapped.startsWith("./") || mapped.startsWith("../") || mapped.startsWith("/")) {
          return { kind: "file", path: resolvePath(base, mapped) };
        }
        spec = mapped;
        const mappedSelf = toolkitSubpath(spec);
        if (mappedSelf !== undefined) return { kind: "toolkit", subpath: mappedSelf };
      }
    }
  }
  if (spec.startsWith("npm:")) {
    spec = spec.slice(4).replace(/^\//, "").replace(/^(@[^/]+\/[^/@]+|[^/@]+)@[^/]*/, "$1");
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(spec) && !spec.startsWith("file:")) {
    throw new ResolveError(
      `"${specifier}": ${spec.split(":")[0]}: imports are not supported here; ` +
        `install the package into node_modules and import it by name`,
    );
  }
  if (spec.startsWith("file:")) return { kind: "file", path: new URL(spec).pathname };
  if (spec.startsWith(".") || spec.startsWith("/")) return { kind: "default" };
  if (spec.startsWith("#")) {
    const found = nearestPackageJson(fromDir);
    const imports = found?.[0].imports;
    const target = typeof imports === "object" && imports !== null
      ? lookupMap(imports as Record<string, unknown>, spec, conditions)
      : null;
    if (target === null || found === undefined) {
      throw new ResolveError(`"${spec}" is not in the "imports" of the nearest package.json`);
    }
    if (!target.startsWith(".")) return resolveImport(target, importer, options);
    return { kind: "file", path: resolvePath(found[1], target) };
  }
  return { kind: "file", path: fromNodeModules(spec, fromDir, conditions) };
}
