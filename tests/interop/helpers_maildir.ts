/**
 * Reading what a private Postfix instance delivered: the Maildir's `new/` files, and a tiny header
 * parser for assertions.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { sleep } from "./helpers_process.ts";

/** One delivered copy. */
export interface MaildirMessage {
  /** Absolute path of the file. */
  file: string;
  /** The message as text (UTF-8; Postfix stores the bytes it received). */
  text: string;
}

/** Options of `readMaildir`. */
export interface ReadMaildirOptions {
  /** Wait until at least this many messages are there (default 1; 0 returns at once). */
  count?: number;
  /** How long to wait for `count` messages before throwing (default 10 s). */
  timeoutMs?: number;
  /** After `count` arrived, wait this long and read again, to catch extra copies (default 0). */
  settleMs?: number;
}

/** Sort key of a Maildir file name "SECONDS.VdevIinoMusec.host": arrival order. */
function arrivalKey(name: string): [number, number, string] {
  const m = /^(\d+)\.[^.]*?M(\d+)/.exec(name);
  return m ? [Number(m[1]), Number(m[2]), name] : [0, 0, name];
}

function listNew(maildir: string): MaildirMessage[] {
  const dir = `${maildir}/new`;
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => !n.startsWith("."))
    .map((n) => ({ name: n, key: arrivalKey(n) }))
    .sort((a, b) => a.key[0] - b.key[0] || a.key[1] - b.key[1] || a.key[2].localeCompare(b.key[2]))
    .map(({ name }) => {
      const file = `${dir}/${name}`;
      return { file, text: readFileSync(file, "utf8") };
    });
}

/**
 * Returns the messages in `maildir/new`, oldest first, after waiting for at least `count` of them.
 * Throws with what did arrive when the timeout passes first.
 */
export async function readMaildir(
  maildir: string,
  opts: ReadMaildirOptions = {},
): Promise<MaildirMessage[]> {
  const count = opts.count ?? 1;
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  let found = listNew(maildir);
  while (found.length < count) {
    if (Date.now() > deadline) {
      throw new Error(
        `Expected ${count} message(s) in ${maildir}/new, found ${found.length}` +
          found.map((m) => `\n--- ${m.file}\n${m.text}`).join(""),
      );
    }
    await sleep(25);
    found = listNew(maildir);
  }
  if (opts.settleMs) {
    await sleep(opts.settleMs);
    found = listNew(maildir);
  }
  return found;
}

/** A message split into its header fields (in order, unfolded) and its body. */
export interface ParsedMessage {
  headers: Array<{ name: string; value: string }>;
  body: string;
}

/** Splits a message at the first empty line; folded header lines are joined with their CRLF. */
export function parseMessage(text: string): ParsedMessage {
  const normalized = text.replace(/\r\n/g, "\n");
  const cut = normalized.indexOf("\n\n");
  const head = cut < 0 ? normalized : normalized.slice(0, cut);
  const body = cut < 0 ? "" : normalized.slice(cut + 2);
  const headers: Array<{ name: string; value: string }> = [];
  for (const line of head.split("\n")) {
    const last = headers[headers.length - 1];
    if (/^[ \t]/.test(line) && last) {
      last.value += "\n" + line;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon > 0) {
      headers.push({ name: line.slice(0, colon), value: line.slice(colon + 1).replace(/^ /, "") });
    }
  }
  return { headers, body };
}

/** Every value of header `name` (case-insensitive) in a message's text, in order. */
export function headerValues(text: string, name: string): string[] {
  const lower = name.toLowerCase();
  return parseMessage(text).headers.filter((h) => h.name.toLowerCase() === lower).map((h) =>
    h.value
  );
}
