/**
 * A file opened for appending whose writes never block the event loop, whatever the disk
 * does: under Deno through `Deno.FsFile` (its `node:fs` writes run on the main thread, so a
 * stalled disk or a full pipe would freeze every connection), elsewhere through `node:fs`'s
 * asynchronous `write` (a thread pool).
 *
 * @module
 */

import { closeSync, fstatSync, openSync, write as fsWrite } from "node:fs";
import { asError } from "../../wire/errors.ts";

/** An open append-only file. */
export interface AppendFile {
  /** Bytes in the file when it was opened (0 for a pipe or device). */
  readonly size: number;
  /**
   * Writes some of `bytes`; resolves to how many were written (possibly fewer), rejects with
   * the system error (its `code` is `ENOSPC`, `EIO`, …).
   */
  write(bytes: Uint8Array): Promise<number>;
  /** Closes the file; safe to call more than once. */
  close(): void;
}

interface DenoFile {
  write(p: Uint8Array): Promise<number>;
  statSync(): { isFile: boolean; size: number };
  close(): void;
}

interface DenoLike {
  openSync(
    path: string,
    options: { append: boolean; create: boolean; mode?: number },
  ): DenoFile;
  errors: Record<string, new (...a: never[]) => Error>;
}

/**
 * Opens (or creates) a file for appending.
 *
 * @param path The file.
 * @param mode Permission bits when it is created (default 0o640).
 * @returns The open file.
 * @throws {Error} It cannot be opened (missing directory, permissions).
 *
 * @example
 * ```ts
 * import { openAppendFile } from "./append_file.ts";
 * import { mkdtempSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * const f = openAppendFile(`${mkdtempSync(`${tmpdir()}/af-`)}/log`);
 * await f.write(new TextEncoder().encode("line\n"));
 * f.close();
 * ```
 */
export function openAppendFile(path: string, mode = 0o640): AppendFile {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  let closed = false;
  if (deno) {
    const file = deno.openSync(path, { append: true, create: true, mode });
    const st = file.statSync();
    return {
      size: st.isFile ? st.size : 0,
      write: (bytes) => file.write(bytes).catch((e) => Promise.reject(withCode(e))),
      close: () => {
        if (closed) return;
        closed = true;
        try {
          file.close();
        } catch { /* gone */ }
      },
    };
  }
  const fd = openSync(path, "a", mode);
  const st = fstatSync(fd);
  return {
    size: st.isFile() ? st.size : 0,
    write: (bytes) =>
      new Promise((resolve, reject) =>
        fsWrite(fd, bytes, 0, bytes.length, null, (e, n) => (e ? reject(e) : resolve(n)))
      ),
    close: () => {
      if (closed) return;
      closed = true;
      try {
        closeSync(fd);
      } catch { /* gone */ }
    },
  };
}

/** Deno's errors carry the errno name in `code` (e.g. `ENOSPC`) or only in the message. */
function withCode(e: unknown): Error & { code?: string } {
  const err = asError(e) as Error & { code?: string };
  if (err.code === undefined) {
    const m = /\b(E[A-Z]{2,})\b/.exec(err.message) ??
      (/no space left/i.test(err.message) ? ["", "ENOSPC"] : null);
    if (m) err.code = m[1];
  }
  return err;
}
