// deno-lint-ignore-file no-console
/**
 * `npm run demo`: what milterkit does, in one go, as a user would run it.
 *  1. `milterkit serve examples/tag_suspicious.ts` on a free loopback port;
 *  2. `milterkit send` a phishing-looking message through it (envelope sender from a bulk
 *     mailer, From header from "PayPal"), acting as Postfix: verdicts, modifications, diff;
 *  3. the same for a plain message, which passes unchanged;
 *  4. stop the server (SIGTERM, graceful).
 */
import { spawn, spawnSync } from "node:child_process";
import { connect, createServer } from "node:net";
import process from "node:process";

const bun = process.execPath;
const port = await new Promise<number>((resolve) => {
  const s = createServer().listen(0, "127.0.0.1", () => {
    const p = (s.address() as { port: number }).port;
    s.close(() => resolve(p));
  });
});
const spec = `inet:${port}@127.0.0.1`;
// Bold commands on a terminal only: a pipe or NO_COLOR gets plain text (so do the children,
// whose output is a pipe or the same terminal).
const bold = process.stdout.isTTY && (process.env.NO_COLOR ?? "") === "" &&
  process.env.TERM !== "dumb";
const say = (s: string) => console.log(bold ? `\n\x1b[1m$ ${s}\x1b[0m` : `\n$ ${s}`);

say(`milterkit serve examples/tag_suspicious.ts --listen ${spec}`);
const server = spawn(bun, [
  "cli.ts",
  "serve",
  "examples/tag_suspicious.ts",
  "--listen",
  spec,
  "--log-format",
  "text",
], {
  stdio: ["ignore", "inherit", "inherit"],
});
for (let i = 0; i < 100; i++) {
  const up = await new Promise<boolean>((resolve) => {
    const c = connect(port, "127.0.0.1");
    c.once("connect", () => (c.destroy(), resolve(true)));
    c.once("error", () => resolve(false));
  });
  if (up) break;
  await new Promise((r) => setTimeout(r, 50));
}

const send = (args: string[]) => {
  say(`milterkit send ${args.join(" ")}`);
  const r = spawnSync(bun, ["cli.ts", "send", ...args], { stdio: "inherit" });
  console.log(`(exit status ${r.status})`);
};
send(["--connect", spec, "--from", "bulk@mailer.example", "examples/messages/suspicious.eml"]);
send(["--connect", spec, "examples/messages/plain.eml"]);

say("kill -TERM <server>   # graceful stop");
server.kill("SIGTERM");
await new Promise((r) => server.once("exit", r));
console.log(
  "\nNext: point Postfix at it (smtpd_milters = inet:127.0.0.1:8890) with\n" +
    "  npm start -- serve examples/tag_suspicious.ts\n" +
    "or build the binary: npm run build && ./dist/milterkit --help",
);
