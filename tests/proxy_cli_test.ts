/**
 * `milterkit proxy` as a child process (run from source) in front of an in-process milterkit
 * filter server, driven by milterkit's MTA engine or a raw node:net MTA: rotation by size, a
 * SIGKILL that loses at most the line being written, and a graceful stop on SIGTERM.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect as netConnect, type Socket } from "node:net";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { defineFilter } from "../lib/filter/filter.ts";
import { readRecording } from "../lib/inspect/recording_read.ts";
import { connect as connectSocket } from "../lib/server/net.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { encodeCommand } from "../lib/wire/command_codec.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply } from "../lib/wire/reply_codec.ts";
import type { Reply } from "../lib/wire/types.ts";
import { dumpCommand } from "../lib/cli/dump.ts";
import type { Command } from "../lib/wire/types.ts";
import { fakeIo } from "./helpers/fake_io.ts";
import {
  type ProxyChild,
  startProxy,
  stoppedCleanly,
  terminate,
  transactionThrough,
} from "./helpers/proxy_child.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const TIMEOUT = { timeout: 60_000 };
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const filter = defineFilter({
  actions: ["addHeader"],
  eom: (ctx) => ctx.addHeader("X-Proxied", "yes"),
});

const transaction = (port: number, n: number) => transactionThrough(port, n);

/** A raw MTA over node:net that knows every byte it sent and received. */
class RawMta {
  readonly sent: Uint8Array[] = [];
  readonly received: Uint8Array[] = [];
  readonly replies: Reply[] = [];
  readonly #sock: Socket;
  readonly #dec = new FrameDecoder();
  private constructor(sock: Socket) {
    this.#sock = sock;
    sock.on("data", (d: Uint8Array) => {
      this.received.push(new Uint8Array(d));
      for (const f of this.#dec.push(new Uint8Array(d))) this.replies.push(decodeReply(f));
    });
    sock.on("error", () => {});
  }
  static async open(port: number): Promise<RawMta> {
    const sock = netConnect({ port, host: "127.0.0.1" });
    await new Promise<void>((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    return new RawMta(sock);
  }
  /** Sends commands and waits until `replies` more replies came. */
  async ask(commands: Command[], replies: number): Promise<Reply[]> {
    const want = this.replies.length + replies;
    for (const c of commands) {
      const b = encodeCommand(c);
      this.sent.push(b);
      this.#sock.write(b);
    }
    const deadline = Date.now() + 10_000;
    while (this.replies.length < want) {
      if (Date.now() > deadline) throw new Error("No reply through the proxy");
      await sleep(5);
    }
    return this.replies.slice(want - replies);
  }
  end(): void {
    this.#sock.end();
  }
  destroy(): void {
    this.#sock.destroy();
  }
}

async function dump(...args: string[]) {
  const io = fakeIo();
  const code = await dumpCommand.run([...args, "--json"], io);
  return { code, sessions: io.out().trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) };
}

describe("milterkit proxy (child process) in front of a milterkit filter", () => {
  let server: MilterServer;
  let upstream: string;
  let dir: string;
  const started: ProxyChild[] = [];
  const proxy = async (args: string[]) => {
    const p = await startProxy(["-u", upstream, ...args]);
    started.push(p);
    return p;
  };

  before(async () => {
    server = await listen("inet:0@127.0.0.1", filter);
    upstream = `inet:${(server.address as { port: number }).port}@127.0.0.1`;
    dir = mkdtempSync(`${tmpdir()}/milterkit-proxy-cli-`);
  });

  after(async () => {
    for (const p of started) await p.stop();
    await server?.stop({ graceMs: 500 });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(
    "rotates the recording by size: every file starts with the header and dumps",
    TIMEOUT,
    async () => {
      const file = `${dir}/rot.jsonl`;
      const p = await proxy(["-r", file, "--rotate-size", "3000", "--rotate-keep", "3", "--quiet"]);
      for (let n = 0; n < 8; n++) assert.equal(await transaction(p.port, n), "continue");
      assert.ok(await terminate(p), p.stderr());
      const files = readdirSync(dir).filter((f) => f.startsWith("rot.jsonl")).sort();
      assert.deepEqual(files, ["rot.jsonl", "rot.jsonl.1", "rot.jsonl.2", "rot.jsonl.3"]);
      let senders: string[] = [];
      for (const f of files) {
        const text = readFileSync(`${dir}/${f}`, "utf8");
        const [first] = text.split("\n");
        assert.equal(JSON.parse(first!).format, "milterkit-recording", f);
        // Every rotated file is past the limit by at most one line, the current one may be smaller.
        if (f !== "rot.jsonl") assert.ok(text.length > 3000, `${f} is ${text.length} bytes`);
        const d = await dump(`${dir}/${f}`);
        assert.equal(d.code, 0, f);
        senders = senders.concat(
          d.sessions.flatMap((s: { messages: { sender?: string }[] }) =>
            s.messages.map((m) => m.sender ?? "")
          ),
        );
      }
      // The oldest files were dropped (keep 3), so the last messages are all there.
      assert.ok(senders.includes("<sender7@example.test>"), senders.join(","));
      assert.ok(!existsSync(`${file}.4`));
    },
  );

  it("loses at most the last line when killed with SIGKILL", TIMEOUT, async () => {
    const file = `${dir}/kill.jsonl`;
    const p = await proxy(["-r", file, "--quiet"]);
    for (let n = 0; n < 3; n++) assert.equal(await transaction(p.port, n), "continue");
    // A session in flight: everything the MTA sent was answered, so the proxy read (and
    // recorded) all of it; everything the MTA received went through the proxy's recorder first.
    const mta = await RawMta.open(p.port);
    await mta.ask([{ type: "optneg", version: 6, actions: 0x1ff, protocol: 0 }], 1);
    await mta.ask([{ type: "connect", hostname: "h", family: "unknown" }], 1);
    const [r] = await mta.ask([{ type: "mail", sender: "<inflight@example.test>", args: [] }], 1);
    assert.deepEqual(r, { type: "continue" });
    p.kill("SIGKILL");
    await p.exited;
    mta.destroy();
    const text = readFileSync(file, "utf8");
    const lines = text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    for (const [i, l] of lines.slice(0, -1).entries()) {
      assert.doesNotThrow(() => JSON.parse(l), `line ${i + 1} is complete`);
    }
    const rec = readRecording(text);
    assert.equal(rec.sessions.length, 4);
    const last = rec.sessions.at(-1)!;
    assert.equal(last.endReason, undefined);
    assert.deepEqual(last.toFilter, concatBytes(mta.sent));
    assert.deepEqual(last.toMta, concatBytes(mta.received));
    const d = await dump(file);
    assert.equal(d.code, 0);
    assert.equal(d.sessions.length, 4);
    assert.equal(d.sessions[3].messages[0].sender, "<inflight@example.test>");
    assert.ok(
      d.sessions[3].notes.includes("The recording stops before this session ended"),
      JSON.stringify(d.sessions[3].notes),
    );
  });

  it("on SIGTERM stops accepting, lets the open session finish, then exits", TIMEOUT, async () => {
    const file = `${dir}/term.jsonl`;
    const p = await proxy(["-r", file, "--quiet"]);
    const mta = await RawMta.open(p.port);
    await mta.ask([{ type: "optneg", version: 6, actions: 0x1ff, protocol: 0 }], 1);
    await mta.ask([{ type: "connect", hostname: "h", family: "unknown" }], 1);
    p.kill("SIGTERM");
    const deadline = Date.now() + 10_000;
    while (!/stopping: waiting for open sessions/.test(p.stderr())) {
      if (Date.now() > deadline) assert.fail(p.stderr());
      await sleep(10);
    }
    await assert.rejects(connectSocket(`inet:${p.port}@127.0.0.1`), "no new connections");
    const replies = await mta.ask([
      { type: "mail", sender: "<late@example.test>", args: [] },
      { type: "rcpt", recipient: "<r@example.test>", args: [] },
      { type: "eom" },
    ], 4);
    assert.deepEqual(replies.map((x) => x.type), ["continue", "continue", "addheader", "continue"]);
    await mta.ask([{ type: "quit" }], 0);
    mta.end();
    assert.ok(await stoppedCleanly(p), p.stderr());
    const rec = readRecording(readFileSync(file, "utf8"));
    assert.equal(rec.sessions[0]?.endReason, "mta");
  });

  it("closes sessions still open when the shutdown grace is over", TIMEOUT, async () => {
    const p = await proxy(["--shutdown-grace", "200", "--quiet"]);
    const mta = await RawMta.open(p.port);
    await mta.ask([{ type: "optneg", version: 6, actions: 0x1ff, protocol: 0 }], 1);
    assert.ok(await terminate(p), p.stderr());
    assert.match(p.stderr(), /session end session=s1 end=mta/);
    mta.destroy();
  });
});
