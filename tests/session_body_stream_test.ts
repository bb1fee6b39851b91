// bodyStream: a handler that settles without reading the whole body stops the stream; the engine
// never queues the rest of the body in memory. Measured in a fresh process.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { RUNTIME } from "./helpers/server_kit.ts";

const CHILD = new URL("./helpers/body_stream_child.ts", import.meta.url).pathname;

describe("bodyStream with a large body", () => {
  it("a handler that returns after one chunk: 384 MiB pass with memory bounded", () => {
    const args = RUNTIME === "deno" ? ["run", "-A", "--no-check", CHILD, "384"] : [CHILD, "384"];
    const out = execFileSync(process.execPath, args, { encoding: "utf8", timeout: 60_000 });
    const grew = Number(/grew=([\d.]+)/.exec(out)?.[1]);
    process.stdout.write(`# 384 MiB body, handler returned early: RSS grew ${grew} MiB\n`);
    // The engine before the fix queued the whole remaining body: RSS grew by more than 384 MiB.
    assert.ok(grew < 128, `RSS grew by ${grew} MiB while 384 MiB of body passed`);
  });
});
