/**
 * A small unified line diff (longest common subsequence), used by `milterkit send` to show what
 * a filter changed in a message.
 *
 * @module
 */

import { type ParsedMessage, serializeMessage } from "./message.ts";
import { decodeText } from "../wire/text.ts";

/** Options of {@link diffLines}. */
export interface DiffOptions {
  /** Unchanged lines shown around each change (default 3). */
  readonly context?: number;
  /** Names on the `---` / `+++` lines (default `a`, `b`). */
  readonly labels?: readonly [before: string, after: string];
  /**
   * Above this many cells (changed lines before × after) the LCS table is not built and the
   * changed middle is shown as removed then added (default 4 000 000).
   */
  readonly maxCells?: number;
}

/** One line of an edit script: `" "` in both, `"-"` only before, `"+"` only after. */
export type DiffOp = { readonly kind: " " | "-" | "+"; readonly line: string };

/**
 * The edit script from `a` to `b` by longest common subsequence (a removal before an addition
 * where both are possible). Above `maxCells` (`a.length × b.length`) no table is built: all of
 * `a` is removed, then all of `b` added.
 *
 * @param a The lines before.
 * @param b The lines after.
 * @param maxCells Largest table built (default 4 000 000).
 * @returns One op per line of `a` and of `b`, common lines once.
 *
 * @example
 * ```ts
 * import { diffOps } from "./diff.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(diffOps(["a", "b"], ["a", "c"]).map((o) => o.kind + o.line), [" a", "-b", "+c"]);
 * ```
 */
export function diffOps(a: readonly string[], b: readonly string[], maxCells = 4e6): DiffOp[] {
  const n = a.length;
  const m = b.length;
  if (n * m > maxCells || n === 0 || m === 0) {
    return [
      ...a.map((line) => ({ kind: "-" as const, line })),
      ...b.map((line) => ({ kind: "+" as const, line })),
    ];
  }
  // lengths[i][j] = LCS length of a[i..] and b[j..], in one flat array.
  const w = m + 1;
  const lengths = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lengths[i * w + j] = a[i] === b[j]
        ? lengths[(i + 1) * w + j + 1]! + 1
        : Math.max(lengths[(i + 1) * w + j]!, lengths[i * w + j + 1]!);
    }
  }
  const ops: DiffOp[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      ops.push({ kind: " ", line: a[i]! });
      i++;
      j++;
    } else if (lengths[(i + 1) * w + j]! >= lengths[i * w + j + 1]!) {
      ops.push({ kind: "-", line: a[i++]! });
    } else {
      ops.push({ kind: "+", line: b[j++]! });
    }
  }
  while (i < n) ops.push({ kind: "-", line: a[i++]! });
  while (j < m) ops.push({ kind: "+", line: b[j++]! });
  return ops;
}

/**
 * Compares two texts line by line and returns a unified diff (`---`/`+++` header, `@@` hunks),
 * or `""` when they are equal. Lines are split on LF; a CR before it is kept out of the output.
 *
 * @param before The old text.
 * @param after The new text.
 * @param options Context lines, labels, size limit.
 * @returns The diff text, each line ending in LF.
 *
 * @example
 * ```ts
 * import { diffLines } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * const d = diffLines("a\nb\nc\n", "a\nB\nc\n", { context: 1 });
 * assert.equal(d, "--- a\n+++ b\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
 * ```
 */
export function diffLines(before: string, after: string, options: DiffOptions = {}): string {
  if (before === after) return "";
  const context = options.context ?? 3;
  const split = (t: string) => {
    const lines = t.split(/\r?\n/);
    if (lines.at(-1) === "") lines.pop();
    return lines;
  };
  const a = split(before);
  const b = split(after);
  let pre = 0;
  while (pre < a.length && pre < b.length && a[pre] === b[pre]) pre++;
  let suf = 0;
  while (
    suf < a.length - pre && suf < b.length - pre && a[a.length - 1 - suf] === b[b.length - 1 - suf]
  ) suf++;
  const ops: DiffOp[] = [
    ...a.slice(0, pre).map((line) => ({ kind: " " as const, line })),
    ...diffOps(a.slice(pre, a.length - suf), b.slice(pre, b.length - suf), options.maxCells),
    ...a.slice(a.length - suf).map((line) => ({ kind: " " as const, line })),
  ];
  if (ops.every((o) => o.kind === " ")) return ""; // differ only in line-end style
  const [la, lb] = options.labels ?? ["a", "b"];
  const out: string[] = [`--- ${la}`, `+++ ${lb}`];
  // Positions (in ops) of changes, grouped into hunks whose gaps are ≤ 2 × context.
  const changed = ops.flatMap((o, k) => (o.kind === " " ? [] : [k]));
  let h = 0;
  while (h < changed.length) {
    let last = h;
    while (last + 1 < changed.length && changed[last + 1]! - changed[last]! <= 2 * context + 1) {
      last++;
    }
    const start = Math.max(0, changed[h]! - context);
    const end = Math.min(ops.length, changed[last]! + context + 1);
    let oldLine = 1;
    let newLine = 1;
    for (let k = 0; k < start; k++) {
      if (ops[k]!.kind !== "+") oldLine++;
      if (ops[k]!.kind !== "-") newLine++;
    }
    const hunk = ops.slice(start, end);
    const oldCount = hunk.filter((o) => o.kind !== "+").length;
    const newCount = hunk.filter((o) => o.kind !== "-").length;
    const range = (line: number, count: number) =>
      count === 1 ? `${line}` : `${count === 0 ? line - 1 : line},${count}`;
    out.push(`@@ -${range(oldLine, oldCount)} +${range(newLine, newCount)} @@`);
    for (const o of hunk) out.push(`${o.kind}${o.line}`);
    h = last + 1;
  }
  return out.join("\n") + "\n";
}

/**
 * Diffs two messages as serialised text (headers, empty line, body).
 *
 * @param before The message as received.
 * @param after The message after the filter's modifications.
 * @param options Context lines and labels (default `received`, `delivered`).
 * @returns The unified diff, `""` when identical.
 *
 * @example
 * ```ts
 * import { messageDiff, parseMessage } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * const a = parseMessage(new TextEncoder().encode("Subject: a\r\n\r\nx\r\n"));
 * const b = { ...a, headers: [...a.headers, { name: "X-Spam", value: " yes" }] };
 * assert.match(messageDiff(a, b), /\n\+X-Spam: yes\n/);
 * ```
 */
export function messageDiff(
  before: ParsedMessage,
  after: ParsedMessage,
  options: DiffOptions = {},
): string {
  return diffLines(decodeText(serializeMessage(before)), decodeText(serializeMessage(after)), {
    labels: ["received", "delivered"],
    ...options,
  });
}
