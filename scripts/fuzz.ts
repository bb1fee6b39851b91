// deno-lint-ignore-file no-console
/**
 * Mutation and property-based fuzzing (fast-check) of the frame reader, the filter engine, the
 * MTA engine and the proxy, seeded from `tests/data/fuzz-corpus/` (real capture streams and
 * hand-made hostile inputs). A finding is anything but a clean end or a typed `MilterError`: another
 * exception, a hang past the bound, an unhandled rejection, or a broken invariant (every
 * reply-expecting command gets exactly one final reply; the proxy forwards bytes unchanged;
 * decoding is stable under re-encoding). Each finding is saved to `fuzz-corpus/findings/`, which
 * `tests/fuzz_regressions_test.ts` replays in CI.
 *
 *   deno run -A scripts/fuzz.ts [--seconds 60 | --runs N] [--target frame,filter,client,proxy]
 *   bun scripts/fuzz.ts --seconds 300 --seed 42
 */
import process from "node:process";
import { parseArgs } from "node:util";
import fc from "fast-check";
import { checked, TARGET_NAMES, type TargetName } from "./fuzz_common.ts";
import { saveFinding, seeds } from "./fuzz_corpus.ts";
import { inputs } from "./fuzz_mutate.ts";
import { runOne } from "./fuzz_run.ts";

export { checked, Finding, type FuzzInput, TARGET_NAMES, type TargetName } from "./fuzz_common.ts";
export { CORPUS, type SavedFinding, savedFindings, seeds } from "./fuzz_corpus.ts";
export { inputs } from "./fuzz_mutate.ts";
export { runOne } from "./fuzz_run.ts";
export { TARGETS } from "./fuzz_targets.ts";

interface TargetReport {
  target: TargetName;
  executions: number;
  checked: number;
  seconds: number;
  findings: string[];
}

async function fuzzTarget(
  target: TargetName,
  budget: { ms?: number; runs?: number },
  seed: number,
): Promise<TargetReport> {
  const pool = seeds(target).map((s) => s.bytes);
  const report: TargetReport = { target, executions: 0, checked: 0, seconds: 0, findings: [] };
  const started = performance.now();
  const out = (m: string) => process.stderr.write(`  ${target}: ${m}\n`);
  // Replay the corpus first: every seed, whole and byte by byte.
  for (const s of pool) {
    for (const chunk of [1 << 20, 1]) {
      report.executions++;
      try {
        await runOne(target, { bytes: s, chunk, seed: 1 });
      } catch (e) {
        report.findings.push(
          saveFinding(target, { bytes: s, chunk, seed: 1 }, (e as Error).message),
        );
      }
    }
  }
  let round = 0;
  while (true) {
    const elapsed = performance.now() - started;
    if (budget.ms !== undefined && elapsed >= budget.ms) break;
    if (budget.runs !== undefined && report.executions >= budget.runs) break;
    const numRuns = Math.min(
      200,
      budget.runs !== undefined ? budget.runs - report.executions : 200,
    );
    const property = fc.asyncProperty(inputs(target, pool), async (input) => {
      report.executions++;
      await runOne(target, input);
    });
    const left = budget.ms !== undefined ? budget.ms - elapsed : undefined;
    const details = await fc.check(property, {
      numRuns,
      seed: seed + round++,
      ...(left !== undefined ? { interruptAfterTimeLimit: Math.max(1, left) } : {}),
      markInterruptAsFailure: false,
    });
    if (details.failed && details.counterexample) {
      const [input] = details.counterexample;
      const message = details.errorInstance instanceof Error
        ? details.errorInstance.message
        : String(details.errorInstance);
      const name = saveFinding(target, input, message);
      report.findings.push(name);
      out(`finding ${name}: ${message}`);
    }
  }
  report.seconds = (performance.now() - started) / 1000;
  report.checked = checked[target];
  return report;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      seconds: { type: "string" },
      runs: { type: "string" },
      target: { type: "string", default: TARGET_NAMES.join(",") },
      seed: { type: "string", default: String(Date.now() % 1_000_000) },
      json: { type: "boolean", default: false },
    },
  });
  const targets = values.target!.split(",").map((t) => t.trim()) as TargetName[];
  for (const t of targets) {
    if (!TARGET_NAMES.includes(t)) throw new Error(`Unknown target ${t}: expected ${TARGET_NAMES}`);
  }
  const seconds = values.seconds !== undefined ? Number(values.seconds) : undefined;
  const runs = values.runs !== undefined ? Number(values.runs) : undefined;
  const perTarget = {
    ...(seconds !== undefined ? { ms: (seconds * 1000) / targets.length } : {}),
    ...(runs !== undefined ? { runs: Math.ceil(runs / targets.length) } : {}),
  };
  if (perTarget.ms === undefined && perTarget.runs === undefined) {
    perTarget.ms = 60_000 / targets.length;
  }
  const seed = Number(values.seed);
  const runtime = "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : "node";
  process.stderr.write(`fuzzing ${targets.join(", ")} under ${runtime}, seed ${seed}\n`);
  const reports: TargetReport[] = [];
  for (const t of targets) reports.push(await fuzzTarget(t, perTarget, seed));
  if (values.json) {
    console.log(JSON.stringify({ runtime, seed, reports }, null, 2));
  } else {
    for (const r of reports) {
      console.log(
        `${r.target.padEnd(7)} ${String(r.executions).padStart(8)} executions  ${
          (r.executions / r.seconds).toFixed(0).padStart(6)
        }/s  ${r.seconds.toFixed(1)} s  ${r.checked} reached the invariant check  findings: ${
          r.findings.length ? [...new Set(r.findings)].join(", ") : "none"
        }`,
      );
    }
    const total = reports.reduce((n, r) => n + r.executions, 0);
    const found = reports.reduce((n, r) => n + r.findings.length, 0);
    console.log(`total   ${total} executions under ${runtime}, ${found} findings`);
  }
  process.exitCode = reports.some((r) => r.findings.length) ? 1 : 0;
}

if (import.meta.main) await main();
