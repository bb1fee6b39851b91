import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { defineFilter } from "../lib/filter/filter.ts";
import { listen } from "../lib/server/server.ts";
import { encodeCommand } from "../lib/wire/command_codec.ts";

describe("an MTA that disappears while the eom handler runs", () => {
  it("aborts the handler's signal through the failing keep-alive, long before eomTimeoutMs", async () => {
    const events: string[] = [];
    let resolveClosed!: () => void;
    const closed = new Promise<void>((r) => (resolveClosed = r));
    const server = await listen(
      "inet:0@127.0.0.1",
      defineFilter({
        eom: (ctx) =>
          new Promise<undefined>((resolve) => {
            ctx.signal.addEventListener("abort", () => {
              events.push("signal aborted");
              resolve(undefined);
            });
          }),
        close: () => {
          events.push("close");
          resolveClosed();
        },
      }),
      { progressIntervalMs: 30, eomTimeoutMs: 600_000 },
    );
    const started = Date.now();
    const port = (server.address as { port: number }).port;
    const socket = connect(port, "127.0.0.1");
    socket.on("error", () => {});
    await new Promise((r) => socket.once("connect", r));
    for (
      const c of [
        { type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff },
        { type: "mail", sender: "<a@b>", args: [] },
        { type: "eom" },
      ] as const
    ) socket.write(encodeCommand(c));
    // Wait for the first PROGRESS so the handler is surely running, then vanish.
    await new Promise<void>((resolve) => {
      let seen = Buffer.alloc(0);
      socket.on("data", (d) => {
        seen = Buffer.concat([seen, d]);
        if (seen.includes(Buffer.from([0, 0, 0, 1, 0x70]))) resolve();
      });
    });
    socket.destroy();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const gaveUp = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), 10_000)));
    const outcome = await Promise.race([closed.then(() => "closed" as const), gaveUp]);
    clearTimeout(timer);
    const took = Date.now() - started;
    await server.stop({ graceMs: 0 });
    assert.equal(outcome, "closed", "the session ended within 10 s of the MTA leaving");
    assert.deepEqual(events, ["signal aborted", "close"]);
    assert.ok(took < 10_000, `took ${took} ms`);
  });
});
