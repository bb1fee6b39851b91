/**
 * Peers of the interoperability matrix that harness.ts does not start: pymilter, Sendmail 8.17
 * (scripts/peers/sendmail.sh) and miltertest (scripts/peers/miltertest/*.lua), plus reading
 * Sendmail's mboxes. Re-exported by helpers_matrix.ts.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import {
  freePort,
  LAB_DIR,
  onExit,
  type PeerProcess,
  PEERS_DIR,
  run,
  startPeer,
} from "./helpers_process.ts";

let extraReady = false;

/**
 * Installs m4, python3-milter and unpacks Sendmail when missing (scripts/peers/install-extra.sh),
 * and stops Sendmail instances left behind by test processes that were killed.
 */
export function ensureExtraPeers(): void {
  if (extraReady) return;
  sweepSendmail();
  execFileSync("bash", [PEERS_DIR + "install-extra.sh"], {
    stdio: ["ignore", "inherit", "inherit"],
    timeout: 10 * 60_000,
    env: { ...process.env, MILTERKIT_LAB_DIR: LAB_DIR },
  });
  extraReady = true;
}

/** Starts scripts/peers/pymilter-filter/pyfilter.py (pymilter, i.e. libmilter) on 127.0.0.1. */
export async function startPymilterFilter(port?: number): Promise<PeerProcess> {
  ensureExtraPeers();
  const p = port ?? await freePort();
  return await startPeer("pymilter pyfilter", "/usr/bin/python3", [
    PEERS_DIR + "pymilter-filter/pyfilter.py",
    `inet:${p}@127.0.0.1`,
  ], p);
}

/** Stops and deletes Sendmail instance dirs `s<pid>-...` whose test process is gone. */
function sweepSendmail(): void {
  const base = `${LAB_DIR}/sendmail`;
  if (!existsSync(base)) return;
  for (const name of readdirSync(base)) {
    const owner = Number(/^s(\d+)-/.exec(name)?.[1] ?? 0);
    if (owner > 0 && existsSync(`/proc/${owner}`)) continue;
    execFileSync("bash", [PEERS_DIR + "sendmail.sh", "down", `${base}/${name}`, "--purge"], {
      stdio: "ignore",
    });
  }
}

/** A running private Sendmail instance (scripts/peers/sendmail.sh). */
export interface SendmailInstance {
  port: number;
  dir: string;
  /** Everything delivered to local user `user` (mbox). */
  mailbox(user: string): string;
  /** The queue's control files, qf (queued) and hf (quarantined), as text. */
  queueFiles(): string[];
  stop(): Promise<void>;
}

/**
 * Starts Sendmail 8.17 on 127.0.0.1 with one input mail filter, `milter` in Sendmail's syntax
 * (`inet:PORT@127.0.0.1`, `inet6:PORT@::1`, `unix:/path`).
 */
export async function startSendmail(milter: string): Promise<SendmailInstance> {
  ensureExtraPeers();
  const port = await freePort();
  mkdirSync(`${LAB_DIR}/sendmail`, { recursive: true, mode: 0o755 });
  const dir = mkdtempSync(`${LAB_DIR}/sendmail/s${process.pid}-${port}-`);
  const script = PEERS_DIR + "sendmail.sh";
  const stopSync = () => {
    try {
      const pid = Number(readFileSync(`${dir}/sendmail.pid`, "latin1").split("\n")[0]);
      if (pid > 0) process.kill(pid, "SIGTERM");
    } catch {
      // not running
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const removeHook = onExit(stopSync);
  try {
    await run("bash", [script, "up", dir, String(port), milter], { MILTERKIT_LAB_DIR: LAB_DIR });
  } catch (err) {
    removeHook();
    await run("bash", [script, "down", dir, "--purge"]).catch(() => "");
    throw err;
  }
  let stopped = false;
  return {
    port,
    dir,
    mailbox: (user) => {
      try {
        return readFileSync(`${dir}/mail/${user}`, "latin1");
      } catch {
        return "";
      }
    },
    queueFiles: () => {
      try {
        return readdirSync(`${dir}/queue`).filter((n) => /^[qh]f/.test(n)).map((n) =>
          readFileSync(`${dir}/queue/${n}`, "latin1")
        );
      } catch {
        return [];
      }
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      removeHook();
      await run("bash", [script, "down", dir, "--purge"]);
    },
  };
}

/**
 * Messages of an mbox text carrying `marker`, without their `From ` envelope line and without
 * the empty line the mbox format adds after each message.
 */
export function mboxCopies(mbox: string, marker: string): string[] {
  return mbox.split(/^(?=From \S+ )/m).filter((m) => m.includes(`X-Test-Marker: ${marker}\n`))
    .map((m) => m.slice(m.indexOf("\n") + 1).replace(/\n$/, ""));
}

/**
 * Waits until `read()` holds `count` complete messages with `marker` (or the timeout passes): the
 * mbox must end with the empty line that closes a message and be the same on two reads, so a
 * message that is still being appended is not returned half-written.
 */
export async function mboxWait(
  read: () => string,
  marker: string,
  count: number,
  timeoutMs = 10_000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = read();
    const got = mboxCopies(text, marker);
    if (got.length >= count && (text === "" || text.endsWith("\n\n"))) {
      await new Promise((r) => setTimeout(r, 20));
      if (read() === text) return got;
    } else if (Date.now() > deadline) return got;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The outcome of one miltertest run. */
export interface MiltertestRun {
  code: number;
  /** stdout and stderr together. */
  output: string;
}

/**
 * Runs `miltertest -s scripts/peers/miltertest/<script>` with `-D NAME=VALUE` definitions;
 * resolves with its exit code and output (never rejects on a non-zero exit).
 */
export function runMiltertest(
  script: string,
  defines: Record<string, string>,
): Promise<MiltertestRun> {
  const args = Object.entries(defines).flatMap(([k, v]) => ["-D", `${k}=${v}`]);
  args.push("-s", `${PEERS_DIR}miltertest/${script}`);
  return new Promise((resolve) => {
    execFile("miltertest", args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, output: String(stdout) + String(stderr) });
    });
  });
}
