/**
 * One direction of a TCP connection put back in sequence order, as the segments come: bytes are
 * handed out as soon as they continue the stream, out-of-order segments wait in a heap ordered
 * by offset, retransmitted and overlapping bytes are handed out once. Time per segment is
 * O(log n) in the number waiting; memory is the bytes waiting, bounded by a limit past which
 * the missing bytes are declared lost.
 *
 * @module
 */

/** What one waiting segment costs besides its bytes (object, view, heap slot), for the limit. */
export const SEGMENT_OVERHEAD = 256;

interface Waiting {
  readonly start: number;
  readonly bytes: Uint8Array;
}

/** A binary min-heap of waiting segments by stream offset. */
class Heap {
  readonly #items: Waiting[] = [];

  get size(): number {
    return this.#items.length;
  }

  peek(): Waiting | undefined {
    return this.#items[0];
  }

  push(w: Waiting): void {
    const a = this.#items;
    a.push(w);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]!.start <= w.start) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = w;
  }

  pop(): Waiting | undefined {
    const a = this.#items;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const c = r < a.length && a[r]!.start < a[l]!.start ? r : l;
      if (a[c]!.start >= last.start) break;
      a[i] = a[c]!;
      i = c;
    }
    a[i] = last;
    return top;
  }

  /** Everything waiting, emptied, in offset order. */
  drain(): Waiting[] {
    const out: Waiting[] = [];
    for (let w = this.pop(); w !== undefined; w = this.pop()) out.push(w);
    return out;
  }
}

/** What happened to the bytes after a gap, for the note. */
export interface GapReport {
  /** Stream offset of the first missing byte. */
  readonly at: number;
  /** Number of missing bytes before the next bytes seen. */
  readonly missing: number;
  /** Bytes seen after the gap and left out. */
  readonly lost: number;
}

/**
 * Reorders one direction's segments by sequence number.
 *
 * @example
 * ```ts
 * import { StreamReorder } from "./reorder.ts";
 * import assert from "node:assert/strict";
 * const out: number[] = [];
 * const r = new StreamReorder((b) => out.push(...b), 1 << 20);
 * r.setBase(100);
 * r.push(103, new Uint8Array([4, 5]));
 * r.push(100, new Uint8Array([1, 2, 3]));
 * assert.deepEqual(out, [1, 2, 3, 4, 5]);
 * ```
 */
export class StreamReorder {
  readonly #deliver: (bytes: Uint8Array) => void;
  readonly #limit: number;
  readonly #heap = new Heap();
  #base: number | undefined;
  #next = 0;
  #waiting = 0;
  #gap: { at: number; missing: number; lost: number } | undefined;

  /**
   * Creates the reorderer of one direction; without {@link setBase} the first segment starts
   * the stream.
   *
   * @param deliver Called with each run of new in-order bytes.
   * @param limit Most bytes (with {@link SEGMENT_OVERHEAD} per segment) kept waiting for a
   * missing segment before it is declared lost.
   */
  constructor(deliver: (bytes: Uint8Array) => void, limit: number) {
    this.#deliver = deliver;
    this.#limit = limit;
  }

  /** True once the sequence number of offset 0 is known. */
  get hasBase(): boolean {
    return this.#base !== undefined;
  }

  /** The stream offset of the next byte to hand out (bytes handed out so far). */
  get offset(): number {
    return this.#next;
  }

  /** Bytes waiting for a missing segment, counting {@link SEGMENT_OVERHEAD} per segment. */
  get waiting(): number {
    return this.#waiting;
  }

  /** The gap that stopped this direction, if one did. */
  get gap(): GapReport | undefined {
    return this.#gap;
  }

  /** Sets the sequence number of stream offset 0 (the SYN's plus one). */
  setBase(seq: number): void {
    this.#base = seq >>> 0;
  }

  /** Offset of `seq` in the stream (negative before offset 0), modulo 2^32. */
  offsetOf(seq: number): number {
    return ((seq - (this.#base ?? seq)) | 0);
  }

  /**
   * Adds a segment. Without a base the first segment's sequence number becomes offset 0.
   *
   * @param seq Its sequence number.
   * @param bytes Its payload (kept by reference while it waits).
   */
  push(seq: number, bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.#base === undefined) this.#base = seq >>> 0;
    let start = this.offsetOf(seq);
    if (start < 0) {
      if (-start >= bytes.length) return;
      bytes = bytes.subarray(-start);
      start = 0;
    }
    if (this.#gap !== undefined) {
      if (start + bytes.length > this.#next) this.#gap.lost += bytes.length;
      return;
    }
    const end = start + bytes.length;
    if (end <= this.#next) return;
    if (start > this.#next) {
      this.#heap.push({ start, bytes });
      this.#waiting += bytes.length + SEGMENT_OVERHEAD;
      if (this.#waiting > this.#limit) this.#declareGap();
      return;
    }
    this.#deliver(bytes.subarray(this.#next - start));
    this.#next = end;
    this.#drainReady();
  }

  #drainReady(): void {
    for (
      let w = this.#heap.peek();
      w !== undefined && w.start <= this.#next;
      w = this.#heap.peek()
    ) {
      this.#heap.pop();
      this.#waiting -= w.bytes.length + SEGMENT_OVERHEAD;
      const end = w.start + w.bytes.length;
      if (end > this.#next) {
        this.#deliver(w.bytes.subarray(this.#next - w.start));
        this.#next = end;
      }
    }
  }

  /** Ends the direction: bytes still waiting sit after a gap and are left out. */
  finish(): void {
    if (this.#gap === undefined && this.#heap.size > 0) this.#declareGap();
  }

  #declareGap(): void {
    const waiting = this.#heap.drain();
    let lost = 0;
    let covered = this.#next;
    for (const w of waiting) {
      const end = w.start + w.bytes.length;
      if (end > covered) {
        lost += end - Math.max(covered, w.start);
        covered = end;
      }
    }
    this.#gap = { at: this.#next, missing: waiting[0]!.start - this.#next, lost };
    this.#waiting = 0;
  }
}
