/**
 * One-line descriptions of decoded frames, shared by the timeline, the recording's event
 * lines and the proxy's live log; and a JSON form of decoded frames (bytes as sizes).
 *
 * @module
 */

import type { Decoded } from "./annotator.ts";
import { ACTION_NAMES, flagNames, PROTOCOL_NAMES } from "../../wire/constants.ts";

const MAX_SHOWN = 120;

function q(s: string): string {
  const j = JSON.stringify(s);
  return j.length > MAX_SHOWN ? `${j.slice(0, MAX_SHOWN - 4)}…"` : j;
}

/**
 * Describes a decoded command or reply in one line, e.g. `MAIL <a@b> size=86` or
 * `CHGHEADER Subject[1] = "x"`.
 *
 * @param decoded A command, a reply or `{ error }`.
 * @param direction Which side sent it (OPTNEG exists in both directions).
 * @returns The description.
 *
 * @example
 * ```ts
 * import { describeDecoded } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.equal(describeDecoded({ type: "rcpt", recipient: "<b@c>", args: [] }, "to-filter"), "RCPT <b@c>");
 * ```
 */
export function describeDecoded(decoded: Decoded, direction: "to-filter" | "to-mta"): string {
  if ("error" in decoded) return `UNDECODABLE ${decoded.error}`;
  const d = decoded;
  switch (d.type) {
    case "optneg": {
      const base = `OPTNEG v${d.version} actions=0x${d.actions.toString(16)}` +
        ` protocol=0x${d.protocol.toString(16)}`;
      if (direction === "to-filter") return base;
      const lists = "symlists" in d && d.symlists?.length
        ? ` symlists=${d.symlists.map((l) => `${l.stage}:${q(l.macros)}`).join(",")}`
        : "";
      return `${base} [${flagNames(d.actions, ACTION_NAMES).join(" ")}] [${
        flagNames(d.protocol, PROTOCOL_NAMES).join(" ")
      }]${lists}`;
    }
    case "macro":
      return `MACRO ${d.stage} ${d.macros.map(([k, v]) => `${k}=${q(v)}`).join(" ")}`.trimEnd();
    case "connect":
      return `CONNECT ${d.hostname} ${d.family}` +
        (d.address !== undefined ? ` ${d.address}:${d.port}` : "");
    case "helo":
      return `HELO ${d.name}`;
    case "mail":
      return `MAIL ${d.sender}${d.args.map((a) => ` ${a}`).join("")}`;
    case "rcpt":
      return `RCPT ${d.recipient}${d.args.map((a) => ` ${a}`).join("")}`;
    case "header":
      return `HEADER ${d.name}: ${q(d.value)}`;
    case "body":
      return `BODY ${d.chunk.length} bytes`;
    case "eom":
      return d.chunk ? `EOM with ${d.chunk.length} bytes` : "EOM";
    case "unknown":
      return `UNKNOWN ${q(d.line)}`;
    case "replycode":
      return `REPLYCODE ${q(d.text)}`;
    case "addheader":
      return `ADDHEADER ${d.name}: ${q(d.value)}`;
    case "insheader":
      return `INSHEADER ${d.name} at [${d.index}]: ${q(d.value)}`;
    case "chgheader":
      return d.value === ""
        ? `CHGHEADER ${d.name}[${d.index}] deleted`
        : `CHGHEADER ${d.name}[${d.index}] = ${q(d.value)}`;
    case "replbody":
      return `REPLBODY ${d.chunk.length} bytes`;
    case "addrcpt":
    case "delrcpt":
      return `${d.type.toUpperCase()} ${d.recipient}`;
    case "addrcpt_par":
      return `ADDRCPT_PAR ${d.recipient}${d.args ? ` ${d.args}` : ""}`;
    case "chgfrom":
      return `CHGFROM ${d.sender}${d.args ? ` ${d.args}` : ""}`;
    case "quarantine":
      return `QUARANTINE ${q(d.reason)}`;
    case "raw":
      return `RAW 0x${d.code.toString(16)} ${d.payload.length} bytes`;
    default:
      return d.type.toUpperCase();
  }
}

/**
 * Turns a decoded frame into plain JSON data: byte fields (`chunk`, `payload`, `extra`)
 * become `{ "size": n }`.
 *
 * @param decoded A command, a reply or `{ error }`.
 * @returns A JSON-serialisable object.
 *
 * @example
 * ```ts
 * import { decodedToJson } from "@milterkit/milterkit/inspect";
 * import assert from "node:assert/strict";
 * assert.deepEqual(decodedToJson({ type: "body", chunk: new Uint8Array(3) }), { type: "body", chunk: { size: 3 } });
 * ```
 */
export function decodedToJson(decoded: Decoded): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(decoded)) {
    out[k] = v instanceof Uint8Array ? { size: v.length } : v;
  }
  return out;
}
