import type { EsmtpParam } from "./envelope.ts";
/**
 * ESMTP parameters and envelope addresses as MTAs pass them in SMFIC_MAIL / SMFIC_RCPT, and as
 * filters pass them in SMFIR_CHGFROM / SMFIR_ADDRCPT_PAR (one space-separated string).
 *
 * @module
 */

/**
 * Parses ESMTP arguments, one parameter per string (`SIZE=300`, `BODY=8BITMIME`, `SMTPUTF8`).
 * Keywords are upper-cased; values are kept as sent (xtext is not decoded). Empty strings are
 * skipped.
 *
 * @param args The arguments after the address, as the MTA sent them.
 * @returns One entry per argument, in order.
 *
 * @example
 * ```ts
 * import { parseEsmtpArgs } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseEsmtpArgs(["size=86", "SMTPUTF8"]), [
 *   { name: "SIZE", value: "86", raw: "size=86" },
 *   { name: "SMTPUTF8", value: undefined, raw: "SMTPUTF8" },
 * ]);
 * ```
 */
export function parseEsmtpArgs(args: readonly string[]): EsmtpParam[] {
  const out: EsmtpParam[] = [];
  for (const raw of args) {
    if (raw === "") continue;
    const i = raw.indexOf("=");
    out.push(
      i < 0
        ? { name: raw.toUpperCase(), value: undefined, raw }
        : { name: raw.slice(0, i).toUpperCase(), value: raw.slice(i + 1), raw },
    );
  }
  return out;
}

/**
 * Splits the single argument string of SMFIR_CHGFROM / SMFIR_ADDRCPT_PAR
 * (`"NOTIFY=NEVER ORCPT=rfc822;x@y"`) into one string per parameter.
 *
 * @param args The space-separated parameters, or undefined.
 * @returns The parameters (empty when none).
 *
 * @example
 * ```ts
 * import { splitEsmtpArgs } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.deepEqual(splitEsmtpArgs(" RET=HDRS  ENVID=abc"), ["RET=HDRS", "ENVID=abc"]);
 * ```
 */
export function splitEsmtpArgs(args: string | undefined): string[] {
  return args === undefined ? [] : args.split(/[ \t]+/).filter((s) => s !== "");
}

/**
 * Extracts the mailbox from an envelope address as the MTA wrote it: `<a@b>` → `a@b`,
 * `<>` → `""` (null sender), Postfix's non-SMTP form `a@b` (no brackets) unchanged, surrounding
 * spaces ignored, and an RFC 5321 source route (`<@relay:a@b>`) dropped.
 *
 * @param raw The address as sent (keep it for SMFIR_DELRCPT).
 * @returns The bare address and the raw text.
 *
 * @example
 * ```ts
 * import { parseAddress } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.equal(parseAddress("<a@example.com>").address, "a@example.com");
 * assert.equal(parseAddress("<>").address, "");
 * assert.equal(parseAddress(" b@example.com ").address, "b@example.com");
 * ```
 */
export function parseAddress(raw: string): { address: string; raw: string } {
  let t = raw.trim();
  if (t.startsWith("<") && t.endsWith(">")) t = t.slice(1, -1).trim();
  if (t.startsWith("@")) {
    const colon = t.indexOf(":");
    if (colon > 0) t = t.slice(colon + 1);
  }
  return { address: t, raw };
}

/**
 * Splits a bare address into local part and domain at the last `@`.
 *
 * @param address A bare address (`user@example.com`), without brackets.
 * @returns The local part and the domain (`""` when there is no `@`).
 *
 * @example
 * ```ts
 * import { splitAddress } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.deepEqual(splitAddress("a@example.com"), { local: "a", domain: "example.com" });
 * ```
 */
export function splitAddress(address: string): { local: string; domain: string } {
  const at = address.lastIndexOf("@");
  return at < 0
    ? { local: address, domain: "" }
    : { local: address.slice(0, at), domain: address.slice(at + 1) };
}
