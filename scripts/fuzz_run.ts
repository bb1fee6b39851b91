/**
 * Running one fuzz input on one target under the hang bound, catching unhandled rejections
 * (see scripts/fuzz.ts).
 */
import process from "node:process";
import { setImmediate } from "node:timers";
import { Finding, type FuzzInput, type TargetName } from "./fuzz_common.ts";
import { TARGETS } from "./fuzz_targets.ts";

const HANG_MS = 5000;

const unhandled: unknown[] = [];
let listening = false;

/**
 * Runs one input on one target under the hang bound, checking for unhandled rejections.
 *
 * @param target The target.
 * @param input The input.
 * @returns Resolves when the input ran cleanly.
 * @throws {Finding} on a hang, an unhandled rejection or a broken invariant.
 */
export async function runOne(target: TargetName, input: FuzzInput): Promise<void> {
  if (!listening) {
    process.on("unhandledRejection", (e) => unhandled.push(e));
    listening = true;
  }
  const before = unhandled.length;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Finding(`The ${target} target did not finish within ${HANG_MS} ms`)),
      HANG_MS,
    );
  });
  try {
    await Promise.race([TARGETS[target](input), hang]);
  } catch (e) {
    if (e instanceof Finding) throw e;
    throw new Finding(`The ${target} target threw: ${e}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
  // Let stray rejections of this run surface before judging it (the frame target is synchronous).
  if (target !== "frame") await new Promise((r) => setImmediate(r));
  if (unhandled.length > before) {
    throw new Finding(`Unhandled rejection: ${unhandled.slice(before).map(String).join("; ")}`);
  }
}
