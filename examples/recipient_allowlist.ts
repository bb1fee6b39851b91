/**
 * Accepts mail only for listed recipients (or whole domains), refusing the others one by one
 * at RCPT TO with `550 5.1.1`, so the message still goes to the allowed ones.
 *
 *   MILTERKIT_ALLOW='alice@example.com,@example.org' milterkit serve examples/recipient_allowlist.ts
 */
import { defineFilter } from "@milterkit/milterkit";
import process from "node:process";

const allow = (process.env.MILTERKIT_ALLOW ?? "postmaster@example.test,@example.test")
  .split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);

function allowed(address: string): boolean {
  const a = address.toLowerCase();
  return allow.some((entry) => entry.startsWith("@") ? a.endsWith(entry) : a === entry);
}

export default defineFilter({
  name: "recipient-allowlist",
  envrcpt(rcpt) {
    if (!allowed(rcpt.address)) {
      return {
        code: 550,
        enhanced: "5.1.1",
        text: `<${rcpt.address}>: recipient not accepted here`,
      };
    }
  },
});
