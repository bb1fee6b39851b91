/** Helpers shared by the benchmark scripts: ports, readiness, docs sections. */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { connect as tcpConnect, createServer } from "node:net";

/** A loopback TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
    s.on("error", reject);
  });
}

/** Waits until something accepts connections on a loopback port. */
export async function waitPort(port: number, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const ok = await new Promise<boolean>((r) => {
      const c = tcpConnect(port, "127.0.0.1");
      c.once("connect", () => (c.destroy(), r(true)));
      c.once("error", () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`);
}

/**
 * Replaces the section `<!-- NAME:start -->…<!-- NAME:end -->` of a Markdown file (appended when
 * absent), leaving everything else as it is.
 */
export function replaceSection(path: string, name: string, text: string): void {
  const doc = existsSync(path) ? readFileSync(path, "utf8") : "";
  const start = `<!-- ${name}:start -->`;
  const stop = `<!-- ${name}:end -->`;
  const section = `${start}\n${text}\n${stop}`;
  const at = doc.indexOf(start);
  const to = doc.indexOf(stop);
  const out = at >= 0 && to > at
    ? doc.slice(0, at) + section + doc.slice(to + stop.length)
    : (doc.trimEnd() ? doc.trimEnd() + "\n\n" : "# Benchmarks\n\n") + section + "\n";
  writeFileSync(path, out);
}
