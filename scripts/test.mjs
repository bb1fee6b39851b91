#!/usr/bin/env node
// scripts/test.mjs - THE test command of milterkit (`npm test`): plain Node 20 ESM, no
// dependencies.
//
//   npm test [-- [--unit] [--only deno|bun] [--no-checks] [FILE_OR_DIR...]]
//
// 1. Check steps: deno fmt --check, deno lint, layers, deno check, deno doc --lint over every
//    entry point, the JSDoc examples (deno test --doc), the API reports
//    (scripts/api_report.mjs), bun check, deno publish --dry-run.
//    Each failed step counts as one failed item.
// 2. When interop tests are selected and we are root: scripts/peers/install.sh (real Postfix,
//    libmilter, OpenDKIM...); a failure counts as one failed item.
// 3. The same test files under `deno test` and `bun test`, each writing JUnit XML into
//    .test-results/. Leaf test cases are counted from the XML (Deno reports a describe as a test
//    with steps: only leaves count). Bun's "N errors" (failing hooks, errors between tests,
//    files that do not load) count as failed items; so does a runner that exits non-zero
//    without a reported failure, or that hits the per-runtime timeout (25 min, env
//    MILTERKIT_TEST_TIMEOUT_MIN).
// The last line is exactly `N passed, M failed` (with `, K skipped` when K > 0), summed over both
// runtimes; N counts passed tests, M failed tests plus failed steps. Exit code 0 only if M == 0.
//
// Options: --unit skips tests/interop/; --only deno|bun runs one runtime; --no-checks skips
// step 1; FILE_OR_DIR... selects test files (default tests/).
import { spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { countBun, countDeno, stripAnsi } from "./test_junit.mjs";

/** Prints a line on stdout (the project lints `console` away). */
const say = (line) => process.stdout.write(line + "\n");
/** Prints a line on stderr. */
const warn = (line) => process.stderr.write(line + "\n");

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const RESULTS = join(ROOT, ".test-results");
// Reports are written into a directory of this run (several runs may share one tree), then copied
// to .test-results/deno.xml and bun.xml.
const RUN_DIR = join(RESULTS, `run-${process.pid}`);
const TIMEOUT_MS = Number(process.env.MILTERKIT_TEST_TIMEOUT_MIN ?? 25) * 60_000;
const CHECK_TIMEOUT_MS = 10 * 60_000;

// ---------- arguments ----------
const opts = { unit: false, only: "", checks: true, paths: [] };
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--unit") opts.unit = true;
    else if (a === "--no-checks") opts.checks = false;
    else if (a === "--only") opts.only = argv[++i] ?? "";
    else if (a.startsWith("--only=")) opts.only = a.slice(7);
    else if (a === "-h" || a === "--help") {
      say("usage: npm test [-- [--unit] [--only deno|bun] [--no-checks] [FILE_OR_DIR...]]");
      process.exit(0);
    } else if (a.startsWith("-")) usage(`unknown option ${a}`);
    else opts.paths.push(a);
  }
  if (opts.only && opts.only !== "deno" && opts.only !== "bun") {
    usage(`--only takes deno or bun, not ${JSON.stringify(opts.only)}`);
  }
}

function usage(msg) {
  warn(`test.mjs: ${msg}`);
  warn("usage: npm test [-- [--unit] [--only deno|bun] [--no-checks] [FILE_OR_DIR...]]");
  process.exit(2);
}

function bin(name) {
  const local = join(ROOT, "node_modules", ".bin", name);
  return existsSync(local) ? local : name;
}
const DENO = bin("deno");
const BUN = bin("bun");

// ---------- running commands ----------
const running = new Set();
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    for (const child of running) killGroup(child);
    rmSync(RUN_DIR, { recursive: true, force: true });
    process.exit(130);
  });
}

function killGroup(child) {
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** Runs a command in its own process group, streaming its output; resolves with the outcome. */
function runStreaming(cmd, args, timeoutMs) {
  return new Promise((resolvePromise) => {
    const started = Date.now();
    let output = "";
    let timedOut = false;
    let child;
    try {
      child = spawn(cmd, args, {
        cwd: ROOT,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
        env: process.env,
      });
    } catch (err) {
      resolvePromise({ code: -1, output: String(err), timedOut, seconds: 0 });
      return;
    }
    running.add(child);
    const keep = (chunk, stream) => {
      stream.write(chunk);
      output += chunk.toString("utf8");
      if (output.length > 4_000_000) output = output.slice(-2_000_000);
    };
    child.stdout.on("data", (c) => keep(c, process.stdout));
    child.stderr.on("data", (c) => keep(c, process.stderr));
    const timer = setTimeout(() => {
      timedOut = true;
      warn(`\n!! ${cmd} timed out after ${Math.round(timeoutMs / 1000)} s: killing it`);
      killGroup(child);
    }, timeoutMs);
    const finish = (code) => {
      clearTimeout(timer);
      running.delete(child);
      resolvePromise({ code, output, timedOut, seconds: (Date.now() - started) / 1000 });
    };
    child.on("error", (err) => {
      output += String(err);
      finish(-1);
    });
    child.on("close", (code, signal) => finish(code ?? (signal ? 128 : -1)));
  });
}

// ---------- selecting test files ----------
function collectTests(path, out) {
  const st = statSync(path);
  if (st.isDirectory()) {
    for (const name of readdirSync(path).sort()) {
      if (name === "node_modules" || name.startsWith(".")) continue;
      collectTests(join(path, name), out);
    }
  } else if (/_test\.(ts|mts|js|mjs)$/.test(path)) {
    out.push(path);
  }
}

function selectTests() {
  const roots = opts.paths.length > 0 ? opts.paths : ["tests"];
  const files = [];
  for (const p of roots) {
    const abs = resolve(ROOT, p);
    if (!existsSync(abs)) usage(`no such test file or directory: ${p}`);
    const before = files.length;
    if (statSync(abs).isFile()) files.push(abs);
    else collectTests(abs, files);
    if (files.length === before && opts.paths.length > 0) usage(`no *_test.ts files in ${p}`);
  }
  const rel = [...new Set(files)].map((f) => relative(ROOT, f));
  return opts.unit ? rel.filter((f) => !f.startsWith("tests/interop/")) : rel;
}

// ---------- steps ----------
const failedItems = [];
const lines = [];
let totalPassed = 0;
let totalFailed = 0;
let totalSkipped = 0;

function banner(title) {
  say(`\n==== ${title}`);
}

async function checkStep(title, cmd, args) {
  banner(title);
  const r = await runStreaming(cmd, args, CHECK_TIMEOUT_MS);
  const ok = r.code === 0;
  const status = ok ? "ok" : r.timedOut ? "TIMED OUT" : `FAILED (exit ${r.code})`;
  lines.push(`step ${title}: ${status} (${r.seconds.toFixed(1)} s)`);
  if (!ok) {
    totalFailed++;
    failedItems.push(`step: ${title}`);
  }
  return ok;
}

async function runtimeStep(runtime, files) {
  const xmlPath = join(RUN_DIR, `${runtime}.xml`);
  rmSync(xmlPath, { force: true });
  let cmd, args;
  if (runtime === "deno") {
    // type checking is the separate `deno check` step: a type error must not hide every result
    cmd = DENO;
    args = ["test", "-A", "--no-check", `--junit-path=${xmlPath}`, ...files];
  } else {
    cmd = BUN;
    args = [
      "test",
      "--timeout",
      "60000",
      "--reporter=junit",
      `--reporter-outfile=${xmlPath}`,
      ...files.map((f) => "./" + f),
    ];
  }
  banner(`${runtime} test (${files.length} files)`);
  const started = Date.now();
  const r = await runStreaming(cmd, args, TIMEOUT_MS);
  let counts = { passed: 0, failed: 0, skipped: 0, failures: [] };
  let note = "";
  if (existsSync(xmlPath)) {
    const xml = readFileSync(xmlPath, "utf8");
    counts = runtime === "deno" ? countDeno(xml) : countBun(xml);
  }
  if (runtime === "deno") {
    // A module that throws outside any test ("uncaught error") is missing from Deno's XML.
    const failuresAt = stripAnsi(r.output).lastIndexOf(" FAILURES ");
    const tail = failuresAt >= 0 ? stripAnsi(r.output).slice(failuresAt) : "";
    const uncaught = new Set(tail.match(/^\S+(?= \(uncaught error\)\s*$)/gm) ?? []);
    for (const file of uncaught) {
      counts.failed++;
      counts.failures.push(`${file}: uncaught error outside tests (see deno's output)`);
    }
  }
  if (runtime === "bun") {
    const m = /^\s*(\d+) errors?\s*$/m.exec(stripAnsi(r.output));
    if (m) {
      counts.failed += Number(m[1]);
      counts.failures.push(`${m[1]} error(s) outside tests (hooks, module load): see bun's output`);
      note += `, ${m[1]} error(s) outside tests`;
    }
  }
  if (r.timedOut) {
    counts.failed++;
    counts.failures.push(`${runtime} test timed out after ${TIMEOUT_MS / 60_000} min`);
    note += ", timed out";
  } else if (!existsSync(xmlPath)) {
    counts.failed++;
    counts.failures.push(`${runtime} test wrote no report (exit ${r.code}): see its output`);
    note += ", no report";
  } else if (r.code !== 0 && counts.failed === 0) {
    counts.failed++;
    counts.failures.push(`${runtime} test exited ${r.code} with no failed test: see its output`);
    note += `, exit ${r.code}`;
  }
  if (runtime === "deno" && !r.timedOut && !existsSync(xmlPath) && files.length > 1) {
    // Deno aborts the whole run when one module cannot load: run the files one by one instead.
    say("\n==== deno wrote no report: running each test file on its own");
    counts = { passed: 0, failed: 0, skipped: 0, failures: [] };
    note = ", file by file";
    for (const f of files) {
      const one = join(RUN_DIR, "deno-one.xml");
      rmSync(one, { force: true });
      const left = started + TIMEOUT_MS - Date.now();
      if (left <= 0) {
        counts.failed++;
        counts.failures.push(`${f}: not run, the ${TIMEOUT_MS / 60_000} min budget is spent`);
        continue;
      }
      const rr = await runStreaming(
        cmd,
        ["test", "-A", "--no-check", `--junit-path=${one}`, f],
        left,
      );
      if (existsSync(one)) {
        const c = countDeno(readFileSync(one, "utf8"));
        counts.passed += c.passed;
        counts.failed += c.failed;
        counts.skipped += c.skipped;
        counts.failures.push(...c.failures);
        if (rr.code !== 0 && c.failed === 0) {
          counts.failed++;
          counts.failures.push(`${f}: deno test exited ${rr.code}`);
        }
      } else {
        counts.failed++;
        counts.failures.push(`${f}: deno test wrote no report (exit ${rr.code})`);
      }
    }
  }
  lines.push(
    `${runtime}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped` +
      ` (${((Date.now() - started) / 1000).toFixed(1)} s${note})`,
  );
  totalPassed += counts.passed;
  totalFailed += counts.failed;
  totalSkipped += counts.skipped;
  for (const f of counts.failures) failedItems.push(`${runtime}: ${f}`);
  if (process.getuid?.() === 0 && files.some((f) => f.startsWith("tests/interop/"))) {
    // Postfix instances of a killed run outlive it (the master daemonizes): clean them up.
    await runStreaming("bash", [join(ROOT, "scripts/peers/postfix.sh"), "sweep"], 60_000);
  }
}

// ---------- main ----------
mkdirSync(RUN_DIR, { recursive: true });
const files = selectTests();

if (opts.checks) {
  await checkStep("deno fmt --check", DENO, ["fmt", "--check"]);
  await checkStep("deno lint", DENO, ["lint"]);
  await checkStep("layers (scripts/check_layers.mjs)", process.execPath, [
    join(ROOT, "scripts/check_layers.mjs"),
  ]);
  const checkPaths = ["mod.ts", "cli.ts", "lib", "tests", "examples", "scripts"]
    .filter((p) => existsSync(join(ROOT, p)));
  await checkStep("deno check", DENO, ["check", ...checkPaths]);
  if (existsSync(join(ROOT, "mod.ts"))) {
    // every entry point of deno.json together: a type one entry point uses may come from another
    const entries = Object.values(
      JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")).exports,
    );
    await checkStep("deno doc --lint (entry points)", DENO, ["doc", "--lint", ...entries]);
    // every JSDoc example of the public code is type-checked and run
    await checkStep("deno test --doc (JSDoc examples)", DENO, [
      "test",
      "--doc",
      "-A",
      "mod.ts",
      "lib",
    ]);
    await checkStep("api reports (scripts/api_report.mjs)", process.execPath, [
      join(ROOT, "scripts/api_report.mjs"),
    ]);
    await checkStep("bun check mod.ts", BUN, ["check", "mod.ts"]);
    // JSR's checks (slow types, exports) so the package stays publishable.
    await checkStep("deno publish --dry-run", DENO, ["publish", "--dry-run", "--allow-dirty"]);
  }
}

if (files.some((f) => f.startsWith("tests/interop/")) && process.getuid?.() === 0) {
  await checkStep("peers (scripts/peers/install.sh)", "bash", [
    join(ROOT, "scripts/peers/install.sh"),
  ]);
}

if (files.length === 0) {
  say("\nno test files selected");
} else {
  for (const runtime of ["deno", "bun"]) {
    if (!opts.only || opts.only === runtime) await runtimeStep(runtime, files);
  }
}

for (const name of ["deno.xml", "bun.xml"]) {
  if (existsSync(join(RUN_DIR, name))) copyFileSync(join(RUN_DIR, name), join(RESULTS, name));
}
rmSync(RUN_DIR, { recursive: true, force: true });

banner("summary");
for (const l of lines) say(l);
if (failedItems.length > 0) {
  say("\nfailed:");
  for (const f of failedItems) say(`  ${f}`);
}
say(
  `${totalPassed} passed, ${totalFailed} failed` +
    (totalSkipped > 0 ? `, ${totalSkipped} skipped` : ""),
);
process.exit(totalFailed === 0 ? 0 : 1);
