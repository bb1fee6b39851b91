/**
 * Process and port helpers for the interop harness: free ports, waiting for a listener, peer
 * processes that are always killed (by `stop()` or when the test process exits), and
 * `ensurePeers()` which installs the Debian packages once when they are missing.
 *
 * Runs unchanged under Deno and Bun: only `node:child_process`, `node:fs`, `node:net`.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

/** Directory of the project's own peer scripts (`scripts/peers/`). */
export const PEERS_DIR: string = fileURLToPath(new URL("../../scripts/peers/", import.meta.url));

/** State directory of the lab: instance dirs, keys, built filters (not world-writable). */
export const LAB_DIR: string = process.env.MILTERKIT_LAB_DIR ?? "/var/lib/milterkit-lab";

/** Files whose presence proves the peer packages are installed. */
const PEER_FILES = [
  "/usr/sbin/postfix",
  "/usr/sbin/postconf",
  "/usr/lib/postfix/sbin/virtual",
  "/usr/include/libmilter/mfapi.h",
  "/usr/bin/cc",
  "/usr/sbin/opendkim",
  "/usr/sbin/opendkim-genkey",
  "/usr/bin/miltertest",
  "/usr/sbin/haproxy",
  "/usr/bin/redis-server",
];

let peersReady = false;

/**
 * Makes sure the real peers are installed: when a binary is missing, runs
 * `scripts/peers/install.sh` once per process. Throws when that is impossible (not root, no apt),
 * so interop tests fail loudly instead of being skipped.
 */
export function ensurePeers(): void {
  if (peersReady) return;
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot) {
    throw new Error(
      "Interop tests need root: they install Debian packages and run private Postfix instances " +
        "(run as root, or run `npm test -- --unit` to skip tests/interop/)",
    );
  }
  const missing = PEER_FILES.filter((f) => !existsSync(f));
  if (missing.length > 0) {
    try {
      execFileSync("bash", [PEERS_DIR + "install.sh", "--quiet"], {
        stdio: ["ignore", "inherit", "inherit"],
        timeout: 15 * 60_000,
      });
    } catch (err) {
      throw new Error(
        `Installing the interop peers failed (missing ${missing.join(", ")}): ${String(err)}`,
      );
    }
    const still = PEER_FILES.filter((f) => !existsSync(f));
    if (still.length > 0) {
      throw new Error(`Interop peers still missing after install.sh: ${still.join(", ")}`);
    }
  }
  mkdirSync(LAB_DIR, { recursive: true, mode: 0o755 });
  // Instances left behind by a test process that was killed: stop and delete them.
  execFileSync("bash", [PEERS_DIR + "postfix.sh", "sweep"], { stdio: "ignore" });
  peersReady = true;
}

const handedOut = new Set<number>();

/** Returns a TCP port that is free on 127.0.0.1 now (never the same twice in one process). */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const addr = server.address();
        const p = typeof addr === "object" && addr !== null ? addr.port : 0;
        server.close(() => resolve(p));
      });
    });
    if (port > 0 && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("No free port found on 127.0.0.1 after 50 attempts");
}

/** True when something listens on 127.0.0.1:port or 0.0.0.0:port (reads /proc/net/tcp). */
export function isListening(port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const lines = readFileSync("/proc/net/tcp", "latin1").split("\n").slice(1);
  return lines.some((line) => {
    const cols = line.trim().split(/\s+/);
    return cols[1]?.endsWith(":" + hex) === true && cols[3] === "0A";
  });
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until 127.0.0.1:port listens; `alive()` false or the timeout make it throw. */
export async function waitForPort(
  port: number,
  timeoutMs = 10_000,
  alive: () => boolean = () => true,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!isListening(port)) {
    if (!alive()) throw new Error(`Process meant to listen on 127.0.0.1:${port} exited`);
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for 127.0.0.1:${port}`);
    }
    await sleep(20);
  }
}

type Cleanup = () => void;
const cleanups = new Set<Cleanup>();
let exitHookInstalled = false;

/** Registers a synchronous cleanup that runs at process exit unless removed first. */
export function onExit(fn: Cleanup): () => void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", () => {
      for (const c of [...cleanups]) {
        try {
          c();
        } catch {
          // best effort at exit
        }
      }
    });
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** A long-running peer process started by the harness. */
export interface PeerProcess {
  /** TCP port it listens on (127.0.0.1). */
  port: number;
  /** Milter address for Postfix's `smtpd_milters`: `inet:127.0.0.1:PORT`. */
  address: string;
  /** Process id. */
  pid: number;
  /** Everything it wrote to stdout and stderr so far. */
  log(): string;
  /** Kills it (SIGKILL: libmilter programs take up to 5 s to honour SIGTERM) and waits for it. */
  stop(): Promise<void>;
}

/**
 * Spawns `cmd args`, captures its output and resolves once it listens on `port`; `afterStop`
 * runs once the process is gone (e.g. to delete its config file).
 */
export async function startPeer(
  name: string,
  cmd: string,
  args: string[],
  port: number,
  afterStop: () => void = () => {},
  timeoutMs = 15_000,
): Promise<PeerProcess> {
  const child: ChildProcess = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  const chunks: string[] = [];
  child.stdout?.on("data", (d: Uint8Array) => chunks.push(new TextDecoder().decode(d)));
  child.stderr?.on("data", (d: Uint8Array) => chunks.push(new TextDecoder().decode(d)));
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    child.once("exit", () => {
      exited = true;
      resolve();
    });
    child.once("error", (err) => {
      chunks.push(`spawn error: ${String(err)}\n`);
      exited = true;
      resolve();
    });
  });
  const removeHook = onExit(() => {
    child.kill("SIGKILL");
    afterStop();
  });
  const stop = async () => {
    removeHook();
    if (!exited) {
      child.kill("SIGKILL");
      await exitPromise;
    }
    afterStop();
  };
  try {
    await waitForPort(port, timeoutMs, () => !exited);
  } catch (err) {
    await stop();
    throw new Error(`${name} did not start: ${(err as Error).message}\n${chunks.join("")}`);
  }
  return {
    port,
    address: `inet:127.0.0.1:${port}`,
    pid: child.pid ?? -1,
    log: () => chunks.join(""),
    stop,
  };
}

/** Runs a command to completion; rejects with its output when it fails. */
export function run(cmd: string, args: string[], env?: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, ...env }, timeout: 60_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${cmd} ${args.join(" ")} failed: ${err.message}\n${stderr}`));
        else resolve(String(stdout));
      },
    );
  });
}
