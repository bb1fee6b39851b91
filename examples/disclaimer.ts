/**
 * Appends a disclaimer to the body of plain-text messages. MIME multipart messages are left
 * alone (appending text would land after the closing boundary) and get a header instead.
 *
 *   MILTERKIT_DISCLAIMER='This message is confidential.' milterkit serve examples/disclaimer.ts
 */
import { decodeText, defineFilter, encodeText } from "@milterkit/milterkit";
import process from "node:process";

const text = process.env.MILTERKIT_DISCLAIMER ??
  "This e-mail and any attachments are confidential.";

export default defineFilter({
  name: "disclaimer",
  actions: ["replaceBody", "addHeader"],
  // Keep the body (up to 5 MiB) for the end of message; larger ones pass unchanged.
  bufferBody: true,
  maxBodyBytes: 5 * 1024 * 1024,
  onBodyLimit: "truncate",
  eom(ctx) {
    const type = ctx.headers.find((h) => h.name.toLowerCase() === "content-type")?.value ?? "";
    if (ctx.bodyTruncated || (type !== "" && !/^\s*text\/plain/i.test(type))) {
      ctx.addHeader("X-Disclaimer", "skipped (not a plain-text message)");
      return;
    }
    const body = decodeText(ctx.body ?? new Uint8Array(0));
    const sep = body === "" || body.endsWith("\r\n") ? "" : "\r\n";
    ctx.replaceBody(encodeText(`${body}${sep}-- \r\n${text}\r\n`));
  },
});
