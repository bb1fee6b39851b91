/**
 * Asks an external HTTP service about each message (sender, recipients, subject) and follows
 * its answer, with a timeout: the service answers JSON `{"action": "accept" | "reject" |
 * "tempfail", "reason"?: string}`. When it is slow or down, the message passes and is marked
 * `X-Check: unavailable` (fail open); set MILTERKIT_CHECK_FAIL=tempfail to fail closed.
 *
 *   MILTERKIT_CHECK_URL=http://127.0.0.1:8080/check milterkit serve examples/http_check.ts
 */
import { defineFilter } from "@milterkit/milterkit";
import process from "node:process";

const url = process.env.MILTERKIT_CHECK_URL ?? "http://127.0.0.1:8080/check";
const timeoutMs = Number(process.env.MILTERKIT_CHECK_TIMEOUT_MS ?? 2000);
const failClosed = process.env.MILTERKIT_CHECK_FAIL === "tempfail";

export default defineFilter({
  name: "http-check",
  actions: ["addHeader"],
  async eom(ctx) {
    const subject = ctx.headers.find((h) => h.name.toLowerCase() === "subject")?.value ?? "";
    let answer: { action?: string; reason?: string };
    try {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          client: ctx.client?.address,
          from: ctx.sender?.address,
          to: ctx.recipients.map((r) => r.address),
          subject,
        }),
        signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(timeoutMs)]),
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      answer = await res.json();
    } catch {
      if (failClosed) return { code: 451, enhanced: "4.7.1", text: "Policy service unavailable" };
      ctx.addHeader("X-Check", "unavailable");
      return "continue";
    }
    const reason = (answer.reason ?? "policy").replace(/[\r\n]/g, " ");
    switch (answer.action) {
      case "reject":
        return { code: 550, enhanced: "5.7.1", text: `Rejected: ${reason}` };
      case "tempfail":
        return { code: 451, enhanced: "4.7.1", text: `Deferred: ${reason}` };
      default:
        ctx.addHeader("X-Check", "pass");
        return "continue";
    }
  },
});
