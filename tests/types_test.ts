/**
 * Types that help: a filter with declared state types and a buffered body hashed by Web Crypto
 * is served by `listen()`, swapped by `setFilter()` and run over a real socket, with no cast
 * anywhere. The second half lists what must stay a type error: each `@ts-expect-error` fails
 * `deno check` (this file is in the checked paths) the day its error disappears.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { bodyBuffering, defineFilter, type Filter } from "../lib/filter/filter.ts";
import { requirementsOf } from "../lib/filter/negotiate.ts";
import { serveConnection } from "../lib/filter/session.ts";
import { listen, type MilterServer } from "../lib/server/server.ts";
import { duplexPair } from "../lib/testing/mod.ts";
import { sendOne, TIMEOUT, tx } from "./helpers/server_kit.ts";

/** Per-connection state: `{}` is not a valid one, so a factory is required. */
interface Conn {
  readonly id: number;
  messages: number;
}

/** Per-message state. */
interface Msg {
  readonly recipients: string[];
}

const enc = new TextEncoder();
const hex = (bytes: ArrayBuffer) =>
  Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");

let connections = 0;

/** Hashes the buffered body: `ctx.body` is a `Uint8Array<ArrayBuffer>`, as Web Crypto wants. */
const hashing = defineFilter<Conn, Msg>({
  name: "hashing",
  actions: ["addHeader"],
  bufferBody: true,
  maxBodyBytes: 1024 * 1024,
  connectionState: () => ({ id: ++connections, messages: 0 }),
  messageState: () => ({ recipients: [] }),
  envrcpt(rcpt, ctx) {
    ctx.message.recipients.push(rcpt.address);
  },
  async eom(ctx) {
    ctx.connection.messages++;
    const digest = await crypto.subtle.digest("SHA-256", ctx.body);
    ctx.addHeader("X-Body-SHA256", hex(digest));
    ctx.addHeader("X-Recipients", ctx.message.recipients.join(","));
    ctx.addHeader("X-Subject", ctx.header("SUBJECT") ?? "(none)");
    ctx.addHeader("X-Tags", ctx.headerValues("x-tag").join("|"));
    // A bare literal returned from an async function is widened to string by TypeScript
    // (microsoft/TypeScript#30185): `as const` keeps it a verdict.
    return "accept" as const;
  },
});

/** Another filter with other state types, for `setFilter()`. */
const counting = defineFilter({
  name: "counting",
  actions: ["addHeader"],
  connectionState: () => ({ label: "swapped", headers: 0 }),
  header(_h, ctx) {
    ctx.connection.headers++;
  },
  eom(ctx) {
    ctx.addHeader("X-Counted", `${ctx.connection.label} ${ctx.connection.headers}`);
  },
});

/** The same filter typed by annotation instead of inference. */
const annotated: Filter<Conn, Msg> = {
  connectionState: () => ({ id: 0, messages: 0 }),
  messageState: () => ({ recipients: [] }),
  connect: () => "continue",
};

const added = (mods: readonly { type: string; name?: string; value?: string }[], name: string) =>
  mods.find((m) => m.type === "addheader" && m.name === name)?.value?.trim();

describe("typed filters, no casts (real socket)", () => {
  let server: MilterServer;

  before(async () => {
    server = await listen("inet:0@127.0.0.1", hashing, { logger: undefined });
  });
  after(async () => {
    await server.stop({ graceMs: 0 });
  });

  it(
    "hashes the buffered body with crypto.subtle.digest and sees its typed state",
    TIMEOUT,
    async () => {
      const body = "Hello\r\nsecond line\r\n";
      const message = enc.encode(
        "Subject: typed\r\nX-Tag: one\r\nx-tag: two\r\n\r\n" + body,
      );
      const r = await sendOne(server.address, {
        ...tx(1),
        rcpts: ["<bob@example.com>", "<carol@example.com>"],
        message,
      });
      assert.equal(r.verdict.type, "accept");
      const expected = createHash("sha256").update(body).digest("hex");
      assert.equal(added(r.modifications, "X-Body-SHA256"), expected);
      assert.equal(added(r.modifications, "X-Recipients"), "bob@example.com,carol@example.com");
      assert.equal(added(r.modifications, "X-Subject"), "typed", "header() is case-insensitive");
      assert.equal(added(r.modifications, "X-Tags"), "one|two", "headerValues() keeps order");
    },
  );

  it("swaps in a filter with other state types by setFilter()", TIMEOUT, async () => {
    server.setFilter(counting);
    try {
      const r = await sendOne(server.address, tx(2));
      assert.equal(added(r.modifications, "X-Body-SHA256"), undefined);
      assert.equal(added(r.modifications, "X-Counted"), "swapped 4");
    } finally {
      server.setFilter(hashing);
    }
    const back = await sendOne(server.address, tx(3));
    assert.match(added(back.modifications, "X-Body-SHA256") ?? "", /^[0-9a-f]{64}$/);
  });

  it("takes typed filters in serveConnection and requirementsOf", async () => {
    assert.equal(requirementsOf(hashing).events.body, "noreply", "a buffered body is received");
    assert.equal(requirementsOf(annotated).events.connect, "reply");
    assert.deepEqual(bodyBuffering(hashing), { maxBytes: 1024 * 1024, onLimit: "tempfail" });
    const [mta, filterSide] = duplexPair();
    const done = serveConnection(filterSide, annotated);
    await mta.writable.close();
    assert.equal((await done).end, "eof");
  });
});

describe("what stays a type error", () => {
  it("is checked by deno check; at run time these are plain objects", () => {
    const wrong = [
      // A declared state type needs its factory: at run time the state would be `{}`.
      // @ts-expect-error connectionState is missing
      defineFilter<Conn, Msg>({ messageState: () => ({ recipients: [] }) }),
      // @ts-expect-error messageState is missing
      defineFilter<Conn, Msg>({ connectionState: () => ({ id: 1, messages: 0 }) }),
      // Verdicts a stage does not allow.
      // @ts-expect-error discard at connect
      defineFilter({ connect: () => "discard" }),
      // @ts-expect-error discard at helo
      defineFilter({ helo: () => "discard" as const }),
      // @ts-expect-error discard at unknown
      defineFilter({ unknown: () => Promise.resolve("discard" as const) }),
      // @ts-expect-error skip at eoh
      defineFilter({ eoh: () => "skip" }),
      // @ts-expect-error skip at envfrom
      defineFilter({ envfrom: () => "skip" }),
      // @ts-expect-error skip at eom
      defineFilter({ eom: () => "skip" }),
      // Without bufferBody there may be no body: Web Crypto refuses `undefined`.
      // @ts-expect-error ctx.body is Uint8Array<ArrayBuffer> | undefined here
      defineFilter({ eom: (ctx) => void crypto.subtle.digest("SHA-256", ctx.body) }),
      // @ts-expect-error body limits need bufferBody: true
      defineFilter({ maxBodyBytes: 100 }),
      // @ts-expect-error the limits are maxBodyBytes and onBodyLimit, not an object
      defineFilter({ bufferBody: { maxBytes: 100 } }),
      // One argument order for header modifications: name, index, value.
      // @ts-expect-error index first
      defineFilter({ eom: (ctx) => ctx.insertHeader(0, "X-Top", "v") }),
      // One stage vocabulary: envfrom, not mail.
      // @ts-expect-error "mail" is no macro stage
      defineFilter({ macros: { mail: ["{auth_authen}"] } }),
    ];
    assert.equal(wrong.length, 13);
    // @ts-expect-error setFilter takes filters only
    const notAFilter: Parameters<MilterServer["setFilter"]>[0] = { eom: () => "skip" };
    assert.equal(typeof notAFilter, "object");
  });
});
