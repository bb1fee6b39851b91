/**
 * Which protocol bits concern which command, and which action each modification needs: the
 * tables the filter engine, the MTA engine, the proxy and the annotator all consult.
 *
 * @module
 */

import type { CommandType, MacroStageLetter, ReplyType, Stage } from "./types.ts";
import { SMFIF, SMFIP, SMFIR } from "./constants.ts";

/**
 * The stage a command belongs to, in the one stage vocabulary ({@link Stage}): `mail` is
 * `envfrom`, `rcpt` is `envrcpt`, the other stage commands keep their names. Commands that
 * are no stage (optneg, macro, abort, quit, quit_nc, raw) map to undefined.
 *
 * @param type The command type.
 * @returns The stage, or undefined.
 *
 * @example
 * ```ts
 * import { stageOf } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(stageOf("mail"), "envfrom");
 * assert.equal(stageOf("abort"), undefined);
 * ```
 */
export function stageOf(type: CommandType): Stage | undefined {
  switch (type) {
    case "mail":
      return "envfrom";
    case "rcpt":
      return "envrcpt";
    case "connect":
    case "helo":
    case "data":
    case "header":
    case "eoh":
    case "body":
    case "eom":
    case "unknown":
      return type;
    default:
      return undefined;
  }
}

/**
 * The letter of each stage's command byte, which is also the stage letter of the `D` (macro)
 * frame sent before it (`envfrom` → `M`).
 */
export const STAGE_LETTER: Readonly<Record<Stage, MacroStageLetter>> = {
  connect: "C",
  helo: "H",
  envfrom: "M",
  envrcpt: "R",
  data: "T",
  header: "L",
  eoh: "N",
  body: "B",
  eom: "E",
  unknown: "U",
};

/**
 * The `SMFIP_NO*` bit that switches a command off, per command type.
 *
 * @example
 * ```ts
 * import { NO_EVENT_BIT } from "./command_bits.ts";
 * import { SMFIP } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(NO_EVENT_BIT.header, SMFIP.NOHDRS);
 * ```
 */
export const NO_EVENT_BIT: Readonly<Partial<Record<CommandType, number>>> = {
  connect: SMFIP.NOCONNECT,
  helo: SMFIP.NOHELO,
  mail: SMFIP.NOMAIL,
  rcpt: SMFIP.NORCPT,
  data: SMFIP.NODATA,
  header: SMFIP.NOHDRS,
  eoh: SMFIP.NOEOH,
  body: SMFIP.NOBODY,
  unknown: SMFIP.NOUNKNOWN,
};

/**
 * The `SMFIP_NR_*` bit that makes a command go unanswered, per command type. Commands missing
 * here are either never answered (abort, macro, quit) or always answered (optneg, eom).
 *
 * @example
 * ```ts
 * import { NO_REPLY_BIT } from "./command_bits.ts";
 * import { SMFIP } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(NO_REPLY_BIT.rcpt, SMFIP.NR_RCPT);
 * ```
 */
export const NO_REPLY_BIT: Readonly<Partial<Record<CommandType, number>>> = {
  connect: SMFIP.NR_CONN,
  helo: SMFIP.NR_HELO,
  mail: SMFIP.NR_MAIL,
  rcpt: SMFIP.NR_RCPT,
  data: SMFIP.NR_DATA,
  header: SMFIP.NR_HDR,
  eoh: SMFIP.NR_EOH,
  body: SMFIP.NR_BODY,
  unknown: SMFIP.NR_UNKN,
};

/**
 * Whether the MTA waits for an answer to a command under the negotiated protocol bits.
 *
 * @param type The command type.
 * @param protocol The negotiated `SMFIP_*` word.
 * @returns True for optneg and eom, false for abort/macro/quit/quit_nc/raw, else by NR bit.
 *
 * @example
 * ```ts
 * import { expectsReply, SMFIP } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(expectsReply("header", SMFIP.NR_HDR), false);
 * assert.equal(expectsReply("eom", 0x1fffff), true);
 * ```
 */
export function expectsReply(type: CommandType, protocol: number): boolean {
  if (type === "optneg" || type === "eom") return true;
  const bit = NO_REPLY_BIT[type];
  return bit !== undefined && (protocol & bit) === 0;
}

/**
 * The `SMFIF_*` action bit each modification response needs.
 *
 * @example
 * ```ts
 * import { MODIFICATION_ACTION } from "./command_bits.ts";
 * import { SMFIF } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(MODIFICATION_ACTION.insheader, SMFIF.ADDHDRS);
 * ```
 */
export const MODIFICATION_ACTION: Readonly<Partial<Record<ReplyType, number>>> = {
  addheader: SMFIF.ADDHDRS,
  insheader: SMFIF.ADDHDRS,
  chgheader: SMFIF.CHGHDRS,
  replbody: SMFIF.CHGBODY,
  addrcpt: SMFIF.ADDRCPT,
  delrcpt: SMFIF.DELRCPT,
  "addrcpt_par": SMFIF.ADDRCPT_PAR,
  chgfrom: SMFIF.CHGFROM,
  quarantine: SMFIF.QUARANTINE,
};

/** The codes of the replies that end the filter's answer to a command (see FINAL_REPLIES). */
const FINAL_REPLY_CODE = {
  continue: SMFIR.CONTINUE,
  accept: SMFIR.ACCEPT,
  reject: SMFIR.REJECT,
  tempfail: SMFIR.TEMPFAIL,
  discard: SMFIR.DISCARD,
  replycode: SMFIR.REPLYCODE,
  skip: SMFIR.SKIP,
  shutdown: SMFIR.SHUTDOWN,
  connfail: SMFIR.CONN_FAIL,
} as const satisfies Partial<Record<ReplyType, number>>;

/**
 * Replies that end the filter's answer to a command once negotiation is done: the MTA stops
 * reading for that command (`progress`, `quarantine` and the other modifications do not).
 * `optneg` ends only the negotiation and is not in the set.
 *
 * @example
 * ```ts
 * import { FINAL_REPLIES } from "./command_bits.ts";
 * import assert from "node:assert/strict";
 * assert.ok(FINAL_REPLIES.has("shutdown") && !FINAL_REPLIES.has("progress"));
 * ```
 */
export const FINAL_REPLIES: ReadonlySet<ReplyType> = new Set<ReplyType>(
  Object.keys(FINAL_REPLY_CODE) as ReplyType[],
);

/**
 * {@link FINAL_REPLIES} by reply byte, for code that follows frames without decoding them.
 *
 * @example
 * ```ts
 * import { FINAL_REPLY_CODES } from "./command_bits.ts";
 * import assert from "node:assert/strict";
 * assert.ok(FINAL_REPLY_CODES.has(0x34) && !FINAL_REPLY_CODES.has(0x70)); // SHUTDOWN, PROGRESS
 * ```
 */
export const FINAL_REPLY_CODES: ReadonlySet<number> = new Set(Object.values(FINAL_REPLY_CODE));
