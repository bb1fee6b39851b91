/**
 * Golden test against real traffic: every recorded session between Postfix, Sendmail or
 * miltertest and the libmilter C test filter is replayed (the MTA's bytes, unchanged) into a
 * milterkit filter that behaves like that C filter. After the OPTNEG reply, milterkit must
 * answer with exactly the bytes libmilter sent.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { defineFilter } from "../lib/filter/filter.ts";
import { serveConnection } from "../lib/filter/session.ts";
import { SMFIF } from "../lib/wire/constants.ts";
import { FrameDecoder } from "../lib/wire/frame.ts";
import { decodeReply } from "../lib/wire/reply_codec.ts";
import { duplexPair } from "../lib/testing/mod.ts";

const local = new URL("./data/captures/", import.meta.url);
const root = existsSync(local) ? local : new URL("file:///work/shared/captures/");

/** The behaviour of the libmilter test filter, written with milterkit. */
const likeTestfilter = defineFilter<Record<string, never>, { verdict?: string; modify?: boolean }>({
  actions: ["addHeader", "changeHeader", "replaceBody", "addRecipient"],
  connect() {},
  helo() {},
  envfrom(sender) {
    if (sender.address.startsWith("early-reject@")) {
      return { code: 550, enhanced: "5.7.1", text: "sender refused by libmilter testfilter" };
    }
  },
  envrcpt() {},
  header({ name, value }, ctx) {
    if (name.toLowerCase() !== "subject") return;
    for (const word of ["REJECTME", "TEMPFAILME", "DISCARDME"]) {
      if (value.includes(word)) ctx.message.verdict ??= word;
    }
    if (value.includes("MODIFYME")) ctx.message.modify = true;
  },
  eoh() {},
  body() {},
  eom(ctx) {
    switch (ctx.message.verdict) {
      case "REJECTME":
        return {
          code: 550,
          enhanced: "5.7.1",
          text: "Message rejected by libmilter testfilter (REJECTME)",
        };
      case "TEMPFAILME":
        return { code: 451, enhanced: "4.7.1", text: "Try again later (TEMPFAILME)" };
      case "DISCARDME":
        return "discard";
    }
    ctx.addHeader("X-Libmilter-Test", "yes");
    if (ctx.message.modify) {
      ctx.changeHeader("Subject", 1, "MODIFIED by libmilter testfilter");
      ctx.insertHeader("X-Libmilter-First", 0, "inserted at index 0");
      ctx.addRecipient("<added@example.test>");
      ctx.replaceBody("This body was replaced by the libmilter testfilter.\r\n");
    }
  },
  abort() {},
  close() {},
});

function sessions(): { name: string; toFilter: Uint8Array; toMta: Uint8Array }[] {
  const out = [];
  for (const dir of readdirSync(root).sort()) {
    const d = new URL(`${dir}/`, root);
    if (!existsSync(d) || dir.includes(".")) continue;
    for (const f of readdirSync(d).filter((f) => f.endsWith(".to-filter.bin")).sort()) {
      const base = f.slice(0, -".to-filter.bin".length);
      out.push({
        name: `${dir}/${base}`,
        toFilter: new Uint8Array(readFileSync(new URL(f, d))),
        toMta: new Uint8Array(readFileSync(new URL(`${base}.to-mta.bin`, d))),
      });
    }
  }
  return out;
}

async function replay(bytes: Uint8Array): Promise<Uint8Array> {
  const [mta, filterSide] = duplexPair(1 << 20);
  const done = serveConnection(filterSide, likeTestfilter);
  const w = mta.writable.getWriter();
  await w.write(bytes);
  // The engine serves the whole chunk at once and may have stopped reading after QUIT already.
  await w.close().catch(() => {});
  const chunks: Uint8Array[] = [];
  for await (const c of mta.readable) chunks.push(c);
  const s = await done;
  assert.ok(s.end === "quit" || s.end === "eof", `session ended by ${s.end}: ${s.error?.message}`);
  return Uint8Array.from(chunks.flatMap((c) => [...c]));
}

function splitOptneg(bytes: Uint8Array) {
  const first = new FrameDecoder().push(bytes)[0]!;
  return { optneg: decodeReply(first), rest: bytes.subarray(5 + first.payload.length) };
}

describe("filter engine replays real MTA sessions", () => {
  const all = sessions();
  it("finds the recorded sessions", () => {
    assert.ok(all.length >= 15, `only ${all.length} sessions found under ${root}`);
  });
  for (const s of all) {
    it(`${s.name}: answers byte for byte like libmilter after OPTNEG`, async () => {
      const ours = splitOptneg(await replay(s.toFilter));
      const theirs = splitOptneg(s.toMta);
      assert.ok(ours.optneg.type === "optneg" && theirs.optneg.type === "optneg");
      assert.equal(ours.optneg.version, theirs.optneg.version);
      assert.equal(
        ours.optneg.actions,
        SMFIF.ADDHDRS | SMFIF.CHGHDRS | SMFIF.CHGBODY | SMFIF.ADDRCPT,
      );
      assert.equal(ours.optneg.actions, theirs.optneg.actions);
      assert.deepEqual(ours.rest, theirs.rest);
    });
  }
});
