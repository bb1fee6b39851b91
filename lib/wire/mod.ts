/**
 * The milter protocol as bytes, for tools of your own: constants, frames, the command and reply
 * codecs, byte-exact text and the protocol's errors. Everything here is pure and runs in any
 * runtime.
 *
 * @example
 * ```ts
 * import { decodeCommand, encodeCommand, FrameDecoder } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * const decoder = new FrameDecoder();
 * const [frame] = decoder.push(encodeCommand({ type: "helo", name: "mx.example" }));
 * assert.deepEqual(decodeCommand(frame!), { type: "helo", name: "mx.example" });
 * ```
 *
 * @module
 */

export {
  ACTION_NAMES,
  ALL_ACTIONS,
  ALL_PROTOCOL,
  DEFAULT_MAX_FRAME_DATA,
  flagNames,
  MILTER_CHUNK_SIZE,
  PROTOCOL_NAMES,
  PROTOCOL_VERSION,
  SMFIC,
  SMFIF,
  SMFIM,
  SMFIP,
  SMFIR,
} from "./constants.ts";
export type {
  ByteChannel,
  Command,
  CommandType,
  ConnectFamily,
  Direction,
  Duplex,
  Frame,
  Modification,
  MtaStyle,
  Negotiated,
  Reply,
  ReplyType,
  Stage,
  SymbolList,
} from "./types.ts";
export {
  describeCode,
  encodeFrame,
  FrameDecoder,
  type FrameDecoderOptions,
  FrameDecoderStream,
  sniffForeignProtocol,
} from "./frame.ts";
export { COMMAND_NAMES, decodeCommand, encodeCommand } from "./command_codec.ts";
export { decodeReply, encodeReply, REPLY_NAMES } from "./reply_codec.ts";
export { expectsReply, stageOf } from "./command_bits.ts";
export { decodeText, displayText, encodeText } from "./text.ts";
export {
  ConnectionClosedError,
  FilterHandlerError,
  MilterError,
  MilterNegotiationError,
  MilterProtocolError,
  MilterTimeoutError,
  type ProtocolErrorDetails,
  type ProtocolErrorReason,
} from "./errors.ts";
