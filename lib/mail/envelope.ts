/**
 * What an MTA tells a filter about a connection and an envelope, shared by the filter side and
 * the MTA side: the client's connection, envelope addresses with their ESMTP parameters, and
 * header fields.
 *
 * @module
 */

import type { ConnectFamily } from "../wire/types.ts";

/**
 * Connection info from SMFIC_CONNECT.
 *
 * @example
 * ```ts
 * import type { ConnectInfo } from "@milterkit/milterkit";
 * const c: ConnectInfo = { hostname: "[192.0.2.1]", family: "inet", address: "192.0.2.1", port: 4711 };
 * ```
 */
export interface ConnectInfo {
  /** Client host name as the MTA reports it (`[addr]` when unresolved). */
  readonly hostname: string;
  /** Address family. */
  readonly family: ConnectFamily;
  /** IP address (IPv6 without Sendmail's `IPv6:` prefix) or socket path; absent for `unknown`. */
  readonly address?: string;
  /** Client port (0 for unix). */
  readonly port?: number;
}

/**
 * One ESMTP parameter of MAIL FROM / RCPT TO, e.g. `SIZE=300` or `SMTPUTF8`.
 *
 * @example
 * ```ts
 * import type { EsmtpParam } from "@milterkit/milterkit";
 * const p: EsmtpParam = { name: "SIZE", value: "300", raw: "SIZE=300" };
 * ```
 */
export interface EsmtpParam {
  /** Keyword, upper-cased. */
  readonly name: string;
  /** Value after `=`, or undefined for a bare keyword. */
  readonly value: string | undefined;
  /** The parameter as sent. */
  readonly raw: string;
}

/**
 * An envelope address (sender or recipient) with its ESMTP parameters.
 *
 * @example
 * ```ts
 * import type { EnvelopeAddress } from "@milterkit/milterkit";
 * const a: EnvelopeAddress = { address: "a@example.com", raw: "<a@example.com>", args: [], params: [] };
 * ```
 */
export interface EnvelopeAddress {
  /** The address without angle brackets (`""` for the null sender). */
  readonly address: string;
  /** The address exactly as the MTA sent it (use this with `deleteRecipient`). */
  readonly raw: string;
  /** ESMTP arguments as sent, one per string. */
  readonly args: readonly string[];
  /** The same arguments parsed. */
  readonly params: readonly EsmtpParam[];
}

/**
 * One header as the MTA passed it: folded lines joined with LF, the leading space after the
 * colon removed unless the filter asked for `headerLeadingSpace`.
 */
export interface HeaderField {
  /** Field name without the colon. */
  readonly name: string;
  /** Field value. */
  readonly value: string;
}
