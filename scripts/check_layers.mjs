#!/usr/bin/env node
// scripts/check_layers.mjs - fails when an import breaks the layering written down in
// ARCHITECTURE.md. Plain Node ESM, no dependencies; run as `node scripts/check_layers.mjs [ROOT]`.
//
// Rules (per file under lib/):
//   1. A file imports only from its own layer folder or from a layer of lower rank:
//      wire(0) -> mail(1) -> filter(2) | mta(2) -> server(3) | testing(3) -> inspect(4) -> cli(5).
//      Layers of equal rank do not import each other (filter and mta are siblings).
//   2. `Deno.` and `Bun.` are used only in lib/server/adapters/.
//   3. The runtime-agnostic layers (wire, mail, filter, mta, testing) import no `node:` module.
//   4. Nothing under lib/ imports the entry points (mod.ts, cli.ts) or the tests.
// Prints one line per violation as `file:line: message` and exits 1 when there is any.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

/** Rank of each layer folder directly under lib/. */
export const LAYERS = Object.freeze({
  wire: 0,
  mail: 1,
  filter: 2,
  mta: 2,
  server: 3,
  testing: 3,
  inspect: 4,
  cli: 5,
});

const AGNOSTIC = new Set(["wire", "mail", "filter", "mta", "testing"]);

function walk(dir, out) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (/\.(ts|mts|js|mjs)$/.test(name)) out.push(p);
  }
  return out;
}

/** Strips comments, keeping line numbers (block comments become blank lines). */
function codeLines(src) {
  const noBlock = src.replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, " "));
  return noBlock.split("\n").map((l) => l.replace(/(^|[^:"'`])\/\/.*$/, "$1"));
}

/** Layer of a path relative to lib/ (`"wire"`...), or `"(loose)"` for a file directly in lib/. */
function layerOf(relToLib) {
  const parts = relToLib.split(sep);
  return parts.length > 1 ? parts[0] : "(loose)";
}

/**
 * Checks the tree at `root`; returns the violations as `file:line: message` strings.
 * @param {string} root
 * @returns {string[]}
 */
export function checkLayers(root) {
  const lib = join(root, "lib");
  const problems = [];
  for (const file of walk(lib, [])) {
    const rel = relative(lib, file);
    const from = layerOf(rel);
    const shown = relative(root, file);
    if (!(from in LAYERS)) {
      problems.push(`${shown}:1: not in a layer folder (${Object.keys(LAYERS).join(", ")})`);
      continue;
    }
    const lines = codeLines(readFileSync(file, "utf8"));
    const inAdapters = rel.startsWith(join("server", "adapters") + sep);
    lines.forEach((line, i) => {
      const at = `${shown}:${i + 1}`;
      if (!inAdapters && /(^|[^\w."'])(Deno|Bun)\.[A-Za-z]/.test(line)) {
        problems.push(`${at}: Deno/Bun APIs belong in lib/server/adapters/ only`);
      }
      for (
        const m of line.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)(["'])([^"']+)\1/g)
      ) {
        const spec = m[2];
        if (spec.startsWith("node:")) {
          if (AGNOSTIC.has(from)) {
            problems.push(`${at}: ${from}/ is runtime-agnostic and may not import ${spec}`);
          }
          continue;
        }
        if (!spec.startsWith(".")) continue;
        const target = resolve(dirname(file), spec);
        const relTarget = relative(lib, target);
        if (relTarget.startsWith("..")) {
          problems.push(`${at}: imports ${spec} from outside lib/ (entry points and tests)`);
          continue;
        }
        const to = layerOf(relTarget);
        if (to === from) continue;
        if (!(to in LAYERS)) {
          problems.push(`${at}: imports ${spec}, which is not in a layer folder`);
        } else if (LAYERS[to] >= LAYERS[from]) {
          problems.push(
            `${at}: ${from}/ (rank ${LAYERS[from]}) may not import ${to}/ (rank ${
              LAYERS[to]
            }): ${spec}`,
          );
        }
      }
    });
  }
  return problems;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), ".."));
  const problems = checkLayers(root);
  for (const p of problems) process.stderr.write(p + "\n");
  if (problems.length > 0) {
    process.stderr.write(`${problems.length} layering violation(s); see ARCHITECTURE.md\n`);
    process.exit(1);
  }
  process.stdout.write("layers ok\n");
}
