/**
 * Loading user scripts under Bun and in the compiled binary, whose own resolver does not look
 * into `node_modules`: the script and everything it imports are bundled with `Bun.build`,
 * bare imports resolved by the caller's resolver, so a reload re-reads every file. The
 * toolkit's own names stay external and are served from the running copy
 * ({@link registerBunModules}).
 *
 * @module
 */

import { pathToFileURL } from "node:url";
import { dirname, resolve } from "node:path";
import process from "node:process";
import { readFileSync } from "node:fs";

/** Where a bare import goes: a file to bundle, or a module left to the runtime by name. */
export type BundleTarget = { path: string } | { external: string };

/** One problem `Bun.build` reported, with its position when known. */
export interface BundleProblem {
  /** The message, without position. */
  message: string;
  /** File the problem is in. */
  file?: string;
  /** 1-based line. */
  line?: number;
  /** 1-based column (Bun reports them 1-based). */
  column?: number;
  /** The text of that line. */
  lineText?: string;
}

/** What {@link BunScriptBundler} produced. */
export type BundleResult =
  | { ok: true; code: string; files: string[] }
  | { ok: false; problems: BundleProblem[] };

/**
 * Bundles the script `entry` into one ES module (inline source map). `resolve` is asked for
 * every import that is not a relative or absolute path; undefined leaves it to Bun.
 */
export type BunScriptBundler = (
  entry: string,
  resolve: (specifier: string, importer: string, kind: "import" | "require") =>
    | BundleTarget
    | undefined,
) => Promise<BundleResult>;

interface BuildLog {
  message: string;
  position?: { file: string; line: number; column: number; lineText: string } | null;
}
interface PluginBuild {
  onResolve(
    o: { filter: RegExp },
    f: (a: { path: string; importer: string; kind: string }) => unknown,
  ): void;
  onLoad(o: { filter: RegExp }, f: (a: { path: string }) => unknown): void;
  module(name: string, f: () => { exports: unknown; loader: "object" }): void;
}
interface BunApi {
  build(o: Record<string, unknown>): Promise<{
    success: boolean;
    logs: BuildLog[];
    outputs: { text(): Promise<string> }[];
  }>;
  plugin(p: { name: string; setup(b: PluginBuild): void }): void;
}

const bun = () => (globalThis as unknown as { Bun?: BunApi }).Bun;

const LOADERS: Record<string, string> = {
  ts: "ts",
  mts: "ts",
  cts: "ts",
  tsx: "tsx",
  jsx: "jsx",
  js: "js",
  mjs: "js",
  cjs: "js",
};

/**
 * `import.meta.url` and friends of a bundled local module, pointed back at its own file (the
 * bundle runs from elsewhere).
 */
function fixImportMeta(source: string, path: string): string {
  if (!source.includes("import.meta.")) return source;
  const values: Record<string, string> = {
    url: pathToFileURL(path).href,
    dirname: dirname(path),
    dir: dirname(path),
    filename: path,
    path,
    file: path.slice(dirname(path).length + 1),
  };
  return source.replace(
    /\bimport\.meta\.(url|dirname|dir|filename|path|file)\b(?!\s*=[^=])/g,
    (_, k: string) => JSON.stringify(values[k]),
  );
}

/** Gives every source of an inline source map (Bun writes them relative to the working
 * directory) an absolute path. */
function absoluteSources(code: string, base: string): string {
  const marker = "//# sourceMappingURL=data:application/json;base64,";
  const at = code.lastIndexOf(marker);
  if (at < 0) return code;
  const map = JSON.parse(atob(code.slice(at + marker.length).trim()));
  map.sources = (map.sources as string[]).map((s) => s.startsWith("/") ? s : resolve(base, s));
  delete map.sourceRoot;
  const bytes = new TextEncoder().encode(JSON.stringify(map));
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return code.slice(0, at) + marker + btoa(bin) + "\n";
}

/** The bundler, when running under Bun (and in the compiled binary); else undefined. */
export function bunScriptBundler(): BunScriptBundler | undefined {
  const api = bun();
  if (api === undefined) return undefined;
  return async (entry, resolve) => {
    const files: string[] = [];
    const r = await api.build({
      entrypoints: [entry],
      target: "bun",
      format: "esm",
      sourcemap: "inline",
      root: "/",
      throw: false,
      plugins: [{
        name: "milterkit-script",
        setup(b: PluginBuild) {
          b.onResolve({ filter: /^[^./]/ }, (a) => {
            const t = resolve(a.path, a.importer, a.kind === "require-call" ? "require" : "import");
            if (t === undefined) return undefined;
            return "external" in t ? { path: t.external, external: true } : { path: t.path };
          });
          b.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, (a) => {
            files.push(a.path);
            const source = readFileSync(a.path, "utf8");
            const ext = a.path.slice(a.path.lastIndexOf(".") + 1);
            return {
              contents: a.path.includes("/node_modules/") ? source : fixImportMeta(source, a.path),
              loader: LOADERS[ext] ?? "js",
            };
          });
        },
      }],
    });
    if (!r.success) {
      return {
        ok: false,
        problems: r.logs.map((l) => ({
          message: l.message,
          file: l.position?.file,
          line: l.position?.line || undefined,
          column: l.position?.line ? l.position.column : undefined,
          lineText: l.position?.lineText,
        })),
      };
    }
    const output = r.outputs[0];
    if (output === undefined) return { ok: false, problems: [{ message: "nothing was built" }] };
    return { ok: true, code: absoluteSources(await output.text(), process.cwd()), files };
  };
}

/**
 * Makes `import NAME` answer with `exports` for each entry, in this Bun process (and in
 * bundles loaded by it).
 *
 * @param modules Module name to its exports.
 * @returns False when not running under Bun.
 */
export function registerBunModules(modules: Record<string, object>): boolean {
  const api = bun();
  if (api === undefined) return false;
  api.plugin({
    name: "milterkit-self",
    setup(b) {
      for (const [name, exports] of Object.entries(modules)) {
        b.module(name, () => ({ exports, loader: "object" }));
      }
    },
  });
  return true;
}
