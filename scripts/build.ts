// deno-lint-ignore-file no-console
/**
 * Builds the single binary `dist/milterkit`.
 *
 *   npm run build                         # bun build --compile for this machine
 *   npm run build -- --target linux-arm64 # cross-compile (also: linux-x64, linux-x64-musl, linux-arm64-musl)
 *   npm run build -- --all                # every Linux target: dist/milterkit-<target>
 *   deno task build --deno             # deno compile (needs its denort base binary, see README)
 *   npm run build -- --node               # dist/milterkit.mjs: one JS file for `node milterkit.mjs`
 *   npm run build -- --npm                # dist/npm/: the npm package's ES modules and .d.ts
 *                                         # (npm pack runs it), package.json "exports" kept in step
 *
 * Runs under Bun or Deno; uses the bun/deno binaries from node_modules/.bin.
 */
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name: string) => {
  const local = join(root, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
};
const TARGETS = ["linux-x64", "linux-arm64", "linux-x64-musl", "linux-arm64-musl"];

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    target: { type: "string" },
    all: { type: "boolean", default: false },
    deno: { type: "boolean", default: false },
    node: { type: "boolean", default: false },
    npm: { type: "boolean", default: false },
    outfile: { type: "string" },
  },
});

function run(cmd: string, args: string[]): void {
  console.log(`$ ${[cmd, ...args].join(" ")}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (r.status !== 0) {
    console.error(`build failed: ${cmd} exited with ${r.status ?? r.signal}`);
    process.exit(1);
  }
}

/** Every file under `dir`. */
function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]
  );
}

/**
 * dist/npm/: each entry point of deno.json "exports" (and cli.ts, the package's bin) as ES
 * modules for Node sharing one copy of the code (split chunks), with .d.ts files emitted by
 * tsc; package.json "exports" is rewritten when an entry point was added or removed.
 */
function buildNpm(): string {
  const out = "dist/npm";
  rmSync(join(root, out), { recursive: true, force: true });
  const exportsMap = JSON.parse(readFileSync(join(root, "deno.json"), "utf8")).exports as Record<
    string,
    string
  >;
  const sources = Object.values(exportsMap);
  run(bin("bun"), [
    "build",
    "--target=node",
    "--format=esm",
    "--splitting",
    "--root",
    ".",
    "--outdir",
    out,
    "--entry-naming",
    "[dir]/[name].[ext]",
    "--chunk-naming",
    "chunks/[name]-[hash].[ext]",
    ...sources,
    "cli.ts",
  ]);
  const cli = join(root, out, "cli.js");
  writeFileSync(
    cli,
    readFileSync(cli, "utf8").replace(/^#![^\n]*\n/, "#!/usr/bin/env node\n"),
    { mode: 0o755 },
  );
  const tsconfig = join(root, "dist", "tsconfig.npm.json");
  writeFileSync(
    tsconfig,
    JSON.stringify({
      extends: "../tsconfig.json",
      compilerOptions: {
        noEmit: false,
        declaration: true,
        emitDeclarationOnly: true,
        outDir: "npm",
        rootDir: "..",
        paths: {},
      },
      include: [],
      files: sources.map((s) => join("..", s)),
    }),
  );
  run("node", [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", tsconfig]);
  rmSync(tsconfig);
  // Declarations keep the sources' relative ".ts" specifiers; consumers resolve ".js" ones.
  for (const f of walk(join(root, out)).filter((f) => f.endsWith(".d.ts"))) {
    const text = readFileSync(f, "utf8");
    const fixed = text.replace(
      /((?:from|import)\s*\(?\s*["'])(\.\.?\/[^"']+)\.ts(["'])/g,
      "$1$2.js$3",
    );
    if (fixed !== text) writeFileSync(f, fixed);
  }
  const pkgPath = join(root, "package.json");
  const pkg = JSON.parse(readFileSync(pkgPath, "utf8"));
  const wanted: Record<string, unknown> = {};
  for (const [sub, src] of Object.entries(exportsMap)) {
    const base = `./${out}/${src.replace(/^\.\//, "").replace(/\.ts$/, "")}`;
    wanted[sub] = { types: `${base}.d.ts`, default: `${base}.js` };
  }
  wanted["./package.json"] = "./package.json";
  if (JSON.stringify(pkg.exports) !== JSON.stringify(wanted)) {
    pkg.exports = wanted;
    writeFileSync(pkgPath, JSON.stringify(pkg, null, 2) + "\n");
    console.log('package.json: "exports" updated from deno.json\'s entry points');
  }
  return out;
}

mkdirSync(join(root, "dist"), { recursive: true });
const built: string[] = [];
if (values.npm) {
  built.push(buildNpm());
} else if (values.node) {
  const out = values.outfile ?? "dist/milterkit.mjs";
  run(bin("bun"), ["build", "--target=node", "cli.ts", "--outfile", out]);
  built.push(out);
} else if (values.deno) {
  const out = values.outfile ?? "dist/milterkit-deno";
  // deno compile downloads its denort base binary once per version (or uses DENORT_BIN).
  if (!process.env.DENORT_BIN) {
    console.log(
      "note: deno compile needs its base binary (denort), downloaded once per Deno version into " +
        "$DENO_DIR/dl/release/v<version>/, or named by DENORT_BIN=/path/to/denort; without network " +
        "access use the Bun build (npm run build)",
    );
  }
  run(bin("deno"), ["compile", "-A", "--no-check", "--output", out, "cli.ts"]);
  built.push(out);
} else {
  const targets = values.all ? TARGETS : values.target ? [values.target] : [undefined];
  for (const t of targets) {
    if (t !== undefined && !TARGETS.includes(t)) {
      console.error(`unknown target ${t}; known: ${TARGETS.join(", ")}`);
      process.exit(2);
    }
    const out = values.outfile ?? (t === undefined ? "dist/milterkit" : `dist/milterkit-${t}`);
    run(bin("bun"), [
      "build",
      "--compile",
      "--minify-syntax",
      ...(t === undefined ? [] : [`--target=bun-${t}`]),
      "cli.ts",
      "--outfile",
      out,
    ]);
    built.push(out);
  }
}
for (const f of built) {
  const path = resolve(root, f); // --outfile may be absolute
  const files = statSync(path).isDirectory() ? walk(path) : [path];
  const size = files.reduce((n, x) => n + statSync(x).size, 0);
  console.log(`built ${f} (${(size / 1048576).toFixed(1)} MiB in ${files.length} files)`);
}
