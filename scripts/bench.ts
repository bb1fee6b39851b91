// deno-lint-ignore-file no-console
/**
 * The comparison benchmark: no-op filters of every implementation at hand, and milterkit's
 * proxy against a bare C relay, all driven by the same neutral load generator written in C
 * (`mload`), interleaved in one run, medians of the rounds.
 *
 * Filters (each answers `continue` to everything):
 *   - `mnull`: C, epoll, no callbacks: the floor;
 *   - libmilter 8.17 (C, Debian's libmilter-dev; scripts/peers/libmilter-filter/testfilter.c, noop);
 *   - pymilter (Debian's python3-milter; scripts/bench/pymilter_noop.py);
 *   - go-milter (emersion, Debian's golang-github-emersion-go-milter-dev; gonoop), when Go is there;
 *   - `milterkit serve` as the Bun binary (`npm run build`), under Deno, under Node (dist/milterkit.mjs).
 * Proxies, each between mload and a libmilter no-op filter:
 *   - `mrelay`: a C byte relay (the floor for any proxy);
 *   - `milterkit proxy --quiet`, and `milterkit proxy --quiet --record FILE` (Bun binary).
 *
 * Each round runs every target at every connection count (mload `-w` warm-up, then `-d`
 * seconds); the tables give the median of the rounds, ratios to libmilter (filters) or to
 * mrelay (proxies), and the CPU time the filter's (or proxy's) process used per message
 * (`mload -p PID`: the figure that moves least on a busy machine).
 *
 *   bun scripts/bench.ts [--seconds 5] [--warmup 1] [--rounds 3] [--connections 1,32]
 *                        [--only mnull,libmilter,...] [--tools DIR] [--write]
 *
 * The C tools (mload.c, mnull.c, mrelay.c, gonoop/) are read from `../shared/tools` beside the
 * repository (or `--tools DIR`) and built with `cc -O2`. `--write` replaces this benchmark's
 * section of docs/benchmarks.md. Needs the peers (`scripts/peers/install.sh`, root); for the Go
 * row `apt-get install golang-go golang-github-emersion-go-milter-dev`.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { freePort, replaceSection, waitPort } from "./bench/util.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "1,32" },
    only: { type: "string" },
    tools: { type: "string" },
    write: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(
    "usage: bun scripts/bench.ts [--seconds 5] [--warmup 1] [--rounds 3] [--connections 1,32]\n" +
      "                            [--only KEY,...] [--tools DIR] [--write]\n" +
      "keys: mnull libmilter pymilter gomilter bun deno node mrelay proxy proxy-record",
  );
  process.exit(0);
}
const root = resolve(new URL("..", import.meta.url).pathname);
const bin = (n: string) => join(root, "node_modules", ".bin", n);
/** `../shared/tools` beside the repository (for a git worktree: beside its main checkout too). */
function defaultTools(): string {
  const beside = join(root, "..", "shared", "tools");
  if (existsSync(beside)) return beside;
  const common = spawnSync("git", ["rev-parse", "--path-format=absolute", "--git-common-dir"], {
    cwd: root,
    encoding: "utf8",
  });
  const main = common.status === 0 ? join(common.stdout.trim(), "..", "..", "shared", "tools") : "";
  return main && existsSync(main) ? main : beside;
}
const tools = resolve(values.tools ?? defaultTools());
const rounds = Number(values.rounds);
const connectionCounts = values.connections!.split(",").map(Number);
const work = join(tmpdir(), `milterkit-bench-${process.pid}`);
mkdirSync(work, { recursive: true });

for (const f of ["mload.c", "mnull.c", "mrelay.c"]) {
  if (!existsSync(join(tools, f))) {
    console.error(
      `bench: ${join(tools, f)} is missing: the C measuring tools (mload.c, mnull.c, mrelay.c) ` +
        `are expected in ../shared/tools beside the repository; pass --tools DIR`,
    );
    process.exit(2);
  }
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? root, env: opts.env, encoding: "utf8" });
  if (r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed: ${(r.stderr || r.error?.message || "").trim()}`,
    );
  }
  return r.stdout.trim();
}

// --- build what is measured ---
const cTool = (name: string) => {
  const out = join(work, name);
  run("cc", ["-O2", "-o", out, join(tools, `${name}.c`)]);
  return out;
};
const mload = cTool("mload");
const mnull = cTool("mnull");
const mrelay = cTool("mrelay");
const libmilter = run("bash", [join(root, "scripts/peers/libmilter-filter.sh"), "build"]);
run(bin("bun"), [join(root, "scripts/build.ts")]);
run(bin("bun"), [join(root, "scripts/build.ts"), "--node"]);
const bunBinary = join(root, "dist", "milterkit");
const nodeBundle = join(root, "dist", "milterkit.mjs");

const notes: string[] = [];
let gonoop: string | undefined;
{
  const goMilter = "/usr/share/gocode/src/github.com/emersion/go-milter";
  const hasGo = spawnSync("go", ["version"]).status === 0;
  if (!hasGo || !existsSync(goMilter) || !existsSync(join(tools, "gonoop", "main.go"))) {
    notes.push(
      "go-milter row skipped: needs `go` and Debian's go-milter package " +
        "(`apt-get install golang-go golang-github-emersion-go-milter-dev`)",
    );
  } else {
    gonoop = join(work, "gonoop");
    try {
      run("go", ["build", "-o", gonoop, "."], {
        cwd: join(tools, "gonoop"),
        env: {
          ...process.env,
          GOPATH: "/usr/share/gocode",
          GO111MODULE: "off",
          GOCACHE: join(work, "gocache"),
        },
      });
    } catch (e) {
      notes.push(`go-milter row skipped: ${(e as Error).message.split("\n")[0]}`);
      gonoop = undefined;
    }
  }
}

// --- what is measured ---
interface Target {
  key: string;
  name: string;
  group: "filter" | "proxy";
  /** Starts it listening on `port`; proxies relay to `upstream`. */
  start(port: number, upstream: number): ChildProcess;
}
const serve = (port: number) => [
  "serve",
  join(root, "scripts/bench/noop_filter.js"),
  "--listen",
  `inet:${port}@127.0.0.1`,
  "--log-level",
  "error",
];
const proxyArgs = (port: number, up: number) => [
  "proxy",
  "--listen",
  `inet:${port}@127.0.0.1`,
  "--upstream",
  `inet:${up}@127.0.0.1`,
  "--quiet",
];
const recordFile = join(work, "proxy.jsonl");
const allTargets: Target[] = [
  {
    key: "mnull",
    name: "`mnull` (C, no callbacks: the floor)",
    group: "filter",
    start: (p) => spawn(mnull, [String(p)]),
  },
  {
    key: "libmilter",
    name: "libmilter 8.17 no-op (C)",
    group: "filter",
    start: (p) => spawn(libmilter, [`inet:${p}@127.0.0.1`, "noop"]),
  },
  {
    key: "pymilter",
    name: "pymilter no-op",
    group: "filter",
    start: (p) =>
      spawn("/usr/bin/python3", [join(root, "scripts/bench/pymilter_noop.py"), String(p)]),
  },
  ...(gonoop
    ? [{
      key: "gomilter",
      name: "go-milter no-op (emersion)",
      group: "filter" as const,
      start: (p: number) => spawn(gonoop!, [String(p)]),
    }]
    : []),
  {
    key: "bun",
    name: "milterkit serve, Bun binary",
    group: "filter",
    start: (p) => spawn(bunBinary, serve(p)),
  },
  {
    key: "deno",
    name: "milterkit serve under Deno",
    group: "filter",
    start: (p) =>
      spawn(bin("deno"), ["run", "-A", "--no-check", join(root, "cli.ts"), ...serve(p)]),
  },
  {
    key: "node",
    name: "milterkit serve under Node (`dist/milterkit.mjs`)",
    group: "filter",
    start: (p) => spawn(process.env.NODE ?? "node", [nodeBundle, ...serve(p)]),
  },
  {
    key: "mrelay",
    name: "`mrelay` (C byte relay: the floor)",
    group: "proxy",
    start: (p, up) => spawn(mrelay, [String(p), String(up)]),
  },
  {
    key: "proxy",
    name: "milterkit proxy --quiet (Bun binary)",
    group: "proxy",
    start: (p, up) => spawn(bunBinary, proxyArgs(p, up), { stdio: "ignore" }),
  },
  {
    key: "proxy-record",
    name: "milterkit proxy --quiet --record (Bun binary)",
    group: "proxy",
    // rotated so a long run does not fill the disk: the cost of writing is what is measured
    start: (p, up) =>
      spawn(bunBinary, [
        ...proxyArgs(p, up),
        "--record",
        recordFile,
        "--rotate-size",
        String(64 << 20),
        "--rotate-keep",
        "1",
      ], { stdio: "ignore" }),
  },
];
const only = values.only?.split(",");
const targets = only ? allTargets.filter((t) => only.includes(t.key)) : allTargets;
if (targets.length === 0) {
  console.error(`bench: --only matches nothing; keys: ${allTargets.map((t) => t.key).join(" ")}`);
  process.exit(2);
}

const children: ChildProcess[] = [];
const cleanup = () => {
  for (const c of children) c.kill("SIGKILL");
  rmSync(work, { recursive: true, force: true });
};
process.on("exit", cleanup);
process.on("SIGINT", () => process.exit(130));

// One libmilter no-op filter behind the proxies.
const upstreamPort = await freePort();
if (targets.some((t) => t.group === "proxy")) {
  const up = spawn(libmilter, [`inet:${upstreamPort}@127.0.0.1`, "noop"]);
  children.push(up);
  await waitPort(upstreamPort);
}
const running = new Map<string, { port: number; pid: number }>();
for (const t of targets) {
  const port = await freePort();
  const child = t.start(port, upstreamPort);
  children.push(child);
  child.stderr?.on("data", () => {}); // drained, not shown
  child.stdout?.on("data", () => {});
  await waitPort(port);
  running.set(t.key, { port, pid: child.pid! });
}

/** mload's JSON line (snake_case, as mload prints it). */
interface Result {
  "msg_per_s": number;
  "p50_ms": number;
  "p99_ms": number;
  "filter_cpu_us_per_msg": number;
  "round_trips_per_msg": number;
  errors: number;
  "non_accepted": number;
}
const results = new Map<string, Result[]>(); // key@connections → one per round
const load = (port: number, pid: number, connections: number): Result => {
  const out = execFileSync(mload, [
    "-c",
    String(connections),
    "-d",
    values.seconds!,
    "-w",
    values.warmup!,
    "-p",
    String(pid),
    "-j",
    `127.0.0.1:${port}`,
  ], { encoding: "utf8" });
  return JSON.parse(out) as Result;
};

for (let round = 1; round <= rounds; round++) {
  for (const n of connectionCounts) {
    for (const t of targets) {
      const { port, pid } = running.get(t.key)!;
      let r: Result;
      try {
        r = load(port, pid, n);
      } catch (e) {
        console.error(`${t.key} at ${n} connections: ${(e as Error).message.split("\n")[0]}`);
        continue;
      }
      const k = `${t.key}@${n}`;
      results.set(k, [...(results.get(k) ?? []), r]);
      console.log(
        `round ${round} ${t.key.padEnd(13)} ${String(n).padStart(3)} conn ${
          r.msg_per_s.toFixed(0).padStart(6)
        } msg/s  p50 ${r.p50_ms.toFixed(2)} ms  p99 ${r.p99_ms.toFixed(2)} ms  cpu ${
          r.filter_cpu_us_per_msg.toFixed(0)
        } µs/msg${
          r.errors || r.non_accepted ? `  errors ${r.errors} not accepted ${r.non_accepted}` : ""
        }`,
      );
    }
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0
    ? NaN
    : s.length % 2
    ? s[(s.length - 1) / 2]!
    : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const med = (key: string, n: number, f: keyof Result) =>
  median((results.get(`${key}@${n}`) ?? []).map((r) => r[f]));
const fmt = (x: number, digits = 0) =>
  Number.isNaN(x)
    ? "–"
    : x.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const ratio = (key: string, base: string, n: number) => {
  const a = med(key, n, "msg_per_s");
  const b = med(base, n, "msg_per_s");
  return key === base || Number.isNaN(a) || Number.isNaN(b) ? "" : ` (${(a / b).toFixed(2)}×)`;
};
const table = (group: "filter" | "proxy", base: string, cpuWho: string) => {
  const rows = targets.filter((t) => t.group === group);
  if (rows.length === 0) return [];
  const head = [
    group,
    ...connectionCounts.map((n) => `${n} connection${n === 1 ? "" : "s"} msg/s`),
    ...connectionCounts.map((n) => `${cpuWho} CPU µs/msg at ${n}`),
    `p50 / p99 ms at ${connectionCounts.at(-1)}`,
  ];
  const lines = [
    `| ${head.join(" | ")} |`,
    `|---|${head.slice(1).map(() => "---:").join("|")}|`,
  ];
  const last = connectionCounts.at(-1)!;
  for (const t of rows) {
    const errs = connectionCounts.some((n) => med(t.key, n, "errors") > 0) ? " (errors)" : "";
    lines.push(`| ${t.name}${errs} | ${
      [
        ...connectionCounts.map((n) =>
          `${fmt(med(t.key, n, "msg_per_s"))}${ratio(t.key, base, n)}`
        ),
        ...connectionCounts.map((n) => fmt(med(t.key, n, "filter_cpu_us_per_msg"))),
        `${fmt(med(t.key, last, "p50_ms"), 2)} / ${fmt(med(t.key, last, "p99_ms"), 2)}`,
      ].join(" | ")
    } |`);
  }
  return lines;
};

const version = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim().split("\n")[0] : "?";
};
const cpu = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
const load1 = readFileSync("/proc/loadavg", "utf8").split(" ")[0];
const rtt = med(targets[0]!.key, connectionCounts[0]!, "round_trips_per_msg");
const text = [
  "## Comparison with other milter implementations (C load generator)",
  "",
  `Measured ${
    new Date().toISOString().slice(0, 16).replace("T", " ")
  } UTC on ${cpu}, ${cpus().length} cores ` +
  `(load average ${load1} at the end). Load: \`mload\` (C, one thread, epoll; ../shared/tools/mload.c), ` +
  `Postfix-like messages (macros, CONNECT, HELO, MAIL, RCPT, 14 headers, EOH, 4 KiB body, EOM, ABORT; ` +
  `one message per connection; ${
    fmt(rtt, 1)
  } round trips per message), ${values.seconds} s per measurement ` +
  `after ${values.warmup} s of warm-up, ${rounds} interleaved rounds, medians. ` +
  `Bun ${version(bin("bun"), ["--version"])}, ${version(bin("deno"), ["--version"])}, Node ${
    version("node", ["--version"])
  }` +
  `${
    gonoop ? `, ${version("go", ["version"])}` : ""
  }. CPU µs/msg is the filter's (or the proxy's) process ` +
  `only, from \`mload -p PID\`.`,
  "",
  "No-op filters (ratios to libmilter in brackets):",
  "",
  ...table("filter", "libmilter", "filter"),
  "",
  "Proxies between mload and a libmilter no-op filter (ratios to `mrelay`, the bare C relay; " +
  "the CPU column is the relay's own process):",
  "",
  ...table("proxy", "mrelay", "relay"),
  ...(notes.length ? ["", ...notes.map((n) => `- ${n}`)] : []),
  "",
  "Reproduce: `scripts/peers/install.sh && npm install && bun scripts/bench.ts --write` " +
  "(C tools from ../shared/tools, or `--tools DIR`).",
].join("\n");
console.log("\n" + text);
if (values.write) {
  replaceSection(join(root, "docs/benchmarks.md"), "bench.ts", text);
  console.log("updated docs/benchmarks.md");
}
process.exit(0);
