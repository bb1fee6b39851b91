/**
 * The file behind `milterkit proxy --record`: lines are handed to the kernel by asynchronous
 * writes, at once when no write is in flight and otherwise in one batch when it completes, so
 * the byte path never waits for the disk. A recording that fails (a
 * full file system, a slow or stalled disk, an I/O error) never stops mail: the failure is
 * reported once per cause, lines are dropped and counted while it lasts, writing is retried
 * every `retryMs`, and a note line in the recording says how many lines were lost.
 *
 * @module
 */

import { existsSync, renameSync } from "node:fs";
import { asError, thrownMessage } from "../wire/errors.ts";
import { type AppendFile, openAppendFile } from "../server/adapters/append_file.ts";

/** Options of {@link RecordingFile}. */
export interface RecordingFileOptions {
  /** Start a new file past this many bytes (0: never). Rotated files are `PATH.1` … `PATH.N`. */
  readonly rotateSize?: number;
  /** Rotated files kept (default 5). */
  readonly rotateKeep?: number;
  /**
   * Most bytes queued while a write is in flight (default 8 MiB); past it lines are dropped
   * (a disk slower than the traffic) and counted.
   */
  readonly maxQueuedBytes?: number;
  /** After a failed write, how long to drop lines before trying again (default 1000 ms). */
  readonly retryMs?: number;
  /**
   * Told about problems: the first time each cause (an error code such as `ENOSPC`, `slow`
   * for a disk that cannot keep up, `rotate`) happens, and when writing works again after it;
   * a cause that comes back is only counted ({@link RecordingFile.stats}).
   */
  readonly onProblem?: (problem: RecordingProblem) => void;
  /** Clock in ms since the epoch, for note lines (default `Date.now`). */
  readonly now?: () => number;
}

/** What {@link RecordingFileOptions.onProblem} is told. */
export interface RecordingProblem {
  /** `failed`: lines are being dropped; `resumed`: writing works again. */
  readonly kind: "failed" | "resumed";
  /** The error code (`ENOSPC`, `EIO`, …), `slow` for a disk that cannot keep up, or `rotate`. */
  readonly cause: string;
  /** A one-line description. */
  readonly message: string;
  /** Lines lost so far (in total). */
  readonly lostLines: number;
}

/** Counters of a {@link RecordingFile}. */
export interface RecordingFileStats {
  /** Lines written to the file. */
  readonly lines: number;
  /** Lines dropped because of failures or a slow disk. */
  readonly lostLines: number;
  /** Problems seen, per cause, with how many lines each cost. */
  readonly causes: Readonly<Record<string, number>>;
}

const encoder = new TextEncoder();

/**
 * An append-only JSON Lines file that never throws at its caller and never blocks it.
 *
 * @example
 * ```ts
 * import { RecordingFile } from "./recording_file.ts";
 * import { mkdtempSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import assert from "node:assert/strict";
 * const file = new RecordingFile(`${mkdtempSync(`${tmpdir()}/rec-`)}/r.jsonl`, {
 *   onProblem: (p) => console.error(p.message),
 * });
 * file.write('{"format":"milterkit-recording","version":1}');
 * await file.close();
 * assert.equal(file.stats.lines, 1);
 * ```
 */
export class RecordingFile {
  readonly #path: string;
  readonly #limit: number;
  readonly #keep: number;
  readonly #maxQueued: number;
  readonly #retryMs: number;
  readonly #onProblem: (p: RecordingProblem) => void;
  readonly #now: () => number;
  #file: AppendFile;
  #size: number;
  #header: string | undefined;
  #queue: string[] = [];
  #queued = 0;
  #writing = false;
  #closed = false;
  #idle: (() => void)[] = [];
  /** The cause lines are being dropped for, if any. */
  #failing: string | undefined;
  #retryAt = 0;
  #retrying = false;
  /** A failed write may have left half a line: the next write starts with a newline. */
  #torn = false;
  #lines = 0;
  #lost = 0;
  #lostSinceNote = 0;
  readonly #causes: Record<string, number> = {};
  readonly #reported = new Set<string>();
  #announceResume = false;

  /**
   * Opens (or creates, mode 0640) the file for appending. Failing to open it is the one error
   * thrown: it happens before any mail is relayed.
   *
   * @param path The file.
   * @param options Rotation, queue bound, retry interval, problem listener.
   */
  constructor(path: string, options: RecordingFileOptions = {}) {
    this.#path = path;
    this.#limit = options.rotateSize ?? 0;
    this.#keep = Math.max(1, options.rotateKeep ?? 5);
    this.#maxQueued = options.maxQueuedBytes ?? 8 << 20;
    this.#retryMs = options.retryMs ?? 1000;
    this.#onProblem = options.onProblem ?? (() => {});
    this.#now = options.now ?? Date.now;
    this.#file = openAppendFile(path);
    this.#size = this.#file.size;
  }

  /** Counters: lines written and lost, per cause. */
  get stats(): RecordingFileStats {
    return { lines: this.#lines, lostLines: this.#lost, causes: { ...this.#causes } };
  }

  /**
   * How many lines have been lost so far: a caller that sees it grow knows its own lines of
   * that time may be missing.
   */
  get lostLines(): number {
    return this.#lost;
  }

  /**
   * Queues one line (without its newline). The first line written is the header, repeated at
   * the top of each rotated file. Never throws, never waits.
   *
   * @param line The line.
   */
  write(line: string): void {
    if (this.#closed) return;
    this.#header ??= line;
    if (this.#failing !== undefined && !this.#retrying) {
      if (Date.now() < this.#retryAt) return this.#drop(this.#failing, 1);
      this.#retrying = true; // lines queue again while the retry batch is written
    } else if (this.#queued > this.#maxQueued) {
      this.#fail("slow", `the disk cannot keep up (over ${this.#maxQueued} bytes queued)`);
      return this.#drop("slow", 1);
    }
    this.#queue.push(line);
    this.#queued += line.length + 1;
    // Idle: the line goes to the kernel at once (a kill loses nothing already handed over);
    // busy: lines gather into the next batch, written when the current one completes.
    if (!this.#writing) this.#flush();
  }

  /** Resolves once everything queued so far is written (or dropped). */
  flush(): Promise<void> {
    if (!this.#writing && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /**
   * Writes what is queued, then closes the file. A write stalled on the disk is given
   * `graceMs` (default 5000), then the file is closed anyway and the rest counted as lost.
   *
   * @param graceMs How long to wait for a stalled write.
   */
  async close(graceMs = 5000): Promise<void> {
    if (this.#closed) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.flush(),
      new Promise<void>((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
    this.#closed = true;
    if (this.#queue.length > 0) this.#drop(this.#failing ?? "slow", this.#queue.length);
    this.#queue = [];
    this.#file.close();
  }

  #drop(cause: string, lines: number): void {
    this.#lost += lines;
    this.#lostSinceNote += lines;
    this.#causes[cause] = (this.#causes[cause] ?? 0) + lines;
  }

  #fail(cause: string, message: string): void {
    this.#failing = cause;
    this.#retryAt = Date.now() + this.#retryMs;
    // Once per cause: a failure that comes back later is only counted.
    if (this.#reported.has(cause)) return;
    this.#reported.add(cause);
    this.#announceResume = true;
    this.#notify({
      kind: "failed",
      cause,
      message: `recording to ${this.#path} failed: ${message}; ` +
        `lines are dropped (and counted) while it lasts, mail is relayed as usual`,
      lostLines: this.#lost,
    });
  }

  #notify(p: RecordingProblem): void {
    try {
      this.#onProblem(p);
    } catch { /* a listener never breaks the recording */ }
  }

  #flush(): void {
    if (this.#writing || this.#queue.length === 0) return this.#settle();
    if (this.#limit > 0 && this.#size > this.#limit && this.#failing === undefined) this.#rotate();
    const lines = this.#queue;
    this.#queue = [];
    this.#queued = 0;
    let text = lines.join("\n") + "\n";
    const resuming = this.#failing !== undefined;
    if (resuming && this.#lostSinceNote > 0) {
      text = JSON.stringify({
        type: "note",
        t: this.#now(),
        text: `${this.#lostSinceNote} recording lines were lost (${this.#failing}); ` +
          `sessions open at the time are incomplete`,
      }) + "\n" + text;
    }
    if (this.#torn) text = "\n" + text;
    const bytes = encoder.encode(text);
    this.#writing = true;
    this.#writeAll(bytes, 0, (error) => {
      this.#writing = false;
      this.#retrying = false;
      if (error) {
        const cause = error.code ?? "EIO";
        this.#torn = true;
        this.#drop(cause, lines.length + this.#queue.length);
        this.#queue = [];
        this.#queued = 0;
        this.#fail(cause, error.message);
      } else {
        this.#torn = false;
        this.#lines += lines.length;
        if (resuming) {
          const cause = this.#failing!;
          this.#failing = undefined;
          if (this.#announceResume) {
            this.#announceResume = false;
            this.#notify({
              kind: "resumed",
              cause,
              message: `recording to ${this.#path} works again; ${this.#lostSinceNote} lines lost`,
              lostLines: this.#lost,
            });
          }
          this.#lostSinceNote = 0;
        }
      }
      if (this.#queue.length > 0) this.#flush();
      else this.#settle();
    });
  }

  #writeAll(
    bytes: Uint8Array,
    offset: number,
    done: (e?: Error & { code?: string }) => void,
  ): void {
    if (this.#closed) return done();
    this.#file.write(bytes.subarray(offset)).then((n) => {
      this.#size += n;
      if (offset + n < bytes.length) this.#writeAll(bytes, offset + n, done);
      else done();
    }, (e) => done(asError(e)));
  }

  #settle(): void {
    if (this.#writing || this.#queue.length > 0) return;
    for (const resolve of this.#idle.splice(0)) resolve();
  }

  /** Opens a new file at the path (header first); true when that worked. */
  #reopen(): boolean {
    let file: AppendFile;
    try {
      file = openAppendFile(this.#path);
    } catch {
      return false;
    }
    this.#file.close();
    this.#file = file;
    this.#size = 0;
    if (this.#header !== undefined) this.#queue.unshift(this.#header);
    if (this.#reported.delete("removed")) {
      this.#notify({
        kind: "resumed",
        cause: "removed",
        message: `${this.#path} was created again; recording goes on there`,
        lostLines: this.#lost,
      });
    }
    return true;
  }

  #rotate(): void {
    try {
      for (let i = this.#keep - 1; i >= 1; i--) {
        try {
          renameSync(`${this.#path}.${i}`, `${this.#path}.${i + 1}`);
        } catch { /* missing */ }
      }
      renameSync(this.#path, `${this.#path}.1`);
      const file = openAppendFile(this.#path);
      this.#file.close();
      this.#file = file;
      this.#size = 0;
      // Each file starts with the header line, so it reads on its own.
      if (this.#header !== undefined) this.#queue.unshift(this.#header);
    } catch (e) {
      if (!existsSync(this.#path)) {
        // The file (or its directory) was removed: lines written on would go to a file nobody
        // can open. Start the file again where it was, as soon as that can be done.
        if (this.#reopen()) return;
        if (!this.#reported.has("removed")) {
          this.#reported.add("removed");
          this.#notify({
            kind: "failed",
            cause: "removed",
            message: `${this.#path} was removed and cannot be created again (${
              thrownMessage(e)
            }); retrying at each batch`,
            lostLines: this.#lost,
          });
        }
        return;
      }
      // Keep writing to the current file; say so once.
      if (!this.#reported.has("rotate")) {
        this.#reported.add("rotate");
        this.#notify({
          kind: "failed",
          cause: "rotate",
          message: `cannot rotate ${this.#path}: ${
            (e as Error).message
          }; writing on to the same file`,
          lostLines: this.#lost,
        });
      }
    }
  }
}
