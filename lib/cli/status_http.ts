/**
 * The HTTP side of `serve --metrics-port`: `/metrics` (Prometheus text) and `/health` (200 while
 * serving, 503 while stopping or with no worker answering), for scrapers and load balancers.
 *
 * @module
 */

import { createServer, type Server as HttpServer } from "node:http";

/** What the status server asks of `serve`. */
export interface StatusSource {
  /** The metrics in Prometheus text format. */
  metrics(): Promise<string> | string;
  /** Whether new connections are welcome, with a one-line reason. */
  health(): Promise<{ ok: boolean; text: string }> | { ok: boolean; text: string };
}

/** A running status server. */
export interface StatusServer {
  /** The URL of `/metrics`. */
  readonly url: string;
  /** Stops listening. */
  close(): Promise<void>;
}

/**
 * Serves `/metrics` and `/health` on `host:port`.
 *
 * @param port TCP port (0 picks one).
 * @param host Bind address.
 * @param source Where metrics and health come from.
 * @returns The running server.
 *
 * @example
 * ```ts
 * import { startStatusHttp } from "./status_http.ts";
 * const s = await startStatusHttp(0, "127.0.0.1", {
 *   metrics: () => "milterkit_messages_total 0\n",
 *   health: () => ({ ok: true, text: "serving" }),
 * });
 * await s.close();
 * ```
 */
export async function startStatusHttp(
  port: number,
  host: string,
  source: StatusSource,
): Promise<StatusServer> {
  const http: HttpServer = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    const answer = async () => {
      if (path === "/metrics") {
        const text = await source.metrics();
        res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(text);
      } else if (path === "/health") {
        const h = await source.health();
        res.writeHead(h.ok ? 200 : 503, { "content-type": "text/plain" }).end(h.text + "\n");
      } else {
        res.writeHead(404).end("not found\n");
      }
    };
    answer().catch((e) => {
      if (!res.headersSent) res.writeHead(500).end(`${(e as Error).message}\n`);
    });
  });
  await new Promise<void>((ok, fail) => {
    http.once("error", fail);
    http.listen(port, host, () => ok());
  });
  const bound = http.address();
  const realPort = typeof bound === "object" && bound ? bound.port : port;
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${realPort}/metrics`,
    close: () =>
      new Promise<void>((r) => {
        http.close(() => r());
        http.closeAllConnections?.();
      }),
  };
}
