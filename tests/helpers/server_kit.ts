/**
 * Shared pieces of the server tests (tests/server_*_test.ts): the adapters to run, a message
 * builder, an MTA over a real socket, a log collector, waiting helpers and child processes.
 */
import { type ChildProcess, spawn } from "node:child_process";
import assert from "node:assert/strict";
import { MilterClient } from "../../lib/mta/client.ts";
import { endSession, runTransaction } from "../../lib/mta/transaction.ts";
import type { TransactionInput, TransactionResult } from "../../lib/mta/types.ts";
import type { AdapterName } from "../../lib/server/adapters/types.ts";
import { createLogger, type Logger } from "../../lib/server/log.ts";
import { connect as connectSocket, runtimeAdapterName } from "../../lib/server/net.ts";
import type { SocketAddress } from "../../lib/server/socket_spec.ts";
import type { ClientOptions } from "../../lib/mta/types.ts";

/** The running runtime's native adapter, then node:net (when not the same). */
export const RUNTIME: AdapterName = runtimeAdapterName();
export const ADAPTERS: readonly AdapterName[] = RUNTIME === "node" ? ["node"] : [RUNTIME, "node"];

/** Test options: long enough for a loaded 2-core machine, short enough not to hang CI. */
export const TIMEOUT = { timeout: 60_000 };

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const enc = new TextEncoder();

/** A Postfix-like connect info. */
export const CONNECT = {
  hostname: "client.example.net",
  family: "inet" as const,
  address: "192.0.2.7",
  port: 40000,
};

/** A small message whose Subject carries `n` (`Subject: msg N`). */
export function message(n: number | string, body = "Hello\r\n"): Uint8Array {
  return enc.encode(
    `From: <alice@example.net>\r\nTo: <bob@example.com>\r\nSubject: msg ${n}\r\n` +
      `Message-Id: <${n}@example.net>\r\n\r\n${body}`,
  );
}

/** A transaction for message `n`. */
export function tx(n: number | string, extra: Partial<TransactionInput> = {}): TransactionInput {
  return {
    connect: CONNECT,
    helo: "client.example.net",
    from: "alice@example.net",
    rcpts: ["bob@example.com"],
    message: message(n),
    ...extra,
  };
}

/** Opens a socket and negotiates as Postfix. */
export async function openClient(
  address: SocketAddress | string,
  options: ClientOptions = {},
): Promise<MilterClient> {
  const conn = await connectSocket(address, { timeoutMs: 10_000 });
  try {
    return await MilterClient.open(conn, { commandTimeoutMs: 20_000, ...options });
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** One whole session: connect, negotiate, one transaction, QUIT. */
export async function sendOne(
  address: SocketAddress | string,
  input: TransactionInput,
  options: ClientOptions = {},
): Promise<TransactionResult> {
  const client = await openClient(address, options);
  try {
    return await runTransaction(client, input);
  } finally {
    await endSession(client);
  }
}

/** The value of the last header `name` added by the filter, if any. */
export function added(r: TransactionResult, name: string): string | undefined {
  for (let i = r.modifications.length - 1; i >= 0; i--) {
    const m = r.modifications[i]!;
    if (m.type === "addheader" && m.name.toLowerCase() === name.toLowerCase()) {
      return m.value.trim();
    }
  }
  return undefined;
}

/** A JSON logger that keeps its lines, and the parsed records. */
export function memoryLog(level: "debug" | "info" = "info"): {
  logger: Logger;
  lines: string[];
  records(): Record<string, unknown>[];
} {
  const lines: string[] = [];
  const logger = createLogger({ format: "json", level, sink: (l) => lines.push(l) });
  return { logger, lines, records: () => lines.map((l) => JSON.parse(l)) };
}

/** Waits until `cond()` holds (polling), failing with `what` after `ms`. */
export async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) assert.fail(`Timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A promise with its resolve function, for gates in handlers. */
export function gate<T = void>(): { promise: Promise<T>; open: (v: T) => void } {
  let open!: (v: T) => void;
  const promise = new Promise<T>((r) => (open = r));
  return { promise, open };
}

/** Rejects with a message naming `what` if `p` does not settle within `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Path of cli.ts. */
export const CLI = new URL("../../cli.ts", import.meta.url).pathname;
/** The project root. */
export const ROOT = new URL("../../", import.meta.url).pathname;

/** argv to run cli.ts with the running runtime. */
export function cliArgs(args: string[]): [string, string[]] {
  return RUNTIME === "deno"
    ? [process.execPath, ["run", "-A", CLI, ...args]]
    : [process.execPath, [CLI, ...args]];
}

/** A child process with its output collected. */
export interface Child {
  readonly proc: ChildProcess;
  stdout: string;
  stderr: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `cli.ts ARGS` under the running runtime, from the project root. */
export function spawnCli(args: string[]): Child {
  const [cmd, argv] = cliArgs(args);
  return spawnChild(cmd, argv);
}

/** Spawns `cmd argv` from the project root with its output collected. */
export function spawnChild(cmd: string, argv: string[]): Child {
  const proc = spawn(cmd, argv, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  const child: Child = {
    proc,
    stdout: "",
    stderr: "",
    exited: new Promise((resolve) => {
      proc.once("close", (code, signal) => resolve({ code, signal }));
    }),
  };
  proc.stdout!.setEncoding("utf8").on("data", (d: string) => (child.stdout += d));
  proc.stderr!.setEncoding("utf8").on("data", (d: string) => (child.stderr += d));
  return child;
}

/** {@link runTransaction} started now, its rejection kept for whoever awaits it. */
export function runTransactionIn(
  client: MilterClient,
  input: TransactionInput,
): Promise<TransactionResult> {
  const p = runTransaction(client, input);
  p.catch(() => {});
  return p;
}

/** The JSON log records a child has written to stderr so far. */
export function logs(child: Child): Record<string, unknown>[] {
  return child.stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
}

/** Waits until the child has logged `event` at least `count` times. */
export const waitLog = (child: Child, event: string, count = 1, ms?: number) =>
  waitFor(
    () => logs(child).filter((r) => r.event === event).length >= count,
    `log "${event}"`,
    ms,
  );

/**
 * Sends a signal by pid: under Deno, `ChildProcess.kill()` makes the exit look like death by
 * that signal even when the child handles it and exits 0.
 */
export function signal(child: Child, name: NodeJS.Signals): void {
  process.kill(child.proc.pid!, name);
}

/**
 * Starts `serve ARGS --log-format json` in a child, remembers it in `children`, and waits for
 * the log event `ready` ("listening" by default).
 */
export async function serveChild(
  args: string[],
  children: Child[],
  ready = "listening",
  spawnIt: (args: string[]) => Child = spawnCli,
): Promise<Child> {
  const child = spawnIt(["serve", ...args, "--log-format", "json"]);
  children.push(child);
  await waitFor(
    () => logs(child).some((r) => r.event === ready) || child.proc.exitCode !== null,
    "serve to listen",
    40_000,
  );
  assert.equal(child.proc.exitCode, null, child.stderr);
  return child;
}

/** Kills what is left of `children` and waits for them to exit. */
export async function killChildren(children: Child[]): Promise<void> {
  for (const c of children) {
    try {
      if (c.proc.exitCode === null) process.kill(c.proc.pid!, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  await Promise.all(children.map((c) => c.exited));
}
