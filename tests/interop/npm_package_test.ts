/**
 * The npm package as a user gets it: `npm pack` builds and packs it, an empty project installs
 * the tarball offline (the package has no dependencies), and then
 * - under Node, the package's `milterkit` bin serves a filter importing the toolkit, an npm
 *   package and a local module, `milterkit send` drives a message through it, and SIGHUP after
 *   editing the local module changes the answer;
 * - the same installed package imports under Bun and Deno (bare and `npm:` specifiers), and
 *   listens;
 * - a TypeScript consumer type-checks against the shipped .d.ts with strict settings.
 *
 * It drives Node, Bun and Deno itself, so it runs under one test runner only (Bun's): packing
 * twice would only repeat the same work.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { BINARY, ensureBinary, ROOT, startServe } from "./helpers_binary.ts";
import { onExit } from "./helpers_process.ts";

const BUN = join(ROOT, "node_modules", ".bin", "bun");
const DENO = join(ROOT, "node_modules", ".bin", "deno");
const TSC = join(ROOT, "node_modules", "typescript", "bin", "tsc");
/** Packing builds the package (bundling, tsc): minutes on a busy machine. */
const SLOW = { timeout: 300_000 };
const MESSAGE = "From: a@example.test\nTo: b@example.test\nSubject: =?UTF-8?B?bnBt?=\n\nbody\n";

/** Runs a command to completion; fails the test with its output when it exits non-zero. */
function run(cmd: string, args: string[], cwd: string, input?: string): string {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: "utf8",
    input,
    timeout: 300_000,
    env: { ...process.env, NO_COLOR: "1" },
  });
  assert.equal(
    r.status,
    0,
    `${cmd} ${args.join(" ")} failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`,
  );
  return r.stdout;
}

const FILTER = `import { defineFilter } from "milterkit";
import PostalMime from "postal-mime";
import { word } from "./lib/word.js";

export default defineFilter({
  name: "from-npm",
  actions: ["addHeader"],
  async eom(ctx) {
    const raw = ctx.headers.map((h) => h.name + ":" + h.value).join("\\r\\n") + "\\r\\n\\r\\n";
    const { subject } = await PostalMime.parse(raw);
    ctx.addHeader("X-Npm", subject + "+" + word);
  },
});
`;

const CHECK = (from: string) =>
  `import { defineFilter, listen } from "${from}";
import { duplexPair } from "${from}/testing";
const server = await listen("inet:0@127.0.0.1", defineFilter({ eom: () => "accept" }));
console.log(JSON.stringify({ testing: typeof duplexPair, port: server.address.port }));
await server.stop();
`;

const ONLY_BUN = {
  skip: process.versions.bun === undefined
    ? "runs under bun test only (it drives node, bun and deno)"
    : false,
};

/** Where `npm pack` put the tarball (packed once per process, removed at exit). */
let packed: { dir: string; tarball: string } | undefined;
function pack(): { dir: string; tarball: string } {
  if (packed !== undefined) return packed;
  const dir = mkdtempSync(join(tmpdir(), "milterkit-npm-"));
  onExit(() => rmSync(dir, { recursive: true, force: true }));
  run("npm", ["pack", "--pack-destination", dir, "--silent"], ROOT);
  const tarball = readdirSync(dir).find((f) => /^milterkit-.*\.tgz$/.test(f));
  assert.ok(tarball, "npm pack wrote no milterkit-*.tgz");
  packed = { dir, tarball: join(dir, tarball) };
  return packed;
}

describe("the npm package, packed and installed into an empty project", ONLY_BUN, () => {
  let dir: string | undefined;
  let project: string;
  let serve: ChildProcess | undefined;
  let log = "";

  /** Packs and installs (inside the first test: hooks get the runner's default timeout). */
  let installed = false;
  function install(): void {
    if (installed) return;
    installed = true;
    const { dir: packDir, tarball } = pack();
    dir = packDir;
    project = join(dir, "project");
    mkdirSync(join(project, "lib"), { recursive: true });
    writeFileSync(
      join(project, "package.json"),
      `{ "name": "user-project", "private": true, "type": "module" }\n`,
    );
    run("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball], project);
    cpSync(
      join(ROOT, "node_modules", "postal-mime"),
      join(project, "node_modules", "postal-mime"),
      {
        recursive: true,
      },
    );
    writeFileSync(join(project, "filter.js"), FILTER);
    writeFileSync(join(project, "lib", "word.js"), `export const word = "one";\n`);
  }
  after(() => {
    if (serve?.exitCode === null) serve.kill("SIGKILL");
  });

  function send(spec: string): string | undefined {
    const out = run(
      "node",
      ["node_modules/.bin/milterkit", "send", "-c", spec, "--json"],
      project,
      MESSAGE,
    );
    const t = JSON.parse(out).transactions[0];
    return t.modifications.find((m: { name?: string }) => m.name === "X-Npm")?.value;
  }

  async function until(what: string, cond: () => boolean): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (!cond()) {
      if (Date.now() > deadline || serve?.exitCode !== null) {
        throw new Error(`no ${what}:\n${log}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  it(
    "under Node, the package's bin serves a filter that milterkit send drives; SIGHUP reloads; a broken reload is named by file:line:col",
    SLOW,
    async () => {
      install();
      serve = spawn("node", [
        "node_modules/.bin/milterkit",
        "serve",
        "filter.js",
        "--listen",
        "inet:0@127.0.0.1",
        "--log-format",
        "json",
      ], { cwd: project, stdio: ["ignore", "pipe", "pipe"] });
      const removeHook = onExit(() => serve?.kill("SIGKILL"));
      serve.stdout!.setEncoding("utf8").on("data", (d: string) => (log += d));
      serve.stderr!.setEncoding("utf8").on("data", (d: string) => (log += d));
      await until("listening line", () => /"event":"listening"/.test(log));
      const port = /"address":"inet:(\d+)@/.exec(log)?.[1];
      const spec = `inet:${port}@127.0.0.1`;
      assert.equal(send(spec), "npm+one");

      writeFileSync(join(project, "lib", "word.js"), `export const word = "two";\n`);
      process.kill(serve.pid!, "SIGHUP");
      await until("reload", () => /"event":"reloaded"/.test(log));
      assert.equal(send(spec), "npm+two");

      writeFileSync(join(project, "lib", "word.js"), `export const word = "three" +;\n`);
      process.kill(serve.pid!, "SIGHUP");
      await until("failed reload", () => /"event":"reload failed/.test(log));
      assert.match(
        log,
        /"error":"lib\/word\.js:1:30: Unexpected token ';'\\n1 \| export const word/,
      );
      assert.equal(send(spec), "npm+two", "the running version is kept");

      const exited = new Promise((r) => serve!.once("exit", r));
      process.kill(serve.pid!, "SIGTERM");
      await exited;
      removeHook();
      assert.equal(serve.exitCode, 0, log);
    },
  );

  it("imports and listens under Bun and Deno, by bare name and npm: specifier", SLOW, () => {
    install();
    writeFileSync(join(project, "check.mjs"), CHECK("milterkit"));
    writeFileSync(join(project, "check_npm.mjs"), CHECK("npm:milterkit"));
    for (
      const [cmd, args] of [
        [BUN, ["check.mjs"]],
        [DENO, ["run", "-A", "check.mjs"]],
        [DENO, ["run", "-A", "check_npm.mjs"]],
        ["node", ["check.mjs"]],
      ] as const
    ) {
      const out = JSON.parse(run(cmd, [...args], project).trim().split("\n").at(-1)!);
      assert.equal(out.testing, "function", `${cmd} ${args.join(" ")}`);
      assert.ok(out.port > 0);
    }
  });

  it("the one-file Node build (dist/milterkit.mjs) loads the same project's filter", SLOW, () => {
    install();
    writeFileSync(join(project, "lib", "word.js"), `export const word = "one";\n`);
    const out = join(dir!, "milterkit.mjs");
    run(BUN, ["scripts/build.ts", "--node", "--outfile", out], ROOT);
    const check = run("node", [out, "serve", "filter.js", "--check"], project);
    assert.match(check, /^filter: from-npm$/m);
    assert.match(check, /^actions: ADDHDRS$/m);
  });

  it("type-checks a strict TypeScript consumer against the shipped .d.ts", SLOW, () => {
    install();
    writeFileSync(
      join(project, "typed.ts"),
      `import { defineFilter, type Filter } from "milterkit";
import { duplexPair } from "milterkit/testing";
const filter: Filter = defineFilter({
  actions: ["addHeader"],
  eom(ctx) {
    ctx.addHeader("X-Typed", "yes");
    return "accept";
  },
});
const [a, b] = duplexPair();
export { a, b, filter };
`,
    );
    writeFileSync(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          module: "nodenext",
          moduleResolution: "nodenext",
          target: "es2022",
          lib: ["es2022", "dom"],
          noEmit: true,
          skipLibCheck: false,
          types: [],
        },
        files: ["typed.ts"],
      }),
    );
    run("node", [TSC, "-p", "."], project);
    writeFileSync(
      join(project, "wrong.ts"),
      `import { defineFilter } from "milterkit";\ndefineFilter({ eom: 42 });\n`,
    );
    writeFileSync(
      join(project, "tsconfig.wrong.json"),
      JSON.stringify({ extends: "./tsconfig.json", files: ["wrong.ts"] }),
    );
    const r = spawnSync("node", [TSC, "-p", "tsconfig.wrong.json"], {
      cwd: project,
      encoding: "utf8",
    });
    assert.notEqual(r.status, 0, "a handler that is not a function must not type-check");
    assert.match(r.stdout, /wrong\.ts\(2,/);
  });
});

describe("milterkit init: a project that passes its own test and type-checks", ONLY_BUN, () => {
  let project: string;
  let initialised = false;

  /**
   * `milterkit init` by the compiled binary, then the packed toolkit unpacked into the
   * project's node_modules as `npm install` would put it, with @types/node from this
   * repository (no registry: the test stays offline).
   */
  function init(): void {
    if (initialised) return;
    initialised = true;
    const { dir, tarball } = pack();
    project = join(dir, "new-filter");
    const r = spawnSync(ensureBinary(), ["init", project, "--binary", BINARY], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^wrote filter\.ts, filter_test\.ts, .*new-filter\.service into /);
    const pkgDir = join(project, "node_modules", "milterkit");
    mkdirSync(pkgDir, { recursive: true });
    run("tar", ["-xzf", tarball, "-C", pkgDir, "--strip-components=1"], project);
    for (const p of ["@types/node", "undici-types"]) {
      cpSync(join(ROOT, "node_modules", p), join(project, "node_modules", p), { recursive: true });
    }
  }

  it("its test passes under bun test and deno test", SLOW, () => {
    init();
    run(BUN, ["test"], project);
    const deno = run(DENO, ["test", "-A"], project);
    assert.match(deno, /ok \| 1 passed \(3 steps\) \| 0 failed/);
  });

  it("deno check and tsc type-check the filter and its test", SLOW, () => {
    init();
    run(DENO, ["check", "filter.ts", "filter_test.ts"], project);
    run("node", [TSC, "-p", "."], project);
  });

  it("the binary serves the new filter.ts as it is", SLOW, async () => {
    init();
    const serve = await startServe("filter.ts", { cwd: project });
    try {
      const out = run(
        BINARY,
        ["send", "-c", serve.spec, "--json"],
        project,
        [
          "From: a@example.test",
          "To: b@example.test",
          "Subject: FREE MONEY INSIDE",
          "",
          "hi",
          "",
        ].join("\n"),
      );
      const t = JSON.parse(out).transactions[0];
      assert.deepEqual(
        t.modifications.map((m: { name: string; value: string }) => [m.name, m.value]),
        [["X-Shouting", "yes"]],
      );
    } finally {
      await serve.stop();
    }
  });

  it("writes a systemd unit that systemd-analyze verifies, and a Postfix snippet", SLOW, () => {
    init();
    const unit = readFileSync(join(project, "new-filter.service"), "utf8");
    assert.match(unit, /^DynamicUser=yes$/m);
    assert.match(unit, /^Group=postfix$/m);
    assert.match(unit, /^RuntimeDirectory=milterkit-new-filter$/m);
    assert.match(
      unit,
      new RegExp(
        `^ExecStart=${BINARY} serve /etc/milterkit/new-filter/filter\\.ts --listen unix:/run/milterkit-new-filter/milter\\.sock`,
        "m",
      ),
    );
    const verify = spawnSync("systemd-analyze", ["verify", "./new-filter.service"], {
      cwd: project,
      encoding: "utf8",
    });
    assert.equal(verify.status, 0, `systemd-analyze verify: ${verify.stderr}${verify.stdout}`);
    assert.equal(verify.stderr, "", "no warnings");
    const snippet = readFileSync(join(project, "postfix-main.cf"), "utf8");
    assert.match(snippet, /^smtpd_milters = unix:\/run\/milterkit-new-filter\/milter\.sock$/m);
  });

  it(
    "never overwrites: a second init fails and changes nothing; a bad name is a usage error",
    SLOW,
    () => {
      init();
      const before = readFileSync(join(project, "filter.ts"), "utf8");
      writeFileSync(join(project, "filter.ts"), before + "// mine\n");
      const again = spawnSync(BINARY, ["init", project], { encoding: "utf8" });
      assert.equal(again.status, 1);
      assert.match(again.stderr, /already has filter\.ts, filter_test\.ts/);
      assert.equal(readFileSync(join(project, "filter.ts"), "utf8"), before + "// mine\n");
      const bad = spawnSync(BINARY, ["init", join(project, "x"), "--name", "no spaces"], {
        encoding: "utf8",
      });
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /--name must be letters, digits/);
    },
  );
});
