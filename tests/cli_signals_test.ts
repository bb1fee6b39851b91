/**
 * SIGINT and SIGTERM end `dump` and `send` while they wait on something that never comes (a
 * FIFO whose writer never writes, a filter that never answers): one line, exit 128 + the
 * signal's number. Before, the first signal was taken by a handler nobody acted on and the
 * process kept waiting. Real child processes, a real FIFO and a real TCP socket.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Child, killChildren, spawnCli, waitFor } from "./helpers/server_kit.ts";

const children: Child[] = [];
const dir = mkdtempSync(join(tmpdir(), "milterkit-signals-"));
after(() => {
  killChildren(children);
  rmSync(dir, { recursive: true, force: true });
});

/** Asserts the child stops on `signal` with one line and 128 + its number. */
async function stopsOn(child: Child, signal: "SIGINT" | "SIGTERM", command: string) {
  child.proc.kill(signal);
  const exit = await child.exited;
  // Deno's child_process reports an exit status of 128 + N as signal N.
  const code = exit.code ?? (exit.signal === signal ? 128 + (signal === "SIGINT" ? 2 : 15) : null);
  assert.equal(code, signal === "SIGINT" ? 130 : 143, child.stderr);
  assert.equal(child.stderr, `milterkit ${command}: stopped by ${signal}\n`);
}

describe("signals end commands that wait", () => {
  it("dump of a FIFO whose writer never writes stops on SIGINT", async () => {
    const fifo = join(dir, "fifo");
    assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
    const child = spawnCli(["dump", fifo]);
    children.push(child);
    // A non-blocking open for writing succeeds once the reader is in open(): dump is waiting.
    let fd = -1;
    await waitFor(() => {
      try {
        fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
        return true;
      } catch {
        return false;
      }
    }, "dump to open the FIFO");
    try {
      await stopsOn(child, "SIGINT", "dump");
    } finally {
      closeSync(fd);
    }
  });

  it("send to a filter that never answers stops on SIGTERM, long before --timeout", async () => {
    const held: Socket[] = [];
    const server = createServer((s) => void held.push(s));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const message = join(dir, "m.eml");
    writeFileSync(message, "Subject: hi\r\n\r\nhello\r\n");
    try {
      const child = spawnCli([
        "send",
        "-c",
        `inet:${port}@127.0.0.1`,
        "--rcpt",
        "bob@example.test",
        "--timeout",
        "60000",
        message,
      ]);
      children.push(child);
      await waitFor(() => held.length > 0, "send to connect");
      await stopsOn(child, "SIGTERM", "send");
    } finally {
      for (const s of held) s.destroy();
      server.close();
    }
  });
});
