/**
 * The MTA side of option negotiation: what to offer (presets matching Postfix and Sendmail) and
 * how to judge the filter's OPTNEG reply (milter-protocol.md §4.7, "Recommendation for our MTA
 * side"): strict like Sendmail about actions, downgrading like Postfix on versions, rejecting
 * protocol bits that were not offered except the harmless NO* / NR_* ones.
 *
 * @module
 */

import { MilterNegotiationError, MilterProtocolError } from "../wire/errors.ts";
import { describeCode } from "../wire/frame.ts";
import type { MtaStyle, Negotiated, Reply, SymbolList } from "../wire/types.ts";
import { ACTION_NAMES, flagNames, PROTOCOL_NAMES, SMFIP } from "../wire/constants.ts";

/**
 * What the MTA offers in its OPTNEG.
 *
 * @example
 * ```ts
 * import type { MtaOffer } from "@milterkit/milterkit/mta";
 * const v6: MtaOffer = { version: 6, actions: 0x1ff, protocol: 0x1fffff };
 * ```
 */
export interface MtaOffer {
  /** Protocol version (2..6). */
  readonly version: number;
  /** `SMFIF_*` actions the MTA allows. */
  readonly actions: number;
  /** `SMFIP_*` protocol bits the MTA supports. */
  readonly protocol: number;
}

/** Names of the {@link MTA_OFFERS} presets. */
export type MtaPreset =
  | "postfix"
  | "postfix-6"
  | "postfix-4"
  | "postfix-3"
  | "postfix-2"
  | "sendmail";

/**
 * OPTNEG offers of real MTAs (milter-protocol.md §4.5): `postfix` (= `postfix-6`, also Sendmail
 * 8.14+), Postfix's `milter_protocol` 2, 3 and 4, and `sendmail`.
 *
 * @example
 * ```ts
 * import { MTA_OFFERS } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * assert.equal(MTA_OFFERS["postfix-2"].protocol, 0x7f);
 * ```
 */
export const MTA_OFFERS: Readonly<Record<MtaPreset, MtaOffer>> = {
  "postfix": { version: 6, actions: 0x1ff, protocol: 0x1fffff },
  "postfix-6": { version: 6, actions: 0x1ff, protocol: 0x1fffff },
  "postfix-4": { version: 4, actions: 0x1ff, protocol: 0x37f },
  "postfix-3": { version: 3, actions: 0x1ff, protocol: 0x17f },
  "postfix-2": { version: 2, actions: 0x1ff, protocol: 0x7f },
  "sendmail": { version: 6, actions: 0x1ff, protocol: 0x1fffff },
};

/** Macro stage letters of the `D` frames, by `SMFIM_*` number. */
const STAGE_LETTER: readonly string[] = ["C", "H", "M", "R", "T", "E", "N"];

/** Harmless protocol bits: they only remove events or replies, which the client can honour. */
const HARMLESS = SMFIP.NOCONNECT | SMFIP.NOHELO | SMFIP.NOMAIL | SMFIP.NORCPT | SMFIP.NOBODY |
  SMFIP.NOHDRS | SMFIP.NOEOH | SMFIP.NR_HDR | SMFIP.NOUNKNOWN | SMFIP.NODATA | SMFIP.NR_CONN |
  SMFIP.NR_HELO | SMFIP.NR_MAIL | SMFIP.NR_RCPT | SMFIP.NR_DATA | SMFIP.NR_UNKN | SMFIP.NR_EOH |
  SMFIP.NR_BODY;

/** The judged OPTNEG reply. */
export interface NegotiationOutcome {
  /** What is in force: version min(offer, reply), the filter's actions and protocol bits. */
  readonly negotiated: Negotiated;
  /** The filter's reply as it came. */
  readonly requested: Extract<Reply, { type: "optneg" }>;
  /**
   * Macro names the filter asked for, per `D` stage letter (`C H M R T N E`); a stage absent
   * from the map gets every macro the caller gives. Names are stored in the `{x}`-less form for
   * single letters (`i`, `j`), as {@link macroKey} does.
   */
  readonly macroLists: ReadonlyMap<string, ReadonlySet<string>>;
  /** Things accepted but worth a log line (unoffered NO* or NR_* bits, unknown list stages). */
  readonly warnings: readonly string[];
}

/**
 * The comparison key of a macro name: `x` and `{x}` are the same macro (libmilter's rule).
 *
 * @param name A macro name as configured or sent.
 * @returns The key.
 *
 * @example
 * ```ts
 * import { macroKey } from "./negotiate.ts";
 * import assert from "node:assert/strict";
 * assert.equal(macroKey("{i}"), "i");
 * assert.equal(macroKey("{mail_addr}"), "{mail_addr}");
 * ```
 */
export function macroKey(name: string): string {
  return name.length === 3 && name.startsWith("{") && name.endsWith("}") ? name[1]! : name;
}

function parseLists(
  lists: readonly SymbolList[],
  style: MtaStyle,
  warnings: string[],
): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const l of lists) {
    const letter = STAGE_LETTER[l.stage];
    if (letter === undefined) {
      warnings.push(`Ignored macro list for unknown stage ${l.stage}: ${JSON.stringify(l.macros)}`);
      continue;
    }
    const names = l.macros.split(/[\s,]+/).filter((n) => n !== "").map(macroKey);
    // Postfix: an empty list falls back to the configured default; Sendmail: no macros.
    if (names.length === 0 && style === "postfix") continue;
    out.set(letter, new Set(names));
  }
  return out;
}

/**
 * Judges the filter's answer to the MTA's OPTNEG.
 *
 * @param offer What the MTA offered.
 * @param reply The filter's first reply.
 * @param style Which MTA's rules for empty macro lists apply.
 * @returns What is in force.
 * @throws {MilterProtocolError} (reason `unexpected`) when the reply is not an OPTNEG.
 * @throws {MilterNegotiationError} for a version above the offer or below 2, actions not
 * offered, or unoffered protocol bits other than NO* / NR_*; `missing` names them.
 *
 * @example
 * ```ts
 * import { judgeOptnegReply } from "./negotiate.ts";
 * import { MTA_OFFERS } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * const out = judgeOptnegReply(MTA_OFFERS.postfix, {
 *   type: "optneg", version: 2, actions: 0x11, protocol: 0,
 * }, "postfix");
 * assert.equal(out.negotiated.version, 2);
 * ```
 */
export function judgeOptnegReply(
  offer: MtaOffer,
  reply: Reply,
  style: MtaStyle,
): NegotiationOutcome {
  if (reply.type !== "optneg") {
    const code = reply.type === "raw" ? reply.code : undefined;
    throw new MilterProtocolError(
      `Filter answered SMFIC_OPTNEG with ${
        code !== undefined ? describeCode(code) : reply.type
      } instead of an OPTNEG reply`,
      { reason: "unexpected", ...(code !== undefined ? { code } : {}) },
    );
  }
  const warnings: string[] = [];
  if (reply.version > offer.version) {
    throw new MilterNegotiationError(
      `Filter replied with protocol version ${reply.version}, above the offered ${offer.version}`,
      [`version ${reply.version}`],
    );
  }
  if (reply.version < 2) {
    throw new MilterNegotiationError(
      `Filter replied with protocol version ${reply.version}; the lowest usable version is 2`,
      [`version ${reply.version}`],
    );
  }
  const extraActions = (reply.actions & ~offer.actions) >>> 0;
  if (extraActions !== 0) {
    const names = flagNames(extraActions, ACTION_NAMES);
    throw new MilterNegotiationError(
      `Filter requested actions the MTA did not offer: ${names.join(", ")}`,
      names,
    );
  }
  const extraProto = (reply.protocol & ~offer.protocol) >>> 0;
  const harmful = (extraProto & ~HARMLESS) >>> 0;
  if (harmful !== 0) {
    const names = flagNames(harmful, PROTOCOL_NAMES);
    throw new MilterNegotiationError(
      `Filter requested protocol features the MTA did not offer: ${names.join(", ")}`,
      names,
    );
  }
  if (extraProto !== 0) {
    warnings.push(
      `Filter set protocol bits the MTA did not offer (honoured): ${
        flagNames(extraProto, PROTOCOL_NAMES).join(", ")
      }`,
    );
  }
  const symlists = reply.symlists ?? [];
  if (symlists.length > 0 && (reply.actions & 0x100) === 0) {
    warnings.push("Filter sent macro lists without the SETSYMLIST action (honoured)");
  }
  return {
    negotiated: {
      version: reply.version,
      actions: reply.actions >>> 0,
      protocol: reply.protocol >>> 0,
      symlists,
    },
    requested: reply,
    macroLists: parseLists(symlists, style, warnings),
    warnings,
  };
}

/**
 * Names a filter response for messages, with its libmilter name.
 *
 * @param reply The response.
 * @returns E.g. `SMFIR_ADDHEADER`, `SMFIR_CONN_FAIL`, `unknown response 'Z' (0x5a)`.
 *
 * @example
 * ```ts
 * import { replyName } from "./negotiate.ts";
 * import assert from "node:assert/strict";
 * assert.equal(replyName({ type: "addheader", name: "X", value: "1" }), "SMFIR_ADDHEADER");
 * ```
 */
export function replyName(reply: Reply): string {
  switch (reply.type) {
    case "raw":
      return `unknown response ${describeCode(reply.code)}`;
    case "optneg":
      return "OPTNEG reply";
    case "connfail":
      return "SMFIR_CONN_FAIL";
    default:
      return `SMFIR_${reply.type.toUpperCase()}`;
  }
}
