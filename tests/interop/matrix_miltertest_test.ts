/**
 * Interop matrix, miltertest: OpenDKIM's miltertest (an MTA simulator scripted in Lua, nobody on
 * the team wrote it) drives milterkit filters served by `listen()` in this process. The Lua
 * scripts in scripts/peers/miltertest/ print one line per fact (reply per stage, negotiated
 * flags, mt.eom_check results) and these tests assert the lines.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { defineFilter } from "../../lib/filter/filter.ts";
import type { Verdict } from "../../lib/filter/verdict.ts";
import { listen, type MilterServer } from "../../lib/server/server.ts";
import { ensurePeers } from "./harness.ts";
import {
  type MatrixStage,
  type Plan,
  resetPlan,
  runMiltertest,
  scriptedFilter,
  STAGES,
} from "./helpers_matrix.ts";

const portOf = (s: MilterServer) => (s.address as { port: number }).port;

/** The value after `prefix ` on the line that starts with it, or undefined. */
function line(output: string, prefix: string): string | undefined {
  return output.split("\n").find((l) => l.startsWith(prefix + " "))?.slice(prefix.length + 1);
}

describe("matrix: miltertest <- milterkit filter", () => {
  const plan: Plan = { seen: [] };
  let full: MilterServer | undefined;
  let small: MilterServer | undefined;

  before(async () => {
    ensurePeers();
    full = await listen("inet:0@127.0.0.1", scriptedFilter(plan));
    // declares one action and one handler: negotiation must switch the rest off
    small = await listen(
      "inet:0@127.0.0.1",
      defineFilter({ actions: ["addHeader"], eom: (ctx) => ctx.addHeader("X-Small", "yes") }),
    );
  });

  after(async () => {
    await full?.stop({ graceMs: 500 });
    await small?.stop({ graceMs: 500 });
  });

  it("negotiation: a filter with every handler and action", async () => {
    const r = await runMiltertest("negotiate.lua", { SOCK: `inet:${portOf(full!)}@127.0.0.1` });
    assert.equal(r.code, 0, r.output);
    for (
      const a of [
        "ADDHDRS",
        "CHGHDRS",
        "CHGBODY",
        "ADDRCPT",
        "ADDRCPT_PAR",
        "DELRCPT",
        "CHGFROM",
        "QUARANTINE",
      ]
    ) {
      assert.equal(line(r.output, `action SMFIF_${a}`), "true", `${a}\n${r.output}`);
    }
    for (const o of ["NOCONNECT", "NOHELO", "NOMAIL", "NORCPT", "NOBODY", "NOHDRS", "NOEOH"]) {
      assert.equal(line(r.output, `option SMFIP_${o}`), "false", `${o}\n${r.output}`);
    }
  });

  it("negotiation: unused events and actions are switched off", async () => {
    const r = await runMiltertest("negotiate.lua", { SOCK: `inet:${portOf(small!)}@127.0.0.1` });
    assert.equal(r.code, 0, r.output);
    assert.equal(line(r.output, "action SMFIF_ADDHDRS"), "true", r.output);
    for (const a of ["CHGHDRS", "CHGBODY", "ADDRCPT", "DELRCPT", "QUARANTINE"]) {
      assert.equal(line(r.output, `action SMFIF_${a}`), "false", `${a}\n${r.output}`);
    }
    for (const o of ["NOBODY", "NOEOH", "NOUNKNOWN"]) {
      assert.equal(line(r.output, `option SMFIP_${o}`), "true", `${o}\n${r.output}`);
    }
    // observed without a handler: received, but no reply is waited for
    for (const o of ["NR_CONN", "NR_HELO", "NR_MAIL", "NR_RCPT", "NR_HDR"]) {
      assert.equal(line(r.output, `option SMFIP_${o}`), "true", `${o}\n${r.output}`);
    }
  });

  const VERDICTS: Record<string, { verdict: Verdict; reply: string }> = {
    accept: { verdict: "accept", reply: "SMFIR_ACCEPT" },
    reject: { verdict: "reject", reply: "SMFIR_REJECT" },
    tempfail: { verdict: "tempfail", reply: "SMFIR_TEMPFAIL" },
    discard: { verdict: "discard", reply: "SMFIR_DISCARD" },
    "custom 5xx": {
      verdict: { code: 554, enhanced: "5.7.0", text: "Custom refusal" },
      reply: "SMFIR_REPLYCODE",
    },
  };
  const LABEL: Record<MatrixStage, string> = {
    connect: "connect",
    helo: "helo",
    mail: "mail",
    rcpt: "rcpt",
    data: "data",
    header: "header:Subject",
    eoh: "eoh",
    body: "body",
    eom: "eom",
  };

  for (const stage of STAGES) {
    for (const [name, v] of Object.entries(VERDICTS)) {
      // discard is not a legal answer at CONNECT/HELO: milterkit answers its fallback
      const illegal = name === "discard" && (stage === "connect" || stage === "helo");
      it(`verdict ${name} at ${stage}`, async () => {
        resetPlan(plan, { stage, verdict: v.verdict });
        const custom = typeof v.verdict === "object";
        const r = await runMiltertest("stages.lua", {
          SOCK: `inet:${portOf(full!)}@127.0.0.1`,
          ...(custom && stage === "eom"
            ? { REPLY_CODE: "554", REPLY_ESC: "5.7.0", REPLY_TEXT: "Custom refusal" }
            : {}),
        });
        assert.equal(r.code, 0, r.output);
        const before = STAGES.slice(0, STAGES.indexOf(stage));
        for (const s of before) {
          assert.equal(line(r.output, `reply ${LABEL[s]}`), "SMFIR_CONTINUE", r.output);
        }
        const want = illegal ? "SMFIR_TEMPFAIL" : v.reply;
        assert.equal(line(r.output, `reply ${LABEL[stage]}`), want, r.output);
        if (stage !== "eom") {
          const next = STAGES[STAGES.indexOf(stage) + 1]!;
          assert.equal(line(r.output, `reply ${LABEL[next]}`), undefined, "stopped there");
        }
        if (custom && stage === "eom") assert.equal(line(r.output, "check smtpreply"), "true");
      });
    }
  }

  it("modifications: every end-of-message request passes mt.eom_check", async () => {
    resetPlan(plan, {
      eom: (ctx) => {
        ctx.addHeader("X-Added", "added value");
        ctx.insertHeader("X-Top", 0, "first");
        ctx.changeHeader("Subject", 1, "changed subject");
        ctx.deleteHeader("X-Delete-Me", 1);
        ctx.addRecipient("<added@example.test>");
        ctx.deleteRecipient("<removed@example.test>");
        ctx.replaceBody("Replaced by milterkit.\r\n");
        ctx.quarantine("held by milterkit");
      },
    });
    const r = await runMiltertest("modify.lua", { SOCK: `inet:${portOf(full!)}@127.0.0.1` });
    assert.equal(r.code, 0, r.output);
    assert.equal(line(r.output, "reply eom"), "SMFIR_CONTINUE", r.output);
    for (
      const c of [
        "hdradd",
        "hdrinsert",
        "hdrchange",
        "hdrdelete",
        "rcptadd",
        "rcptdelete",
        "bodychange",
        "quarantine",
      ]
    ) {
      assert.equal(line(r.output, `check ${c}`), "true", `${c}\n${r.output}`);
    }
    for (const c of ["never-hdradd", "never-rcptadd", "never-bodychange"]) {
      assert.equal(line(r.output, `check ${c}`), "false", `${c}\n${r.output}`);
    }
    assert.equal(line(r.output, "header X-Added"), "added value", r.output);
  });
});
