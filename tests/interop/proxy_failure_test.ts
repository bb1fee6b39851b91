/**
 * `milterkit proxy` (run from source as a child process) between a real Postfix and a filter
 * that is down or dies: Postfix gets the answer the proxy is configured to give, and nothing
 * hangs. The dying filter is a fake written here that hangs up after N BODY frames, so the
 * moment of death is the same on every run.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server, type Socket } from "node:net";
import { decodeCommand } from "../../lib/wire/command_codec.ts";
import { FrameDecoder } from "../../lib/wire/frame.ts";
import { encodeReply } from "../../lib/wire/reply_codec.ts";
import { type ProxyChild, startProxy, terminate } from "../helpers/proxy_child.ts";
import {
  ensurePeers,
  freePort,
  headerValues,
  type PostfixInstance,
  readMaildir,
  sendMail,
  sleep,
  startPostfix,
} from "./harness.ts";

/** A filter that continues everything and hangs up on the Nth BODY frame. */
async function dyingUpstream(bodyFrames: number): Promise<{
  port: number;
  deaths: () => number;
  close(): Promise<void>;
}> {
  let deaths = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    const dec = new FrameDecoder({ maxDataSize: 1 << 20 });
    let bodies = 0;
    sock.on("data", (d: Uint8Array) => {
      for (const f of dec.push(new Uint8Array(d))) {
        const c = decodeCommand(f);
        if (c.type === "macro" || c.type === "abort") continue;
        if (c.type === "quit") return void sock.end();
        if (c.type === "body" && ++bodies >= bodyFrames) {
          deaths++;
          return void sock.destroy();
        }
        sock.write(encodeReply(
          c.type === "optneg" ? { type: "optneg", version: 6, actions: 0, protocol: 0 } : {
            type: "continue",
          },
        ));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    deaths: () => deaths,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Waits until `fn()` is true (the proxy logs after the SMTP reply went out). */
async function until(fn: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(20);
  }
}

let seq = 0;
function message(subject: string, bodyBytes = 0) {
  const marker = `f${Date.now()}-${++seq}`;
  const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n";
  return {
    marker,
    data: `From: sender@example.test\nTo: user@example.test\nSubject: ${subject}\n` +
      `X-Test-Marker: ${marker}\n\nbody\n` + line.repeat(Math.ceil(bodyBytes / line.length)),
  };
}

describe("milterkit proxy with a filter that is down or dies, behind real Postfix", () => {
  let mta: PostfixInstance;
  let port: number;
  let proxy: ProxyChild | undefined;
  const extra: { close(): Promise<void> }[] = [];

  before(async () => {
    ensurePeers();
    port = await freePort();
    // Postfix's own default is accept, so a tempfail or reject can only come from the proxy;
    // and Postfix logs a warning whenever it loses a filter, so an accept shows who answered.
    mta = await startPostfix({ milters: `inet:127.0.0.1:${port}`, defaultAction: "accept" });
  });

  after(async () => {
    await proxy?.stop();
    for (const e of extra) await e.close();
    await mta?.stop();
  });

  /** Replaces the proxy on the port Postfix uses; the old one must stop cleanly on SIGTERM. */
  async function useProxy(args: string[]): Promise<ProxyChild> {
    if (proxy) assert.ok(await terminate(proxy), proxy.stderr());
    proxy = await startProxy(args, `inet:${port}@127.0.0.1`);
    logFrom = mta.log().length;
    return proxy;
  }
  let logFrom = 0;
  /** Postfix's warnings about the milter since the current proxy started. */
  const milterWarnings = () =>
    mta.log().slice(logFrom).split("\n").filter((l) => /warning: milter/.test(l));

  const send = (m: { data: string }) =>
    sendMail({ port: mta.port, from: "sender@example.test", to: ["user@example.test"], ...m });

  it("answers tempfail for a filter that is down (policy tempfail)", async () => {
    const dead = await freePort();
    const p = await useProxy(["-u", `inet:${dead}@127.0.0.1`, "--on-upstream-failure", "tempfail"]);
    const r = await send(message("hello"));
    assert.equal(r.code, 451, r.transcript);
    assert.equal(r.text, "4.7.1 Service unavailable - try again later", r.transcript);
    await until(() => /session end/.test(p.stderr()), "the session end");
    assert.match(p.stderr(), /filter unavailable \(cannot connect\); answering the MTA: tempfail/);
  });

  it("lets mail through unfiltered for a filter that is down (policy accept)", async () => {
    const dead = await freePort();
    const p = await useProxy(["-u", `inet:${dead}@127.0.0.1`, "--on-upstream-failure", "accept"]);
    const m = message("hello");
    const r = await send(m);
    assert.equal(r.code, 250, r.transcript);
    const got = (await readMaildir(mta.maildir, { count: 1 })).filter((x) =>
      headerValues(x.text, "X-Test-Marker").includes(m.marker)
    );
    assert.equal(got.length, 1);
    assert.deepEqual(headerValues(got[0]!.text, "X-Libmilter-Test"), []);
    assert.match(p.stderr(), /answering the MTA: accept/);
    assert.deepEqual(milterWarnings(), [], "Postfix never lost its filter: the proxy answered");
  });

  for (
    const [policy, code, text] of [
      ["tempfail", 451, "4.7.1 Service unavailable - try again later"],
      ["reject", 550, "5.7.1 Command rejected"],
    ] as const
  ) {
    it(`answers ${policy} when the filter dies in the middle of a 1 MB body`, async () => {
      const up = await dyingUpstream(3);
      extra.push(up);
      const p = await useProxy([
        "-u",
        `inet:${up.port}@127.0.0.1`,
        "--on-upstream-failure",
        policy,
        "--quiet",
      ]);
      const r = await send(message("big", 1 << 20));
      assert.equal(r.stage, "eom", r.transcript);
      assert.equal(r.code, code, r.transcript);
      assert.equal(r.text, text);
      assert.equal(up.deaths(), 1);
      await until(() => /session end/.test(p.stderr()), "the session end");
      assert.match(p.stderr(), new RegExp(`filter died mid-session; answering the MTA: ${policy}`));
      assert.match(p.stderr(), /session end session=s1 end=upstream fallback=true/);
      assert.deepEqual(milterWarnings(), []);
      // The proxy is still there for the next connection.
      const again = await send(message("small"));
      assert.equal(again.code, 250, again.transcript);
    });
  }

  it("closes the MTA connection when the filter dies (policy close)", async () => {
    const up = await dyingUpstream(2);
    extra.push(up);
    const p = await useProxy([
      "-u",
      `inet:${up.port}@127.0.0.1`,
      "--on-upstream-failure",
      "close",
      "--quiet",
    ]);
    const r = await send(message("big", 300_000));
    // Postfix lost its filter and applied milter_default_action = accept itself.
    assert.equal(r.code, 250, r.transcript);
    await until(() => /session end/.test(p.stderr()), "the session end");
    assert.match(p.stderr(), /policy close/);
    await until(() => milterWarnings().length > 0, "Postfix's warning");
    assert.match(milterWarnings()[0]!, /can't read SMFIC_BODY reply packet/);
  });
});
