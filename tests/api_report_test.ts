// The API reports (api/*.txt, scripts/api_report.mjs): they match this tree's entry points, and
// the check fails, naming the symbol and how to update, when a copy of the tree changes its
// surface; --update then makes it pass again.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SCRIPT = join(ROOT, "scripts/api_report.mjs");
/** Each run starts deno doc once per entry point. */
const SLOW = { timeout: 60_000 };

function run(...args: string[]) {
  return spawnSync("node", [SCRIPT, ...args], { encoding: "utf8" });
}

/** A copy of what the entry points are made of, in a temporary folder. */
function copyTree(): string {
  const dir = mkdtempSync(join(tmpdir(), "api-report-"));
  for (const p of ["deno.json", "mod.ts", "lib", "api"]) {
    cpSync(join(ROOT, p), join(dir, p), { recursive: true });
  }
  return dir;
}

describe("api_report", () => {
  it("the checked-in reports match every entry point of deno.json", SLOW, () => {
    const r = run();
    assert.equal(r.status, 0, r.stderr);
    const entries = Object.keys(JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")).exports);
    assert.match(r.stdout, new RegExp(`match ${entries.length} entry points`));
  });

  it("the filter authors' entry point stays within 60 symbols", () => {
    const lines = readFileSync(join(ROOT, "api/root.txt"), "utf8").split("\n")
      .filter((l) => l && !l.startsWith("#"));
    assert.ok(lines.length <= 60, `${lines.length} symbols`);
    assert.ok(lines.includes("function defineFilter") && lines.includes("function listen"));
    for (const internal of ["ReplyJudge", "MacroStore", "BodyPipe", "ByteReader", "buildFrame"]) {
      assert.ok(!lines.some((l) => l.endsWith(` ${internal}`)), internal);
    }
  });

  it(
    "fails on a changed surface with the diff and the update command; --update fixes it",
    SLOW,
    () => {
      const dir = copyTree();
      try {
        // drop one exported function from ./wire and add a constant
        const fn = readFileSync(join(ROOT, "api/wire.txt"), "utf8").match(/^function (\w+)$/m)![1]!;
        const mod = readFileSync(join(dir, "lib/wire/mod.ts"), "utf8");
        const at = mod.indexOf("\nexport "); // past the module doc and its example
        const without = mod.slice(0, at) +
          mod.slice(at).replace(new RegExp(`\\b${fn},\\s*|,\\s*${fn}\\b(?=[\\s,}])`), "");
        assert.notEqual(without, mod, `${fn} is named in lib/wire/mod.ts`);
        writeFileSync(
          join(dir, "lib/wire/mod.ts"),
          without + "/** A new constant. */\nexport const SURPLUS = 1;\n",
        );
        const r = run("--root", dir);
        assert.equal(r.status, 1);
        assert.match(r.stderr, /api\/wire\.txt differs from the surface of "\.\/wire"/);
        assert.match(r.stderr, new RegExp(`^- function ${fn}$`, "m"));
        assert.match(r.stderr, /^\+ variable SURPLUS$/m);
        assert.match(r.stderr, /node scripts\/api_report\.mjs --update/);
        assert.doesNotMatch(r.stderr, /root\.txt|mta\.txt/);

        const u = run("--root", dir, "--update");
        assert.equal(u.status, 0, u.stderr);
        assert.match(u.stdout, /wrote api\/wire\.txt/);
        assert.match(readFileSync(join(dir, "api/wire.txt"), "utf8"), /^variable SURPLUS$/m);
        assert.equal(run("--root", dir).status, 0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it("fails when a new entry point has no report", SLOW, () => {
    const dir = copyTree();
    try {
      const deno = JSON.parse(readFileSync(join(dir, "deno.json"), "utf8"));
      deno.exports["./mail"] = "./lib/mail/diff.ts";
      writeFileSync(join(dir, "deno.json"), JSON.stringify(deno));
      const r = run("--root", dir);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /api\/mail\.txt is missing for entry point "\.\/mail"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("README snippets and examples import entry points only, and only what they export", () => {
    const reports = new Map<string, Set<string>>();
    for (const f of readdirSync(join(ROOT, "api"))) {
      const entry = f === "root.txt" ? "" : `/${f.replace(/\.txt$/, "")}`;
      const names = readFileSync(join(ROOT, "api", f), "utf8").split("\n")
        .filter((l) => l && !l.startsWith("#")).map((l) => l.split(" ")[1]!);
      reports.set(`@milterkit/milterkit${entry}`, new Set(names));
    }
    const sources: [string, string][] = [];
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    for (const m of readme.matchAll(/```ts\n([\s\S]*?)```/g)) sources.push(["README.md", m[1]!]);
    for (const f of readdirSync(join(ROOT, "examples")).filter((f) => f.endsWith(".ts"))) {
      sources.push([`examples/${f}`, readFileSync(join(ROOT, "examples", f), "utf8")]);
    }
    let imports = 0;
    for (const [where, code] of sources) {
      for (const m of code.matchAll(/import\s+(?:type\s+)?\{([^}]*)\}\s+from\s+"([^"]+)"/g)) {
        if (!/^(@milterkit\/)?milterkit(\/|$)|^jsr:|\.\.?\/|lib\//.test(m[2]!)) continue; // npm, node:
        // the npm name (milterkit, milterkit/mta) and the JSR name have the same entry points
        const spec = m[2]!.replace(/^milterkit(?=\/|$)/, "@milterkit/milterkit");
        const names = reports.get(spec);
        assert.ok(names, `${where} imports ${m[2]}, which is not an entry point of the toolkit`);
        for (
          const n of m[1]!.split(",").map((x) => x.trim().replace(/^type /, "").split(" as ")[0]!)
        ) {
          if (n) assert.ok(names.has(n), `${where}: ${spec} does not export ${n}`);
          imports++;
        }
      }
    }
    assert.ok(imports >= 10, `${imports} imported names checked`);
  });
});
