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
import { pathToFileURL } from "node:url";
import * as milterkit from "./mod.ts";
import { main } from "./lib/cli/main.ts";
import { benchCommand } from "./lib/cli/bench.ts";
import { dumpCommand } from "./lib/cli/dump.ts";
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
];

/** Names a user script may import the toolkit by. */
const PACKAGE_NAMES = ["@milterkit/milterkit", "jsr:@milterkit/milterkit", "milterkit"];

interface BunPluginApi {
  plugin(p: {
    name: string;
    setup(b: { module(name: string, f: () => { exports: unknown; loader: "object" }): void }): void;
  }): void;
}

/** Under Bun (and in the compiled binary) scripts get this very copy of the toolkit. */
function registerVirtualPackage(): void {
  const bun = (globalThis as unknown as { Bun?: BunPluginApi }).Bun;
  if (!bun) return;
  bun.plugin({
    name: "milterkit-self",
    setup(b) {
      for (const name of PACKAGE_NAMES) {
        b.module(name, () => ({ exports: milterkit, loader: "object" }));
      }
    },
  });
}

function processIo(): CliIo {
  const ac = new AbortController();
  const first = () => ac.abort();
  process.once("SIGINT", first);
  process.once("SIGTERM", first);
  return {
    stdout: (t) => void process.stdout.write(t),
    stderr: (t) => void process.stderr.write(t),
    isTty: Boolean(process.stdout.isTTY),
    env: process.env,
    signal: ac.signal,
    stdin: () => Readable.toWeb(process.stdin) as unknown as ReadableStream<Uint8Array>,
    onSignal: (name, fn) => {
      process.on(name, fn);
      return () => void process.off(name, fn);
    },
    readFile: async (path) => new Uint8Array(await readFile(path)),
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
  registerVirtualPackage();
  const code = await main(process.argv.slice(2), processIo(), COMMANDS);
  // Let pending writes to stdout/stderr drain before exiting.
  process.stdout.write("", () => process.exit(code));
}
