/**
 * Real sockets over loopback for the running runtime's native adapter and for `node:net`
 * (TCP over 127.0.0.1 and ::1, Unix sockets, backpressure, half-close, resets, a child process).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type SocketAddress, SocketSpecError } from "../lib/server/socket_spec.ts";
import type {
  AdapterName,
  Connection,
  Listener,
  NetworkAdapter,
} from "../lib/server/adapters/types.ts";
import { withConnectLimits } from "../lib/server/adapters/_shared.ts";
import { ConnectionClosedError, MilterError, MilterTimeoutError } from "../lib/wire/errors.ts";
import { adapterFor, connect, listen, runtimeAdapterName } from "../lib/server/net.ts";
import { concatBytes } from "../lib/wire/concat.ts";

const TIMEOUT = { timeout: 60_000 };
const LOCAL4: SocketAddress = { transport: "tcp", hostname: "127.0.0.1", port: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Deterministic bytes that differ per seed. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/**
 * Reads to EOF, keeping every chunk until the end: a chunk the adapter reused would corrupt the
 * result. `pauseEvery` reads, it sleeps, to be a slow reader.
 */
async function readAll(readable: ReadableStream<Uint8Array>, pauseEvery = 0): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let reads = 0;
  for await (const chunk of readable) {
    assert.ok(chunk instanceof Uint8Array);
    chunks.push(chunk);
    if (pauseEvery > 0 && ++reads % pauseEvery === 0) await sleep(2);
  }
  return concatBytes(chunks);
}

async function writeAll(writable: WritableStream<Uint8Array>, data: Uint8Array, size = 65536) {
  const writer = writable.getWriter();
  for (let p = 0; p < data.byteLength; p += size) {
    await writer.ready;
    void writer.write(data.subarray(p, p + size)).catch(() => {});
  }
  await writer.close();
}

/** Accepts connections and runs `handle` on each until the listener closes. */
function serve(listener: Listener, handle: (conn: Connection) => Promise<void>) {
  const sessions: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      sessions.push(handle(conn).finally(() => conn.close()));
    }
  })();
  return {
    async stop() {
      await listener.close();
      await loop;
      return Promise.allSettled(sessions);
    },
  };
}

const echo = (conn: Connection) => conn.readable.pipeTo(conn.writable);

/** Whether rejecting is acceptable here: only as a ConnectionClosedError. */
async function endsOrClosed(p: Promise<unknown>): Promise<"ended" | "closed"> {
  try {
    await p;
    return "ended";
  } catch (e) {
    assert.ok(e instanceof ConnectionClosedError, `expected ConnectionClosedError, got ${e}`);
    return "closed";
  }
}

const runtime = runtimeAdapterName();
const names: AdapterName[] = runtime === "node" ? ["node"] : [runtime, "node"];

for (const name of names) {
  describe(`${name} adapter`, () => {
    let adapter: NetworkAdapter;
    let dir: string;
    before(async () => {
      adapter = await adapterFor(name);
      dir = mkdtempSync(join(tmpdir(), `milterkit-${name}-`));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    it("listens on port 0 and reports the real port", async () => {
      const listener = await adapter.listen(LOCAL4);
      try {
        assert.equal(listener.address.transport, "tcp");
        assert.ok(listener.address.transport === "tcp" && listener.address.port > 0);
        assert.equal(listener.address.hostname, "127.0.0.1");
      } finally {
        await listener.close();
      }
    });

    it("its entry point's listen/connect take socket specs; a bad spec is a SocketSpecError", async () => {
      const entry: {
        listen(spec: string | SocketAddress): Promise<Listener>;
        connect(spec: string | SocketAddress): Promise<Connection>;
      } = await import(`../lib/server/adapters/${name}.ts`);
      const listener = await entry.listen("inet:0@127.0.0.1");
      try {
        assert.ok(listener.address.transport === "tcp" && listener.address.port > 0);
        const accepted = listener[Symbol.asyncIterator]().next();
        const conn = await entry.connect(`inet:${listener.address.port}@127.0.0.1`);
        const server = (await accepted).value as Connection;
        const w = conn.writable.getWriter();
        await w.write(new Uint8Array([7, 8, 9]));
        await w.close();
        assert.deepEqual(await readAll(server.readable), new Uint8Array([7, 8, 9]));
        server.close();
        conn.close();
      } finally {
        await listener.close();
      }
      await assert.rejects(entry.connect("tcp:nowhere"), SocketSpecError);
    });

    it("exchanges data over TCP on 127.0.0.1 with addresses on both ends", async () => {
      const listener = await adapter.listen(LOCAL4);
      const server = serve(listener, async (conn) => {
        assert.equal(conn.remote?.transport, "tcp");
        assert.deepEqual(conn.local, listener.address);
        await echo(conn);
      });
      const conn = await adapter.connect(listener.address);
      assert.deepEqual(conn.remote, listener.address);
      assert.equal(conn.local?.transport === "tcp" && conn.local.hostname, "127.0.0.1");
      const data = new TextEncoder().encode("hello milter");
      const [got] = await Promise.all([readAll(conn.readable), writeAll(conn.writable, data)]);
      assert.deepEqual(got, data);
      conn.close();
      for (const r of await server.stop()) assert.equal(r.status, "fulfilled");
    });

    it("exchanges data over TCP on ::1", async (t) => {
      let listener: Listener;
      try {
        listener = await adapter.listen({ transport: "tcp", hostname: "::1", port: 0 });
      } catch (e) {
        t.skip(`::1 is not available on this host: ${(e as Error).message}`);
        return;
      }
      assert.equal(listener.address.transport === "tcp" && listener.address.hostname, "::1");
      const server = serve(listener, echo);
      const conn = await adapter.connect(listener.address);
      assert.equal(conn.remote?.transport === "tcp" && conn.remote.hostname, "::1");
      const data = pattern(100_000, 6);
      const [got] = await Promise.all([readAll(conn.readable), writeAll(conn.writable, data)]);
      assert.equal(sha(got), sha(data));
      await server.stop();
    });

    it("echoes 8 MiB each way at once through a slow reader without loss", TIMEOUT, async () => {
      const listener = await adapter.listen(LOCAL4);
      const server = serve(listener, echo);
      const conn = await adapter.connect(listener.address);
      const data = pattern(8 * 1024 * 1024, 1);
      const [got] = await Promise.all([
        readAll(conn.readable, 4),
        writeAll(conn.writable, data, 100_000),
      ]);
      assert.equal(got.byteLength, data.byteLength);
      assert.equal(sha(got), sha(data));
      for (const r of await server.stop()) assert.equal(r.status, "fulfilled");
    });

    it("sends 8 MiB to a server that reads slowly", TIMEOUT, async () => {
      const listener = await adapter.listen(LOCAL4);
      let received = "";
      const server = serve(listener, async (conn) => {
        received = sha(await readAll(conn.readable, 2));
        await conn.writable.close();
      });
      const conn = await adapter.connect(listener.address);
      const data = pattern(8 * 1024 * 1024, 2);
      await writeAll(conn.writable, data, 1 << 20);
      assert.equal((await readAll(conn.readable)).byteLength, 0);
      await server.stop();
      assert.equal(received, sha(data));
    });

    it("stops reading from the socket while nobody reads the readable", TIMEOUT, async () => {
      const listener = await adapter.listen(LOCAL4);
      let accepted!: (c: Connection) => void;
      const serverConn = new Promise<Connection>((r) => (accepted = r));
      const loop = (async () => {
        for await (const c of listener) accepted(c);
      })();
      const conn = await adapter.connect(listener.address);
      const peer = await serverConn; // never read: only kernel buffers and one queue may fill
      const writer = conn.writable.getWriter();
      const chunk = new Uint8Array(1 << 20);
      let written = 0;
      const limit = 64 << 20;
      while (written < limit) {
        const progress = writer.write(chunk).then(() => true, () => false);
        const stalled = sleep(500).then(() => false);
        if (!await Promise.race([progress, stalled])) break;
        written += chunk.byteLength;
      }
      // Without read backpressure the peer would swallow all 64 MiB into memory.
      assert.ok(written < 48 << 20, `peer buffered ${written} bytes without reading`);
      writer.releaseLock();
      conn.close();
      peer.close();
      await listener.close();
      await loop;
    });

    it("keeps receiving after closing its own writable (half-close)", TIMEOUT, async () => {
      const listener = await adapter.listen(LOCAL4);
      const reply = pattern(2 * 1024 * 1024, 3);
      const server = serve(listener, async (conn) => {
        const request = await readAll(conn.readable); // ends at the client's FIN
        assert.equal(new TextDecoder().decode(request), "request");
        await sleep(20);
        await writeAll(conn.writable, reply);
      });
      const conn = await adapter.connect(listener.address);
      await writeAll(conn.writable, new TextEncoder().encode("request"));
      const got = await readAll(conn.readable, 3);
      assert.equal(sha(got), sha(reply));
      for (const r of await server.stop()) assert.equal(r.status, "fulfilled");
    });

    it("ends or fails with ConnectionClosedError when the peer resets", TIMEOUT, async () => {
      const unhandled: unknown[] = [];
      const onUnhandled = (e: unknown) => unhandled.push(e);
      process.on("unhandledRejection", onUnhandled);
      try {
        const listener = await adapter.listen(LOCAL4);
        let accepted!: (c: Connection) => void;
        const serverConn = new Promise<Connection>((r) => (accepted = r));
        const loop = (async () => {
          for await (const c of listener) accepted(c);
        })();
        const conn = await adapter.connect(listener.address);
        const peer = await serverConn;
        const writer = conn.writable.getWriter();
        await writer.write(pattern(200_000, 4));
        await sleep(50);
        peer.close(); // unread data in its buffer: the kernel sends RST
        const reading = endsOrClosed(readAll(conn.readable));
        let writeError: unknown;
        for (let i = 0; i < 100 && writeError === undefined; i++) {
          await writer.write(pattern(65536, i)).catch((e) => (writeError = e));
          await sleep(5);
        }
        assert.ok(writeError instanceof ConnectionClosedError, `got ${writeError}`);
        await reading;
        writer.releaseLock();
        conn.close();
        await listener.close();
        await loop;
        await sleep(20);
        assert.deepEqual(unhandled, []);
      } finally {
        process.off("unhandledRejection", onUnhandled);
      }
    });

    it("ends the readable when this side closes hard", async () => {
      const listener = await adapter.listen(LOCAL4);
      const server = serve(listener, (conn) => readAll(conn.readable).then(() => {}));
      const conn = await adapter.connect(listener.address);
      const reading = endsOrClosed(readAll(conn.readable));
      await sleep(10);
      conn.close();
      conn.close();
      await reading;
      await server.stop();
    });

    it("serves 100 concurrent connections without cross-talk", TIMEOUT, async () => {
      const listener = await adapter.listen(LOCAL4);
      const server = serve(listener, echo);
      const results = await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const conn = await adapter.connect(listener.address);
          const data = pattern(10_000 + i * 37, 1000 + i);
          const [got] = await Promise.all([
            readAll(conn.readable),
            writeAll(conn.writable, data, 999),
          ]);
          return sha(got) === sha(data);
        }),
      );
      assert.deepEqual(results, Array(100).fill(true));
      const settled = await server.stop();
      assert.equal(settled.length, 100);
    });

    it("names the address when a connection is refused", async () => {
      const listener = await adapter.listen(LOCAL4);
      const address = listener.address;
      await listener.close();
      assert.ok(address.transport === "tcp");
      await assert.rejects(adapter.connect(address), (e: unknown) => {
        assert.ok(e instanceof ConnectionClosedError);
        assert.match(e.message, new RegExp(`inet:${address.port}@127\\.0\\.0\\.1`));
        assert.match(e.message, /connection refused \(ECONNREFUSED\)/);
        assert.ok(e.cause !== undefined);
        return true;
      });
    });

    it("rejects a connect whose signal is already aborted", async () => {
      await assert.rejects(
        adapter.connect(LOCAL4, { signal: AbortSignal.abort(new Error("stop")) }),
        /stop/,
      );
    });

    it("names the address when listening on a port in use", async () => {
      const listener = await adapter.listen(LOCAL4);
      try {
        await assert.rejects(adapter.listen(listener.address), (e: unknown) => {
          assert.ok(e instanceof MilterError);
          assert.match(e.message, /^Cannot listen on inet:\d+@127\.0\.0\.1: address in use/);
          return true;
        });
      } finally {
        await listener.close();
      }
    });

    it("listens on a Unix socket with mode 0o660 and removes it on close", async () => {
      const path = join(dir, "default.sock");
      const listener = await adapter.listen({ transport: "unix", path });
      assert.deepEqual(listener.address, { transport: "unix", path });
      assert.ok(statSync(path).isSocket());
      assert.equal(statSync(path).mode & 0o777, 0o660);
      const server = serve(listener, async (conn) => {
        assert.deepEqual(conn.local, { transport: "unix", path });
        await echo(conn);
      });
      const conn = await adapter.connect({ transport: "unix", path });
      assert.deepEqual(conn.remote, { transport: "unix", path });
      const data = pattern(300_000, 5);
      const [got] = await Promise.all([readAll(conn.readable), writeAll(conn.writable, data)]);
      assert.equal(sha(got), sha(data));
      await server.stop();
      assert.equal(existsSync(path), false);
    });

    it("applies unixMode to the socket file", async () => {
      const path = join(dir, "mode.sock");
      const listener = await adapter.listen({ transport: "unix", path }, { unixMode: 0o600 });
      assert.equal(statSync(path).mode & 0o777, 0o600);
      await listener.close();
    });

    it("removes a stale socket file before listening", async () => {
      const path = join(dir, "stale.sock");
      await leaveStaleSocket(path);
      assert.ok(statSync(path).isSocket());
      const listener = await adapter.listen({ transport: "unix", path });
      const server = serve(listener, echo);
      const conn = await adapter.connect({ transport: "unix", path });
      const [got] = await Promise.all([
        readAll(conn.readable),
        writeAll(conn.writable, new Uint8Array([1, 2, 3])),
      ]);
      assert.deepEqual(got, new Uint8Array([1, 2, 3]));
      await server.stop();
    });

    it("keeps a stale socket file when removeStale is false", async () => {
      const path = join(dir, "keep.sock");
      await leaveStaleSocket(path);
      await assert.rejects(
        adapter.listen({ transport: "unix", path }, { removeStale: false }),
        /removeStale is false/,
      );
      assert.ok(statSync(path).isSocket());
    });

    it("never deletes a regular file at the socket path", async () => {
      const path = join(dir, "precious.txt");
      writeFileSync(path, "keep me");
      await assert.rejects(adapter.listen({ transport: "unix", path }), (e: unknown) => {
        assert.ok(e instanceof MilterError);
        assert.match(e.message, /not a socket/);
        assert.ok(e.message.includes(path));
        return true;
      });
      assert.equal(readFileSync(path, "utf8"), "keep me");
    });

    it("refuses a Unix socket another listener is using", async () => {
      const path = join(dir, "live.sock");
      const listener = await adapter.listen({ transport: "unix", path });
      try {
        await assert.rejects(
          adapter.listen({ transport: "unix", path }),
          /another process is listening on it/,
        );
        assert.ok(statSync(path).isSocket());
      } finally {
        await listener.close();
      }
    });

    it("exchanges 1 MiB with a client in a separate node process", TIMEOUT, async () => {
      const listener = await adapter.listen(LOCAL4);
      const server = serve(listener, echo);
      assert.ok(listener.address.transport === "tcp");
      const script = `
        const net = require("node:net"), crypto = require("node:crypto");
        const data = Buffer.alloc(1 << 20, "milter");
        const hash = crypto.createHash("sha256");
        const s = net.connect(${listener.address.port}, "127.0.0.1", () => s.end(data));
        s.on("data", (d) => hash.update(d));
        s.on("end", () => console.log(hash.digest("hex") + " " +
          crypto.createHash("sha256").update(data).digest("hex")));`;
      const out = await run("node", ["-e", script]);
      const [got, sent] = out.trim().split(" ");
      assert.ok(sent && sent.length === 64, out);
      assert.equal(got, sent);
      await server.stop();
    });
  });
}

describe("net listen()/connect()", () => {
  it("parses specs and uses the runtime's adapter by default", async () => {
    const listener = await listen("inet:0");
    assert.ok(listener.address.transport === "tcp");
    assert.equal(listener.address.hostname, "127.0.0.1");
    const server = serve(listener, echo);
    const conn = await connect(`inet:${listener.address.port}@127.0.0.1`, { timeoutMs: 5000 });
    const [got] = await Promise.all([
      readAll(conn.readable),
      writeAll(conn.writable, pattern(10, 9)),
    ]);
    assert.deepEqual(got, pattern(10, 9));
    await server.stop();
  });

  it("refuses an adapter of another runtime", async () => {
    const other: AdapterName = runtime === "bun" ? "deno" : "bun";
    await assert.rejects(adapterFor(other), TypeError);
  });
});

describe("withConnectLimits()", () => {
  const where: SocketAddress = { transport: "tcp", hostname: "192.0.2.1", port: 8890 };

  it("gives up after timeoutMs, aborts the attempt and discards a late connection", async () => {
    let giveUp: AbortSignal | undefined;
    let deliver!: (v: string) => void;
    const discarded: string[] = [];
    const p = withConnectLimits(where, { timeoutMs: 20 }, (signal) => {
      giveUp = signal;
      return new Promise<string>((r) => (deliver = r));
    }, (late) => discarded.push(late));
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof MilterTimeoutError);
      assert.equal(e.timeoutMs, 20);
      assert.match(e.message, /^Cannot connect to inet:8890@192\.0\.2\.1: no answer in 20 ms/);
      return true;
    });
    assert.equal(giveUp?.aborted, true);
    deliver("late");
    await sleep(0);
    assert.deepEqual(discarded, ["late"]);
  });

  it("rejects with the signal's reason when aborted", async () => {
    const ac = new AbortController();
    const p = withConnectLimits(
      where,
      { signal: ac.signal },
      () => new Promise(() => {}),
      () => {},
    );
    ac.abort(new Error("user stopped"));
    await assert.rejects(p, /user stopped/);
  });

  it("maps a runtime failure to ConnectionClosedError naming the address", async () => {
    const refused = Object.assign(new Error("connect failed"), { code: "ECONNREFUSED" });
    const p = withConnectLimits(where, {}, () => Promise.reject(refused), () => {});
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof ConnectionClosedError);
      assert.equal(
        e.message,
        "Cannot connect to inet:8890@192.0.2.1: connection refused (ECONNREFUSED)",
      );
      assert.equal(e.cause, refused);
      return true;
    });
  });
});

/** Runs a command, resolving its stdout; rejects on a non-zero exit. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on(
      "close",
      (code) => code === 0 ? resolve(out) : reject(new Error(`${cmd}: ${code} ${err}`)),
    );
  });
}

/** Leaves a socket file nobody listens on: a process binds it and exits without cleaning up. */
async function leaveStaleSocket(path: string): Promise<void> {
  const script = `require("node:net").createServer().listen(${
    JSON.stringify(path)
  }, () => process.exit(0));`;
  await run("node", ["-e", script]);
}
