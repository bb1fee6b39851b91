/**
 * Builds the interoperability table (docs/interop.md) from JUnit XML of a test run: which real
 * peer (and which version, from dpkg-query) passed which scenario, under which runtime.
 *
 *   bun scripts/interop_table.ts                  read .test-results/deno.xml and bun.xml
 *                                                 (written by `npm test`)
 *   bun scripts/interop_table.ts --run            run tests/interop/matrix_*_test.ts under deno
 *                                                 and bun first (JUnit into a temp dir)
 *   bun scripts/interop_table.ts --xml a.xml ...  read these reports (runtime from the name)
 *   --out FILE                                    where to write (default docs/interop.md)
 *
 * Only tests of describes named `matrix: <peer> <- <side>` count (tests/interop/helpers_matrix.ts
 * explains the convention). Scenarios named `verdict <verdict> at <stage>` become one grid per
 * peer; the others one table per side. A cell is "pass" when every runtime passed it.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const LAB_DIR = process.env.MILTERKIT_LAB_DIR ?? "/var/lib/milterkit-lab";
const say = (line: string) => process.stdout.write(line + "\n");

/** One test case of one runtime. */
interface Case {
  runtime: string;
  peer: string;
  side: string;
  scenario: string;
  outcome: "pass" | "fail" | "skip";
}

/** The peers, in table order: how to name them and where their version comes from. */
const PEERS: Record<string, { title: string; version: () => string }> = {
  postfix: { title: "Postfix", version: () => dpkg("postfix") },
  sendmail: { title: "Sendmail", version: sendmailVersion },
  libmilter: { title: "libmilter (C)", version: () => dpkg("libmilter1.0.1") },
  pymilter: {
    title: "pymilter",
    version: () => `${dpkg("python3-milter")} (libmilter ${dpkg("libmilter1.0.1")})`,
  },
  opendkim: { title: "OpenDKIM", version: () => dpkg("opendkim") },
  miltertest: { title: "miltertest", version: () => dpkg("miltertest") },
};

function dpkg(pkg: string): string {
  try {
    return execFileSync("dpkg-query", ["-W", "-f=${Version}", pkg], { encoding: "utf8" }).trim() ||
      "not installed";
  } catch {
    return "not installed";
  }
}

function sendmailVersion(): string {
  const file = `${LAB_DIR}/sendmail-root/VERSIONS`;
  if (!existsSync(file)) return "not unpacked";
  const line = readFileSync(file, "utf8").split("\n").find((l) => l.startsWith("sendmail-bin "));
  return `${line?.split(" ")[1] ?? "?"} (sendmail-bin, unpacked)`;
}

const ENTITIES: Record<string, string> = {
  "&lt;": "<",
  "&gt;": ">",
  "&amp;": "&",
  "&quot;": '"',
  "&apos;": "'",
};
const unescape = (s: string) => s.replace(/&(lt|gt|amp|quot|apos);/g, (e) => ENTITIES[e]!);
const attr = (attrs: string, name: string) =>
  unescape(new RegExp(`\\b${name}="([^"]*)"`).exec(attrs)?.[1] ?? "");

/**
 * Reads the matrix cases of one JUnit report. Deno writes `describe > it` as the name (and the
 * describe itself as a case of its own); Bun writes the describe as classname.
 */
function readReport(xml: string, runtime: string): Case[] {
  const out: Case[] = [];
  const re = /<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const m of xml.matchAll(re)) {
    const attrs = m[1] ?? "";
    const inner = m[2] ?? "";
    const name = attr(attrs, "name");
    const classname = attr(attrs, "classname");
    const full = name.includes(" > ") ? name : `${classname} > ${name}`;
    const cut = full.indexOf(" > ");
    const suite = full.slice(0, cut);
    const scenario = full.slice(cut + 3);
    const head = /^matrix: (\S+) <- (.+?)(?: \(.*\))?$/.exec(suite);
    if (!head || scenario.includes(" > ")) continue;
    const outcome = /<(failure|error)\b/.test(inner)
      ? "fail"
      : /<skipped\b/.test(inner)
      ? "skip"
      : "pass";
    out.push({ runtime, peer: head[1]!, side: head[2]!, scenario, outcome });
  }
  return out;
}

function runMatrix(dir: string): string[] {
  const files = readdirSync(join(ROOT, "tests/interop")).filter((f) =>
    /^matrix_.*_test\.ts$/.test(f)
  )
    .map((f) => `tests/interop/${f}`);
  const bin = (n: string) => {
    const local = join(ROOT, "node_modules/.bin", n);
    return existsSync(local) ? local : n;
  };
  const reports = [join(dir, "deno.xml"), join(dir, "bun.xml")];
  const runs: [string, string[]][] = [
    [bin("deno"), ["test", "-A", "--no-check", `--junit-path=${reports[0]}`, ...files]],
    [bin("bun"), [
      "test",
      "--timeout",
      "120000",
      "--reporter=junit",
      `--reporter-outfile=${reports[1]}`,
      ...files.map((f) => "./" + f),
    ]],
  ];
  for (const [cmd, args] of runs) {
    say(`interop_table: running ${basename(cmd)} test on ${files.length} matrix files`);
    spawnSync(cmd, args, { cwd: ROOT, stdio: "ignore" });
  }
  return reports.filter((r) => existsSync(r));
}

function runtimeVersion(runtime: string): string {
  const local = join(ROOT, "node_modules/.bin", runtime);
  try {
    const out = execFileSync(existsSync(local) ? local : runtime, ["--version"], {
      encoding: "utf8",
    });
    return out.split("\n")[0]!.replace(/^deno /, "").trim();
  } catch {
    return "?";
  }
}

/** "pass" when every runtime passed, "FAIL (bun)" naming the failing ones, "–" when absent. */
function cell(cases: Case[]): string {
  if (cases.length === 0) return "–";
  const failed = cases.filter((c) => c.outcome === "fail").map((c) => c.runtime);
  if (failed.length > 0) return `**FAIL** (${[...new Set(failed)].join(", ")})`;
  if (cases.every((c) => c.outcome === "skip")) return "skipped";
  return "pass";
}

function table(header: string[], rows: string[][]): string[] {
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ];
}

const VERDICT_ORDER = [
  "accept",
  "reject",
  "tempfail",
  "discard",
  "custom 5xx",
  "custom 4xx",
  "421",
];

/** Facts a reader of the table needs, kept next to the code that renders it. */
const NOTES = [
  "Sendmail conflicts with Postfix as a Debian package: `scripts/peers/install-extra.sh` " +
  "unpacks sendmail-bin with `apt-get download` + `dpkg-deb -x` (never installed), and " +
  "`scripts/peers/sendmail.sh` runs it in a private mount namespace whose /etc/hosts has a " +
  "dotted host name (else Sendmail sleeps 60 s at start); the network is the normal loopback.",
  "`discard` is not a legal answer at CONNECT/HELO (milter-protocol.md §3.2): milterkit " +
  "refuses to send it and answers its fallback, tempfail; the cells check exactly that.",
  "At CONNECT both MTAs answer a refusal with their own greeting text (custom text ignored).",
  "Postfix 3.7 holds a quarantined message (hold queue) but logs the reason only from Postfix " +
  "releases of 2025 on; Sendmail keeps it as a quarantined queue file (hf) with the reason.",
  "Postfix-only rows use main.cf settings the Sendmail instance does not have (SMTPUTF8, " +
  "IPv6 listener, Unix-socket milter, a 20 MB size limit); the Sendmail column shows `–` there.",
];

const SIDES: [string, string][] = [
  ["milterkit filter", "A real MTA in front of milterkit's filter server (`listen()`)"],
  [
    "milterkit MTA engine",
    "milterkit's MTA engine (`MilterClient` + `runTransaction`) in front of a real filter",
  ],
];

function render(cases: Case[], runtimes: string[]): string {
  const lines: string[] = [
    "# Interoperability with real milter software",
    "",
    "Generated by `scripts/interop_table.ts` from the JUnit reports of " +
    "`tests/interop/matrix_*_test.ts`; do not edit by hand. Every cell is a test against " +
    "software nobody on the milterkit team wrote, run on loopback on Debian 12 under each " +
    "runtime; **pass** means it passed under every runtime listed below.",
    "",
    "## Peers and runtimes",
    "",
  ];
  const peers = Object.keys(PEERS).filter((p) => cases.some((c) => c.peer === p));
  lines.push(
    ...table(
      ["peer", "version (Debian 12 package)", "tests", "passed"],
      peers.map((p) => {
        const mine = cases.filter((c) => c.peer === p);
        return [
          PEERS[p]!.title,
          PEERS[p]!.version(),
          String(mine.length),
          String(mine.filter((c) => c.outcome === "pass").length),
        ];
      }),
    ),
    "",
    ...table(
      ["runtime", "version", "matrix tests", "passed", "failed"],
      runtimes.map((r) => {
        const mine = cases.filter((c) => c.runtime === r);
        return [
          r,
          runtimeVersion(r),
          String(mine.length),
          String(mine.filter((c) => c.outcome === "pass").length),
          String(mine.filter((c) => c.outcome === "fail").length),
        ];
      }),
    ),
    "",
  );
  const verdict = /^verdict (.+) at (\w+)$/;
  for (const [side, title] of SIDES) {
    const mine = cases.filter((c) => c.side === side && !verdict.test(c.scenario));
    if (mine.length === 0) continue;
    const cols = peers.filter((p) => mine.some((c) => c.peer === p));
    const scenarios = [...new Set(mine.map((c) => c.scenario))];
    lines.push(`## ${title}`, "");
    lines.push(
      ...table(
        ["scenario", ...cols.map((p) => PEERS[p]!.title)],
        scenarios.map((s) => [
          s,
          ...cols.map((p) => cell(mine.filter((c) => c.peer === p && c.scenario === s))),
        ]),
      ),
      "",
    );
  }
  const others = cases.filter((c) =>
    !SIDES.some(([s]) => s === c.side) && !verdict.test(c.scenario)
  );
  for (const peer of peers) {
    const mine = others.filter((c) => c.peer === peer);
    if (mine.length === 0) continue;
    lines.push(`## ${PEERS[peer]!.title} driving milterkit's filter`, "");
    const scenarios = [...new Set(mine.map((c) => c.scenario))];
    lines.push(
      ...table(
        ["scenario", PEERS[peer]!.title],
        scenarios.map((s) => [s, cell(mine.filter((c) => c.scenario === s))]),
      ),
      "",
    );
  }
  for (const peer of peers) {
    const grid = cases.filter((c) => c.peer === peer && verdict.test(c.scenario));
    if (grid.length === 0) continue;
    const parsed = grid.map((c) => ({ c, m: verdict.exec(c.scenario)! }));
    const verdicts = [...new Set(parsed.map((x) => x.m[1]!))].sort((a, b) =>
      VERDICT_ORDER.indexOf(a) - VERDICT_ORDER.indexOf(b)
    );
    const stages = [...new Set(parsed.map((x) => x.m[2]!))];
    lines.push(
      `## Verdicts at every stage: ${PEERS[peer]!.title}`,
      "",
      "Each cell: the filter answers that verdict at that stage, and the SMTP client (or " +
        "miltertest) sees what the peer documents (reply code and text, where the session " +
        "stops, delivered or not).",
      "",
      ...table(
        ["stage", ...verdicts],
        stages.map((s) => [
          s,
          ...verdicts.map((v) =>
            cell(parsed.filter((x) => x.m[1] === v && x.m[2] === s).map((x) => x.c))
          ),
        ]),
      ),
      "",
    );
  }
  lines.push("## Notes", "", ...NOTES.map((n) => `- ${n}`), "");
  return lines.join("\n");
}

function main(): void {
  const { values } = parseArgs({
    options: {
      run: { type: "boolean", default: false },
      xml: { type: "string", multiple: true },
      out: { type: "string", default: join(ROOT, "docs/interop.md") },
    },
  });
  let tmp: string | undefined;
  let reports: string[];
  if (values.run) {
    tmp = mkdtempSync(join(tmpdir(), "interop-table-"));
    reports = runMatrix(tmp);
  } else if (values.xml && values.xml.length > 0) {
    reports = values.xml;
  } else {
    reports = ["deno.xml", "bun.xml"].map((f) => join(ROOT, ".test-results", f)).filter((f) =>
      existsSync(f)
    );
  }
  const cases: Case[] = [];
  const runtimes: string[] = [];
  for (const file of reports) {
    const runtime = /bun/.test(basename(file)) ? "bun" : "deno";
    const got = readReport(readFileSync(file, "utf8"), runtime);
    if (got.length > 0 && !runtimes.includes(runtime)) runtimes.push(runtime);
    cases.push(...got);
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  if (cases.length === 0) {
    process.stderr.write(
      "interop_table: no matrix tests in the reports (run `npm test` first, or use --run)\n",
    );
    process.exit(1);
  }
  writeFileSync(values.out!, render(cases, runtimes) + "\n");
  const failed = cases.filter((c) => c.outcome === "fail").length;
  say(
    `interop_table: ${cases.length} results (${runtimes.join(", ")}), ${failed} failed -> ` +
      values.out,
  );
  process.exit(failed > 0 ? 1 : 0);
}

main();
