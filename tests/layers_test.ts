// The layering script (scripts/check_layers.mjs) passes on this tree and fails on each kind of
// wrong import, checked on small trees written to a temporary folder.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
// @ts-types="./helpers/check_layers.d.ts"
import { checkLayers } from "../scripts/check_layers.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

function tree(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "layers-"));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return dir;
}

function problemsOf(files: Record<string, string>): string[] {
  const dir = tree(files);
  try {
    return checkLayers(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("check_layers", () => {
  it("finds no violation in this repository", () => {
    assert.deepEqual(checkLayers(ROOT), []);
  });

  it("accepts downward imports and imports inside a layer", () => {
    assert.deepEqual(
      problemsOf({
        "lib/wire/a.ts": "export const a = 1;\n",
        "lib/wire/b.ts": 'import { a } from "./a.ts";\nexport const b = a;\n',
        "lib/filter/f.ts": 'import { b } from "../wire/b.ts";\nexport const f = b;\n',
        "lib/cli/c.ts": 'import { f } from "../filter/f.ts";\nexport const c = f;\n',
      }),
      [],
    );
  });

  it("refuses an upward import with file, line and the two layers", () => {
    const p = problemsOf({
      "lib/server/s.ts": "export const s = 1;\n",
      "lib/wire/w.ts": '// header\nimport { s } from "../server/s.ts";\nexport const w = s;\n',
    });
    assert.equal(p.length, 1);
    assert.match(
      p[0]!,
      /^lib\/wire\/w\.ts:2: wire\/ \(rank 0\) may not import server\/ \(rank 3\)/,
    );
  });

  it("refuses imports between sibling layers (filter and mta)", () => {
    const p = problemsOf({
      "lib/mta/m.ts": "export const m = 1;\n",
      "lib/filter/f.ts": 'export { m } from "../mta/m.ts";\n',
    });
    assert.equal(p.length, 1);
    assert.match(p[0]!, /filter\/ \(rank 2\) may not import mta\/ \(rank 2\)/);
  });

  it("refuses dynamic imports that go the wrong way", () => {
    const p = problemsOf({
      "lib/cli/c.ts": "export const c = 1;\n",
      "lib/server/s.ts": 'export const load = () => import("../cli/c.ts");\n',
    });
    assert.equal(p.length, 1);
  });

  it("keeps Deno and Bun APIs in adapters and node: modules out of the core", () => {
    const p = problemsOf({
      "lib/server/adapters/deno.ts": "export const l = () => Deno.listen({ port: 1 });\n",
      "lib/server/net.ts": "export const l = () => Deno.listen({ port: 1 });\n",
      "lib/filter/f.ts": '// Deno.listen in a comment is fine\nimport net from "node:net";\n',
      "lib/server/ok.ts": 'import net from "node:net";\nexport default net;\n',
    });
    assert.equal(p.length, 2, p.join("\n"));
    assert.match(p.join("\n"), /lib\/server\/net\.ts:1: Deno\/Bun APIs belong/);
    assert.match(p.join("\n"), /lib\/filter\/f\.ts:2: filter\/ is runtime-agnostic/);
  });

  it("refuses loose files and imports of the entry points", () => {
    const p = problemsOf({
      "mod.ts": "export const x = 1;\n",
      "lib/loose.ts": "export const l = 1;\n",
      "lib/mail/m.ts": 'import { x } from "../../mod.ts";\n',
    });
    assert.equal(p.length, 2, p.join("\n"));
  });

  it("exits 1 with one line per violation as a command", () => {
    const dir = tree({
      "lib/wire/w.ts": 'import "../cli/c.ts";\n',
      "lib/cli/c.ts": "export {};\n",
    });
    try {
      const r = spawnSync("node", [join(ROOT, "scripts/check_layers.mjs"), dir], {
        encoding: "utf8",
      });
      assert.equal(r.status, 1);
      assert.match(
        r.stderr,
        /lib\/wire\/w\.ts:1: wire\/ \(rank 0\) may not import cli\/ \(rank 5\)/,
      );
      assert.match(r.stderr, /1 layering violation\(s\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
