/**
 * milterkit: the Sendmail milter protocol over web streams, for filters and for MTAs.
 *
 * @module
 */

export * from "./lib/wire.ts";
export type * from "./lib/types.ts";
export * from "./lib/errors.ts";
export * from "./lib/text.ts";
export * from "./lib/bytes.ts";
export * from "./lib/frame.ts";
export * from "./lib/command_codec.ts";
export * from "./lib/reply_codec.ts";
export * from "./lib/verdict.ts";
export * from "./lib/filter.ts";
export * from "./lib/negotiate.ts";
export * from "./lib/macros.ts";
export * from "./lib/body_pipe.ts";
export * from "./lib/filter_session.ts";
export * from "./lib/esmtp.ts";
export * from "./lib/client.ts";
export * from "./lib/client_types.ts";
export * from "./lib/client_negotiate.ts";
export * from "./lib/client_replies.ts";
export * from "./lib/client_macros.ts";
export * from "./lib/client_transaction.ts";
export * from "./lib/message.ts";
export * from "./lib/message_modify.ts";
export * from "./lib/message_diff.ts";
export * from "./lib/mta_defaults.ts";
export * from "./lib/log.ts";
export * from "./lib/metrics.ts";
export * from "./lib/logging_filter.ts";
export * from "./lib/pcap.ts";
export * from "./lib/tcp_reassembly.ts";
export * from "./lib/annotate.ts";
export * from "./lib/annotate_check.ts";
export * from "./lib/annotate_feed.ts";
export * from "./lib/annotate_messages.ts";
export * from "./lib/annotate_text.ts";
export * from "./lib/recording.ts";
export * from "./lib/timeline.ts";
export {
  proxyConnection,
  type ProxyOptions,
  type ProxySummary,
  type TapFrame,
  type UpstreamFailurePolicy,
} from "./lib/proxy.ts";
export * from "./lib/address.ts";
export type * from "./lib/adapters/types.ts";
export {
  adapterFor,
  connect as connectSocket,
  listen as listenSocket,
  type NetConnectOptions,
  type NetListenOptions,
  runtimeAdapterName,
} from "./lib/net.ts";
export * from "./lib/server.ts";
export * from "./lib/replay.ts";
export * from "./lib/command_bits.ts";
