/**
 * Look at milter traffic: a decoding {@link proxyConnection} between an MTA and a filter,
 * recordings it writes and reads back, pcap/pcapng captures with TCP reassembly, a session
 * annotator with a protocol checker, timelines, and replay of a recorded session against a
 * filter.
 *
 * @example
 * ```ts
 * import { annotateStreams, renderTimeline } from "@milterkit/milterkit/inspect";
 * import { encodeCommand, encodeReply } from "@milterkit/milterkit/wire";
 * import assert from "node:assert/strict";
 * // the two byte streams of a session, as a capture or a recording holds them
 * const annotator = annotateStreams({
 *   toFilter: encodeCommand({ type: "helo", name: "mx.example" }),
 *   toMta: encodeReply({ type: "continue" }),
 * });
 * const text = renderTimeline({
 *   id: "s1",
 *   notes: [],
 *   summary: annotator.summary(),
 *   events: annotator.events,
 * });
 * assert.match(text, /HELO mx\.example/);
 * ```
 *
 * @module
 */

export {
  proxyConnection,
  type ProxyOptions,
  type ProxySummary,
  type TapFrame,
  type UpstreamFailurePolicy,
} from "./proxy.ts";
export { RecordingWriter, type RecordingWriterOptions, redactFrame } from "./recording.ts";
export {
  isRecording,
  readRecording,
  readSegmentLog,
  type RecordedSession,
  type Recording,
  RECORDING_FORMAT,
  RECORDING_VERSION,
} from "./recording_read.ts";
export {
  type CaptureContents,
  CaptureFormatError,
  captureKind,
  readCapture,
  TCP_FLAGS,
  type TcpPacket,
} from "./capture/pcap.ts";
export {
  type Endpoint,
  findMilterConversations,
  looksLikeMtaStream,
  type MilterConversation,
  type StreamSegment,
} from "./capture/tcp.ts";
export { type InputKind, SNIFF_BYTES, sniffInput } from "./capture/sniff.ts";
export { SessionAnnotator } from "./annotate/annotator.ts";
export type {
  AnnotatedEvent,
  AnnotatorOptions,
  Decoded,
  LatencyStats,
  MessageSummary,
  NegotiationSummary,
  Outcome,
  RecipientSummary,
  SessionSummary,
} from "./annotate/types.ts";
export { annotateStreams, type StreamPair } from "./annotate/feed.ts";
export { checkModification, checkReplyText, type Issue, type IssueRule } from "./annotate/check.ts";
export { decodedToJson, describeDecoded } from "./annotate/render.ts";
export {
  describeOutcome,
  renderTimeline,
  type SessionReport,
  sessionToJson,
  type TimelineOptions,
} from "./timeline.ts";
export {
  renderReplay,
  type ReplayOptions,
  type ReplayReport,
  replaySession,
  type ReplayStep,
} from "./replay.ts";
