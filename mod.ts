/**
 * milterkit: the Sendmail milter protocol over web streams, for filters and for MTAs.
 *
 * @module
 */

export * from "./lib/wire/constants.ts";
export type * from "./lib/wire/types.ts";
export type * from "./lib/mail/envelope.ts";
export * from "./lib/wire/errors.ts";
export * from "./lib/wire/text.ts";
export * from "./lib/wire/bytes.ts";
export * from "./lib/wire/frame.ts";
export * from "./lib/wire/command_codec.ts";
export * from "./lib/wire/reply_codec.ts";
export * from "./lib/filter/verdict.ts";
export * from "./lib/filter/filter.ts";
export * from "./lib/filter/negotiate.ts";
export * from "./lib/filter/macros.ts";
export * from "./lib/filter/body_pipe.ts";
export * from "./lib/filter/session.ts";
export * from "./lib/filter/log.ts";
export * from "./lib/mail/esmtp.ts";
export * from "./lib/mta/client.ts";
export * from "./lib/mta/types.ts";
export * from "./lib/mta/negotiate.ts";
export * from "./lib/mta/replies.ts";
export * from "./lib/mta/macros.ts";
export * from "./lib/mta/transaction.ts";
export * from "./lib/mail/message.ts";
export * from "./lib/mail/modify.ts";
export * from "./lib/mail/diff.ts";
export * from "./lib/mta/presets.ts";
export * from "./lib/server/log.ts";
export * from "./lib/server/colors.ts";
export * from "./lib/server/message_log.ts";
export * from "./lib/server/metrics.ts";
export * from "./lib/server/loop_watch.ts";
export * from "./lib/server/logging_filter.ts";
export * from "./lib/inspect/capture/pcap.ts";
export * from "./lib/inspect/capture/tcp.ts";
export * from "./lib/inspect/capture/sniff.ts";
export * from "./lib/inspect/capture/reorder.ts";
export {
  RecordingReader,
  type RecordingSessionInfo,
  type RecordingSink,
} from "./lib/inspect/recording_read.ts";
export * from "./lib/inspect/annotate/annotator.ts";
export * from "./lib/inspect/annotate/check.ts";
export * from "./lib/inspect/annotate/feed.ts";
export * from "./lib/inspect/annotate/messages.ts";
export * from "./lib/inspect/annotate/render.ts";
export * from "./lib/inspect/recording.ts";
export * from "./lib/inspect/recording_file.ts";
export * from "./lib/inspect/proxy_loop.ts";
export * from "./lib/inspect/proxy_summary.ts";
export * from "./lib/inspect/timeline.ts";
export {
  proxyConnection,
  type ProxyOptions,
  type ProxySummary,
  type TapFrame,
  type UpstreamFailurePolicy,
} from "./lib/inspect/proxy.ts";
export * from "./lib/server/socket_spec.ts";
export type * from "./lib/server/adapters/types.ts";
export {
  adapterFor,
  connect as connectSocket,
  listen as listenSocket,
  type NetConnectOptions,
  type NetListenOptions,
  runtimeAdapterName,
} from "./lib/server/net.ts";
export * from "./lib/server/server.ts";
export * from "./lib/inspect/replay.ts";
export * from "./lib/inspect/verdicts.ts";
export * from "./lib/inspect/stats.ts";
export { HtmlReport, type HtmlReportOptions } from "./lib/inspect/report_html.ts";
export * from "./lib/wire/command_bits.ts";
