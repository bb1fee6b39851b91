import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { COMMANDS } from "../cli.ts";
import { defineFilter } from "../lib/filter/filter.ts";
import { listen } from "../lib/server/server.ts";
import { formatSocketSpec } from "../lib/server/socket_spec.ts";
import { main } from "../lib/cli/main.ts";
import { VERSION } from "../lib/cli/version.ts";
import { fakeIo } from "./helpers/fake_io.ts";

const MESSAGE = "Subject: hi\r\nTo: bob@example.test\r\n\r\nbody\r\n";

/** Runs `milterkit send ARGS --json` against `filter` served on loopback. */
async function sendThrough(
  filter: Parameters<typeof listen>[1],
  args: string[],
  options: Parameters<typeof listen>[2] = {},
) {
  const server = await listen("inet:0@127.0.0.1", filter, options);
  const io = fakeIo(MESSAGE);
  const spec = formatSocketSpec(server.address);
  const code = await main(["send", "-c", spec, ...args, "--json"], io, COMMANDS);
  const connections = server.metrics.connections;
  await server.stop({ graceMs: 0 });
  return { code, io, connections, r: JSON.parse(io.out() || "null") };
}

describe("milterkit command line", () => {
  it("prints the overview with every subcommand for --help, and exits 2 without arguments", async () => {
    const io = fakeIo();
    assert.equal(await main(["--help"], io, COMMANDS), 0);
    for (const c of ["serve", "send", "proxy", "dump"]) {
      assert.match(io.out(), new RegExp(`\\n  ${c} `));
    }
    assert.equal(await main([], fakeIo(), COMMANDS), 2);
  });

  it("prints the version, equal to deno.json's and package.json's", async () => {
    const io = fakeIo();
    assert.equal(await main(["--version"], io, COMMANDS), 0);
    assert.equal(io.out(), `milterkit ${VERSION}\n`);
    const deno = JSON.parse(readFileSync(new URL("../deno.json", import.meta.url), "utf8"));
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
    assert.equal(deno.version, VERSION);
    assert.equal(pkg.version, VERSION);
  });

  for (const name of ["serve", "send", "proxy", "dump", "bench"]) {
    it(`shows the usage of ${name} for "help ${name}" and "${name} --help"`, async () => {
      const a = fakeIo();
      const b = fakeIo();
      assert.equal(await main(["help", name], a, COMMANDS), 0);
      assert.equal(await main([name, "--help"], b, COMMANDS), 0);
      assert.match(a.out(), new RegExp(`^Usage: milterkit ${name}`));
      assert.equal(a.out(), b.out());
      assert.match(a.out(), /Examples?:/);
    });
  }

  it("exits 2 with the usage for an unknown option or command", async () => {
    const io = fakeIo();
    assert.equal(await main(["serve", "--no-such-option"], io, COMMANDS), 2);
    assert.match(io.err(), /milterkit serve: .*no-such-option/);
    assert.match(io.err(), /Usage: milterkit serve/);
    const io2 = fakeIo();
    assert.equal(await main(["frobnicate"], io2, COMMANDS), 2);
    assert.match(io2.err(), /unknown command "frobnicate"/);
  });

  it("exits 2 when send has no --connect, and for a bad --fallback", async () => {
    const io = fakeIo();
    assert.equal(await main(["send"], io, COMMANDS), 2);
    assert.match(io.err(), /--connect SPEC is required/);
    const io2 = fakeIo();
    assert.equal(await main(["serve", "--fallback", "maybe", "--check"], io2, COMMANDS), 2);
    assert.match(io2.err(), /--fallback must be/);
  });

  it("serve --check loads a script and prints what it negotiates", async () => {
    const io = fakeIo();
    assert.equal(await main(["serve", "examples/tag_suspicious.ts", "--check"], io, COMMANDS), 0);
    const out = io.out();
    assert.match(out, /^filter: tag-suspicious$/m);
    assert.match(out, /^actions: ADDHDRS CHGHDRS$/m);
    assert.match(out, /^events received without reply: connect helo envfrom envrcpt header$/m);
    assert.match(out, /^events switched off: data eoh body unknown$/m);
  });

  it("serve --check names a script that does not export a filter, exit 1", async () => {
    const io = fakeIo();
    assert.equal(await main(["serve", "tests/helpers/fake_io.ts", "--check"], io, COMMANDS), 1);
    assert.match(io.err(), /^milterkit serve: .*must export a filter object/);
    assert.doesNotMatch(io.err(), /ScriptError/);
  });

  it("serve --check of a script that throws a value that is not an Error: that value, no code frame", async () => {
    const dir = mkdtempSync(join(tmpdir(), "milterkit-throws-"));
    try {
      const cases: Array<[string, string]> = [["throw 42;", "42"], [
        "throw Object.create(null);",
        "{}",
      ]];
      for (const [body, said] of cases) {
        const script = join(dir, `t${body.length}.ts`);
        writeFileSync(script, `${body}\nexport default {};\n`);
        const io = fakeIo();
        assert.equal(await main(["serve", script, "--check"], io, COMMANDS), 1);
        // Before: an Error made in the loader pointed into the toolkit's own source, shown as
        // the script's position with a code frame of that source.
        assert.equal(io.err(), `milterkit serve: ${script}: the script threw ${said}\n`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("serve --check explains the body limits of a script written for the old bufferBody object", async () => {
    const dir = mkdtempSync(join(tmpdir(), "milterkit-script-"));
    try {
      const old = join(dir, "old.js");
      writeFileSync(old, "export default { bufferBody: { maxBytes: 5 }, eom() {} };\n");
      const io = fakeIo();
      assert.equal(await main(["serve", old, "--check"], io, COMMANDS), 1);
      assert.match(
        io.err(),
        /^milterkit serve: .*old\.js: bufferBody must be true or false; its limits are maxBodyBytes and onBodyLimit$/m,
      );
      const loose = join(dir, "loose.js");
      writeFileSync(loose, "export default { maxBodyBytes: 5, eom() {} };\n");
      const io2 = fakeIo();
      assert.equal(await main(["serve", loose, "--check"], io2, COMMANDS), 1);
      assert.match(io2.err(), /maxBodyBytes and onBodyLimit need bufferBody: true/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("dump decodes a capture given as a byte-stream pair", async () => {
    const io = fakeIo();
    const code = await main(
      ["dump", "tests/data/captures/postfix-libmilter/pcap.s1.to-filter.bin"],
      io,
      COMMANDS,
    );
    assert.equal(code, 0);
    assert.match(io.out(), /550 5\.7\.1 Message rejected by libmilter testfilter \(REJECTME\)/);
  });

  it("bench loads a filter and reports messages/s, verdicts and per-stage latency", async () => {
    let n = 0;
    const server = await listen(
      "inet:0@127.0.0.1",
      defineFilter({ envrcpt: () => undefined, eom: () => (++n % 2 ? "accept" : "reject") }),
    );
    const io = fakeIo();
    const code = await main(
      ["bench", "-c", formatSocketSpec(server.address), "-n", "3", "--total", "30", "--json"],
      io,
      COMMANDS,
    );
    await server.stop({ graceMs: 1000 });
    assert.equal(code, 0, io.err());
    const r = JSON.parse(io.out());
    assert.equal(r.messages, 30);
    assert.equal(r.verdicts.accept + r.verdicts.reject, 30);
    assert.equal(r.verdicts.reject, 15);
    assert.equal(r.stages.envrcpt.count, 30);
    assert.equal(r.stages.eom.count, 30);
    assert.ok(r.messagesPerSecond > 0);
    assert.ok(r.message.p50 <= r.message.p99);
  });

  it("send --count 2 --quit-nc runs two SMTP sessions on one filter connection", async () => {
    const connects: string[] = [];
    const { code, io, connections, r } = await sendThrough(
      defineFilter({
        actions: ["addHeader"],
        connect: (info) => void connects.push(info.hostname),
        eom: (ctx) => ctx.addHeader("X-Message", String(ctx.messageNumber)),
      }),
      ["--count", "2", "--quit-nc", "-"],
    );
    assert.equal(code, 0, io.err());
    assert.equal(r.transactions.length, 2);
    assert.equal(connections, 1, "one socket");
    assert.deepEqual(connects, ["[127.0.0.1]", "[127.0.0.1]"], "CONNECT again after QUIT_NC");
    // Message numbers restart with the new SMTP session on the same socket.
    for (const t of r.transactions) {
      assert.deepEqual(t.modifications, [{ type: "addheader", name: "X-Message", value: "1" }]);
    }
  });

  it("send --quit-nc after an accepted message opens a new connection instead of QUIT_NC", async () => {
    const seen: string[] = [];
    const { code, io, connections, r } = await sendThrough(
      defineFilter({
        connect: () => void seen.push("connect"),
        eom: () => "accept",
        close: () => void seen.push("close"),
      }),
      ["--count", "2", "--quit-nc"],
    );
    assert.equal(code, 0, io.err());
    assert.equal(r.transactions.length, 2);
    assert.equal(r.transactions[0].session, undefined);
    assert.deepEqual(r.transactions[1].session, { how: "reconnect", after: "accept at eom" });
    assert.equal(connections, 2, "a second socket, as libmilter would ignore QUIT_NC here");
    assert.deepEqual(seen, ["connect", "close", "connect", "close"]);
  });

  it("send keeps the finished transactions when a later one fails: JSON printed, exit 1", async () => {
    let n = 0;
    const { code, io, r } = await sendThrough(
      defineFilter({
        actions: ["addHeader"],
        // The second message's MAIL never gets an answer.
        envfrom: () => ++n === 1 ? undefined : new Promise<void>(() => {}),
        eom: (ctx) => ctx.addHeader("X-N", "1"),
      }),
      ["--count", "3", "--timeout", "300"],
      { handlerTimeoutMs: 60_000 },
    );
    assert.equal(code, 1);
    assert.equal(r.transactions.length, 1, "the finished transaction is kept");
    assert.deepEqual(r.transactions[0].modifications, [
      { type: "addheader", name: "X-N", value: "1" },
    ]);
    assert.match(r.error, /300 ms/);
    assert.match(io.err(), /^milterkit send: .*300 ms/);
    assert.doesNotMatch(io.err(), /Error:/);
  });
});
