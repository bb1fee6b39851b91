/**
 * The script import resolver of the binary on a real directory tree: the toolkit's names in
 * every form, built-ins, `exports` maps with conditions, subpaths and `*` patterns, `main` and
 * index files, the nearest node_modules up the tree, a deno.json import map, package.json
 * `#imports`, and errors naming what was missing.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ResolveError, resolveImport, toolkitSubpath } from "../lib/cli/resolve.ts";

describe("resolveImport", () => {
  let dir: string;
  const file = (p: string) => ({ kind: "file", path: join(dir, p) });
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "milterkit-resolve-"));
    const tree: Record<string, string> = {
      "node_modules/cond/package.json": JSON.stringify({
        name: "cond",
        exports: {
          ".": { types: "./t.d.ts", require: "./r.cjs", import: "./i.mjs", default: "./d.js" },
          "./feature/*": { import: "./features/*.mjs" },
          "./package.json": "./package.json",
        },
      }),
      "node_modules/sugar/package.json": JSON.stringify({ name: "sugar", exports: "./s.js" }),
      "node_modules/@scope/old/package.json": JSON.stringify({ main: "lib/entry" }),
      "node_modules/@scope/old/lib/entry.js": "",
      "node_modules/@scope/old/util/index.js": "",
      "node_modules/bare/index.js": "",
      "app/deep/x.ts": "",
      "app/node_modules/bare/index.js": "",
      "app/deno.json": JSON.stringify({
        imports: {
          "cfg": "./config.ts",
          "lib/": "./src/",
          "alias": "npm:cond@^1",
          "mk": "jsr:@milterkit/milterkit@0.1",
        },
      }),
      "app/package.json": JSON.stringify({ imports: { "#db": "./db.js", "#x/*": "./x/*.js" } }),
    };
    for (const [p, text] of Object.entries(tree)) {
      mkdirSync(join(dir, p, ".."), { recursive: true });
      writeFileSync(join(dir, p), text);
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("maps every form of the toolkit's name to an entry point", () => {
    for (
      const [spec, sub] of [
        ["@milterkit/milterkit", "."],
        ["milterkit", "."],
        ["milterkit/testing", "./testing"],
        ["jsr:@milterkit/milterkit@^0.1/testing", "./testing"],
        ["jsr:/@milterkit/milterkit", "."],
        ["npm:milterkit@0.1.0/mta", "./mta"],
      ]
    ) assert.equal(toolkitSubpath(spec!), sub, spec);
    for (
      const spec of ["milterkitx", "npm:@milterkit/milterkit", "jsr:milterkit", "@milterkit/other"]
    ) {
      assert.equal(toolkitSubpath(spec), undefined, spec);
    }
  });

  it("leaves built-ins, relative and absolute paths alone", () => {
    const from = join(dir, "f.ts");
    assert.deepEqual(resolveImport("node:fs", from), { kind: "builtin", specifier: "node:fs" });
    assert.deepEqual(resolveImport("crypto", from), { kind: "builtin", specifier: "crypto" });
    assert.deepEqual(resolveImport("./x.ts", from), { kind: "default" });
    assert.deepEqual(resolveImport("/abs.ts", from), { kind: "default" });
  });

  it("follows exports conditions for import and require, patterns and sugar", () => {
    const from = join(dir, "f.ts");
    assert.deepEqual(resolveImport("cond", from), file("node_modules/cond/i.mjs"));
    assert.deepEqual(
      resolveImport("cond", from, { kind: "require" }),
      file("node_modules/cond/r.cjs"),
    );
    assert.deepEqual(
      resolveImport("cond/feature/a", from),
      file("node_modules/cond/features/a.mjs"),
    );
    assert.deepEqual(resolveImport("sugar", from), file("node_modules/sugar/s.js"));
    assert.throws(() => resolveImport("cond/secret", from), /does not export "\.\/secret"/);
  });

  it("uses main, extensions and index files without exports; the nearest node_modules wins", () => {
    const from = join(dir, "f.ts");
    assert.deepEqual(
      resolveImport("@scope/old", from),
      file("node_modules/@scope/old/lib/entry.js"),
    );
    assert.deepEqual(
      resolveImport("@scope/old/util", from),
      file("node_modules/@scope/old/util/index.js"),
    );
    assert.deepEqual(resolveImport("bare", from), file("node_modules/bare/index.js"));
    assert.deepEqual(
      resolveImport("bare", join(dir, "app/deep/x.ts")),
      file("app/node_modules/bare/index.js"),
    );
  });

  it("applies a deno.json import map and package.json #imports beside the script", () => {
    const from = join(dir, "app/deep/x.ts");
    assert.deepEqual(resolveImport("cfg", from), file("app/config.ts"));
    assert.deepEqual(resolveImport("lib/a.ts", from), file("app/src/a.ts"));
    assert.deepEqual(resolveImport("alias", from), file("node_modules/cond/i.mjs"));
    assert.deepEqual(resolveImport("mk", from), { kind: "toolkit", subpath: "." });
    assert.deepEqual(resolveImport("#db", from), file("app/db.js"));
    assert.deepEqual(resolveImport("#x/y", from), file("app/x/y.js"));
    assert.deepEqual(
      resolveImport("npm:cond@1.2.3", join(dir, "f.ts")),
      file("node_modules/cond/i.mjs"),
    );
  });

  it("names what is missing", () => {
    const from = join(dir, "f.ts");
    assert.throws(() => resolveImport("nope", from), (e: unknown) => {
      assert.ok(e instanceof ResolveError);
      assert.match(e.message, /cannot find package "nope" in any node_modules .*npm install nope/);
      return true;
    });
    assert.throws(
      () => resolveImport("https://x.test/m.ts", from),
      /https: imports are not supported/,
    );
    assert.throws(() => resolveImport("jsr:@std/assert", from), /jsr: imports are not supported/);
  });
});
