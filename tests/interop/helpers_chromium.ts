// deno-lint-ignore-file no-explicit-any -- DevTools protocol messages are untyped JSON
/**
 * Drives Debian's headless Chromium over the DevTools protocol (a WebSocket, no npm package):
 * load a page, collect console messages, exceptions and network requests, evaluate
 * expressions, take a screenshot. Runs under Deno and Bun (node:* modules and the global
 * WebSocket).
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** Where Debian's package puts the browser. */
export const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) =>
  existsSync(p)
);

/** What happened while a page loaded. */
export interface PageLog {
  /** Console calls of type error or warning, and log entries of level error. */
  readonly errors: string[];
  /** Every request the page made. */
  readonly requests: string[];
}

/** A page in a running headless Chromium. */
export interface Page {
  /** Evaluates an expression in the page and returns its (JSON) value. */
  evaluate<T>(expression: string): Promise<T>;
  /** A PNG of the whole page. */
  screenshot(): Promise<Uint8Array>;
  /** What was logged so far. */
  readonly log: PageLog;
}

/**
 * Starts Chromium, opens `url` at `width`×`height`, waits for the load event and `ready` (an
 * expression that becomes true), runs `fn`, and stops the browser.
 */
export async function withPage<T>(
  url: string,
  opts: { width: number; height: number; ready: string },
  fn: (page: Page) => Promise<T>,
): Promise<T> {
  if (CHROMIUM === undefined) {
    throw new Error("chromium is not installed (scripts/peers/install.sh installs it)");
  }
  const profile = mkdtempSync(join(tmpdir(), "milterkit-chromium-"));
  const child = spawn(CHROMIUM, [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--hide-scrollbars",
    `--window-size=${opts.width},${opts.height}`,
    "--remote-debugging-port=0",
    `--user-data-dir=${profile}`,
    "about:blank",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => void (stderr += String(d)));
  let ws: WebSocket | undefined;
  try {
    const portFile = join(profile, "DevToolsActivePort");
    const deadline = Date.now() + 30_000;
    while (!existsSync(portFile) || readFileSync(portFile, "utf8").split("\n").length < 2) {
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(`chromium did not start: ${stderr.slice(-500)}`);
      }
      await sleep(50);
    }
    const port = readFileSync(portFile, "utf8").split("\n")[0]!.trim();
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json() as {
      type: string;
      webSocketDebuggerUrl: string;
    }[];
    const target = targets.find((t) => t.type === "page");
    if (target === undefined) throw new Error("chromium has no page target");
    ws = new WebSocket(target.webSocketDebuggerUrl);
    await new Promise<void>((resolve, reject) => {
      ws!.onopen = () => resolve();
      ws!.onerror = () => reject(new Error("cannot connect to chromium's DevTools"));
    });
    let id = 0;
    const waiting = new Map<number, (m: { result?: unknown; error?: unknown }) => void>();
    const events: ((m: { method: string; params: Record<string, unknown> }) => void)[] = [];
    const log: PageLog = { errors: [], requests: [] };
    ws.onmessage = (ev) => {
      const m = JSON.parse(String(ev.data));
      if (m.id !== undefined) waiting.get(m.id)?.(m);
      else for (const f of events) f(m);
    };
    events.push((m) => {
      const p = m.params as Record<string, any>;
      if (
        m.method === "Runtime.consoleAPICalled" && ["error", "warning", "assert"].includes(p.type)
      ) {
        log.errors.push(
          `console.${p.type}: ${JSON.stringify(p.args?.map((a: any) => a.value ?? a.description))}`,
        );
      } else if (m.method === "Runtime.exceptionThrown") {
        log.errors.push(
          `exception: ${p.exceptionDetails?.exception?.description ?? p.exceptionDetails?.text}`,
        );
      } else if (m.method === "Log.entryAdded" && p.entry?.level === "error") {
        log.errors.push(`log: ${p.entry.text} ${p.entry.url ?? ""}`);
      } else if (m.method === "Network.requestWillBeSent") {
        log.requests.push(p.request.url);
      }
    });
    const send = (method: string, params: Record<string, unknown> = {}) =>
      new Promise<any>((resolve, reject) => {
        const n = ++id;
        waiting.set(n, (m) => {
          waiting.delete(n);
          if (m.error) reject(new Error(`${method}: ${JSON.stringify(m.error)}`));
          else resolve(m.result);
        });
        ws!.send(JSON.stringify({ id: n, method, params }));
      });
    await send("Runtime.enable");
    await send("Log.enable");
    await send("Network.enable");
    await send("Page.enable");
    await send("Emulation.setDeviceMetricsOverride", {
      width: opts.width,
      height: opts.height,
      deviceScaleFactor: 1,
      mobile: false,
    });
    const loaded = new Promise<void>((resolve) =>
      events.push((m) => {
        if (m.method === "Page.loadEventFired") resolve();
      })
    );
    await send("Page.navigate", { url });
    await loaded;
    const evaluate = async <T>(expression: string): Promise<T> => {
      const r = await send("Runtime.evaluate", { expression, returnByValue: true });
      if (r.exceptionDetails) throw new Error(`evaluate ${expression}: ${r.exceptionDetails.text}`);
      return r.result.value as T;
    };
    const until = Date.now() + 10_000;
    while (!(await evaluate<boolean>(`Boolean(${opts.ready})`))) {
      if (Date.now() > until) throw new Error(`page never became ready (${opts.ready})`);
      await sleep(50);
    }
    return await fn({
      evaluate,
      log,
      async screenshot() {
        const r = await send("Page.captureScreenshot", { format: "png" });
        return Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
      },
    });
  } finally {
    ws?.close();
    child.kill("SIGKILL");
    await new Promise((r) => child.exitCode !== null ? r(null) : child.once("exit", r));
    rmSync(profile, { recursive: true, force: true });
  }
}
