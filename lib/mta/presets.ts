/**
 * The macros Postfix 3.7 sends by default at each stage (milter-protocol.md §5.6, values as
 * observed on the wire), computed from the transaction. `milterkit send` uses them unless told
 * otherwise.
 *
 * @module
 */

import { parseAddress, splitAddress } from "../mail/esmtp.ts";
import type { ConnectInfo } from "../mail/envelope.ts";
import type { MacroStageLetter } from "../wire/types.ts";

export type { MacroStageLetter };

/**
 * Who the emulated MTA is.
 *
 * @example
 * ```ts
 * import type { MtaIdentity } from "@milterkit/milterkit/mta";
 * const id: MtaIdentity = { hostname: "mx.example.com", mailer: "virtual" };
 * ```
 */
export interface MtaIdentity {
  /** `j`: `$myhostname` (default `mx.example.com`). */
  readonly hostname?: string;
  /** `{daemon_name}`: `milter_macro_daemon_name` (default: the host name). */
  readonly daemonName?: string;
  /** `{daemon_addr}`: the address the SMTP client connected to (default `127.0.0.1`). */
  readonly daemonAddr?: string;
  /** `v`: `$mail_name $mail_version` (default `Postfix 3.7.11`). */
  readonly version?: string;
  /** `{mail_mailer}` / `{rcpt_mailer}`: the delivery transport (default `smtp`). */
  readonly mailer?: string;
}

/**
 * What the macros of a stage are computed from.
 *
 * @example
 * ```ts
 * import type { MacroFacts } from "@milterkit/milterkit/mta";
 * const f: MacroFacts = { sender: "<a@example.org>", queueId: "3713A16C0A7" };
 * ```
 */
export interface MacroFacts {
  /** The SMTP client (for `_`). */
  readonly client?: ConnectInfo;
  /** MAIL FROM address as written (`<a@b>`, `<>`). */
  readonly sender?: string;
  /** RCPT TO address as written, for the RCPT stage. */
  readonly recipient?: string;
  /** `i`, once Postfix has assigned it (after the first accepted recipient). */
  readonly queueId?: string;
  /** SASL login (`{auth_authen}`), with `{auth_type}` method, when the client authenticated. */
  readonly auth?: { readonly authen: string; readonly type?: string; readonly author?: string };
}

/** Default identity: what the examples in milter-protocol.md use. */
export const DEFAULT_IDENTITY: Required<MtaIdentity> = {
  hostname: "mx.example.com",
  daemonName: "mx.example.com",
  daemonAddr: "127.0.0.1",
  version: "Postfix 3.7.11",
  mailer: "smtp",
};

/**
 * Postfix's default macros for one stage: `milter_connect_macros = j {daemon_name}
 * {daemon_addr} v _`, `milter_helo_macros` (TLS, absent without TLS), `milter_mail_macros = i
 * {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}`,
 * `milter_rcpt_macros = i {rcpt_addr} {rcpt_host} {rcpt_mailer}`, `i` for DATA, end of header
 * (also before each header) and end of data (also before each body chunk), nothing for UNKNOWN.
 * Only macros with a value are included, in Postfix's order; `i` only once `queueId` is known.
 *
 * @param stage The `D` frame letter.
 * @param facts Client, sender, recipient, queue id.
 * @param identity Host name, daemon name and address, version, mailer.
 * @returns Name/value pairs for the `D` frame.
 *
 * @example
 * ```ts
 * import { postfixMacros } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.deepEqual(postfixMacros("R", { recipient: "<bob@example.com>", queueId: "7A69B20C018" }), [
 *   ["i", "7A69B20C018"],
 *   ["{rcpt_addr}", "bob@example.com"],
 *   ["{rcpt_host}", "example.com"],
 *   ["{rcpt_mailer}", "smtp"],
 * ]);
 * ```
 */
export function postfixMacros(
  stage: MacroStageLetter,
  facts: MacroFacts = {},
  identity: MtaIdentity = {},
): [string, string][] {
  const id = {
    ...DEFAULT_IDENTITY,
    daemonName: identity.hostname ?? DEFAULT_IDENTITY.daemonName,
    ...identity,
  };
  const out: [string, string][] = [];
  const queue = () => {
    if (facts.queueId !== undefined) out.push(["i", facts.queueId]);
  };
  switch (stage) {
    case "C": {
      out.push(["j", id.hostname], ["{daemon_name}", id.daemonName], [
        "{daemon_addr}",
        id.daemonAddr,
      ]);
      out.push(["v", id.version]);
      const c = facts.client;
      if (c !== undefined) out.push(["_", clientMacro(c)]);
      break;
    }
    case "M": {
      queue();
      if (facts.auth !== undefined) {
        if (facts.auth.type !== undefined) out.push(["{auth_type}", facts.auth.type]);
        out.push(["{auth_authen}", facts.auth.authen]);
        if (facts.auth.author !== undefined) out.push(["{auth_author}", facts.auth.author]);
      }
      if (facts.sender !== undefined) {
        const addr = parseAddress(facts.sender).address;
        out.push(["{mail_addr}", addr]);
        if (addr !== "") {
          out.push(["{mail_host}", splitAddress(addr).domain], ["{mail_mailer}", id.mailer]);
        }
      }
      break;
    }
    case "R":
      queue();
      if (facts.recipient !== undefined) {
        const addr = parseAddress(facts.recipient).address;
        out.push(
          ["{rcpt_addr}", addr],
          ["{rcpt_host}", splitAddress(addr).domain],
          ["{rcpt_mailer}", id.mailer],
        );
      }
      break;
    case "T":
    case "L":
    case "N":
    case "B":
    case "E":
      queue();
      break;
    case "H":
    case "U":
      break;
  }
  return out;
}

/**
 * Sendmail 8.17's default macros for one stage (the m4 defaults of `cfhead.m4`, as recorded in
 * `tests/data/captures/sendmail-libmilter`): connect `j _ {daemon_name} {if_name}`, envfrom
 * `i {mail_mailer} {mail_host} {mail_addr}` (the queue id exists from MAIL on), envrcpt
 * `{rcpt_mailer} {rcpt_host} {rcpt_addr}`, eom `{msg_id}`; helo only has TLS macros (absent
 * without TLS); no macros at all for DATA, headers, EOH and body.
 *
 * @param stage The `D` letter.
 * @param facts What the MTA knows at that point (`queueId` is used from MAIL on).
 * @param identity Host name and mailer (`version` and `daemonAddr` are Postfix's only).
 * @returns Name/value pairs in Sendmail's order.
 *
 * @example
 * ```ts
 * import { sendmailMacros } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.deepEqual(sendmailMacros("M", { sender: "<a@example.com>", queueId: "6ALIQsCY017002" }), [
 *   ["i", "6ALIQsCY017002"],
 *   ["{mail_mailer}", "smtp"],
 *   ["{mail_host}", "example.com"],
 *   ["{mail_addr}", "a@example.com"],
 * ]);
 * ```
 */
export function sendmailMacros(
  stage: MacroStageLetter,
  facts: MacroFacts = {},
  identity: MtaIdentity = {},
): [string, string][] {
  const id = { ...DEFAULT_IDENTITY, ...identity };
  const out: [string, string][] = [];
  switch (stage) {
    case "C": {
      out.push(["j", id.hostname]);
      const c = facts.client;
      if (c !== undefined) out.push(["_", clientMacro(c)]);
      out.push(["{daemon_name}", "MTA"], ["{if_name}", id.hostname]);
      break;
    }
    case "M": {
      if (facts.queueId !== undefined) out.push(["i", facts.queueId]);
      if (facts.auth !== undefined) {
        if (facts.auth.type !== undefined) out.push(["{auth_type}", facts.auth.type]);
        out.push(["{auth_authen}", facts.auth.authen]);
        if (facts.auth.author !== undefined) out.push(["{auth_author}", facts.auth.author]);
      }
      if (facts.sender !== undefined) {
        const addr = parseAddress(facts.sender).address;
        out.push(
          ["{mail_mailer}", id.mailer],
          ["{mail_host}", addr === "" ? "" : splitAddress(addr).domain],
          ["{mail_addr}", addr],
        );
      }
      break;
    }
    case "R":
      if (facts.recipient !== undefined) {
        const addr = parseAddress(facts.recipient).address;
        out.push(
          ["{rcpt_mailer}", id.mailer],
          ["{rcpt_host}", splitAddress(addr).domain],
          ["{rcpt_addr}", addr],
        );
      }
      break;
    case "E":
      if (facts.queueId !== undefined) out.push(["{msg_id}", `<${facts.queueId}@${id.hostname}>`]);
      break;
    default:
      break;
  }
  return out;
}

/**
 * Postfix's `_` macro: `name [address]`, with `unknown` as the name when the client did not
 * resolve (its CONNECT host name is then the bracketed address).
 */
function clientMacro(c: ConnectInfo): string {
  const addr = c.address ?? "unknown";
  const name = c.hostname === "" || c.hostname.startsWith("[") ? "unknown" : c.hostname;
  return c.family === "unknown" ? name : `${name} [${addr}]`;
}

/**
 * Makes a Postfix-style short queue id: 11 upper-case hex digits (e.g. `3713A16C0A7`).
 *
 * @returns A random queue id.
 *
 * @example
 * ```ts
 * import { newQueueId } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.match(newQueueId(), /^[0-9A-F]{11}$/);
 * ```
 */
export function newQueueId(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("").toUpperCase().slice(0, 11);
}
