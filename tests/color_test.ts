/**
 * Colour: one rule for every subcommand (a terminal, no NO_COLOR, no --no-color; --color
 * always/never), one palette for verdicts wherever they are shown (serve's log, dump, send,
 * bench, proxy use the same colours), and `npm run demo` prints no escape codes into a pipe.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { join } from "node:path";
import { COMMANDS } from "../cli.ts";
import { defineFilter } from "../lib/filter/filter.ts";
import { createLogger } from "../lib/server/log.ts";
import { listen } from "../lib/server/server.ts";
import { formatSocketSpec } from "../lib/server/socket_spec.ts";
import { main } from "../lib/cli/main.ts";
import { wantColor } from "../lib/cli/color.ts";
import { ANSI, paint, verdictColor } from "../lib/server/colors.ts";
import { fakeIo } from "./helpers/fake_io.ts";
import { ROOT } from "./helpers/server_kit.ts";

const ESC = String.fromCharCode(27);
const capture = new URL("./data/captures/postfix-libmilter.pcap", import.meta.url).pathname;

/** A fake terminal with the given environment. */
function tty(env: Record<string, string> = {}, stdin = "") {
  return { ...fakeIo(stdin), isTty: true, errIsTty: true, env };
}

describe("colour", () => {
  it("one rule: a terminal, unless NO_COLOR, TERM=dumb, --no-color or --color never", () => {
    const on = { isTty: true, env: {} };
    assert.equal(wantColor(on, {}), true);
    assert.equal(wantColor({ isTty: false, env: {} }, {}), false);
    assert.equal(wantColor({ isTty: true, env: { NO_COLOR: "1" } }, {}), false);
    assert.equal(wantColor({ isTty: true, env: { NO_COLOR: "" } }, {}), true, "empty is unset");
    assert.equal(wantColor({ isTty: true, env: { TERM: "dumb" } }, {}), false);
    assert.equal(wantColor(on, { "no-color": true }), false);
    assert.equal(wantColor(on, { color: "never" }), false);
    assert.equal(wantColor({ isTty: false, env: { NO_COLOR: "1" } }, { color: "always" }), true);
    assert.equal(wantColor(on, {}, false), false, "the stream coloured decides");
    assert.throws(() => wantColor(on, { color: "pink" }), /--color must be auto, always or never/);
  });

  it("one palette: accepted green, rejected red, tempfail yellow, discarded magenta", () => {
    assert.deepEqual(
      ["accept", "continue", "reject", "tempfail", "discard", "aborted"].map(verdictColor),
      ["green", "green", "red", "yellow", "magenta", "dim"],
    );
    const lines: string[] = [];
    const log = createLogger({ format: "text", color: true, sink: (l) => lines.push(l) });
    for (const v of ["continue", "reject", "tempfail", "discard"]) {
      log.info("message", { verdict: v });
    }
    assert.deepEqual(
      lines.map((l) => l.slice(l.indexOf("verdict="))),
      [
        `verdict=${ESC}[${ANSI.green}mcontinue${ESC}[0m`,
        `verdict=${ESC}[${ANSI.red}mreject${ESC}[0m`,
        `verdict=${ESC}[${ANSI.yellow}mtempfail${ESC}[0m`,
        `verdict=${ESC}[${ANSI.magenta}mdiscard${ESC}[0m`,
      ],
    );
  });

  it("dump: the palette on a terminal; none with NO_COLOR or --no-color", async () => {
    const term = tty();
    assert.equal(await main(["dump", capture], term, COMMANDS), 0);
    assert.ok(term.out().includes(`${ESC}[${ANSI.green}mACCEPT`), term.out());
    for (const [args, env] of [[[], { NO_COLOR: "1" }], [["--no-color"], {}]] as const) {
      const io = tty(env);
      assert.equal(await main(["dump", capture, ...args], io, COMMANDS), 0);
      assert.ok(!io.out().includes(ESC), `escape codes with ${JSON.stringify([args, env])}`);
    }
  });

  it("send and bench: verdicts in the palette on a terminal, plain with NO_COLOR", async () => {
    const server = await listen("inet:0@127.0.0.1", defineFilter({ eom: () => "reject" }));
    const spec = formatSocketSpec(server.address);
    const msg = "To: bob@example.test\r\nSubject: x\r\n\r\nhi\r\n";
    try {
      const term = tty({}, msg);
      assert.equal(await main(["send", "-c", spec], term, COMMANDS), 1);
      assert.match(term.out(), new RegExp(`^verdict: ${ESC}\\[31mreject${ESC}\\[0m at eom`, "m"));
      const plain = tty({ NO_COLOR: "1" }, msg);
      assert.equal(await main(["send", "-c", spec], plain, COMMANDS), 1);
      assert.match(plain.out(), /^verdict: reject at eom/m);
      assert.ok(!plain.out().includes(ESC));

      const bench = tty();
      assert.equal(await main(["bench", "-c", spec, "--total", "3"], bench, COMMANDS), 0);
      assert.ok(bench.out().includes(`${paint("red", "reject")} `), bench.out());
      const noColor = tty();
      assert.equal(
        await main(["bench", "-c", spec, "--total", "3", "--no-color"], noColor, COMMANDS),
        0,
      );
      assert.match(noColor.out(), /verdicts: reject \d+/);
      assert.ok(!noColor.out().includes(ESC));
    } finally {
      await server.stop({ graceMs: 0 });
    }
  });

  it("npm run demo prints no escape codes into a pipe", { timeout: 60_000 }, () => {
    const env: Record<string, string | undefined> = { ...process.env };
    delete env.NO_COLOR;
    const r = spawnSync(join(ROOT, "node_modules", ".bin", "bun"), ["scripts/demo.ts"], {
      cwd: ROOT,
      env,
      encoding: "utf8",
      timeout: 50_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\$ milterkit send /m);
    assert.ok(!r.stdout.includes(ESC) && !r.stderr.includes(ESC), r.stdout + r.stderr);
  });
});
