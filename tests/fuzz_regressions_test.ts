/**
 * Replays the fuzz corpus (`tests/data/fuzz-corpus/`: real capture streams, hand-made hostile
 * inputs, and every finding `scripts/fuzz.ts` saved) through the frame reader, the filter engine,
 * the MTA engine and the proxy, whole and in small chunks, plus a short fixed-seed fuzz run.
 * Every execution must end cleanly or with a typed MilterError, in bounded time, with no
 * unhandled rejection and every invariant holding (see scripts/fuzz.ts).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  inputs,
  runOne,
  savedFindings,
  seeds,
  TARGET_NAMES,
  type TargetName,
} from "../scripts/fuzz.ts";

const CHUNKS = [1 << 20, 1, 7];

describe("fuzz corpus replay", () => {
  for (const target of TARGET_NAMES) {
    const corpus = seeds(target);
    it(
      `${target}: every corpus seed, whole and in 1- and 7-byte chunks`,
      { timeout: 120_000 },
      async () => {
        assert.ok(corpus.length >= 20, `the corpus holds seeds for ${target}`);
        for (const s of corpus) {
          for (const chunk of CHUNKS) {
            for (const seed of [0, 1]) {
              await runOne(target, { bytes: s.bytes, chunk, seed }).catch((e) => {
                assert.fail(`${s.name} (chunk ${chunk}, seed ${seed}): ${(e as Error).message}`);
              });
            }
          }
        }
      },
    );
  }

  it("every saved finding now runs cleanly", { timeout: 120_000 }, async () => {
    for (const f of savedFindings()) {
      await runOne(f.target, f.input).catch((e) => {
        assert.fail(`${f.file} (first seen as: ${f.message}): ${(e as Error).message}`);
      });
    }
  });

  for (const target of TARGET_NAMES) {
    it(
      `${target}: 150 fixed-seed mutations hold every invariant`,
      { timeout: 120_000 },
      async () => {
        const pool = seeds(target as TargetName).map((s) => s.bytes);
        await fc.assert(
          fc.asyncProperty(inputs(target, pool), (input) => runOne(target, input)),
          { numRuns: 150, seed: 20260901 },
        );
      },
    );
  }
});
