/**
 * `milterkit init [DIR]`: writes a filter project to start from: the filter, its test, the
 * configuration that type-checks them as the binary runs them, a Postfix snippet and a hardened
 * systemd unit.
 *
 * @module
 */

import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { VERSION } from "./version.ts";
import { type CliIo, EXIT, type Subcommand, UsageError } from "./types.ts";

const USAGE = `Usage: milterkit init [DIR] [options]

Write a filter project into DIR (default: the current directory, created when
missing): filter.ts, filter_test.ts, package.json, tsconfig.json and deno.json
(type-checking the filter as the binary runs it), postfix-main.cf (the lines for
Postfix's main.cf) and NAME.service (a hardened systemd unit serving the filter on
a Unix socket Postfix may use). Existing files are never overwritten.

Options:
      --name NAME      the filter's name, unit and socket directory (default: DIR's name)
      --binary PATH    the milterkit binary the unit runs (default /usr/local/bin/milterkit)
      --dir PATH       where the unit expects the project (default /etc/milterkit/NAME)
  -h, --help           show this help

Then:
  cd DIR && npm install        # the toolkit and its types, for tests, editors, deno check
  bun test                     # or: deno test -A, or with only the binary:
                               #     BUN_BE_BUN=1 milterkit test
  milterkit serve filter.ts    # try it; milterkit send -c inet:8890@127.0.0.1 message.eml
`;

/** The files of a new project, by name. */
export function scaffold(name: string, binary: string, dir: string): Record<string, string> {
  const socketDir = `/run/milterkit-${name}`;
  return {
    "filter.ts": `import { defineFilter } from "milterkit";

/**
 * ${name}: refuses recipients of a retired domain, and tags messages whose Subject is
 * all capitals. Served by \`milterkit serve filter.ts\`; tested by filter_test.ts.
 */
export default defineFilter({
  name: ${JSON.stringify(name)},
  actions: ["addHeader"],
  envrcpt(rcpt) {
    if (rcpt.address.toLowerCase().endsWith("@retired.example")) {
      return { code: 550, enhanced: "5.1.1", text: "This domain no longer receives mail" };
    }
  },
  eom(ctx) {
    const subject = ctx.header("Subject") ?? "";
    if (/[A-Z]{4}/.test(subject) && subject === subject.toUpperCase()) {
      ctx.addHeader("X-Shouting", "yes");
    }
  },
});
`,
    "filter_test.ts": `import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { testFilter } from "milterkit/testing";
import filter from "./filter.ts";

// testFilter runs a message through the filter in process, with the MTA engine acting as
// Postfix would: no sockets, no MTA to install.
describe(${JSON.stringify(name)}, () => {
  it("tags a shouting subject", async () => {
    const r = await testFilter(filter, { message: "Subject: FREE MONEY INSIDE\\n\\nhello\\n" });
    assert.equal(r.delivered, true);
    assert.equal(r.header("X-Shouting"), "yes");
  });

  it("leaves a quiet subject alone", async () => {
    const r = await testFilter(filter, { message: "Subject: Lunch tomorrow?\\n\\nhello\\n" });
    assert.equal(r.delivered, true);
    assert.deepEqual(r.modifications, []);
  });

  it("refuses recipients of the retired domain, keeps the others", async () => {
    const r = await testFilter(filter, {
      message: "Subject: hi\\n\\nhello\\n",
      rcpts: ["old@retired.example", "bob@example.org"],
    });
    assert.equal(r.delivered, true);
    assert.match(r.at("envrcpt", "<old@retired.example>")?.reply ?? "", /^550 5\\.1\\.1 /);
    assert.deepEqual(r.envelope?.recipients.map((x) => x.recipient), ["<bob@example.org>"]);
  });
});
`,
    "package.json": JSON.stringify(
      {
        name,
        private: true,
        type: "module",
        scripts: { test: "bun test", check: "deno check filter.ts filter_test.ts" },
        devDependencies: { milterkit: `^${VERSION}`, "@types/node": "^24.0.0" },
      },
      null,
      2,
    ) + "\n",
    "tsconfig.json": JSON.stringify(
      {
        compilerOptions: {
          target: "ES2022",
          module: "ESNext",
          moduleResolution: "bundler",
          lib: ["ES2022", "DOM"],
          strict: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          verbatimModuleSyntax: true,
          skipLibCheck: true,
        },
        include: ["*.ts"],
      },
      null,
      2,
    ) + "\n",
    "deno.json": JSON.stringify(
      { nodeModulesDir: "manual", compilerOptions: { strict: true } },
      null,
      2,
    ) + "\n",
    "postfix-main.cf":
      `# Lines for /etc/postfix/main.cf (then: postfix reload). The filter listens on a Unix
# socket in ${socketDir}/, group postfix, mode 0660 (see ${name}.service).
smtpd_milters = unix:${socketDir}/milter.sock
non_smtpd_milters = $smtpd_milters
# When the filter is down: tempfail (mail waits in the client's queue) or accept.
milter_default_action = tempfail
milter_protocol = 6
milter_connect_timeout = 10s
milter_content_timeout = 300s
#
# A chrooted smtpd (Debian's default: "y" in the chroot column of master.cf) resolves paths
# inside /var/spool/postfix and cannot see ${socketDir}. Either set that column to "n"
# for smtpd, or serve on loopback TCP instead (ExecStart ... --listen inet:8890@127.0.0.1):
#   smtpd_milters = inet:127.0.0.1:8890
`,
    [`${name}.service`]: `# systemd unit for the ${name} milter. Install:
#   sudo install -D -m 644 filter.ts ${dir}/filter.ts        (and its local modules, node_modules)
#   sudo install -m 644 ${name}.service /etc/systemd/system/
#   sudo systemctl daemon-reload && sudo systemctl enable --now ${name}
# Reload after editing the filter: sudo systemctl reload ${name}  (SIGHUP; open sessions finish
# on the old version). Logs: journalctl -u ${name}
[Unit]
Description=milterkit filter ${name}
Documentation=https://www.npmjs.com/package/milterkit
After=network.target
Before=postfix.service

[Service]
Type=simple
ExecStart=${binary} serve ${dir}/filter.ts --listen unix:${socketDir}/milter.sock --unix-mode 660 --log-format json
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
# A throw-away user; its primary group is postfix, so the socket is group postfix, mode 0660.
DynamicUser=yes
Group=postfix
RuntimeDirectory=milterkit-${name}
RuntimeDirectoryMode=0750
UMask=0007
WorkingDirectory=${dir}
# Hardening: read-only system, no home, no devices, no privileges, sockets and network only.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
# The JavaScript engine compiles code at run time: MemoryDenyWriteExecute= must stay off.

[Install]
WantedBy=multi-user.target
`,
  };
}

/** `milterkit init`. */
export const initCommand: Subcommand = {
  name: "init",
  summary: "write a filter project: filter, test, type-check config, Postfix and systemd",
  usage: USAGE,
  run(args: string[], io: CliIo): Promise<number> {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        name: { type: "string" },
        binary: { type: "string", default: "/usr/local/bin/milterkit" },
        dir: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      io.stdout(USAGE);
      return Promise.resolve(EXIT.OK);
    }
    if (positionals.length > 1) {
      throw new UsageError(`expected at most one DIR, got ${positionals.length}`);
    }
    const target = resolve(positionals[0] ?? ".");
    const name = values.name ?? basename(target).toLowerCase().replace(/[^a-z0-9_-]+/g, "-");
    if (!/^[a-z0-9][a-z0-9_-]*$/.test(name)) {
      throw new UsageError(
        `--name must be letters, digits, - and _ (it names the unit and socket), got ${
          JSON.stringify(name)
        }`,
      );
    }
    const files = scaffold(name, values.binary!, values.dir ?? `/etc/milterkit/${name}`);
    const clash = Object.keys(files).filter((f) => existsSync(join(target, f)));
    if (clash.length > 0) {
      io.stderr(
        `milterkit init: ${target} already has ${clash.join(", ")}; nothing written\n`,
      );
      return Promise.resolve(EXIT.FAILURE);
    }
    mkdirSync(target, { recursive: true });
    for (const [file, text] of Object.entries(files)) writeFileSync(join(target, file), text);
    io.stdout(
      `wrote ${Object.keys(files).join(", ")} into ${target}\n\nnext:\n` +
        `  cd ${positionals[0] ?? "."} && npm install   # types for editors, tsc, deno check\n` +
        `  bun test                    # or: deno test -A\n` +
        `  milterkit serve filter.ts   # then: milterkit send -c inet:8890@127.0.0.1 message.eml\n`,
    );
    return Promise.resolve(EXIT.OK);
  },
};
