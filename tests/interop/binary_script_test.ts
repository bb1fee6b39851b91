/**
 * The compiled binary serves a filter project as a user lays it out: `filter.ts` importing a
 * real npm package (postal-mime) and packages installed beside it (an ESM package with an
 * `exports` map and subpath, a CommonJS package requiring another one), a local module, a
 * JSON file, an import-map alias from deno.json and the toolkit by its npm and JSR names.
 * SIGHUP after editing the local module changes what the filter does; state handed over by
 * `restore()` survives the reload. Load errors name `file:line:col` with a code frame, a
 * broken reload keeps the running filter, a top-level await that never settles is time-boxed,
 * and a handler given as a value is refused.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, ROOT, runBinary, type ServeProcess, startServe } from "./helpers_binary.ts";

const MESSAGE =
  "From: a@example.test\nTo: b@example.test\nSubject: =?UTF-8?B?SGVsbG8gd29ybGQ=?=\n" +
  "Content-Type: text/plain\n\nbody\n";

/** Writes `files` (path relative to `dir` → text) into `dir`. */
function writeTree(dir: string, files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, ".."), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
}

const FILTER = `import { defineFilter } from "milterkit";
import { duplexPair } from "jsr:@milterkit/milterkit/testing";
import PostalMime from "postal-mime";
import { shout } from "shouty";
import { suffix } from "shouty/suffix";
import legacy from "legacy";
import { word } from "./lib/word.ts";
import config from "./config.json" with { type: "json" };
import { tag } from "alias";

export const state = { messages: 0 };
/** Takes the previous version's counter over. */
export function restore(previous: typeof state) {
  state.messages = previous.messages;
}

export default defineFilter({
  name: "project",
  actions: ["addHeader"],
  bufferBody: true,
  async eom(ctx) {
    state.messages++;
    const raw = ctx.headers.map((h) => h.name + ":" + h.value).join("\\r\\n") + "\\r\\n\\r\\n";
    const parsed = await PostalMime.parse(raw);
    ctx.addHeader("X-Subject", parsed.subject ?? "");
    ctx.addHeader("X-Word", shout(word) + suffix + legacy.mark() + config.mark + tag);
    ctx.addHeader("X-Count", String(state.messages));
    ctx.addHeader("X-Testing", typeof duplexPair);
  },
});
`;

describe("milterkit serve: a script with npm packages and local modules", () => {
  let dir: string;
  let serve: ServeProcess | undefined;

  before(async () => {
    ensureBinary();
    dir = mkdtempSync(join(tmpdir(), "milterkit-project-"));
    cpSync(join(ROOT, "node_modules", "postal-mime"), join(dir, "node_modules", "postal-mime"), {
      recursive: true,
    });
    writeTree(dir, {
      "filter.ts": FILTER,
      "lib/word.ts": `export const word: string = "one";\n`,
      "lib/tag.ts": `export const tag = "+alias";\n`,
      "config.json": `{ "mark": "+json" }\n`,
      "deno.json": `{ "imports": { "alias": "./lib/tag.ts" } }\n`,
      "node_modules/shouty/package.json": JSON.stringify({
        name: "shouty",
        type: "module",
        exports: {
          ".": { types: "./index.d.ts", import: "./esm/index.js", require: "./cjs.cjs" },
          "./suffix": "./esm/suffix.js",
        },
      }),
      "node_modules/shouty/esm/index.js": `export const shout = (s) => s.toUpperCase();\n`,
      "node_modules/shouty/esm/suffix.js": `export const suffix = "!";\n`,
      "node_modules/legacy/package.json": JSON.stringify({ name: "legacy", main: "lib/main" }),
      "node_modules/legacy/lib/main.js":
        `const dep = require("legacy-dep");\nexports.mark = () => "+cjs" + dep.mark;\n`,
      "node_modules/legacy-dep/package.json": JSON.stringify({ name: "legacy-dep" }),
      "node_modules/legacy-dep/index.js": `module.exports = { mark: "+dep" };\n`,
    });
    serve = await startServe("filter.ts", { cwd: dir });
  });
  after(async () => {
    await serve?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function send(): Promise<Record<string, string>> {
    const r = await runBinary(["send", "-c", serve!.spec, "--json"], { stdin: MESSAGE });
    assert.ok(r.stdout.startsWith("{"), `send printed no JSON (exit ${r.code}): ${r.stderr}`);
    const t = JSON.parse(r.stdout).transactions[0];
    const headers: Record<string, string> = {};
    for (const m of t.modifications) {
      if (m.type === "addheader") headers[m.name] = m.value;
    }
    return headers;
  }

  it("resolves every import and serves the message", async () => {
    const h = await send();
    assert.equal(h["X-Subject"], "Hello world", "postal-mime decoded the encoded word");
    assert.equal(h["X-Word"], "ONE!+cjs+dep+json+alias");
    assert.equal(h["X-Count"], "1");
    assert.equal(h["X-Testing"], "function");
  });

  it("SIGHUP re-reads the edited local module; restore() keeps the state", async () => {
    writeFileSync(join(dir, "lib/word.ts"), `export const word: string = "two";\n`);
    process.kill(serve!.pid, "SIGHUP");
    await waitEvent(serve!, "reloaded", 1);
    const h = await send();
    assert.equal(h["X-Word"], "TWO!+cjs+dep+json+alias");
    assert.equal(h["X-Count"], "2", "the counter was handed to the new version");
  });

  it("a reload whose local module has a syntax error is reported and the old one kept", async () => {
    writeFileSync(join(dir, "lib/word.ts"), `export const word: string = "three" +;\n`);
    process.kill(serve!.pid, "SIGHUP");
    await waitEvent(serve!, "reload failed, keeping the running filter", 1);
    const failed = serve!.events().find((e) =>
      e.event === "reload failed, keeping the running filter"
    );
    assert.match(String(failed?.error), /lib\/word\.ts:1:38: Unexpected ;\n1 \| .*\n +\| +\^$/);
    const h = await send();
    assert.equal(h["X-Word"], "TWO!+cjs+dep+json+alias");
    assert.equal(h["X-Count"], "3");
  });
});

async function waitEvent(serve: ServeProcess, event: string, count: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (serve.events().filter((e) => e.event === event).length < count) {
    if (Date.now() > deadline) throw new Error(`no "${event}" logged:\n${serve.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("milterkit serve: load errors a user can act on", () => {
  let dir: string;
  before(() => {
    ensureBinary();
    dir = mkdtempSync(join(tmpdir(), "milterkit-load-"));
    writeTree(dir, {
      "syntax.ts": `import { defineFilter } from "@milterkit/milterkit";\n` +
        `export default defineFilter({\n  eom() {\n    return "accept";\n  }},\n});\n`,
      "throws.ts":
        `const port = Number("x");\nif (Number.isNaN(port)) throw new Error("no port configured");\n` +
        `export default {};\n`,
      "hangs.ts": `await new Promise(() => {});\nexport default {};\n`,
      "value.ts": `export default { name: "v", eom: "reject" };\n`,
      "nopkg.ts": `import { x } from "not-installed";\nexport default { eom: () => x };\n`,
    });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const check = (script: string, ...extra: string[]) =>
    runBinary(["serve", script, "--check", ...extra], { cwd: dir, timeoutMs: 15_000 });

  it("a syntax error names file:line:col and shows the line with a caret", async () => {
    const r = await check("syntax.ts");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /syntax\.ts:6:1: Unexpected }\n6 \| }\);\n {2}\| \^\n/);
  });

  it("an error thrown while the script loads points at the throwing line", async () => {
    const r = await check("throws.ts");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /throws\.ts:2:\d+: no port configured\n2 \| if \(Number\.isNaN/);
  });

  it("a top-level await that never settles is given up on, naming the script", async () => {
    const r = await check("hangs.ts", "--load-timeout", "300");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /hangs\.ts: still loading after 300 ms/);
  });

  it("a handler given as a value is refused, naming the key", async () => {
    const r = await check("value.ts");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /value\.ts: "eom" must be a function, got "reject"/);
  });

  it("a package that is not installed is named, with where it was looked for", async () => {
    const r = await check("nopkg.ts");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot find package "not-installed" in any node_modules/);
  });
});
