/**
 * A transparent milter proxy: bytes from the MTA go to the real filter and back unchanged, in
 * the chunks they came in. Decoding is a tap beside the byte path: it can fail, it can be
 * slow to be consumed, it never alters or stalls what is forwarded. When the filter is down or
 * dies, the MTA gets the configured answer.
 *
 * @module
 */

import { expectsReply, FINAL_REPLY_CODES } from "../wire/command_bits.ts";
import { decodeCommand } from "../wire/command_codec.ts";
import { asError, ConnectionClosedError } from "../wire/errors.ts";
import type { Filter } from "../filter/filter.ts";
import { serveConnection } from "../filter/session.ts";
import { channelOf } from "../filter/session_io.ts";
import { FrameDecoder } from "../wire/frame.ts";
import { SMFIC, SMFIR } from "../wire/constants.ts";
import { encodeReply } from "../wire/reply_codec.ts";
import { decodeReply } from "../wire/reply_codec.ts";
import type { ByteChannel, Command, Direction, Duplex, Frame, Reply } from "../wire/types.ts";

/** What the MTA is told when the real filter is down or dies. */
export type UpstreamFailurePolicy = "tempfail" | "accept" | "reject" | "close";

/**
 * One decoded frame seen by the tap.
 *
 * @example
 * ```ts
 * import type { TapFrame } from "@milterkit/milterkit/inspect";
 * const show = (f: TapFrame) => `${f.direction} ${"decoded" in f ? f.decoded.type : f.error}`;
 * ```
 */
export type TapFrame =
  & { readonly direction: Direction; readonly time: number; readonly frame: Frame }
  & ({ readonly decoded: Command | Reply } | { readonly error: string });

/** Options of {@link proxyConnection}. */
export interface ProxyOptions {
  /** Opens the connection to the real filter. */
  readonly connectUpstream: () => Promise<Duplex & { close?(): void }>;
  /** Answer for the MTA when the filter is down or dies (default tempfail). */
  readonly onUpstreamFailure?: UpstreamFailurePolicy;
  /** Every chunk forwarded, as it was forwarded (for recordings). */
  readonly onChunk?: (direction: Direction, time: number, bytes: Uint8Array) => void;
  /** Every frame decoded by the tap. */
  readonly onFrame?: (frame: TapFrame) => void;
  /**
   * Every frame the tap cut out, not decoded (cheaper than {@link ProxyOptions.onFrame} when
   * the listener decodes itself, e.g. with a {@link SessionAnnotator}). The payload is a view
   * into the chunk: copy it to keep it past the call.
   */
  readonly onRawFrame?: (direction: Direction, time: number, frame: Frame) => void;
  /** Notes: upstream failures, fallback answers, decode errors. */
  readonly onNote?: (message: string, error?: Error) => void;
  /** Largest frame the tap decodes (default 1 MiB); larger ones stop decoding, not forwarding. */
  readonly maxDataSize?: number;
  /**
   * How long the filter may take to hang up once the MTA has gone (default 5000 ms); then the
   * proxy closes the filter connection itself.
   */
  readonly closeGraceMs?: number;
  /** Clock in ms (default `performance.now() + performance.timeOrigin`). */
  readonly now?: () => number;
  /**
   * Asked once the MTA has sent its first bytes, before the filter is connected (the filter is
   * only connected then, so a proxy whose upstream leads back to itself never chains
   * connections it has not been sent anything on). A string refuses the session: it is noted
   * and the MTA connection is closed, so the MTA applies its own default action.
   */
  readonly admit?: () => string | undefined;
}

/** How a proxied session ended. */
export interface ProxySummary {
  /** Bytes forwarded per direction. */
  readonly bytes: Readonly<Record<Direction, number>>;
  /** Whether the proxy had to answer the MTA itself. */
  readonly fallback: boolean;
  /** Why the session ended: `mta` closed, `upstream` failed, `refused` by `admit`, or `error`. */
  readonly end: "mta" | "upstream" | "refused" | "error";
  /** The upstream error, if any. */
  readonly error?: Error;
}

/** What the proxy needs of a command to answer in the filter's place: its type (and version). */
interface SeenCommand {
  readonly type: Command["type"];
  readonly version?: number;
}

/** Command bytes to types, for following a session without decoding every frame. */
const COMMAND_TYPES: Readonly<Record<number, Command["type"]>> = {
  [SMFIC.ABORT]: "abort",
  [SMFIC.BODY]: "body",
  [SMFIC.CONNECT]: "connect",
  [SMFIC.MACRO]: "macro",
  [SMFIC.BODYEOB]: "eom",
  [SMFIC.HELO]: "helo",
  [SMFIC.QUIT_NC]: "quit_nc",
  [SMFIC.HEADER]: "header",
  [SMFIC.MAIL]: "mail",
  [SMFIC.EOH]: "eoh",
  [SMFIC.OPTNEG]: "optneg",
  [SMFIC.QUIT]: "quit",
  [SMFIC.RCPT]: "rcpt",
  [SMFIC.DATA]: "data",
  [SMFIC.UNKNOWN]: "unknown",
};
const u32 = (b: Uint8Array, at: number): number | undefined =>
  b.length >= at + 4
    ? ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0
    : undefined;

/**
 * Follows one direction's frames without ever throwing into the byte path. Frames are cut out
 * of the chunks (views, no copies); nothing is decoded here.
 */
class Tap {
  readonly #decoder: FrameDecoder;
  readonly #direction: Direction;
  readonly #onFrame: (direction: Direction, time: number, frame: Frame) => void;
  broken: string | undefined;

  constructor(
    direction: Direction,
    max: number,
    onFrame: (direction: Direction, time: number, frame: Frame) => void,
  ) {
    this.#direction = direction;
    this.#decoder = new FrameDecoder({ maxDataSize: max });
    this.#onFrame = onFrame;
  }

  /** True when every byte seen so far belongs to a complete frame. */
  get aligned(): boolean {
    return this.broken === undefined && this.#decoder.buffered === 0;
  }

  feed(bytes: Uint8Array, time: number): void {
    if (this.broken !== undefined) return;
    let frames: Frame[];
    try {
      frames = this.#decoder.push(bytes);
    } catch (e) {
      this.broken = (e as Error).message;
      return;
    }
    for (const frame of frames) this.#onFrame(this.#direction, time, frame);
  }
}

/** Tracks what the MTA waits for, to answer in the filter's place if it dies. */
class Pending {
  negotiatedProtocol: number | undefined;
  /** Commands still waiting for their final reply, oldest first. */
  readonly waiting: SeenCommand[] = [];
  quit = false;

  /** Notes a command frame; returns what it is, or undefined for an unknown code. */
  command(frame: Frame): SeenCommand | undefined {
    const type = COMMAND_TYPES[frame.code];
    if (type === undefined) return undefined;
    if (type === "optneg") {
      const c = { type, version: u32(frame.payload, 0) ?? 6 };
      this.waiting.push(c);
      return c;
    }
    const c = { type };
    if (type === "quit" || type === "quit_nc") this.quit = type === "quit";
    else if (expectsReply(type, this.negotiatedProtocol ?? 0)) this.waiting.push(c);
    return c;
  }

  reply(frame: Frame): void {
    if (frame.code === SMFIR.OPTNEG) {
      this.negotiatedProtocol = u32(frame.payload, 8) ?? 0;
      this.waiting.shift();
    } else if (FINAL_REPLY_CODES.has(frame.code)) this.waiting.shift();
  }
}

function policyReply(policy: Exclude<UpstreamFailurePolicy, "close">): Reply {
  return { type: policy };
}

/**
 * Relays one MTA connection to the real filter.
 *
 * @param mta The MTA's connection.
 * @param options How to reach the filter, what to do when it fails, and the taps.
 * @returns How the session ended.
 *
 * @example
 * ```ts
 * import { proxyConnection } from "@milterkit/milterkit/inspect";
 * import { duplexPair } from "@milterkit/milterkit/testing";
 * const [mtaEnd, proxyEnd] = duplexPair();
 * const [filterEnd, upstreamEnd] = duplexPair();
 * const done = proxyConnection(proxyEnd, { connectUpstream: async () => upstreamEnd });
 * ```
 */
export async function proxyConnection(
  mta: Duplex,
  options: ProxyOptions,
): Promise<ProxySummary> {
  const now = options.now ?? (() => performance.timeOrigin + performance.now());
  const note = (m: string, e?: Error) => {
    try {
      options.onNote?.(m, e);
    } catch { /* never let a listener break the relay */ }
  };
  const policy = options.onUpstreamFailure ?? "tempfail";
  const bytes: Record<Direction, number> = { "to-filter": 0, "to-mta": 0 };
  const pending = new Pending();
  let waitingCommand: ((c: SeenCommand | undefined) => void) | undefined;
  const onFrame = (direction: Direction, time: number, frame: Frame) => {
    if (direction === "to-filter") {
      const c = pending.command(frame);
      if (c !== undefined) waitingCommand?.(c);
    } else pending.reply(frame);
    try {
      options.onRawFrame?.(direction, time, frame);
    } catch { /* the tap never alters the path */ }
    if (options.onFrame === undefined) return;
    let f: TapFrame;
    try {
      const decoded = direction === "to-filter" ? decodeCommand(frame) : decodeReply(frame);
      f = { direction, time, frame, decoded };
    } catch (e) {
      f = { direction, time, frame, error: (e as Error).message };
    }
    try {
      options.onFrame(f);
    } catch { /* the tap never alters the path */ }
  };
  const max = options.maxDataSize ?? 1024 * 1024;
  const toFilterTap = new Tap("to-filter", max, onFrame);
  const toMtaTap = new Tap("to-mta", max, onFrame);
  // The tap runs off the byte path: chunks of both directions queue in the order they passed
  // and are framed, tracked and reported in one batch per turn of the event loop (or at once
  // when the proxy needs to know where the session stands).
  const tapQueue: { tap: Tap; bytes: Uint8Array; time: number }[] = [];
  let tapTimer: ReturnType<typeof setTimeout> | undefined;
  const drainTap = () => {
    clearTimeout(tapTimer);
    tapTimer = undefined;
    for (let i = 0; i < tapQueue.length; i++) {
      const q = tapQueue[i]!;
      q.tap.feed(q.bytes, q.time);
    }
    tapQueue.length = 0;
  };
  const toTap = (tap: Tap, bytes: Uint8Array, time: number) => {
    tapQueue.push({ tap, bytes, time });
    tapTimer ??= setTimeout(drainTap, 0);
  };

  // The byte path runs on channels: the adapters' direct socket paths where they have them
  // (no web-stream machinery per chunk), else channels over the streams.
  const mtaCh = channelOf(mta);

  const alone = async (
    why: string,
    error: Error | undefined,
    firstChunk: Uint8Array,
  ): Promise<ProxySummary> => {
    note(`filter unavailable (${why}); answering the MTA: ${policy}`, error);
    if (policy === "close") {
      mtaCh.destroy();
      return { bytes, fallback: true, end: "upstream", ...(error ? { error } : {}) };
    }
    const answer = policy;
    const filter: Filter = { connect: () => answer, helo: () => answer };
    // The MTA's channel with its first chunk put back.
    let pending: Uint8Array | undefined = firstChunk;
    const replayed: ByteChannel = {
      read: () => {
        if (pending === undefined) return mtaCh.read();
        const c = pending;
        pending = undefined;
        return c;
      },
      cancel: () => mtaCh.cancel(),
      write: (b) => mtaCh.write(b),
      end: () => mtaCh.end(),
      destroy: () => mtaCh.destroy(),
    };
    // (Getters: an adapter may build its streams only when asked, and its channel is taken.)
    await serveConnection({
      get readable() {
        return mta.readable;
      },
      get writable() {
        return mta.writable;
      },
      channel: () => replayed,
    }, filter);
    return { bytes, fallback: true, end: "upstream", ...(error ? { error } : {}) };
  };

  // The filter is connected once the MTA has said something (it speaks first: OPTNEG).
  let first: Uint8Array | null;
  try {
    const r = mtaCh.read();
    first = r instanceof Promise ? await r : r;
  } catch {
    mtaCh.destroy();
    return { bytes, fallback: false, end: "mta" };
  }
  if (first === null) {
    // The MTA left without a word: nothing to relay, the filter is never contacted.
    await mtaCh.end().catch(() => {});
    return { bytes, fallback: false, end: "mta" };
  }
  const refusal = options.admit?.();
  if (refusal !== undefined) {
    note(refusal);
    mtaCh.destroy();
    return { bytes, fallback: false, end: "refused" };
  }

  let upstream: Duplex & { close?(): void };
  try {
    upstream = await options.connectUpstream();
  } catch (e) {
    return await alone("cannot connect", asError(e), first);
  }

  const upCh = channelOf(upstream);
  let mtaDone = false;
  let upstreamFailed: Error | undefined;

  let upstreamWritable = true;
  /** A failed write to the MTA: ends the filter → MTA direction. */
  let writeError: unknown;
  const forward = async (
    from: ByteChannel,
    to: ByteChannel,
    direction: Direction,
    tap: Tap,
    firstChunk?: Uint8Array,
  ): Promise<void> => {
    while (true) {
      let value: Uint8Array | null;
      if (firstChunk) {
        value = firstChunk;
        firstChunk = undefined;
      } else {
        const r = from.read();
        value = r instanceof Promise ? await r : r;
      }
      if (value === null) return;
      const t = now();
      bytes[direction] += value.length;
      try {
        options.onChunk?.(direction, t, value);
      } catch { /* recording failures never stall the relay */ }
      // The write starts before the tap looks at the bytes (forwarding first), and the tap has
      // queued them before the write is waited for: so the tap always sees a command before
      // the reply it causes. A write the socket takes at once is not waited for at all.
      let written: Promise<void> | undefined;
      if (direction === "to-mta") {
        if (writeError) throw writeError;
        written = to.write(value)?.catch((e) => void (writeError ??= e));
      } else if (upstreamWritable) {
        // A failed write to the filter does not stop reading the MTA: the tap must keep
        // following its commands so the proxy can answer in the filter's place.
        const fail = (e: unknown) => {
          upstreamWritable = false;
          upstreamFailed ??= asError(e);
        };
        try {
          written = to.write(value)?.catch(fail);
        } catch (e) {
          fail(e);
        }
      }
      toTap(tap, value, t);
      if (written) await written;
    }
  };

  // MTA → filter: ends when the MTA closes; then the filter's side is closed too, and if the
  // filter has not hung up `closeGraceMs` later, the proxy drops it.
  let graceTimer: ReturnType<typeof setTimeout> | undefined;
  const mtaGone = () => {
    drainTap();
    mtaDone = true;
    if (waitingCommand) waitingCommand(undefined);
    graceTimer = setTimeout(() => {
      note(`the filter did not close within ${grace} ms after the MTA left; closing it`);
      upCh.cancel();
      upstream.close?.();
    }, grace);
  };
  const grace = options.closeGraceMs ?? 5000;
  const fromMta = forward(mtaCh, upCh, "to-filter", toFilterTap, first).then(
    async () => {
      mtaGone();
      await upCh.end().catch(() => {});
    },
    () => {
      mtaGone();
      upCh.destroy();
    },
  );
  // filter → MTA.
  const fromFilter = forward(upCh, mtaCh, "to-mta", toMtaTap).then(
    () => {
      drainTap(); // a QUIT may still be in the queue
      if (!pending.quit && !mtaDone) {
        upstreamFailed ??= new ConnectionClosedError("The filter closed the connection");
      }
    },
    (e) => {
      upstreamFailed ??= asError(e);
    },
  );

  try {
    await fromFilter;
    if (upstreamFailed === undefined || mtaDone) {
      await fromMta;
      await mtaCh.end().catch(() => {});
      upstream.close?.();
      return { bytes, fallback: false, end: "mta" };
    }
    return await answerAlone(upstreamFailed);
  } finally {
    clearTimeout(graceTimer);
    drainTap();
  }

  /** The filter died while the MTA is still talking: answer in its place until QUIT or EOF. */
  async function answerAlone(failure: Error): Promise<ProxySummary> {
    drainTap();
    upCh.cancel();
    upstream.close?.();
    if (policy === "close" || !toMtaTap.aligned || toFilterTap.broken !== undefined) {
      note(
        policy === "close"
          ? "filter died mid-session; closing the MTA connection (policy close)"
          : "filter died mid-frame; closing the MTA connection so it applies its own default action",
        failure,
      );
      mtaCh.destroy();
      await fromMta.catch(() => {});
      return { bytes, fallback: true, end: "upstream", error: failure };
    }
    note(`filter died mid-session; answering the MTA: ${policy}`, failure);
    const answer = policyReply(policy);
    const send = async (r: Reply) => {
      const b = encodeReply(r);
      bytes["to-mta"] += b.length;
      await mtaCh.write(b);
    };
    const answerOne = async (c: SeenCommand) => {
      if (c.type === "optneg") {
        await send({
          type: "optneg",
          version: Math.min(6, c.version ?? 6),
          actions: 0,
          protocol: 0,
        });
        pending.negotiatedProtocol = 0;
      } else await send(answer);
    };
    const expects = (c: SeenCommand): boolean =>
      expectsReply(c.type, pending.negotiatedProtocol ?? 0);
    // Everything below up to the first await runs at once, so no command the tap sees from now
    // on can slip between "what the MTA already waits for" and "what it sends next".
    let chain = Promise.resolve();
    let finish!: () => void;
    const ended = new Promise<void>((resolve) => (finish = resolve));
    const enqueue = (c: SeenCommand) => {
      chain = chain.then(() => answerOne(c)).catch(() => finish());
    };
    for (const c of pending.waiting.splice(0)) enqueue(c);
    waitingCommand = (c) => {
      if (c === undefined || c.type === "quit") finish();
      else if (expects(c)) enqueue(c);
    };
    if (mtaDone) finish();
    await ended;
    await chain;
    await fromMta.catch(() => {});
    await mtaCh.end().catch(() => {});
    return { bytes, fallback: true, end: "upstream", error: failure };
  }
}
