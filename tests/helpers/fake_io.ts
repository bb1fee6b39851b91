/** An in-memory CliIo for running subcommands in process. */
import type { CliIo } from "../../lib/cli/types.ts";
import { readFile } from "node:fs/promises";

export function fakeIo(
  stdin = "",
): CliIo & { out: () => string; err: () => string; abort: () => void } {
  let out = "";
  let err = "";
  const ac = new AbortController();
  return {
    stdout: (t) => void (out += t),
    stderr: (t) => void (err += t),
    isTty: false,
    env: {},
    signal: ac.signal,
    stdin: () => new Blob([stdin]).stream(),
    readFile: async (p) => new Uint8Array(await readFile(p)),
    out: () => out,
    err: () => err,
    abort: () => ac.abort(),
  };
}
