/**
 * Filter-side option negotiation: what a filter needs, derived from its handlers, checked
 * against what the MTA offers, following libmilter's rules (milter-protocol.md §4.7).
 *
 * @module
 */

import { MilterNegotiationError } from "../wire/errors.ts";
import type { ActionName, EventName, Filter, MacroStage } from "./filter.ts";
import type { Negotiated, Reply, SymbolList } from "../wire/types.ts";
import {
  ACTION_NAMES,
  flagNames,
  PROTOCOL_NAMES,
  PROTOCOL_VERSION,
  SMFIF,
  SMFIM,
  SMFIP,
} from "../wire/constants.ts";

/** The action bit each declared action needs. */
export const ACTION_BITS: Readonly<Record<ActionName, number>> = {
  addHeader: SMFIF.ADDHDRS,
  changeHeader: SMFIF.CHGHDRS,
  replaceBody: SMFIF.CHGBODY,
  addRecipient: SMFIF.ADDRCPT,
  addRecipientWithArgs: SMFIF.ADDRCPT_PAR,
  deleteRecipient: SMFIF.DELRCPT,
  changeSender: SMFIF.CHGFROM,
  quarantine: SMFIF.QUARANTINE,
};

/**
 * Per event: the `SMFIP_NO*` bit that switches it off, the `SMFIP_NR_*` bit that makes it go
 * unanswered, and the protocol version that introduced it.
 *
 * @example
 * ```ts
 * import { EVENT_BITS } from "./negotiate.ts";
 * import { SMFIP } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(EVENT_BITS.envrcpt.nr, SMFIP.NR_RCPT);
 * ```
 */
export const EVENT_BITS: Readonly<Record<EventName, { no: number; nr: number; since: number }>> = {
  connect: { no: SMFIP.NOCONNECT, nr: SMFIP.NR_CONN, since: 2 },
  helo: { no: SMFIP.NOHELO, nr: SMFIP.NR_HELO, since: 2 },
  envfrom: { no: SMFIP.NOMAIL, nr: SMFIP.NR_MAIL, since: 2 },
  envrcpt: { no: SMFIP.NORCPT, nr: SMFIP.NR_RCPT, since: 2 },
  data: { no: SMFIP.NODATA, nr: SMFIP.NR_DATA, since: 4 },
  header: { no: SMFIP.NOHDRS, nr: SMFIP.NR_HDR, since: 2 },
  eoh: { no: SMFIP.NOEOH, nr: SMFIP.NR_EOH, since: 2 },
  body: { no: SMFIP.NOBODY, nr: SMFIP.NR_BODY, since: 2 },
  unknown: { no: SMFIP.NOUNKNOWN, nr: SMFIP.NR_UNKN, since: 3 },
};

/**
 * Events received without a handler unless ignored: they are small, fill the context
 * (client, sender, recipients, headers) and cost no round trip (`SMFIP_NR_*`).
 */
const OBSERVED_BY_DEFAULT: ReadonlySet<EventName> = new Set([
  "connect",
  "helo",
  "envfrom",
  "envrcpt",
  "header",
]);

/** The events in protocol order. */
export const EVENTS: readonly EventName[] = Object.keys(EVENT_BITS) as EventName[];

const MACRO_STAGE_NUMBER: Readonly<Record<MacroStage, number>> = {
  connect: SMFIM.CONNECT,
  helo: SMFIM.HELO,
  envfrom: SMFIM.ENVFROM,
  envrcpt: SMFIM.ENVRCPT,
  data: SMFIM.DATA,
  eom: SMFIM.EOM,
  eoh: SMFIM.EOH,
};

/** How the filter wants each event delivered. */
export type EventMode = "off" | "reply" | "noreply";

/**
 * What a filter asks of the MTA, before looking at the MTA's offer.
 *
 * @example
 * ```ts
 * import { requirementsOf } from "./negotiate.ts";
 * import { SMFIF } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const req = requirementsOf({ actions: ["addHeader"], eom() {} });
 * assert.equal(req.actions, SMFIF.ADDHDRS);
 * assert.equal(req.events.header, "noreply");
 * assert.equal(req.events.body, "off");
 * ```
 */
export interface FilterRequirements {
  /** `SMFIF_*` bits needed (without SETSYMLIST). */
  readonly actions: number;
  /** Per event: switched off, answered, or received without answering. */
  readonly events: Readonly<Record<EventName, EventMode>>;
  /** Feature bits wanted: SKIP, HDR_LEADSPC, RCPT_REJ. */
  readonly features: number;
  /** Macro lists to request. */
  readonly symlists: readonly SymbolList[];
}

/**
 * Derives what a filter needs from its handlers and declarations. An event with a handler is
 * answered (or not, if listed in `noReply`). Without a handler, connect, helo, envfrom,
 * envrcpt and header are received without replies (so the context knows the client, the
 * envelope and the headers) unless listed in `ignore`; data, eoh, unknown and body are
 * switched off (`SMFIP_NO*`) unless listed in `observe` (a buffered body is received too).
 *
 * @param filter The filter.
 * @returns Its requirements.
 * @throws {TypeError} for an unknown action or event name.
 *
 * @example
 * ```ts
 * import { requirementsOf } from "./negotiate.ts";
 * import assert from "node:assert/strict";
 * const req = requirementsOf({ header() {}, noReply: ["header"] });
 * assert.equal(req.events.header, "noreply");
 * ```
 */
export function requirementsOf<C, M>(filter: Filter<C, M>): FilterRequirements {
  let actions = 0;
  for (const a of filter.actions ?? []) {
    const bit = ACTION_BITS[a];
    if (bit === undefined) {
      throw new TypeError(
        `Unknown action ${JSON.stringify(a)}; known: ${Object.keys(ACTION_BITS).join(", ")}`,
      );
    }
    actions |= bit;
  }
  const noReply = new Set(filter.noReply ?? []);
  const observe = new Set(filter.observe ?? []);
  const ignore = new Set(filter.ignore ?? []);
  for (const e of [...noReply, ...observe, ...ignore]) {
    if (!(e in EVENT_BITS)) {
      throw new TypeError(`Unknown event ${JSON.stringify(e)}; known: ${EVENTS.join(", ")}`);
    }
  }
  const events = {} as Record<EventName, EventMode>;
  for (const e of EVENTS) {
    const has = typeof filter[e] === "function" ||
      (e === "body" && typeof filter.bodyStream === "function");
    if (has) events[e] = noReply.has(e) ? "noreply" : "reply";
    else if (ignore.has(e)) events[e] = "off";
    else if (OBSERVED_BY_DEFAULT.has(e) || observe.has(e)) events[e] = "noreply";
    else if (e === "body" && filter.bufferBody) events[e] = "noreply";
    else events[e] = "off";
  }
  let features = 0;
  if (events.body === "reply") features |= SMFIP.SKIP;
  if (filter.headerLeadingSpace) features |= SMFIP.HDR_LEADSPC;
  if (filter.rejectedRecipients) features |= SMFIP.RCPT_REJ;
  const symlists: SymbolList[] = [];
  for (const [stage, names] of Object.entries(filter.macros ?? {})) {
    const n = MACRO_STAGE_NUMBER[stage as MacroStage];
    if (n === undefined) {
      throw new TypeError(
        `Unknown macro stage ${JSON.stringify(stage)}; known: ${
          Object.keys(MACRO_STAGE_NUMBER).join(", ")
        }`,
      );
    }
    if (names && names.length > 0) symlists.push({ stage: n, macros: names.join(" ") });
  }
  symlists.sort((a, b) => a.stage - b.stage);
  return { actions, events, features, symlists };
}

/** The MTA's OPTNEG offer. */
export interface Offer {
  /** Protocol version offered. */
  readonly version: number;
  /** `SMFIF_*` actions offered. */
  readonly actions: number;
  /** `SMFIP_*` bits offered. */
  readonly protocol: number;
}

/**
 * Answers the MTA's offer for a filter, libmilter-style: version = min(6, offered); every
 * needed action must be offered; events the MTA's version lacks need no switching off;
 * no-reply bits the MTA does not offer are dropped (the engine then answers itself);
 * HDR_LEADSPC and RCPT_REJ must be offered; SKIP is used only if offered.
 *
 * @param offer What the MTA offered.
 * @param req What the filter needs ({@link requirementsOf}).
 * @returns The OPTNEG reply to send and what is in force afterwards.
 * @throws {MilterNegotiationError} naming what the MTA lacks.
 *
 * @example
 * ```ts
 * import { negotiateFilter, requirementsOf } from "./negotiate.ts";
 * import assert from "node:assert/strict";
 * const { negotiated } = negotiateFilter(
 *   { version: 6, actions: 0x1ff, protocol: 0x1fffff },
 *   requirementsOf({ actions: ["addHeader"], eom() {} }),
 * );
 * assert.equal(negotiated.actions, 0x1);
 * ```
 */
export function negotiateFilter(
  offer: Offer,
  req: FilterRequirements,
): { reply: Reply & { type: "optneg" }; negotiated: Negotiated } {
  if (offer.version < 2) {
    throw new MilterNegotiationError(
      `MTA offers protocol version ${offer.version}; at least 2 is required`,
      [`version ${offer.version}`],
    );
  }
  const version = Math.min(PROTOCOL_VERSION, offer.version);
  // libmilter: an action word of 0 means the v1 set, a protocol word of 0 the v1 set.
  const offeredActions = offer.actions === 0 ? 0x0f : offer.actions;
  const offeredProtocol = offer.protocol === 0 ? 0x3f : offer.protocol;
  const missingActions = req.actions & ~offeredActions;
  if (missingActions !== 0) {
    const names = flagNames(missingActions, ACTION_NAMES);
    throw new MilterNegotiationError(
      `MTA does not offer the actions this filter needs: ${names.join(", ")}` +
        ` (offered 0x${offeredActions.toString(16)})`,
      names,
    );
  }
  const needFeatures = req.features & (SMFIP.HDR_LEADSPC | SMFIP.RCPT_REJ);
  const missingFeatures = needFeatures & ~offeredProtocol;
  if (missingFeatures !== 0) {
    const names = flagNames(missingFeatures, PROTOCOL_NAMES);
    throw new MilterNegotiationError(
      `MTA does not offer the protocol features this filter needs: ${names.join(", ")}`,
      names,
    );
  }
  let protocol = needFeatures | (req.features & SMFIP.SKIP & offeredProtocol);
  for (const e of EVENTS) {
    const bits = EVENT_BITS[e];
    const mode = req.events[e];
    if (mode === "off") {
      // Only ask to switch off events that exist in this version and that the MTA can omit.
      if (version >= bits.since && (offeredProtocol & bits.no)) protocol |= bits.no;
    } else if (mode === "noreply" && (offeredProtocol & bits.nr)) {
      protocol |= bits.nr;
    }
  }
  let actions = req.actions;
  const symlists = (offeredActions & SMFIF.SETSYMLIST) ? req.symlists : [];
  if (symlists.length > 0) actions |= SMFIF.SETSYMLIST;
  const reply: Reply & { type: "optneg" } = symlists.length > 0
    ? { type: "optneg", version, actions, protocol, symlists }
    : { type: "optneg", version, actions, protocol };
  return { reply, negotiated: { version, actions, protocol, symlists } };
}
