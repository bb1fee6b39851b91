/**
 * Byte-level constants of the milter protocol, each named after its libmilter macro
 * (`SMFIC_*`, `SMFIR_*`, `SMFIF_*`, `SMFIP_*`, `SMFIM_*`) so code and spec grep alike.
 *
 * @module
 */

/**
 * Command bytes sent by the MTA to the filter (`SMFIC_*`).
 *
 * @example Look up the byte of a command
 * ```ts
 * import { SMFIC } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(SMFIC.CONNECT, 0x43); // 'C'
 * ```
 */
export const SMFIC = {
  /** `A` SMFIC_ABORT: forget the current message; never answered. */
  ABORT: 0x41,
  /** `B` SMFIC_BODY: a chunk of the body (1..65535 bytes). */
  BODY: 0x42,
  /** `C` SMFIC_CONNECT: connection information. */
  CONNECT: 0x43,
  /** `D` SMFIC_MACRO: macros for the next command; never answered. */
  MACRO: 0x44,
  /** `E` SMFIC_BODYEOB: end of message. */
  BODYEOB: 0x45,
  /** `H` SMFIC_HELO: HELO/EHLO argument. */
  HELO: 0x48,
  /** `K` SMFIC_QUIT_NC: session over, connection is reused for a new one (v6). */
  QUIT_NC: 0x4b,
  /** `L` SMFIC_HEADER: one header field. */
  HEADER: 0x4c,
  /** `M` SMFIC_MAIL: MAIL FROM sender and ESMTP arguments. */
  MAIL: 0x4d,
  /** `N` SMFIC_EOH: end of headers. */
  EOH: 0x4e,
  /** `O` SMFIC_OPTNEG: option negotiation. */
  OPTNEG: 0x4f,
  /** `Q` SMFIC_QUIT: session over, filter closes. */
  QUIT: 0x51,
  /** `R` SMFIC_RCPT: RCPT TO recipient and ESMTP arguments. */
  RCPT: 0x52,
  /** `T` SMFIC_DATA: the DATA command (v4+). */
  DATA: 0x54,
  /** `U` SMFIC_UNKNOWN: an SMTP command the MTA did not recognise (v3+). */
  UNKNOWN: 0x55,
} as const;

/**
 * Response bytes sent by the filter to the MTA (`SMFIR_*`).
 *
 * @example
 * ```ts
 * import { SMFIR } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(String.fromCharCode(SMFIR.REPLYCODE), "y");
 * ```
 */
export const SMFIR = {
  /** `+` SMFIR_ADDRCPT: add a recipient. */
  ADDRCPT: 0x2b,
  /** `-` SMFIR_DELRCPT: delete a recipient. */
  DELRCPT: 0x2d,
  /** `2` SMFIR_ADDRCPT_PAR: add a recipient with ESMTP arguments. */
  ADDRCPT_PAR: 0x32,
  /** `4` SMFIR_SHUTDOWN: 421 and disconnect (Postfix only). */
  SHUTDOWN: 0x34,
  /** `a` SMFIR_ACCEPT: accept. */
  ACCEPT: 0x61,
  /** `b` SMFIR_REPLBODY: replace body (chunk). */
  REPLBODY: 0x62,
  /** `c` SMFIR_CONTINUE: continue. */
  CONTINUE: 0x63,
  /** `d` SMFIR_DISCARD: discard the message silently. */
  DISCARD: 0x64,
  /** `e` SMFIR_CHGFROM: change the envelope sender. */
  CHGFROM: 0x65,
  /** `f` SMFIR_CONN_FAIL: reserved, implemented by no MTA. */
  CONN_FAIL: 0x66,
  /** `h` SMFIR_ADDHEADER: append a header. */
  ADDHEADER: 0x68,
  /** `i` SMFIR_INSHEADER: insert a header at an index. */
  INSHEADER: 0x69,
  /** `l` SMFIR_SETSYMLIST: reserved; lists travel in the OPTNEG reply. */
  SETSYMLIST: 0x6c,
  /** `m` SMFIR_CHGHEADER: change or delete a header occurrence. */
  CHGHEADER: 0x6d,
  /** `p` SMFIR_PROGRESS: keep-alive, not final. */
  PROGRESS: 0x70,
  /** `q` SMFIR_QUARANTINE: put the message on hold, not final. */
  QUARANTINE: 0x71,
  /** `r` SMFIR_REJECT: reject (5xx). */
  REJECT: 0x72,
  /** `s` SMFIR_SKIP: skip further events of this kind (body). */
  SKIP: 0x73,
  /** `t` SMFIR_TEMPFAIL: temporary failure (4xx). */
  TEMPFAIL: 0x74,
  /** `y` SMFIR_REPLYCODE: custom SMTP reply. */
  REPLYCODE: 0x79,
  /** `O` the OPTNEG reply. */
  OPTNEG: 0x4f,
} as const;

/**
 * Action flags (`SMFIF_*`, second word of OPTNEG): what the filter may modify.
 *
 * @example
 * ```ts
 * import { SMFIF } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(SMFIF.ADDHDRS | SMFIF.CHGHDRS, 0x11);
 * ```
 */
export const SMFIF = {
  /** SMFIF_ADDHDRS: add and insert headers. */
  ADDHDRS: 0x1,
  /** SMFIF_CHGBODY: replace the body. */
  CHGBODY: 0x2,
  /** SMFIF_ADDRCPT: add recipients. */
  ADDRCPT: 0x4,
  /** SMFIF_DELRCPT: delete recipients. */
  DELRCPT: 0x8,
  /** SMFIF_CHGHDRS: change and delete headers. */
  CHGHDRS: 0x10,
  /** SMFIF_QUARANTINE: quarantine the message. */
  QUARANTINE: 0x20,
  /** SMFIF_CHGFROM: change the envelope sender. */
  CHGFROM: 0x40,
  /** SMFIF_ADDRCPT_PAR: add recipients with ESMTP arguments. */
  ADDRCPT_PAR: 0x80,
  /** SMFIF_SETSYMLIST: macro lists in the OPTNEG reply. */
  SETSYMLIST: 0x100,
} as const;

/**
 * Protocol flags (`SMFIP_*`, third word of OPTNEG).
 *
 * @example
 * ```ts
 * import { SMFIP } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(SMFIP.NR_HDR, 0x80);
 * ```
 */
export const SMFIP = {
  /** SMFIP_NOCONNECT: do not send CONNECT. */
  NOCONNECT: 0x1,
  /** SMFIP_NOHELO: do not send HELO. */
  NOHELO: 0x2,
  /** SMFIP_NOMAIL: do not send MAIL. */
  NOMAIL: 0x4,
  /** SMFIP_NORCPT: do not send RCPT. */
  NORCPT: 0x8,
  /** SMFIP_NOBODY: do not send BODY. */
  NOBODY: 0x10,
  /** SMFIP_NOHDRS: do not send HEADER. */
  NOHDRS: 0x20,
  /** SMFIP_NOEOH: do not send EOH. */
  NOEOH: 0x40,
  /** SMFIP_NR_HDR (old name SMFIP_NOHREPL): no reply to HEADER. */
  NR_HDR: 0x80,
  /** SMFIP_NOUNKNOWN: do not send UNKNOWN. */
  NOUNKNOWN: 0x100,
  /** SMFIP_NODATA: do not send DATA. */
  NODATA: 0x200,
  /** SMFIP_SKIP: the filter may answer SKIP. */
  SKIP: 0x400,
  /** SMFIP_RCPT_REJ: also send rejected recipients. */
  RCPT_REJ: 0x800,
  /** SMFIP_NR_CONN: no reply to CONNECT. */
  NR_CONN: 0x1000,
  /** SMFIP_NR_HELO: no reply to HELO. */
  NR_HELO: 0x2000,
  /** SMFIP_NR_MAIL: no reply to MAIL. */
  NR_MAIL: 0x4000,
  /** SMFIP_NR_RCPT: no reply to RCPT. */
  NR_RCPT: 0x8000,
  /** SMFIP_NR_DATA: no reply to DATA. */
  NR_DATA: 0x10000,
  /** SMFIP_NR_UNKN: no reply to UNKNOWN. */
  NR_UNKN: 0x20000,
  /** SMFIP_NR_EOH: no reply to EOH. */
  NR_EOH: 0x40000,
  /** SMFIP_NR_BODY: no reply to BODY. */
  NR_BODY: 0x80000,
  /** SMFIP_HDR_LEADSPC: header values keep their leading space. */
  HDR_LEADSPC: 0x100000,
  /** SMFIP_MDS_256K: 256 KiB - 1 data size (FFR builds only). */
  MDS_256K: 0x10000000,
  /** SMFIP_MDS_1M: 1 MiB - 1 data size (FFR builds only). */
  MDS_1M: 0x20000000,
} as const;

/**
 * Macro stage numbers used in the OPTNEG reply's symbol lists (`SMFIM_*`).
 * Note the order: EOM (5) comes before EOH (6).
 *
 * @example
 * ```ts
 * import { SMFIM } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.equal(SMFIM.ENVFROM, 2);
 * ```
 */
export const SMFIM = {
  /** SMFIM_CONNECT: macros sent before CONNECT. */
  CONNECT: 0,
  /** SMFIM_HELO: macros sent before HELO. */
  HELO: 1,
  /** SMFIM_ENVFROM: macros sent before MAIL. */
  ENVFROM: 2,
  /** SMFIM_ENVRCPT: macros sent before RCPT. */
  ENVRCPT: 3,
  /** SMFIM_DATA: macros sent before DATA. */
  DATA: 4,
  /** SMFIM_EOM: macros sent before end of message. */
  EOM: 5,
  /** SMFIM_EOH: macros sent before end of headers. */
  EOH: 6,
} as const;

/** Highest protocol version this toolkit speaks (libmilter's SMFI_PROT_VERSION). */
export const PROTOCOL_VERSION = 6;

/** Every action bit of protocol version 6 (SMFI_CURR_ACTS). */
export const ALL_ACTIONS = 0x1ff;

/** Every protocol bit of protocol version 6 (SMFI_CURR_PROT). */
export const ALL_PROTOCOL = 0x1fffff;

/** Largest BODY/REPLBODY data per frame, and libmilter's default max data size (MILTER_CHUNK_SIZE). */
export const MILTER_CHUNK_SIZE = 65535;

/**
 * Default limit of the frame reader, as data bytes (length field minus one).
 * libmilter accepts 65535; Postfix sends headers up to 102400 bytes in one frame, so the default
 * reader limit is larger: 1 MiB.
 */
export const DEFAULT_MAX_FRAME_DATA = 1024 * 1024;

/** Names of the action bits, in bit order, for messages and logs. */
export const ACTION_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(SMFIF).map(([name, bit]) => [bit, name]),
);

/** Names of the protocol bits, in bit order, for messages and logs. */
export const PROTOCOL_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(SMFIP).map(([name, bit]) => [bit, name]),
);

/**
 * Lists the names of the bits set in a flag word, given a bit → name table.
 *
 * @param word The flag word.
 * @param names A table such as {@link ACTION_NAMES} or {@link PROTOCOL_NAMES}.
 * @returns Names in bit order; unnamed bits appear as hex (`0x4000000`).
 *
 * @example
 * ```ts
 * import { flagNames, ACTION_NAMES } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.deepEqual(flagNames(0x11, ACTION_NAMES), ["ADDHDRS", "CHGHDRS"]);
 * ```
 */
export function flagNames(word: number, names: Readonly<Record<number, string>>): string[] {
  const out: string[] = [];
  for (let bit = 1, i = 0; i < 32; i++, bit = (bit * 2) >>> 0) {
    if ((word >>> 0) & bit) out.push(names[bit] ?? `0x${bit.toString(16)}`);
  }
  return out;
}
