/**
 * `milterkit` run from source as a child process (`deno run -A cli.ts …` under Deno, `bun
 * cli.ts …` under Bun) for the proxy tests: a long-running `proxy` whose listening port is read
 * from its log, and one-shot commands such as `dump`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before } from "node:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import type { Filter } from "../../lib/filter/filter.ts";
import { MilterClient } from "../../lib/mta/client.ts";
import { endSession, runTransaction } from "../../lib/mta/transaction.ts";
import { connect as connectSocket } from "../../lib/server/net.ts";
import { listen, type MilterServer } from "../../lib/server/server.ts";

const CLI = fileURLToPath(new URL("../../cli.ts", import.meta.url));

/** The program and arguments that run `milterkit ARGS` from source under this runtime. */
export function cliCommand(args: readonly string[]): [string, string[]] {
  return "Deno" in globalThis
    ? [process.execPath, ["run", "-A", CLI, ...args]]
    : [process.execPath, [CLI, ...args]];
}

/** A running `milterkit proxy`. */
export interface ProxyChild {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** Milter address for Postfix: `inet:127.0.0.1:PORT`. */
  readonly address: string;
  /** Process id. */
  readonly pid: number;
  /** Standard output so far (the live view). */
  stdout(): string;
  /** Standard error so far (the log). */
  stderr(): string;
  /** Resolves with the exit code (or the signal name) once the process is gone. */
  readonly exited: Promise<number | string>;
  /** Sends a signal. */
  kill(signal: NodeJS.Signals): void;
  /** SIGKILL unless already gone, and waits. */
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

/**
 * Starts `milterkit proxy --listen LISTEN ARGS` and resolves once it listens.
 *
 * @param args Everything but `--listen`, e.g. `["-u", "inet:127.0.0.1:9000", "-r", file]`.
 * @param listen Where to listen (default a free port on 127.0.0.1).
 */
export async function startProxy(
  args: readonly string[],
  listen = "inet:0@127.0.0.1",
  timeoutMs = 20_000,
): Promise<ProxyChild> {
  const [cmd, argv] = cliCommand(["proxy", "--listen", listen, ...args]);
  const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let out = "";
  let err = "";
  const dec = { out: new TextDecoder(), err: new TextDecoder() };
  child.stdout!.on("data", (d: Uint8Array) => void (out += dec.out.decode(d, { stream: true })));
  child.stderr!.on("data", (d: Uint8Array) => void (err += dec.err.decode(d, { stream: true })));
  let gone = false;
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      gone = true;
      children.delete(child);
      resolve(code ?? signal ?? -1);
    });
  });
  const deadline = Date.now() + timeoutMs;
  let port = 0;
  while (port === 0) {
    const m = /proxy listening listen=inet:(\d+)@|"event":"proxy listening","listen":"inet:(\d+)@/
      .exec(err);
    if (m) port = Number(m[1] ?? m[2]);
    else if (gone) throw new Error(`milterkit proxy exited at start:\n${err}${out}`);
    else if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`milterkit proxy did not start within ${timeoutMs} ms:\n${err}`);
    } else await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    address: `inet:127.0.0.1:${port}`,
    pid: child.pid ?? -1,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill: (signal) => void (gone || child.kill(signal)),
    stop: async () => {
      if (!gone) child.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * Waits for the proxy to exit and tells whether it stopped by itself: it logged "proxy stopped"
 * and exited 0. (Deno's `child_process` reports the signal `kill()` sent even when the child
 * then exits with a code, so there the log line is the proof.)
 */
export async function stoppedCleanly(p: ProxyChild): Promise<boolean> {
  const code = await p.exited;
  const clean = code === 0 || ("Deno" in globalThis && code === "SIGTERM");
  return clean && /proxy stopped/.test(p.stderr());
}

/** Sends SIGTERM and waits: {@link stoppedCleanly}. */
export function terminate(p: ProxyChild): Promise<boolean> {
  p.kill("SIGTERM");
  return stoppedCleanly(p);
}

/** Runs `milterkit ARGS` to completion. */
export function runCli(
  args: readonly string[],
): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const [cmd, argv] = cliCommand(args);
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    child.stdout!.on("data", (d: Uint8Array) => out.push(d));
    child.stderr!.on("data", (d: Uint8Array) => err.push(d));
    child.once("close", (code, signal) => {
      children.delete(child);
      const text = (parts: Uint8Array[]) => Buffer.concat(parts).toString("utf8");
      resolve({ code: code ?? signal ?? -1, stdout: text(out), stderr: text(err) });
    });
  });
}

/**
 * One whole transaction through a proxy (or any filter) on a loopback port with the MTA
 * engine: sender and recipient numbered `n`, `bodyLines` lines of body. Resolves to the verdict.
 */
export async function transactionThrough(port: number, n: number, bodyLines = 20): Promise<string> {
  const client = await MilterClient.open(await connectSocket(`inet:${port}@127.0.0.1`), {
    commandTimeoutMs: 10_000,
  });
  const r = await runTransaction(client, {
    connect: { hostname: "client.example", family: "inet", address: "192.0.2.1", port: 4000 + n },
    helo: "client.example",
    from: `<sender${n}@example.test>`,
    rcpts: [`<rcpt${n}@example.test>`],
    message: new TextEncoder().encode(
      `Subject: message ${n}\r\n\r\n${"body line\r\n".repeat(bodyLines)}`,
    ),
  });
  await endSession(client);
  return r.verdict.type;
}

/**
 * Registers before/after hooks of a suite that runs `milterkit proxy` children in front of an
 * in-process filter server: `upstream` is the filter's spec, `dir` a scratch folder, `start`
 * starts a proxy relaying to the filter (stopped after the suite).
 */
export function proxySuite(filter: Filter): {
  readonly upstream: string;
  readonly dir: string;
  start(args: readonly string[], listen?: string): Promise<ProxyChild>;
} {
  let server: MilterServer;
  let upstream = "";
  let dir = "";
  const started: ProxyChild[] = [];
  before(async () => {
    server = await listen("inet:0@127.0.0.1", filter);
    upstream = `inet:${(server.address as { port: number }).port}@127.0.0.1`;
    dir = mkdtempSync(`${tmpdir()}/milterkit-proxy-test-`);
  });
  after(async () => {
    for (const p of started) await p.stop();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get upstream() {
      return upstream;
    },
    get dir() {
      return dir;
    },
    async start(args, listenAt) {
      const p = await startProxy(["-u", upstream, ...args], listenAt);
      started.push(p);
      return p;
    },
  };
}
