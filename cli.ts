#!/usr/bin/env -S deno run -A
/**
 * The `milterkit` binary: `milterkit serve|send|proxy|dump|bench …`. This file is the only
 * place that knows it runs as a program: it wires process I/O and signals, lets user scripts
 * import the toolkit by its package name, and exits with the code `main` returns.
 *
 * @module
 */

import process from "node:process";
import { Readable } from "node:stream";
import { readFile } from "node:fs/promises";
import { realpathSync } from "node:fs";
import { basename } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as milterkit from "./mod.ts";
import * as mta from "./lib/mta/mod.ts";
import * as wire from "./lib/wire/mod.ts";
import * as inspect from "./lib/inspect/mod.ts";
import * as testing from "./lib/testing/mod.ts";
import * as denoAdapter from "./lib/server/adapters/deno.ts";
import * as bunAdapter from "./lib/server/adapters/bun.ts";
import * as nodeAdapter from "./lib/server/adapters/node.ts";
import { registerToolkit } from "./lib/cli/script.ts";
import { main } from "./lib/cli/main.ts";
import { benchCommand } from "./lib/cli/bench.ts";
import { dumpCommand } from "./lib/cli/dump.ts";
import { initCommand } from "./lib/cli/init.ts";
import { proxyCommand } from "./lib/cli/proxy.ts";
import { sendCommand } from "./lib/cli/send.ts";
import { serveCommand } from "./lib/cli/serve.ts";
import type { CliIo, Subcommand } from "./lib/cli/types.ts";

/** Every subcommand of the binary, in help order. */
export const COMMANDS: readonly Subcommand[] = [
  serveCommand,
  sendCommand,
  proxyCommand,
  dumpCommand,
  benchCommand,
  initCommand,
];

/**
 * The toolkit's entry points (deno.json `exports`), as scripts served by this program import
 * them: `@milterkit/milterkit/testing`, `milterkit/testing`, ... all get these very modules.
 */
export const ENTRY_POINTS: Readonly<Record<string, object>> = {
  ".": milterkit,
  "./mta": mta,
  "./wire": wire,
  "./inspect": inspect,
  "./testing": testing,
  "./deno": denoAdapter,
  "./bun": bunAdapter,
  "./node": nodeAdapter,
};

/**
 * How to run this binary again (for `serve --workers`): the compiled binary alone; otherwise the
 * runtime with this file. Deno workers get `--unstable-net` for `Deno.listen`'s `reusePort`.
 */
function selfCommand(): string[] | undefined {
  const entry = process.argv[1];
  const compiled = entry === undefined || entry.startsWith("/$bunfs/") ||
    entry.startsWith("B:/~BUN/");
  if (process.versions.deno) {
    if (!basename(process.execPath).startsWith("deno")) return [process.execPath];
    return [process.execPath, "run", "-A", "--unstable-net", fileURLToPath(import.meta.url)];
  }
  if (compiled) return [process.execPath];
  return [process.execPath, ...process.execArgv, entry];
}

/**
 * A writer for stdout or stderr that survives the reader going away: once a write fails (EPIPE
 * when the pipe's reader exited, EIO, ENOSPC on a full disk) further output is dropped instead of
 * raising an error event whose report would be written to the same broken stream again, and again.
 */
interface StreamWriter {
  write(t: string): void;
  broken(): boolean;
}

function streamWriter(stream: NodeJS.WriteStream): StreamWriter {
  let broken = false;
  stream.on("error", () => {
    broken = true;
  });
  return {
    write: (t) => {
      if (broken) return;
      try {
        stream.write(t);
      } catch {
        broken = true;
      }
    },
    broken: () => broken,
  };
}

function processIo(out: StreamWriter, err: StreamWriter): CliIo {
  const ac = new AbortController();
  process.once("SIGINT", () => ac.abort("SIGINT"));
  process.once("SIGTERM", () => ac.abort("SIGTERM"));
  return {
    stdout: out.write,
    stderr: err.write,
    isTty: Boolean(process.stdout.isTTY),
    errIsTty: Boolean(process.stderr.isTTY),
    env: process.env,
    signal: ac.signal,
    stdin: () => Readable.toWeb(process.stdin) as unknown as ReadableStream<Uint8Array>,
    onSignal: (name, fn) => {
      process.on(name, fn);
      return () => void process.off(name, fn);
    },
    readFile: async (path) => new Uint8Array(await readFile(path)),
    self: selfCommand(),
    onUncaught: (fn) => {
      const rejection = (reason: unknown) => fn(reason, "unhandled rejection");
      const exception = (error: unknown) => fn(error, "uncaught exception");
      process.on("unhandledRejection", rejection);
      process.on("uncaughtException", exception);
      return () => {
        process.off("unhandledRejection", rejection);
        process.off("uncaughtException", exception);
      };
    },
  };
}

/** True when this module is the program (Deno, Bun; Node via the bundled build). */
function isMain(): boolean {
  const meta = import.meta as ImportMeta & { main?: boolean };
  if (meta.main !== undefined) return meta.main;
  const entry = process.argv[1];
  return entry !== undefined && import.meta.url === pathToFileURL(realpathSync(entry)).href;
}

if (isMain()) {
  // Only the program watches its own stdout and stderr (tests import this module).
  const out = streamWriter(process.stdout);
  const err = streamWriter(process.stderr);
  registerToolkit(ENTRY_POINTS);
  const code = await main(process.argv.slice(2), processIo(out, err), COMMANDS);
  // Let pending writes to stdout drain before exiting, unless stdout is gone (then nothing will
  // drain, and waiting would hang); never wait long for a reader that stopped reading.
  process.exitCode = code;
  if (out.broken()) process.exit(code);
  process.stdout.write("", () => process.exit(code));
  setTimeout(() => process.exit(code), 2_000).unref();
}
