/**
 * The fuzz corpus on disk: seed streams per target and saved findings (see scripts/fuzz.ts).
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import type { FuzzInput, TargetName } from "./fuzz_common.ts";

/** Where the corpus lives: `to-filter/`, `to-mta/` seeds and `findings/`. */
export const CORPUS = new URL("../tests/data/fuzz-corpus/", import.meta.url);

/** Seed files for a target (`to-filter/` streams, `to-mta/` streams, or both). */
export function seeds(target: TargetName): { name: string; bytes: Uint8Array }[] {
  const dirs = target === "client"
    ? ["to-mta"]
    : target === "frame"
    ? ["to-filter", "to-mta"]
    : ["to-filter"];
  const out: { name: string; bytes: Uint8Array }[] = [];
  for (const dir of dirs) {
    const url = new URL(`${dir}/`, CORPUS);
    if (!existsSync(url)) continue;
    for (const f of readdirSync(url).filter((f) => f.endsWith(".bin")).sort()) {
      out.push({ name: `${dir}/${f}`, bytes: new Uint8Array(readFileSync(new URL(f, url))) });
    }
  }
  return out;
}

/** A saved finding: its bytes and how it was run. */
export interface SavedFinding {
  readonly file: string;
  readonly target: TargetName;
  readonly input: FuzzInput;
  readonly message: string;
}

/** The findings saved so far (each `findings/NAME.bin` with its `NAME.json`). */
export function savedFindings(): SavedFinding[] {
  const url = new URL("findings/", CORPUS);
  if (!existsSync(url)) return [];
  return readdirSync(url).filter((f) => f.endsWith(".json")).sort().map((f) => {
    const meta = JSON.parse(readFileSync(new URL(f, url), "utf8"));
    const bytes = new Uint8Array(readFileSync(new URL(f.replace(/\.json$/, ".bin"), url)));
    return {
      file: f,
      target: meta.target,
      input: { bytes, chunk: meta.chunk, seed: meta.seed },
      message: meta.message,
    };
  });
}

/** Saves a finding as `findings/TARGET-HASH.bin` with its `.json`; returns its name. */
export function saveFinding(target: TargetName, input: FuzzInput, message: string): string {
  const dir = new URL("findings/", CORPUS);
  mkdirSync(dir, { recursive: true });
  const hash = createHash("sha1").update(input.bytes).update(`${input.chunk}/${input.seed}`)
    .digest("hex").slice(0, 12);
  const name = `${target}-${hash}`;
  writeFileSync(new URL(`${name}.bin`, dir), input.bytes);
  const meta = {
    target,
    chunk: input.chunk,
    seed: input.seed,
    message,
    found: new Date().toISOString(),
  };
  writeFileSync(new URL(`${name}.json`, dir), JSON.stringify(meta, null, 2) + "\n");
  return name;
}
