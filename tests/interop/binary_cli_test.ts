/**
 * The compiled `milterkit` binary as a user runs it, without real peers: help and version,
 * usage errors, `serve --check` on every example, scripts with mistakes, a script outside the
 * repository importing the toolkit by its package name, and the built-in logging filter.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, ROOT, runBinary, type ServeProcess, startServe } from "./helpers_binary.ts";

const COMMANDS = ["serve", "send", "proxy", "dump", "bench"];
const VERSION = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version as string;

describe("milterkit binary: help, version and usage errors", () => {
  before(() => void ensureBinary());

  it("--help lists every subcommand and exits 0", async () => {
    const r = await runBinary(["--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^milterkit \S+: /);
    for (const c of COMMANDS) assert.match(r.stdout, new RegExp(`^  ${c} +\\S`, "m"), c);
    assert.match(r.stdout, /Exit codes: 0 success/);
  });

  it("--version and -V print the package version", async () => {
    for (const flag of ["--version", "-V"]) {
      const r = await runBinary([flag]);
      assert.equal(r.code, 0);
      assert.equal(r.stdout, `milterkit ${VERSION}\n`);
    }
  });

  it("help send prints the same text as send --help", async () => {
    const a = await runBinary(["help", "send"]);
    const b = await runBinary(["send", "--help"]);
    assert.equal(a.code, 0);
    assert.equal(b.code, 0);
    assert.equal(a.stdout, b.stdout);
    assert.match(a.stdout, /^Usage: milterkit send --connect SPEC/);
  });

  for (const c of COMMANDS) {
    it(`${c} --help and -h print its usage and exit 0`, async () => {
      for (const flag of ["--help", "-h"]) {
        const r = await runBinary([c, flag]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, new RegExp(`^Usage: milterkit ${c}\\b`));
        assert.equal(r.stderr, "");
      }
    });
  }

  it("no arguments print the overview and exit 2", async () => {
    const r = await runBinary([]);
    assert.equal(r.code, 2);
    assert.match(r.stdout, /Usage: milterkit COMMAND/);
  });

  it("an unknown command, an unknown option and a missing --connect exit 2 with the reason", async () => {
    const unknown = await runBinary(["frobnicate"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);

    const option = await runBinary(["serve", "--bogus"]);
    assert.equal(option.code, 2);
    assert.match(option.stderr, /^milterkit serve: .*'--bogus'/);
    assert.match(option.stderr, /Usage: milterkit serve/);

    const send = await runBinary(["send", "examples/messages/plain.eml"]);
    assert.equal(send.code, 2);
    assert.match(send.stderr, /^milterkit send: --connect SPEC is required/);

    const help = await runBinary(["help", "nosuch"]);
    assert.equal(help.code, 2);

    const count = await runBinary(["send", "-c", "inet:1@127.0.0.1", "--count", "0"]);
    assert.equal(count.code, 2);
    assert.match(count.stderr, /--count needs a whole number/);
  });

  it("send to a port nobody listens on fails with exit 1 and says why", async () => {
    const r = await runBinary(["send", "-c", "inet:1@127.0.0.1", "examples/messages/plain.eml"]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^milterkit send: Cannot connect to inet:1@127\.0\.0\.1: connection refused/,
    );
    assert.doesNotMatch(r.stderr, /\w+Error\b/);
    // bench stops at once instead of retrying a filter it never reached.
    const bench = await runBinary(["bench", "-c", "inet:1@127.0.0.1", "--duration", "20"], {
      timeoutMs: 15_000,
    });
    assert.equal(bench.code, 1);
    assert.equal(
      bench.stderr,
      "milterkit bench: Cannot connect to inet:1@127.0.0.1: connection refused (ECONNREFUSED)\n",
    );
  });

  it("every usage or input error exits 2 with one line, a short hint and no class name", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["send", "-c", "18801"], /did you mean inet:18801@127\.0\.0\.1\?/],
      [["serve", "--listen", "8890"], /did you mean inet:8890@127\.0\.0\.1\?/],
      [["serve", "--listen", "tcp:8890"], /did you mean inet:8890@127\.0\.0\.1\?/],
      [["serve", "--listen", "inet:99999@127.0.0.1"], /port 99999 is out of range/],
      [["proxy", "--listen", "8891", "-u", "inet:8890@127.0.0.1"], /did you mean inet:8891@/],
      [["proxy", "--listen", "inet:8891@127.0.0.1", "-u", "tcp:8890"], /did you mean inet:8890@/],
      [["bench", "-c", "8890", "--total", "1"], /did you mean inet:8890@127\.0\.0\.1\?/],
      [["serve", "--listen", "inet:8890@999.1.1.1"], /"999\.1\.1\.1" is not a valid IPv4/],
      [["serve", "--listen", "inet:8890@127.0.0.1:5"], /is not a valid IPv6 address/],
      [["send", "-c", "inet6:8890@zz::1", "-"], /"zz::1" is not a valid IPv6 address/],
      [["send", "-c", "inet:8890@mail\u0001host", "-"], /is not a valid host name/],
      [["proxy", "-l", "inet:8891@a..b", "-u", "inet:8890@127.0.0.1"], /not a valid host name/],
      [["bench", "-c", "inet:8890@0.0.0.0.0", "--total", "1"], /not a valid IPv4 address/],
      [["dump", "--bogus"], /unknown option '--bogus'$/im],
      [["serve", "--log-level", "loud"], /--log-level must be/],
      [["serve", "--color", "pink"], /--color must be auto, always or never, got pink$/],
      [
        ["send", "-c", "inet:1@127.0.0.1", "/nonexistent.eml"],
        /Cannot read \/nonexistent\.eml: no such file$/,
      ],
    ];
    for (const [args, reason] of cases) {
      const r = await runBinary(args, { timeoutMs: 10_000 });
      const what = `${args.join(" ")}:\n${r.stderr}`;
      assert.equal(r.code, 2, what);
      const lines = r.stderr.trimEnd().split("\n");
      assert.match(lines[0]!, new RegExp(`^milterkit ${args[0]}: `), what);
      assert.match(lines[0]!, reason, what);
      assert.deepEqual(lines.slice(1), [
        r.stderr.match(/^Usage: milterkit .*$/m)?.[0],
        `"milterkit ${args[0]} --help" lists every option.`,
      ], what);
      assert.doesNotMatch(r.stderr, /\w+Error\b/, what);
      assert.equal(r.stdout, "");
    }
  });

  it("a Unix socket in a missing directory is reported as a missing directory", async () => {
    const serve = await runBinary(["serve", "--listen", "unix:/nonexistent-dir/m.sock"]);
    assert.equal(serve.code, 1);
    assert.match(serve.stderr, /the directory \/nonexistent-dir does not exist/);
    const send = await runBinary(["send", "-c", "unix:/nonexistent-dir/m.sock", "-"], {
      stdin: "To: a@example.test\n\nhi\n",
    });
    assert.equal(send.code, 1);
    assert.match(
      send.stderr,
      /Cannot connect to .*: the directory \/nonexistent-dir does not exist/,
    );
  });
});

/** What `serve --check` must say per example: its name, actions and answered events. */
const CHECKS: Record<string, { name: string; actions: string; answered: string }> = {
  "disclaimer.ts": { name: "disclaimer", actions: "ADDHDRS CHGBODY", answered: "-" },
  "http_check.ts": { name: "http-check", actions: "ADDHDRS", answered: "-" },
  "quarantine.ts": {
    name: "quarantine-risky-attachments",
    actions: "ADDHDRS QUARANTINE",
    answered: "-",
  },
  "recipient_allowlist.ts": { name: "recipient-allowlist", actions: "none", answered: "envrcpt" },
  "greylist_redis.ts": { name: "greylist-redis", actions: "none", answered: "envrcpt" },
  "reject_subject.ts": { name: "reject-subject", actions: "none", answered: "header" },
  "rewrite_sender.ts": { name: "rewrite-sender", actions: "ADDHDRS CHGFROM", answered: "-" },
  "tag_suspicious.ts": { name: "tag-suspicious", actions: "ADDHDRS CHGHDRS", answered: "-" },
};

describe("milterkit serve --check", () => {
  it("covers every example in examples/", () => {
    const examples = readdirSync(join(ROOT, "examples")).filter((f) => f.endsWith(".ts")).sort();
    assert.deepEqual(examples, Object.keys(CHECKS).sort());
  });

  for (const [file, want] of Object.entries(CHECKS)) {
    it(`prints what examples/${file} negotiates`, async () => {
      const r = await runBinary(["serve", `examples/${file}`, "--check"]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trimEnd().split("\n");
      assert.equal(lines[0], `filter: ${want.name}`);
      assert.ok(lines.includes(`actions: ${want.actions}`), r.stdout);
      assert.ok(lines.includes(`events answered: ${want.answered}`), r.stdout);
      assert.match(r.stdout, /^OPTNEG reply to Postfix\/Sendmail .*: version 6, actions 0x/m);
    });
  }

  describe("scripts with mistakes", () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(join(tmpdir(), "milterkit-bad-"));
      writeFileSync(
        join(dir, "typo.ts"),
        `import { defineFilter } from "@milterkit/milterkit";\n` +
          `export default defineFilter({ name: "typo", eomm() { return "accept"; } } as never);\n`,
      );
      writeFileSync(join(dir, "nodefault.ts"), `export const x = 1;\n`);
      writeFileSync(join(dir, "syntax.ts"), `export default {\n`);
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it("a typo'd handler name (eomm) fails with the key, a hint and exit 1", async () => {
      for (const extra of [["--check"], []]) {
        const r = await runBinary(["serve", join(dir, "typo.ts"), ...extra], { timeoutMs: 10_000 });
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /unknown filter keys "eomm" \(did you mean "eom"\?\)/);
        assert.equal(r.stdout, "");
      }
    });

    it("a script without a default export, a syntax error or a missing file exits 1", async () => {
      const noDefault = await runBinary(["serve", join(dir, "nodefault.ts"), "--check"]);
      assert.equal(noDefault.code, 1);
      assert.match(noDefault.stderr, /must export a filter object as its default export/);
      const syntax = await runBinary(["serve", join(dir, "syntax.ts"), "--check"]);
      assert.equal(syntax.code, 1);
      assert.match(syntax.stderr, /syntax\.ts:\d+:\d+: /);
      const missing = await runBinary(["serve", join(dir, "missing.ts"), "--check"]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /missing\.ts: no such file/);
      for (const r of [noDefault, syntax, missing]) assert.doesNotMatch(r.stderr, /ScriptError/);
    });
  });
});

describe("a script outside the repository, run by the binary", () => {
  let dir: string;
  let serve: ServeProcess | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "milterkit-user-"));
    writeFileSync(
      join(dir, "my_filter.ts"),
      `import { defineFilter, encodeText } from "@milterkit/milterkit";
import * as viaJsr from "jsr:@milterkit/milterkit";
import { parseMessage } from "@milterkit/milterkit/mta";
import { SMFIC } from "@milterkit/milterkit/wire";

const same = viaJsr.defineFilter === defineFilter;
export default defineFilter({
  name: "outside",
  actions: ["addHeader"],
  eom(ctx) {
    const headers = parseMessage(encodeText("A: 1\\r\\nB: 2\\r\\n\\r\\n")).headers.length;
    ctx.addHeader("X-Outside", \`same-copy=\${same}; bytes=\${encodeText("ü").length}; \` +
      \`headers=\${headers}; eom=\${SMFIC.BODYEOB}\`);
  },
});
`,
    );
    serve = await startServe("my_filter.ts", { cwd: dir });
  });
  after(async () => {
    await serve?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("has no node_modules or deno.json next to it", () => {
    assert.deepEqual(readdirSync(dir), ["my_filter.ts"]);
  });

  it("imports @milterkit/milterkit, its subpaths and jsr:@milterkit/milterkit as the binary's own copy", async () => {
    const r = await runBinary(["send", "-c", serve!.spec, "--json"], {
      cwd: dir,
      stdin: "From: a@example.test\nTo: b@example.test\nSubject: hi\n\nbody\n",
    });
    assert.equal(r.code, 0, r.stderr);
    const t = JSON.parse(r.stdout).transactions[0];
    assert.deepEqual(t.modifications, [
      {
        type: "addheader",
        name: "X-Outside",
        value: `same-copy=true; bytes=2; headers=2; eom=${"E".charCodeAt(0)}`,
      },
    ]);
  });

  it("--check works from another directory", async () => {
    const r = await runBinary(["serve", join(dir, "my_filter.ts"), "--check"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^filter: outside$/m);
  });
});

describe("milterkit serve without a script logs every event decoded", () => {
  let serve: ServeProcess | undefined;
  before(async () => {
    serve = await startServe(undefined);
  });
  after(async () => {
    await serve?.stop();
  });

  it("logs MAIL, RCPT (with ESMTP args) and header values, and accepts", async () => {
    const r = await runBinary([
      "send",
      "-c",
      serve!.spec,
      "examples/messages/plain.eml",
      "--from",
      "alice@example.test SIZE=123",
      "--rcpt",
      "bob@example.test NOTIFY=NEVER",
      "--rcpt",
      "carol@example.test",
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).transactions[0].delivered, true);
    const deadline = Date.now() + 5000;
    while (!serve!.events().some((e) => e.event === "close") && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 20));
    }
    const ev = serve!.events();
    const of = (name: string) => ev.filter((e) => e.event === name);
    assert.equal(of("connect")[0]?.address, "127.0.0.1");
    assert.equal(of("helo")[0]?.name, "client.example.test");
    assert.equal(of("envfrom")[0]?.from, "<alice@example.test>");
    assert.deepEqual(of("envfrom")[0]?.args, ["SIZE=123"]);
    assert.deepEqual(of("envrcpt").map((e) => [e.to, e.args]), [
      ["<bob@example.test>", ["NOTIFY=NEVER"]],
      ["<carol@example.test>", undefined],
    ]);
    assert.deepEqual(of("header").map((e) => `${e.name}: ${e.value}`), [
      "From: Alice <alice@example.test>",
      "To: bob@example.test",
      "Subject: Lunch on Friday?",
      "Message-Id: <lunch-1@example.test>",
      "Date: Sat, 21 Nov 2026 10:00:00 +0000",
    ]);
    const eom = of("eom")[0];
    assert.deepEqual(eom?.to, ["<bob@example.test>", "<carol@example.test>"]);
    assert.equal(typeof eom?.bodyBytes, "number");
  });

  it("stops on SIGTERM with exit 0 and logs that it stopped", async () => {
    const code = await serve!.stop("SIGTERM");
    assert.equal(code, 0);
    assert.ok(serve!.events().some((e) => e.event === "stopped"), serve!.stderr());
  });
});
