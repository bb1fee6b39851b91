/**
 * The package manifests agree: every entry point of deno.json `exports` (JSR) is in
 * package.json `exports` (npm, built JavaScript and .d.ts under dist/npm/) and in the binary's
 * table of modules that served scripts import by name; package.json is publishable (not
 * private, engines, bin, files).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ENTRY_POINTS } from "../cli.ts";

const read = (name: string) =>
  JSON.parse(readFileSync(new URL(`../${name}`, import.meta.url), "utf8"));

describe("package manifests", () => {
  const deno = read("deno.json");
  const pkg = read("package.json");

  it("package.json exports each deno.json entry point as built JS with types", () => {
    const fix = 'run `npm run build -- --npm`, which rewrites package.json "exports"';
    assert.deepEqual(
      Object.keys(pkg.exports).sort(),
      [...Object.keys(deno.exports), "./package.json"].sort(),
      fix,
    );
    for (const [sub, src] of Object.entries(deno.exports as Record<string, string>)) {
      const base = "./dist/npm/" + src.replace(/^\.\//, "").replace(/\.ts$/, "");
      assert.deepEqual(pkg.exports[sub], { types: base + ".d.ts", default: base + ".js" }, fix);
    }
  });

  it("the binary serves every entry point to scripts", () => {
    assert.deepEqual(Object.keys(ENTRY_POINTS).sort(), Object.keys(deno.exports).sort());
  });

  it("package.json is publishable: named, versioned like deno.json, engines, bin, files", () => {
    assert.equal(pkg.name, "milterkit");
    assert.equal(pkg.private, undefined);
    assert.equal(pkg.version, deno.version);
    assert.match(pkg.engines.node, /^>=\d/);
    assert.equal(pkg.bin.milterkit, "dist/npm/cli.js");
    assert.deepEqual(pkg.files, ["dist/npm/"]);
    assert.deepEqual(pkg.dependencies ?? {}, {}, "the toolkit has no runtime dependencies");
  });
});
