/**
 * Rewrites the envelope sender of mail from an internal domain to a bounce address on the
 * public domain (e.g. for SRS-like setups or a shared return path).
 *
 *   MILTERKIT_FROM_DOMAIN=internal.example MILTERKIT_BOUNCE='<bounces@example.com>' \
 *     milterkit serve examples/rewrite_sender.ts
 */
import { defineFilter } from "@milterkit/milterkit";
import process from "node:process";

const internal = (process.env.MILTERKIT_FROM_DOMAIN ?? "internal.example.test").toLowerCase();
const bounce = process.env.MILTERKIT_BOUNCE ?? "<bounces@example.test>";

export default defineFilter({
  name: "rewrite-sender",
  actions: ["changeSender", "addHeader"],
  eom(ctx) {
    const sender = ctx.sender?.address.toLowerCase() ?? "";
    if (!sender.endsWith(`@${internal}`)) return;
    ctx.changeSender(bounce);
    ctx.addHeader("X-Original-Sender", sender);
  },
});
