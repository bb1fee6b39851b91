/**
 * What the fuzzer's parts share: the target names, one input, the invariant counters, the
 * {@link Finding} error, and byte and framing helpers (see scripts/fuzz.ts).
 */
import { MilterError } from "../lib/wire/errors.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import type { Frame } from "../lib/wire/types.ts";

/** The fuzzed components. */
export type TargetName = "frame" | "filter" | "client" | "proxy";
export const TARGET_NAMES: readonly TargetName[] = ["frame", "filter", "client", "proxy"];

/** One execution's input: the byte stream, how it is chunked, and the seed of every choice. */
export interface FuzzInput {
  readonly bytes: Uint8Array;
  readonly chunk: number;
  readonly seed: number;
}

/** How many executions of each target reached its strongest invariant check. */
export const checked: Record<TargetName, number> = { frame: 0, filter: 0, client: 0, proxy: 0 };

/** A broken invariant or an untyped failure. */
export class Finding extends Error {}

/** A small deterministic generator: each call returns a number in [0, n). */
export function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    return n <= 0 ? 0 : s % n;
  };
}

/** True when two byte arrays hold the same bytes. */
export const bytesEqual = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

/** Anything thrown that is not a MilterError is a finding. */
export function typed(e: unknown, where: string): void {
  if (!(e instanceof MilterError)) {
    throw new Finding(`${where} threw an untyped ${e instanceof Error ? e.name : typeof e}: ${e}`, {
      cause: e,
    });
  }
}

/** Splits a stream into frames as far as it frames; the framing error, if any. */
export function frames(bytes: Uint8Array): { frames: Frame[]; error?: MilterError } {
  const d = new FrameDecoder();
  try {
    const out = d.push(bytes);
    d.finish();
    return { frames: out };
  } catch (e) {
    typed(e, "FrameDecoder");
    return { frames: [], error: e as MilterError };
  }
}
