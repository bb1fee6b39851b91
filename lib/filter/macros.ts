/**
 * Macro storage with libmilter's lifetimes: each `D` frame replaces the set of its stage; a
 * command forgets the macros of all later stages; lookups see the current stage and earlier
 * ones; `x` and `{x}` name the same macro.
 *
 * @module
 */

/** Stage letters in protocol order (Postfix also uses L before headers, B before chunks). */
const ORDER = "CHMRTLNBEU";

function key(name: string): string {
  return name.length === 3 && name.startsWith("{") && name.endsWith("}") ? name[1]! : name;
}

/**
 * Per-connection macro store.
 *
 * @example
 * ```ts
 * import { MacroStore } from "./macros.ts";
 * import assert from "node:assert/strict";
 * const m = new MacroStore();
 * m.set("C", [["j", "mx.example.com"], ["{daemon_name}", "mx"]]);
 * assert.equal(m.get("{j}"), "mx.example.com");
 * m.enter("C"); // a new CONNECT keeps its own stage's macros
 * assert.equal(m.get("daemon_name"), undefined);
 * assert.equal(m.get("{daemon_name}"), "mx");
 * ```
 */
export class MacroStore {
  readonly #stages = new Map<string, Map<string, string>>();
  #view: Map<string, string> | undefined;

  /**
   * Stores the macros of a `D` frame, replacing that stage's previous set.
   *
   * @param stage The stage letter (`C`, `H`, `M`, …).
   * @param pairs Name/value pairs as sent.
   */
  set(stage: string, pairs: ReadonlyArray<readonly [string, string]>): void {
    const m = new Map<string, string>();
    for (const [k, v] of pairs) m.set(k, v);
    this.#stages.set(stage, m);
    this.#view = undefined;
  }

  /**
   * Called when the command of a stage arrives: forgets every later stage.
   *
   * @param stage The command's letter.
   */
  enter(stage: string): void {
    const at = ORDER.indexOf(stage);
    if (at < 0) return;
    for (const s of [...this.#stages.keys()]) {
      const i = ORDER.indexOf(s);
      if (i > at) this.#stages.delete(s);
    }
    this.#view = undefined;
  }

  /** Forgets everything (QUIT_NC, new connection). */
  clear(): void {
    this.#stages.clear();
    this.#view = undefined;
  }

  /**
   * Looks a macro up in every stored stage, latest stage first.
   *
   * @param name `x`, `{x}` or `{long_name}`.
   * @returns The value, or undefined.
   */
  get(name: string): string | undefined {
    const k = key(name);
    const stages = [...this.#stages.entries()].sort((a, b) =>
      ORDER.indexOf(b[0]) - ORDER.indexOf(a[0])
    );
    for (const [, m] of stages) {
      for (const [n, v] of m) if (key(n) === k) return v;
    }
    return undefined;
  }

  /** All visible macros (a later stage's value wins), names as sent. */
  all(): ReadonlyMap<string, string> {
    if (this.#view) return this.#view;
    const stages = [...this.#stages.entries()].sort((a, b) =>
      ORDER.indexOf(a[0]) - ORDER.indexOf(b[0])
    );
    const view = new Map<string, string>();
    for (const [, m] of stages) for (const [n, v] of m) view.set(n, v);
    this.#view = view;
    return view;
  }
}
