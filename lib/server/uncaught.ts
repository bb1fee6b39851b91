/**
 * Tying errors nobody caught (a handler's unawaited rejection, a throw inside its `setTimeout`)
 * back to the session whose code caused them (the server's `traceUncaught` option, `serve
 * --trace-uncaught`). Each session of a server runs in its own async context; a handler still
 * running in that session is failed with the error, so the MTA gets the fallback at once
 * instead of waiting for the handler's timeout. Async context tracking costs throughput, so it
 * is off unless asked for.
 *
 * Where the runtime keeps the async context for the process's error events is runtime-specific
 * (at the time of writing: Deno for unhandled rejections, Bun for errors thrown in timers);
 * elsewhere the error is still caught and logged, without a session.
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import type { Filter } from "../filter/filter.ts";
import { EVENTS } from "../filter/negotiate.ts";
import { thrownMessage } from "../wire/errors.ts";

/** The session a piece of code runs for, and how to fail the handler it is running. */
interface SessionSlot {
  readonly id: number;
  fail: ((error: Error) => void) | undefined;
}

const slots = new AsyncLocalStorage<SessionSlot>();

/** Handlers whose calls can be failed by a later uncaught error of their session. */
const HANDLERS: ReadonlySet<string> = new Set([...EVENTS, "bodyStream", "eom", "abort", "close"]);

/**
 * Runs `fn` (a session) in the async context of session `id`.
 *
 * @param id The server's session number.
 * @param fn Serves the session.
 * @returns What `fn` returns.
 */
export function runAsSession<T>(id: number, fn: () => T): T {
  return slots.run({ id, fail: undefined }, fn);
}

/**
 * The filter with each asynchronous handler call registered in its session, so that
 * {@link failSessionOf} can end it. Synchronous answers are passed through untouched; the
 * original filter is the prototype, so every other property reads the same.
 *
 * @param filter The filter.
 * @returns A filter with the same handlers and options.
 */
export function attributable<C, M>(filter: Filter<C, M>): Filter<C, M> {
  const out = Object.create(filter) as Record<string, unknown>;
  for (const name of HANDLERS) {
    const original = (filter as Record<string, unknown>)[name];
    if (typeof original !== "function") continue;
    out[name] = function (this: unknown, ...args: unknown[]): unknown {
      const result = original.apply(this, args);
      const slot = slots.getStore();
      if (slot === undefined || !isThenable(result)) return result;
      let fail!: (e: Error) => void;
      const call = new Promise((resolve, reject) => {
        fail = reject;
        result.then(resolve, reject);
      });
      slot.fail = fail;
      const clear = () => {
        if (slot.fail === fail) slot.fail = undefined;
      };
      call.then(clear, clear);
      return call;
    };
  }
  return out as Filter<C, M>;
}

/**
 * Called from the process's `unhandledRejection` / `uncaughtException` listeners: when the
 * runtime reports the error in the async context of a session, the handler that session is
 * running (if any) fails with the error, and the session's number is returned.
 *
 * @param error What was thrown or rejected.
 * @param kind `unhandled rejection` or `uncaught exception`, for the handler's error message.
 * @returns The session number, or undefined when the error cannot be tied to a session.
 */
export function failSessionOf(error: unknown, kind: string): number | undefined {
  const slot = slots.getStore();
  if (slot === undefined) return undefined;
  const message = thrownMessage(error);
  slot.fail?.(new Error(`${kind} in the filter's code: ${message}`, { cause: error }));
  return slot.id;
}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return typeof v === "object" && v !== null &&
    typeof (v as { then?: unknown }).then === "function";
}
