/**
 * Interop matrix, verdicts: a real Postfix 3.7 in front of a milterkit filter (`listen()` in this
 * process) that answers one verdict at one stage. Every stage (connect ... eom) x every verdict
 * (accept, reject, tempfail, discard, custom 5xx, custom 4xx, 421) ends the way Postfix
 * documents it (milter-protocol.md §3.2): where the SMTP client sees the refusal, with which
 * reply, and whether the message is delivered.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Verdict } from "../../lib/filter/verdict.ts";
import { listen, type MilterServer } from "../../lib/server/server.ts";
import { ensurePeers, type PostfixInstance, startPostfix } from "./harness.ts";
import {
  attempt,
  copiesIn,
  marked,
  type MatrixStage,
  type Plan,
  resetPlan,
  scriptedFilter,
  type SmtpOutcome,
  STAGES,
} from "./helpers_matrix.ts";

type VerdictName =
  | "accept"
  | "reject"
  | "tempfail"
  | "discard"
  | "custom 5xx"
  | "custom 4xx"
  | "421";

const VERDICTS: Record<VerdictName, Verdict> = {
  accept: "accept",
  reject: "reject",
  tempfail: "tempfail",
  discard: "discard",
  "custom 5xx": { code: 554, enhanced: "5.7.0", text: "Custom refusal, 100% milterkit" },
  "custom 4xx": { code: 452, enhanced: "4.3.1", text: "Custom deferral" },
  "421": { code: 421, enhanced: "4.7.0", text: "Closing this session" },
};

/** What the SMTP client sees: where, code, text; delivered or not. */
interface Expect {
  where: SmtpOutcome["where"];
  code: number;
  text: string;
  delivered: boolean;
}

const REJECT = "5.7.1 Command rejected";
const TEMPFAIL = "4.7.1 Service unavailable - try again later";

/** Postfix's documented reaction (milter-protocol.md §3.2), per stage and verdict. */
function expected(stage: MatrixStage, verdict: VerdictName): Expect {
  const message = ["header", "eoh", "body", "eom"].includes(stage);
  // refusals before DATA come at the command itself; HELO/CONNECT ones at the next MAIL;
  // refusals from the content stages come after the final dot
  const where: Expect["where"] = stage === "connect" || stage === "helo"
    ? "mail"
    : message
    ? "eom"
    : (stage as Expect["where"]);
  switch (verdict) {
    case "accept":
      return { where: "eom", code: 250, text: "", delivered: true };
    case "discard":
      // not allowed at CONNECT/HELO: milterkit answers its fallback (tempfail) instead
      if (stage === "connect" || stage === "helo") {
        return { where, code: 451, text: TEMPFAIL, delivered: false };
      }
      return { where: "eom", code: 250, text: "", delivered: false };
    case "reject":
      if (stage === "connect") {
        return {
          where: "greeting",
          code: 554,
          text: "mta.example.test ESMTP not accepting connections",
          delivered: false,
        };
      }
      return { where, code: 550, text: REJECT, delivered: false };
    case "tempfail":
      return { where, code: 451, text: TEMPFAIL, delivered: false };
    case "custom 5xx":
      if (stage === "connect") {
        // Postfix keeps its own text for a CONNECT reject
        return {
          where: "greeting",
          code: 554,
          text: "mta.example.test ESMTP not accepting connections",
          delivered: false,
        };
      }
      return { where, code: 554, text: "5.7.0 Custom refusal, 100% milterkit", delivered: false };
    case "custom 4xx":
      return { where, code: 452, text: "4.3.1 Custom deferral", delivered: false };
    case "421":
      if (stage === "connect") {
        return {
          where: "greeting",
          code: 421,
          text: "mta.example.test Service unavailable - try again later",
          delivered: false,
        };
      }
      return {
        where: stage === "helo" ? "helo" : where,
        code: 421,
        text: "4.7.0 Closing this session",
        delivered: false,
      };
  }
}

function countDiscards(mta: PostfixInstance): number {
  return mta.log().split("milter-discard: ").length - 1;
}

async function logShows(mta: PostfixInstance, discards: number): Promise<boolean> {
  const deadline = Date.now() + 5000;
  while (countDiscards(mta) < discards && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 25));
  }
  return countDiscards(mta) >= discards;
}

describe("matrix: postfix <- milterkit filter (verdicts)", () => {
  const plan: Plan = { seen: [] };
  let server: MilterServer | undefined;
  let mta: PostfixInstance | undefined;

  before(async () => {
    ensurePeers();
    server = await listen("inet:0@127.0.0.1", scriptedFilter(plan));
    const port = (server.address as { port: number }).port;
    mta = await startPostfix({ milters: `inet:127.0.0.1:${port}` });
  });

  after(async () => {
    await mta?.stop();
    await server?.stop({ graceMs: 500 });
  });

  for (const stage of STAGES) {
    for (const name of Object.keys(VERDICTS) as VerdictName[]) {
      it(`verdict ${name} at ${stage}`, async () => {
        resetPlan(plan, { stage, verdict: VERDICTS[name] });
        const m = marked(`verdict ${name} at ${stage}`);
        const discards = countDiscards(mta!);
        const got = await attempt(mta!.port, {
          from: "sender@example.test",
          to: ["user@example.test"],
          data: m.data,
        });
        const want = expected(stage, name);
        assert.equal(got.where, want.where, got.transcript);
        assert.equal(got.code, want.code, got.transcript);
        if (want.text) assert.equal(got.text, want.text, got.transcript);
        assert.equal(plan.seen.at(-1), stage, `the filter's last event: ${plan.seen.join(",")}`);
        const copies = await copiesIn(mta!.maildir, m.marker, want.delivered ? 1 : 0);
        assert.equal(copies.length, want.delivered ? 1 : 0, "delivered copies");
        if (name === "discard" && want.code === 250) {
          // Postfix logs the discard (asynchronously, through postlogd) with the SMTP command
          const command = { mail: "MAIL", rcpt: "RCPT", data: "DATA" }[stage as string] ??
            "END-OF-MESSAGE";
          const line = new RegExp(`milter-discard: ${command} from .*to=<user@example\\.test>`);
          assert.ok(await logShows(mta!, discards + 1), mta!.log());
          assert.match(
            mta!.log().split("\n").filter((l) => l.includes("milter-discard")).at(-1)!,
            stage === "mail" ? new RegExp(`milter-discard: MAIL from `) : line,
          );
        }
      });
    }
  }
});
