/**
 * Encoding and decoding of the MTA → filter direction (`SMFIC_*`).
 *
 * @module
 */

import { buildFrame, ByteReader, type Field } from "./bytes.ts";
import { MilterProtocolError } from "./errors.ts";
import { encodeFrame } from "./frame.ts";
import type { Command, ConnectFamily, Frame } from "./types.ts";
import { SMFIC } from "./constants.ts";

const FAMILY_BY_BYTE: Readonly<Record<number, ConnectFamily>> = {
  0x34: "inet",
  0x36: "inet6",
  0x4c: "unix",
  0x55: "unknown",
};
const BYTE_BY_FAMILY: Readonly<Record<ConnectFamily, number>> = {
  inet: 0x34,
  inet6: 0x36,
  unix: 0x4c,
  unknown: 0x55,
};

/** Spec names of the command bytes, for messages. */
export const COMMAND_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(SMFIC).map(([k, v]) => [v, `SMFIC_${k}`]),
);

const EMPTY = new Uint8Array(0);

/**
 * Decodes one MTA → filter frame. A command byte this toolkit does not know comes back as
 * `{ type: "raw" }`, not as an error.
 *
 * @param frame The frame.
 * @returns The command.
 * @throws {MilterProtocolError} (reason `malformed`) when the payload does not fit the layout:
 * a missing NUL, a short fixed field, an unknown address family, left-over bytes.
 *
 * @example
 * ```ts
 * import { decodeCommand } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const helo = decodeCommand({ code: 0x48, payload: new TextEncoder().encode("mx\0") });
 * assert.deepEqual(helo, { type: "helo", name: "mx" });
 * ```
 */
export function decodeCommand(frame: Frame): Command {
  const { code, payload } = frame;
  const name = COMMAND_NAMES[code] ?? `command 0x${code.toString(16)}`;
  const r = new ByteReader(payload, code, name);
  switch (code) {
    case SMFIC.OPTNEG: {
      const version = r.u32("version");
      const actions = r.u32("actions");
      const protocol = r.u32("protocol");
      const extra = r.rest();
      return extra.length > 0
        ? { type: "optneg", version, actions, protocol, extra: extra.slice() }
        : { type: "optneg", version, actions, protocol };
    }
    case SMFIC.MACRO: {
      const stage = String.fromCharCode(r.u8("macro stage byte"));
      const strings = r.cstrings("macro");
      const macros: [string, string][] = [];
      for (let i = 0; i < strings.length; i += 2) macros.push([strings[i]!, strings[i + 1] ?? ""]);
      return { type: "macro", stage, macros };
    }
    case SMFIC.CONNECT: {
      const hostname = r.cstring("hostname");
      const fam = r.u8("family");
      const family = FAMILY_BY_BYTE[fam];
      if (family === undefined) {
        throw new MilterProtocolError(
          `Cannot decode SMFIC_CONNECT: unknown address family byte 0x${fam.toString(16)}` +
            ` (expected '4', '6', 'L' or 'U')`,
          { reason: "malformed", code, offset: r.pos - 1 },
        );
      }
      if (family === "unknown") {
        r.end();
        return { type: "connect", hostname, family };
      }
      const port = r.u16("port");
      const rawAddress = r.cstring("address");
      r.end();
      const address = family === "inet6" && rawAddress.startsWith("IPv6:")
        ? rawAddress.slice(5)
        : rawAddress;
      return address === rawAddress
        ? { type: "connect", hostname, family, port, address }
        : { type: "connect", hostname, family, port, address, rawAddress };
    }
    case SMFIC.HELO: {
      const helo = r.cstring("helo name");
      r.end();
      return { type: "helo", name: helo };
    }
    case SMFIC.MAIL: {
      const [sender, ...args] = r.cstrings("sender");
      if (sender === undefined) throw empty(code, name, "sender");
      return { type: "mail", sender, args };
    }
    case SMFIC.RCPT: {
      const [recipient, ...args] = r.cstrings("recipient");
      if (recipient === undefined) throw empty(code, name, "recipient");
      return { type: "rcpt", recipient, args };
    }
    case SMFIC.HEADER: {
      const hname = r.cstring("header name");
      const value = r.cstring("header value");
      r.end();
      return { type: "header", name: hname, value };
    }
    case SMFIC.BODY:
      return { type: "body", chunk: payload };
    case SMFIC.BODYEOB:
      return payload.length > 0 ? { type: "eom", chunk: payload } : { type: "eom" };
    case SMFIC.UNKNOWN: {
      const line = r.cstring("command line");
      r.end();
      return { type: "unknown", line };
    }
    case SMFIC.DATA:
    case SMFIC.EOH:
    case SMFIC.ABORT:
    case SMFIC.QUIT:
    case SMFIC.QUIT_NC: {
      r.end();
      const t = code === SMFIC.DATA
        ? "data"
        : code === SMFIC.EOH
        ? "eoh"
        : code === SMFIC.ABORT
        ? "abort"
        : code === SMFIC.QUIT
        ? "quit"
        : "quit_nc";
      return { type: t };
    }
    default:
      return { type: "raw", code, payload };
  }
}

function empty(code: number, name: string, field: string): MilterProtocolError {
  return new MilterProtocolError(`Cannot decode ${name}: empty payload, ${field} missing`, {
    reason: "malformed",
    code,
    offset: 0,
  });
}

/**
 * Encodes one MTA → filter command as wire bytes (length prefix included).
 *
 * @param command The command.
 * @returns The frame bytes.
 * @throws {TypeError} when a string contains a NUL byte.
 * @throws {RangeError} when a number does not fit its field.
 *
 * @example
 * ```ts
 * import { encodeCommand } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * assert.deepEqual([...encodeCommand({ type: "quit" })], [0, 0, 0, 1, 0x51]);
 * ```
 */
export function encodeCommand(command: Command): Uint8Array {
  switch (command.type) {
    case "optneg":
      return buildFrame(SMFIC.OPTNEG, [
        { u32: command.version },
        { u32: command.actions },
        { u32: command.protocol },
        { raw: command.extra ?? EMPTY },
      ]);
    case "macro": {
      if (command.stage.length !== 1) {
        throw new TypeError(
          `Macro stage must be one character, got ${JSON.stringify(command.stage)}`,
        );
      }
      const fields: Field[] = [{ u8: command.stage.charCodeAt(0) }];
      for (const [k, v] of command.macros) fields.push({ cstring: k }, { cstring: v });
      return buildFrame(SMFIC.MACRO, fields);
    }
    case "connect": {
      const fields: Field[] = [
        { cstring: command.hostname },
        { u8: BYTE_BY_FAMILY[command.family] },
      ];
      if (command.family !== "unknown") {
        fields.push(
          { u16: command.port ?? 0 },
          { cstring: command.rawAddress ?? command.address ?? "" },
        );
      }
      return buildFrame(SMFIC.CONNECT, fields);
    }
    case "helo":
      return buildFrame(SMFIC.HELO, [{ cstring: command.name }]);
    case "mail":
      return buildFrame(SMFIC.MAIL, [command.sender, ...command.args].map((s) => ({ cstring: s })));
    case "rcpt":
      return buildFrame(
        SMFIC.RCPT,
        [command.recipient, ...command.args].map((s) => ({ cstring: s })),
      );
    case "header":
      return buildFrame(SMFIC.HEADER, [{ cstring: command.name }, { cstring: command.value }]);
    case "body":
      return encodeFrame(SMFIC.BODY, command.chunk);
    case "eom":
      return encodeFrame(SMFIC.BODYEOB, command.chunk ?? EMPTY);
    case "unknown":
      return buildFrame(SMFIC.UNKNOWN, [{ cstring: command.line }]);
    case "data":
      return encodeFrame(SMFIC.DATA);
    case "eoh":
      return encodeFrame(SMFIC.EOH);
    case "abort":
      return encodeFrame(SMFIC.ABORT);
    case "quit":
      return encodeFrame(SMFIC.QUIT);
    case "quit_nc":
      return encodeFrame(SMFIC.QUIT_NC);
    case "raw":
      return encodeFrame(command.code, command.payload);
  }
}
