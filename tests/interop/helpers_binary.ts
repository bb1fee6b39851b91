/**
 * Helpers for tests of the compiled `milterkit` binary as a user runs it: build `dist/milterkit`
 * when it is missing or older than the sources, run it to completion, or start `milterkit serve`
 * as a child process and wait until it listens.
 *
 * Runs unchanged under Deno and Bun (only `node:*` modules). Every process started here is
 * killed by `stop()`, and at the latest when the test process exits.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import { onExit } from "./helpers_process.ts";

/** The repository root. */
export const ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/** The binary under test. */
export const BINARY: string = join(ROOT, "dist", "milterkit");

/** Sources compiled into the binary: a change to any of them makes the binary stale. */
const SOURCES = ["cli.ts", "mod.ts", "lib", "scripts/build.ts", "deno.json", "package.json"];

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) {
    newest = Math.max(newest, newestMtime(join(path, entry)));
  }
  return newest;
}

let built = false;

/**
 * Builds `dist/milterkit` with `bun scripts/build.ts` once per test process when it is missing
 * or older than any source file. The build goes to a temporary file renamed into place, so a
 * binary another process is running is never overwritten in place.
 */
export function ensureBinary(): string {
  if (built) return BINARY;
  const sourcesAt = Math.max(...SOURCES.map((s) => newestMtime(join(ROOT, s))));
  if (!existsSync(BINARY) || statSync(BINARY).mtimeMs < sourcesAt) {
    const tmp = join(ROOT, "dist", `.milterkit-build-${process.pid}`);
    const bun = join(ROOT, "node_modules", ".bin", "bun");
    const r = spawnSync(bun, [
      "scripts/build.ts",
      "--outfile",
      `dist/.milterkit-build-${process.pid}`,
    ], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 120_000,
    });
    if (r.status !== 0) {
      rmSync(tmp, { force: true });
      throw new Error(
        `Building dist/milterkit failed (${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`,
      );
    }
    renameSync(tmp, BINARY);
  }
  built = true;
  return BINARY;
}

/** Options of {@link runBinary}. */
export interface RunOptions {
  /** Bytes or text written to standard input (then closed); default: empty input. */
  stdin?: string | Uint8Array;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory (default: the repository root). */
  cwd?: string;
  /** Kill the process after this long (default 30 s); the result then has `code` -1. */
  timeoutMs?: number;
}

/** What a finished run of the binary produced. */
export interface RunResult {
  /** Exit code (-1 when killed by a signal or the timeout). */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Runs `milterkit ARGS` to completion (building it first when needed). */
export function runBinary(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const bin = ensureBinary();
  return new Promise((resolve) => {
    const child = spawn(bin, [...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    child.stdout!.on("data", (d: Uint8Array) => out.push(d));
    child.stderr!.on("data", (d: Uint8Array) => err.push(d));
    const removeHook = onExit(() => child.kill("SIGKILL"));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
    child.once("close", (code) => {
      clearTimeout(timer);
      removeHook();
      resolve({
        code: code ?? -1,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      });
    });
    child.stdin!.on("error", () => {}); // the binary may exit without reading its input
    child.stdin!.end(opts.stdin ?? "");
  });
}

/** Options of {@link startServe}. */
export interface ServeOptions {
  /** Extra environment variables (e.g. the examples' MILTERKIT_* settings). */
  env?: Record<string, string>;
  /** Extra arguments after the script. */
  args?: string[];
  /** Working directory (default: the repository root). */
  cwd?: string;
}

/** A running `milterkit serve`. */
export interface ServeProcess {
  /** TCP port it listens on (127.0.0.1); 0 on a Unix socket (`--listen unix:PATH` in args). */
  port: number;
  /** Socket spec for `send --connect`: `inet:PORT@127.0.0.1` (or `unix:PATH`). */
  spec: string;
  /** Postfix's `smtpd_milters` form: `inet:127.0.0.1:PORT` (or `unix:PATH`). */
  postfix: string;
  /** Process id. */
  pid: number;
  /** Everything it wrote to standard error so far (JSON log lines). */
  stderr(): string;
  /** The log lines parsed so far. */
  events(): Array<Record<string, unknown>>;
  /** Resolves with the exit code (or the signal name) once the process is gone. */
  exited: Promise<number | string>;
  /** Sends `signal` (default SIGTERM), waits for the exit; SIGKILL after 10 s. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

/**
 * Starts `milterkit serve [SCRIPT] --listen inet:0@127.0.0.1 --log-format json ARGS` and
 * resolves once the server logged its `listening` event (which carries the port the kernel
 * picked). A `--listen` in `opts.args` wins (parseArgs keeps the last value).
 */
export async function startServe(
  script: string | undefined,
  opts: ServeOptions = {},
): Promise<ServeProcess> {
  const bin = ensureBinary();
  const args = [
    "serve",
    ...(script === undefined ? [] : [script]),
    "--listen",
    "inet:0@127.0.0.1",
    "--log-format",
    "json",
    ...(opts.args ?? []),
  ];
  const child: ChildProcess = spawn(bin, args, {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  child.stdout!.on("data", (d: Uint8Array) => (text += new TextDecoder().decode(d)));
  child.stderr!.on("data", (d: Uint8Array) => (text += new TextDecoder().decode(d)));
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signal ?? -1));
    child.once("error", (e) => {
      text += `spawn error: ${String(e)}\n`;
      resolve(-1);
    });
  });
  let gone = false;
  void exited.then(() => (gone = true));
  const removeHook = onExit(() => child.kill("SIGKILL"));
  const events = () =>
    text.split("\n").filter((l) => l.startsWith("{")).map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return { unparsed: l };
      }
    });
  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (!gone) {
      // process.kill rather than child.kill: Deno's child_process reports a child it signalled
      // itself as killed by that signal even when the child handled it and exited with a code.
      try {
        process.kill(child.pid!, signal);
      } catch {
        // already gone
      }
      const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(killer);
    }
    removeHook();
    return await exited;
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ev = events().find((e) => e.event === "listening");
    const address = typeof ev?.address === "string" ? ev.address : "";
    const m = /^inet:(\d+)@/.exec(address);
    if (m || address.startsWith("unix:")) {
      const port = m ? Number(m[1]) : 0;
      return {
        port,
        spec: m ? `inet:${port}@127.0.0.1` : address,
        postfix: m ? `inet:127.0.0.1:${port}` : address,
        pid: child.pid ?? -1,
        stderr: () => text,
        events,
        exited,
        stop,
      };
    }
    if (gone || Date.now() > deadline) {
      await stop("SIGKILL");
      throw new Error(`milterkit ${args.join(" ")} did not start listening:\n${text}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
