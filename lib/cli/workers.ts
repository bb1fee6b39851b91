/**
 * `milterkit serve --workers N`: N processes serving one TCP address. Under Bun and Deno each
 * worker listens itself with `SO_REUSEPORT` and the kernel spreads new connections across them;
 * under Node, `node:cluster` shares the primary's socket. The supervisor (the process the admin
 * started) owns signals, the metrics and health endpoint, and restarts a worker that dies. It
 * talks to each worker over the worker's stdin/stdout, one JSON object per line:
 *
 * - to a worker: `{"op":"metrics","id":1}`, `{"op":"ping","id":2}`, `{"op":"reload","id":3}`,
 *   `{"op":"stop","now":false}`
 * - from a worker: `{"type":"ready","address":"inet:8890@127.0.0.1"}`,
 *   `{"type":"metrics","id":1,"data":{…}}`, `{"type":"pong","id":2}`,
 *   `{"type":"reloaded","id":3,"ok":true}`
 *
 * A worker's stdin closing (the supervisor died) stops it gracefully. Workers log to the shared
 * stderr with a `worker` field.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { availableParallelism } from "node:os";
import type { LogFields, Logger } from "../server/log.ts";
import { Metrics, type MetricsData } from "../server/metrics.ts";
import type { MilterServer } from "../server/server.ts";
import { formatSocketSpec, type SocketAddress } from "../server/socket_spec.ts";
import { runtimeAdapterName } from "../server/net.ts";
import { startStatusHttp, type StatusServer } from "./status_http.ts";
import { type CliIo, EXIT, UsageError } from "./types.ts";

/** Environment variable that makes `serve` a worker: its number, from 1. */
export const WORKER_ENV = "MILTERKIT_WORKER";

/** How long a worker may take to answer a metrics request before it is reported down. */
const ASK_MS = 1000;
/** How long a worker may take to answer a health check's ping. */
const HEALTH_MS = 500;
/** How long a worker may take to start listening. */
const START_MS = 60_000;

/**
 * Parses `--workers`: a whole number ≥ 1, or `auto` for the number of cores.
 *
 * @param v The option's value.
 * @returns The number of workers (1 when absent).
 * @throws {UsageError} Anything else.
 *
 * @example
 * ```ts
 * import { parseWorkers } from "./workers.ts";
 * parseWorkers("4"); // 4
 * ```
 */
export function parseWorkers(v: string | undefined): number {
  if (v === undefined) return 1;
  if (v === "auto") return availableParallelism();
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw new UsageError(`--workers needs a whole number from 1 to 1024 or auto, got ${v}`);
  }
  return n;
}

/**
 * This process's worker number when a supervisor started it, else undefined.
 *
 * @param env The environment.
 * @returns The worker number.
 */
export function workerNumber(
  env: Readonly<Record<string, string | undefined>>,
): number | undefined {
  const v = env[WORKER_ENV];
  return v && /^[1-9][0-9]*$/.test(v) ? Number(v) : undefined;
}

/**
 * A logger that adds `fields` to every line (a worker's number).
 *
 * @param log The logger.
 * @param fields Fields to add.
 * @returns The wrapped logger.
 */
export function withFields(log: Logger, fields: LogFields): Logger {
  const write = (level: Parameters<Logger["log"]>[0], event: string, f: LogFields = {}) =>
    log.log(level, event, { ...fields, ...f });
  return {
    level: log.level,
    enabled: (l) => log.enabled(l),
    log: write,
    debug: (e, f) => write("debug", e, f),
    info: (e, f) => write("info", e, f),
    warn: (e, f) => write("warn", e, f),
    error: (e, f) => write("error", e, f),
  };
}

/**
 * The `serve` arguments a worker gets: the supervisor's own, without `--workers` and the
 * metrics options (the supervisor keeps those), with `overrides` applied.
 *
 * @param values Parsed options.
 * @param positionals The script, if any.
 * @param overrides Options to set (`listen` with the real port, the resolved log format).
 * @returns Arguments after `serve`.
 */
export function workerArgsOf(
  values: Readonly<Record<string, string | boolean | undefined>>,
  positionals: readonly string[],
  overrides: Readonly<Record<string, string>>,
): string[] {
  const drop = new Set(["workers", "metrics-port", "metrics-host", "check", "help"]);
  const out = [...positionals];
  for (const [k, v] of Object.entries({ ...values, ...overrides })) {
    if (drop.has(k) || v === undefined || v === false) continue;
    out.push(v === true ? `--${k}` : `--${k}=${v}`);
  }
  return out;
}

/** Splits a byte stream into lines and calls `fn` with each parsed JSON object. */
async function readJsonLines(
  stream: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array | string>,
  fn: (msg: Record<string, unknown>) => void,
): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of stream as AsyncIterable<Uint8Array | string>) {
    buf += typeof chunk === "string" ? chunk : dec.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line.startsWith("{")) continue;
      try {
        fn(JSON.parse(line));
      } catch {
        // Not ours: ignore.
      }
    }
  }
}

/** What a worker needs from `serve`. */
export interface WorkerRun {
  /** The running server (listening with reusePort). */
  readonly server: MilterServer;
  /** Reloads the script; rejects with the reason it failed. */
  readonly reload: () => Promise<void>;
  /** Where to log. */
  readonly log: Logger;
}

/**
 * Runs `serve` as worker: reports the address, answers the supervisor, stops when told or when
 * the supervisor goes away. SIGINT and SIGHUP are left to the supervisor (a terminal's Ctrl-C or
 * hang-up reaches the whole process group, and the supervisor passes them on); SIGTERM stops
 * gracefully, like the supervisor's stop (systemd sends it to every process of the service).
 *
 * @param run The server and its reload.
 * @param io Standard streams and signals.
 * @returns The exit code.
 */
export async function runWorker(run: WorkerRun, io: CliIo): Promise<number> {
  const { server, log } = run;
  const send = (msg: Record<string, unknown>) => io.stdout(JSON.stringify(msg) + "\n");
  const stop = (now: boolean) => void server.stop(now ? { graceMs: 0 } : undefined);
  const unsubscribe = [
    io.onSignal?.("SIGINT", () => {}),
    io.onSignal?.("SIGHUP", () => {}),
    io.onSignal?.("SIGTERM", () => stop(false)),
  ];
  send({ type: "ready", address: formatSocketSpec(server.address) });
  const control = readJsonLines(io.stdin(), (msg) => {
    switch (msg.op) {
      case "metrics":
        send({ type: "metrics", id: msg.id, data: server.metrics.data() });
        break;
      case "ping":
        send({ type: "pong", id: msg.id });
        break;
      case "reload":
        run.reload().then(
          () => send({ type: "reloaded", id: msg.id, ok: true }),
          (e) => send({ type: "reloaded", id: msg.id, ok: false, error: String(e?.message ?? e) }),
        );
        break;
      case "stop":
        stop(msg.now === true);
        break;
    }
  }).catch(() => {}).finally(() => {
    // The supervisor is gone (or closed our stdin): finish what is in flight and leave.
    log.debug("control channel closed");
    stop(false);
  });
  await server.finished;
  for (const u of unsubscribe) u?.();
  void control;
  return EXIT.OK;
}

/** Options of {@link supervise}. */
export interface SuperviseOptions {
  /** How many workers. */
  readonly count: number;
  /** The address asked for (`--listen`). */
  readonly listen: string;
  /** Worker arguments after `serve` for a given listen spec. */
  readonly workerArgs: (listen: string) => string[];
  /** The command that runs this binary again (program and leading arguments). */
  readonly self: readonly string[] | undefined;
  /** `--metrics-port`, if any. */
  readonly metricsPort?: number;
  /** `--metrics-host`. */
  readonly metricsHost: string;
  /** Where to log. */
  readonly log: Logger;
}

interface Worker {
  readonly n: number;
  proc: ChildProcess;
  pid: number | undefined;
  ready: boolean;
  address?: string;
  last?: MetricsData;
  up: boolean;
  exited: Promise<void>;
  startedAt: number;
  restarts: number;
}

/**
 * Checks that `--workers N` can work with this address and runtime.
 *
 * @param count Workers asked for.
 * @param address The `--listen` address.
 * @param self How to run this binary again.
 * @throws {UsageError} A Unix socket, or no way to start workers.
 */
export function checkWorkers(
  count: number,
  address: SocketAddress,
  self: readonly string[] | undefined,
): void {
  if (count <= 1) return;
  if (address.transport !== "tcp") {
    throw new UsageError(
      "--workers needs a TCP --listen (inet: or inet6:): workers share a port with " +
        "SO_REUSEPORT, which Unix sockets lack; serve a loopback TCP port instead",
    );
  }
  if (runtimeAdapterName() !== "node" && !self) {
    throw new UsageError("--workers: this build cannot start copies of itself");
  }
}

/**
 * Starts `count` workers on one TCP address and supervises them until SIGTERM/SIGINT: one
 * metrics and health endpoint summing them, SIGHUP reloads every worker, a worker that dies is
 * restarted, a stop drains them all (a second one stops them at once).
 *
 * @param o Workers, address, how to start them, metrics port.
 * @param io Signals and the abort signal.
 * @returns The exit code: 0 after a stop, 1 when the first worker cannot start.
 */
export async function supervise(o: SuperviseOptions, io: CliIo): Promise<number> {
  const { log } = o;
  const workers: Worker[] = [];
  let stopping = false;
  let stops = 0;
  let nextId = 1;
  const waiting = new Map<number, (msg: Record<string, unknown>) => void>();
  let spec = o.listen;
  // Under Node (no SO_REUSEPORT before 22.12), cluster workers share the primary's socket.
  const cluster = runtimeAdapterName() === "node"
    ? (await import("node:cluster")).default
    : undefined;

  const start = (n: number, restarts = 0): Worker => {
    const env = { ...io.env, [WORKER_ENV]: String(n) };
    const args = ["serve", ...o.workerArgs(spec)];
    const proc = cluster
      ? forkClusterWorker(cluster, args, env)
      : spawn(o.self![0]!, [...o.self!.slice(1), ...args], {
        env,
        stdio: ["pipe", "pipe", "inherit"],
      });
    const w: Worker = {
      n,
      proc,
      pid: proc.pid,
      ready: false,
      up: true,
      startedAt: Date.now(),
      restarts,
      exited: new Promise((r) => proc.once("exit", () => r())),
    };
    proc.stdin?.on("error", () => {}); // A worker that died: its exit is handled below.
    readJsonLines(proc.stdout!, (msg) => {
      if (msg.type === "ready") {
        w.ready = true;
        w.address = String(msg.address);
      } else if (typeof msg.id === "number") {
        waiting.get(msg.id)?.({ ...msg, worker: n });
      }
    }).catch(() => {});
    proc.once("exit", (code, signal) => {
      const wasReady = w.ready;
      w.ready = false;
      w.up = false;
      if (stopping || !wasReady) return;
      const quick = Date.now() - w.startedAt < 5000;
      const delay = quick ? Math.min(30_000, 500 * 2 ** Math.min(w.restarts, 6)) : 500;
      log.error("worker exited, restarting", { worker: n, pid: w.pid, code, signal, inMs: delay });
      setTimeout(() => {
        if (stopping) return;
        const i = workers.indexOf(w);
        if (i >= 0) workers[i] = start(n, quick ? w.restarts + 1 : 0);
      }, delay);
    });
    return w;
  };

  const tell = (w: Worker, msg: Record<string, unknown>) => {
    if (w.proc.exitCode !== null || w.proc.signalCode !== null) return false;
    try {
      w.proc.stdin?.write(JSON.stringify(msg) + "\n");
      return true;
    } catch {
      return false;
    }
  };

  /** Sends `msg` to every live worker and collects the answers that come within `ms`. */
  const ask = async (op: string, ms: number) => {
    const answers = new Map<number, Record<string, unknown>>();
    await Promise.all(workers.map((w) => {
      const id = nextId++;
      if (!w.ready || !tell(w, { op, id })) return;
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          resolve();
        }, ms);
        waiting.set(id, (msg) => {
          clearTimeout(timer);
          waiting.delete(id);
          answers.set(w.n, msg);
          resolve();
        });
      });
    }));
    return answers;
  };

  const waitReady = async (w: Worker) => {
    const until = Date.now() + START_MS;
    while (!w.ready) {
      if (w.proc.exitCode !== null || w.proc.signalCode !== null || Date.now() > until) {
        return false;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    return true;
  };

  // The first worker binds (and picks the port when 0 was asked); the others join its port.
  const first = start(1);
  workers.push(first);
  if (!(await waitReady(first))) {
    stopping = true;
    first.proc.kill("SIGKILL");
    await first.exited;
    log.error("worker 1 could not start; see its error above", { listen: o.listen });
    return EXIT.FAILURE;
  }
  spec = first.address ?? spec;
  for (let n = 2; n <= o.count; n++) workers.push(start(n));
  const started = await Promise.all(workers.map(waitReady));
  if (started.some((ok) => !ok)) log.error("some workers did not start", { started });
  log.info("workers", {
    count: o.count,
    address: spec,
    pids: workers.map((w) => w.pid),
    sharing: runtimeAdapterName() === "node" ? "node:cluster" : "SO_REUSEPORT",
  });

  let status: StatusServer | undefined;
  if (o.metricsPort !== undefined) {
    status = await startStatusHttp(o.metricsPort, o.metricsHost, {
      metrics: async () => {
        const answers = await ask("metrics", ASK_MS);
        const sum = new Metrics();
        const lines = [
          "# HELP milterkit_worker_up Whether a worker answered the last scrape (1) or not (0).",
          "# TYPE milterkit_worker_up gauge",
        ];
        for (const w of workers) {
          const a = answers.get(w.n);
          if (a) w.last = a.data as MetricsData;
          w.up = a !== undefined;
          if (w.last) sum.add(w.last);
          lines.push(`milterkit_worker_up{worker="${w.n}"} ${w.up ? 1 : 0}`);
        }
        return sum.prometheus() + lines.join("\n") + "\n";
      },
      health: async () => {
        if (stopping) return { ok: false, text: "stopping" };
        // A worker whose event loop is held (a CPU-bound handler) does not answer in time.
        const answering = (await ask("ping", HEALTH_MS)).size;
        if (answering === 0) return { ok: false, text: "no worker answers" };
        return { ok: true, text: `serving: ${answering} of ${o.count} workers answering` };
      },
    });
    log.info("metrics", { url: status.url });
  }

  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  const stop = (now: boolean) => {
    if (!stopping) log.info("stopping workers", { count: workers.length });
    stopping = true;
    for (const w of workers) tell(w, { op: "stop", now });
    void Promise.all(workers.map((w) => w.exited)).then(resolveDone);
  };
  const reload = async () => {
    const answers = await ask("reload", 30_000);
    const failed = [...answers.values()].filter((a) => a.ok !== true);
    const ok = answers.size - failed.length;
    if (failed.length || ok < workers.length) {
      log.error("reload incomplete", {
        reloaded: ok,
        workers: workers.length,
        errors: failed.map((a) => `worker ${a.worker}: ${a.error}`),
      });
    } else log.info("reloaded all workers", { workers: ok });
  };
  const signalled = () => stop(++stops > 1);
  const unsubscribe = [
    io.onSignal?.("SIGTERM", signalled),
    io.onSignal?.("SIGINT", signalled),
    io.onSignal?.("SIGHUP", () => void reload()),
  ];
  io.signal.addEventListener("abort", () => stop(false), { once: true });
  await done;
  for (const u of unsubscribe) u?.();
  await status?.close();
  log.info("stopped", { address: spec });
  return EXIT.OK;
}

type Cluster = typeof import("node:cluster").default;

/** Node: workers are `node:cluster` workers, so they share the primary's listening socket. */
function forkClusterWorker(
  cluster: Cluster,
  args: string[],
  env: Record<string, string | undefined>,
): ChildProcess {
  cluster.setupPrimary({ args, stdio: ["pipe", "pipe", "inherit", "ipc"] });
  return cluster.fork(env).process as ChildProcess;
}
