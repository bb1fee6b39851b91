/**
 * Tags suspicious mail instead of refusing it: adds `X-Suspicious: yes (reasons)` and
 * prefixes the Subject with `[SUSPICIOUS]`. A message is suspicious when its sender domain
 * differs from the From header's domain, or it has no Message-Id, or its Subject shouts.
 *
 *   milterkit serve examples/tag_suspicious.ts
 */
import { defineFilter } from "@milterkit/milterkit";

function domainOf(address: string): string {
  const m = /@([^>\s]+)>?\s*$/.exec(address);
  return (m?.[1] ?? "").toLowerCase();
}

export default defineFilter({
  name: "tag-suspicious",
  actions: ["addHeader", "changeHeader"],
  eom(ctx) {
    const reasons: string[] = [];
    const header = (n: string) => ctx.headers.find((h) => h.name.toLowerCase() === n);
    const from = header("from");
    const envDomain = domainOf(ctx.sender?.address ?? "");
    if (from && envDomain && domainOf(from.value) !== envDomain) reasons.push("from-mismatch");
    if (!header("message-id")) reasons.push("no-message-id");
    const subject = header("subject")?.value ?? "";
    if (subject.length >= 8 && subject === subject.toUpperCase() && /[A-Z]/.test(subject)) {
      reasons.push("shouting");
    }
    if (reasons.length === 0) return "continue";
    ctx.addHeader("X-Suspicious", `yes (${reasons.join(", ")})`);
    if (subject === "") ctx.addHeader("Subject", "[SUSPICIOUS]");
    else if (!subject.startsWith("[SUSPICIOUS]")) {
      ctx.changeHeader("Subject", 1, `[SUSPICIOUS] ${subject}`);
    }
    return "continue";
  },
});
