/**
 * Encoding and decoding of the filter → MTA direction (`SMFIR_*`).
 *
 * @module
 */

import { buildFrame, ByteReader, type Field } from "./bytes.ts";
import { encodeFrame } from "./frame.ts";
import type { Frame, Reply, SymbolList } from "./types.ts";
import { SMFIR } from "./constants.ts";

/** Spec names of the response bytes, for messages. */
export const REPLY_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(SMFIR).map(([k, v]) => [v, k === "OPTNEG" ? "SMFIC_OPTNEG reply" : `SMFIR_${k}`]),
);

const SIMPLE: Readonly<Record<number, Reply["type"]>> = {
  [SMFIR.CONTINUE]: "continue",
  [SMFIR.ACCEPT]: "accept",
  [SMFIR.REJECT]: "reject",
  [SMFIR.TEMPFAIL]: "tempfail",
  [SMFIR.DISCARD]: "discard",
  [SMFIR.SKIP]: "skip",
  [SMFIR.PROGRESS]: "progress",
  [SMFIR.SHUTDOWN]: "shutdown",
  [SMFIR.CONN_FAIL]: "connfail",
};

const SIMPLE_CODE: Readonly<Record<string, number>> = Object.fromEntries(
  Object.entries(SIMPLE).map(([code, type]) => [type, Number(code)]),
);

/**
 * Decodes one filter → MTA frame. Unknown response bytes (and the never-used standalone
 * `l` SETSYMLIST) come back as `{ type: "raw" }`.
 *
 * @param frame The frame.
 * @returns The reply.
 * @throws {MilterProtocolError} (reason `malformed`) when the payload does not fit the layout.
 *
 * @example
 * ```ts
 * import { decodeReply } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.deepEqual(decodeReply({ code: 0x61, payload: new Uint8Array(0) }), { type: "accept" });
 * ```
 */
export function decodeReply(frame: Frame): Reply {
  const { code, payload } = frame;
  const name = REPLY_NAMES[code] ?? `response 0x${code.toString(16)}`;
  const r = new ByteReader(payload, code, name);
  const simple = SIMPLE[code];
  if (simple !== undefined) {
    r.end();
    return { type: simple } as Reply;
  }
  switch (code) {
    case SMFIR.OPTNEG: {
      const version = r.u32("version");
      const actions = r.u32("actions");
      const protocol = r.u32("protocol");
      if (r.remaining === 0) return { type: "optneg", version, actions, protocol };
      const symlists: SymbolList[] = [];
      while (r.remaining > 0) {
        const stage = r.u32("macro list stage");
        symlists.push({ stage, macros: r.cstring("macro list") });
      }
      return { type: "optneg", version, actions, protocol, symlists };
    }
    case SMFIR.REPLYCODE: {
      const text = r.cstring("reply text");
      r.end();
      return { type: "replycode", text };
    }
    case SMFIR.ADDHEADER: {
      const hname = r.cstring("header name");
      const value = r.cstring("header value");
      r.end();
      return { type: "addheader", name: hname, value };
    }
    case SMFIR.INSHEADER:
    case SMFIR.CHGHEADER: {
      const index = r.u32("header index");
      const hname = r.cstring("header name");
      const value = r.cstring("header value");
      r.end();
      return {
        type: code === SMFIR.INSHEADER ? "insheader" : "chgheader",
        index,
        name: hname,
        value,
      };
    }
    case SMFIR.REPLBODY:
      return { type: "replbody", chunk: payload };
    case SMFIR.ADDRCPT: {
      const recipient = r.cstring("recipient");
      r.end();
      return { type: "addrcpt", recipient };
    }
    case SMFIR.DELRCPT: {
      const recipient = r.cstring("recipient");
      r.end();
      return { type: "delrcpt", recipient };
    }
    case SMFIR.ADDRCPT_PAR: {
      const recipient = r.cstring("recipient");
      if (r.remaining === 0) return { type: "addrcpt_par", recipient };
      const args = r.cstring("ESMTP arguments");
      r.end();
      return { type: "addrcpt_par", recipient, args };
    }
    case SMFIR.CHGFROM: {
      const sender = r.cstring("sender");
      if (r.remaining === 0) return { type: "chgfrom", sender };
      const args = r.cstring("ESMTP arguments");
      r.end();
      return { type: "chgfrom", sender, args };
    }
    case SMFIR.QUARANTINE: {
      const reason = r.cstring("reason");
      r.end();
      return { type: "quarantine", reason };
    }
    default:
      return { type: "raw", code, payload };
  }
}

/**
 * Encodes one filter → MTA reply as wire bytes (length prefix included).
 *
 * @param reply The reply.
 * @returns The frame bytes.
 * @throws {TypeError} when a string contains a NUL byte.
 * @throws {RangeError} when a number does not fit its field.
 *
 * @example
 * ```ts
 * import { encodeReply } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...encodeReply({ type: "continue" })], [0, 0, 0, 1, 0x63]);
 * ```
 */
export function encodeReply(reply: Reply): Uint8Array {
  const simple = SIMPLE_CODE[reply.type];
  if (simple !== undefined) return encodeFrame(simple);
  switch (reply.type) {
    case "optneg": {
      const fields: Field[] = [
        { u32: reply.version },
        { u32: reply.actions },
        { u32: reply.protocol },
      ];
      for (const l of reply.symlists ?? []) fields.push({ u32: l.stage }, { cstring: l.macros });
      return buildFrame(SMFIR.OPTNEG, fields);
    }
    case "replycode":
      return buildFrame(SMFIR.REPLYCODE, [{ cstring: reply.text }]);
    case "addheader":
      return buildFrame(SMFIR.ADDHEADER, [{ cstring: reply.name }, { cstring: reply.value }]);
    case "insheader":
    case "chgheader":
      return buildFrame(reply.type === "insheader" ? SMFIR.INSHEADER : SMFIR.CHGHEADER, [
        { u32: reply.index },
        { cstring: reply.name },
        { cstring: reply.value },
      ]);
    case "replbody":
      return encodeFrame(SMFIR.REPLBODY, reply.chunk);
    case "addrcpt":
      return buildFrame(SMFIR.ADDRCPT, [{ cstring: reply.recipient }]);
    case "delrcpt":
      return buildFrame(SMFIR.DELRCPT, [{ cstring: reply.recipient }]);
    case "addrcpt_par":
    case "chgfrom": {
      const first = reply.type === "chgfrom" ? reply.sender : reply.recipient;
      const fields: Field[] = [{ cstring: first }];
      if (reply.args !== undefined) fields.push({ cstring: reply.args });
      return buildFrame(reply.type === "chgfrom" ? SMFIR.CHGFROM : SMFIR.ADDRCPT_PAR, fields);
    }
    case "quarantine":
      return buildFrame(SMFIR.QUARANTINE, [{ cstring: reply.reason }]);
    case "raw":
      return encodeFrame(reply.code, reply.payload);
    default:
      throw new TypeError(`Cannot encode reply of type ${JSON.stringify(reply.type)}`);
  }
}
