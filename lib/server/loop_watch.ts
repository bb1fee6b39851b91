/**
 * Watches the event loop for blocks: a handler that computes for seconds without awaiting holds
 * the one thread every session of the process runs on, and no timeout can fire meanwhile. The
 * watch samples the loop's delay, keeps the largest recent one in the metrics, and logs a
 * warning naming the stage whose handler held the loop (matched by time with the slow reply).
 *
 * @module
 */

import { setInterval } from "node:timers";
import type { LogFields, Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";

/** Options of {@link LoopWatch}. */
export interface LoopWatchOptions {
  /** A block at least this long is counted and logged, in milliseconds. */
  readonly warnMs: number;
  /** Sampling interval, in milliseconds (default 100). */
  readonly intervalMs?: number;
  /** Where the lag gauge and block counters go. */
  readonly metrics?: Metrics;
  /** Where warnings go. */
  readonly logger?: Logger;
  /** Added to every warning (e.g. `{ script }`). */
  readonly fields?: LogFields;
  /** How many sessions are open (they all waited during a block). */
  readonly sessions?: () => number;
}

interface Block {
  readonly start: number;
  readonly end: number;
  readonly ms: number;
}

interface SlowReply {
  readonly session: number;
  readonly stage: string;
  readonly ms: number;
  readonly at: number;
}

const WINDOW_MS = 10_000;
/** A block no slow reply explains within this long is logged without a stage. */
const NAME_WITHIN_MS = 1_000;

const HINT = "a handler computed without awaiting; every session of this process waited and " +
  "no timeout could fire meanwhile: run serve --workers N, or move the work off the event loop";

/**
 * Samples the event loop's delay and reports blocks.
 *
 * @example
 * ```ts
 * import { LoopWatch } from "./loop_watch.ts";
 * import { Metrics } from "@milterkit/milterkit";
 * const metrics = new Metrics();
 * const watch = new LoopWatch({ warnMs: 500, metrics });
 * watch.reply(1, "eom", 3); // every reply's latency: slow ones name the stage of a block
 * watch.stop();
 * ```
 */
export class LoopWatch {
  readonly #o: LoopWatchOptions;
  readonly #interval: number;
  readonly #timer: ReturnType<typeof setInterval>;
  #last = performance.now();
  #windowStart = this.#last;
  #windowMax = 0;
  #previousMax = 0;
  #blocks: Block[] = [];
  #slow: SlowReply[] = [];

  /**
   * Starts sampling (the timer does not keep the process alive).
   *
   * @param options Threshold, sampling interval, metrics and logger.
   */
  constructor(options: LoopWatchOptions) {
    this.#o = options;
    this.#interval = options.intervalMs ?? 100;
    this.#timer = setInterval(() => this.#tick(), this.#interval);
    this.#timer.unref?.();
  }

  /**
   * Tells the watch a reply went out after `latencyMs`; cheap when the reply was fast.
   *
   * @param session Session id.
   * @param stage The stage answered.
   * @param latencyMs How long its handler took.
   */
  reply(session: number, stage: string, latencyMs: number): void {
    if (latencyMs < this.#o.warnMs) return;
    this.#slow.push({ session, stage, ms: latencyMs, at: performance.now() });
    this.#match();
  }

  /** Stops sampling. */
  stop(): void {
    clearInterval(this.#timer);
  }

  #tick(): void {
    const now = performance.now();
    const lag = Math.max(0, now - this.#last - this.#interval);
    this.#last = now;
    if (now - this.#windowStart > WINDOW_MS) {
      this.#previousMax = this.#windowMax;
      this.#windowMax = 0;
      this.#windowStart = now;
    }
    this.#windowMax = Math.max(this.#windowMax, lag);
    const metrics = this.#o.metrics;
    if (metrics) metrics.eventLoopLag = Math.max(this.#windowMax, this.#previousMax) / 1000;
    if (lag >= this.#o.warnMs) {
      if (metrics) {
        metrics.eventLoopBlocks++;
        metrics.eventLoopBlockedSeconds += lag / 1000;
      }
      this.#blocks.push({ start: now - lag, end: now, ms: lag });
      this.#match();
    }
    for (const b of this.#blocks) {
      if (now - b.end > NAME_WITHIN_MS) this.#warn(b, undefined);
    }
    this.#blocks = this.#blocks.filter((b) => now - b.end <= NAME_WITHIN_MS);
    if (this.#slow.length) this.#slow = this.#slow.filter((r) => now - r.at < 2 * WINDOW_MS);
  }

  #match(): void {
    this.#blocks = this.#blocks.filter((b) => {
      let best: SlowReply | undefined;
      let bestOverlap = 0;
      for (const r of this.#slow) {
        const overlap = Math.min(b.end, r.at) - Math.max(b.start, r.at - r.ms);
        if (overlap > bestOverlap) [best, bestOverlap] = [r, overlap];
      }
      if (!best || bestOverlap < b.ms / 2) return true;
      this.#slow = this.#slow.filter((r) => r !== best);
      this.#warn(b, best);
      return false;
    });
  }

  #warn(b: Block, r: SlowReply | undefined): void {
    this.#o.logger?.warn(
      r ? "handler blocked the event loop" : "event loop blocked",
      {
        ...(r ? { stage: r.stage, session: r.session, handlerMs: Math.round(r.ms) } : {}),
        blockedMs: Math.round(b.ms),
        sessionsWaiting: this.#o.sessions?.(),
        ...this.#o.fields,
        hint: HINT,
      },
    );
  }
}
