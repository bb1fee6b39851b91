/**
 * ESMTP parameters and envelope addresses (placeholder by the lead; the MTA-side engineer
 * owns this file and may replace it keeping these signatures).
 *
 * @module
 */

import type { EsmtpParam } from "./filter.ts";

/**
 * Parses ESMTP arguments such as `SIZE=300`.
 *
 * @example
 * ```ts
 * import { parseEsmtpArgs } from "@milterkit/milterkit";
 * parseEsmtpArgs(["SIZE=1"]);
 * ```
 */
export function parseEsmtpArgs(args: readonly string[]): EsmtpParam[] {
  return args.map((raw) => {
    const i = raw.indexOf("=");
    return i < 0
      ? { name: raw.toUpperCase(), value: undefined, raw }
      : { name: raw.slice(0, i).toUpperCase(), value: raw.slice(i + 1), raw };
  });
}

/**
 * Strips angle brackets from an envelope address.
 *
 * @example
 * ```ts
 * import { parseAddress } from "@milterkit/milterkit";
 * parseAddress("<a@b>");
 * ```
 */
export function parseAddress(raw: string): { address: string; raw: string } {
  const t = raw.trim();
  const address = t.startsWith("<") && t.endsWith(">") ? t.slice(1, -1) : t;
  return { address, raw };
}
