/**
 * The built-in filter of `milterkit serve` without a script: it accepts everything, asks for
 * every event and every macro stage, and logs each event decoded, so an admin can see what
 * their MTA sends.
 *
 * @module
 */

import type { Filter } from "../filter/filter.ts";
import type { Logger } from "./log.ts";
import { displayText } from "../wire/text.ts";

/**
 * Creates the accept-and-log filter.
 *
 * @param log Where the events go.
 * @returns A filter that changes nothing and answers continue to everything.
 *
 * @example
 * ```ts
 * import { createLogger, loggingFilter } from "@milterkit/milterkit";
 * const filter = loggingFilter(createLogger({ format: "text", sink: () => {} }));
 * ```
 */
export function loggingFilter(log: Logger): Filter<{ id: number }, Record<string, never>> {
  let next = 1;
  const base = (ctx: { connection: { id: number }; messageNumber: number }) => ({
    conn: ctx.connection.id,
    msg: ctx.messageNumber || undefined,
  });
  return {
    name: "log-everything",
    connectionState: () => ({ id: next++ }),
    connect(info, ctx) {
      log.info("connect", {
        ...base(ctx),
        hostname: displayText(info.hostname),
        family: info.family,
        address: info.address,
        port: info.port,
        macros: Object.fromEntries(ctx.macros),
      });
    },
    helo(name, ctx) {
      log.info("helo", { ...base(ctx), name: displayText(name) });
    },
    envfrom(sender, ctx) {
      log.info("envfrom", {
        ...base(ctx),
        from: displayText(sender.raw),
        args: sender.args.length ? sender.args : undefined,
        macros: Object.fromEntries(ctx.macros),
      });
    },
    envrcpt(rcpt, ctx) {
      log.info("envrcpt", {
        ...base(ctx),
        to: displayText(rcpt.raw),
        args: rcpt.args.length ? rcpt.args : undefined,
      });
    },
    data(ctx) {
      log.info("data", base(ctx));
    },
    header(h, ctx) {
      log.info("header", { ...base(ctx), name: displayText(h.name), value: displayText(h.value) });
    },
    eoh(ctx) {
      log.info("eoh", { ...base(ctx), headers: ctx.headers.length });
    },
    body(chunk, ctx) {
      log.debug("body", { ...base(ctx), bytes: chunk.length });
    },
    eom(ctx) {
      log.info("eom", {
        ...base(ctx),
        from: ctx.sender?.raw,
        to: ctx.recipients.map((r) => r.raw),
        headers: ctx.headers.length,
        bodyBytes: ctx.bodySize,
        macros: Object.fromEntries(ctx.macros),
      });
      return "continue";
    },
    abort(ctx) {
      log.info("abort", base(ctx));
    },
    unknown(line, ctx) {
      log.info("unknown", { ...base(ctx), line: displayText(line) });
    },
    close(ctx) {
      log.info("close", { conn: ctx.connection.id });
    },
  };
}
