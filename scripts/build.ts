// deno-lint-ignore-file no-console
/**
 * Builds the single binary `dist/milterkit`.
 *
 *   npm run build                         # bun build --compile for this machine
 *   npm run build -- --target linux-arm64 # cross-compile (also: linux-x64, linux-x64-musl, linux-arm64-musl)
 *   npm run build -- --all                # every Linux target: dist/milterkit-<target>
 *   deno task build --deno             # deno compile (needs its denort base binary, see README)
 *   npm run build -- --node               # dist/milterkit.mjs: one JS file for `node milterkit.mjs`
 *
 * Runs under Bun or Deno; uses the bun/deno binaries from node_modules/.bin.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
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

mkdirSync(join(root, "dist"), { recursive: true });
const built: string[] = [];
if (values.node) {
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
  console.log(`built ${f} (${(statSync(join(root, f)).size / 1048576).toFixed(1)} MiB)`);
}
