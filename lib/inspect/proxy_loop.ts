/**
 * Guards against a proxy whose upstream leads back to itself. Statically: the upstream address
 * is one the proxy listens on ({@link upstreamLoops}). At run time: an MTA connection that
 * comes from one of the proxy's own upstream connections ({@link LoopGuard}).
 *
 * @module
 */

import { networkInterfaces } from "node:os";
import { resolve } from "node:path";
import type { SocketAddress } from "../server/socket_spec.ts";

const WILDCARD = new Set(["", "0.0.0.0", "::", "[::]", "*"]);

function plainHost(host: string): string {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  return h.startsWith("::ffff:") && h.includes(".") ? h.slice(7) : h;
}

function isLoopback(host: string): boolean {
  const h = plainHost(host);
  return h === "localhost" || h === "::1" || h.startsWith("127.");
}

function localAddresses(): Set<string> {
  const out = new Set<string>();
  try {
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) out.add(plainHost(a.address));
    }
  } catch { /* not available: only loopback and exact matches are recognised */ }
  return out;
}

/**
 * Whether connecting to `upstream` would reach the proxy's own `listen` address.
 *
 * @param listen Where the proxy listens.
 * @param upstream Where it relays to.
 * @returns True for the same Unix path, or the same TCP port on the same host, on a host the
 * wildcard listen address covers, or on loopback on both sides.
 *
 * @example
 * ```ts
 * import { upstreamLoops } from "./proxy_loop.ts";
 * import assert from "node:assert/strict";
 * const at = (hostname: string, port: number) => ({ transport: "tcp" as const, hostname, port });
 * assert.equal(upstreamLoops(at("0.0.0.0", 8891), at("127.0.0.1", 8891)), true);
 * assert.equal(upstreamLoops(at("127.0.0.1", 8891), at("127.0.0.1", 8890)), false);
 * ```
 */
export function upstreamLoops(listen: SocketAddress, upstream: SocketAddress): boolean {
  if (listen.transport === "unix" || upstream.transport === "unix") {
    return listen.transport === "unix" && upstream.transport === "unix" &&
      resolve(listen.path) === resolve(upstream.path);
  }
  if (listen.port === 0 || listen.port !== upstream.port) return false;
  const l = plainHost(listen.hostname);
  const u = plainHost(upstream.hostname);
  if (l === u || (isLoopback(l) && isLoopback(u))) return true;
  return WILDCARD.has(l) && (isLoopback(u) || WILDCARD.has(u) || localAddresses().has(u));
}

function endpoint(a: SocketAddress | undefined): string | undefined {
  return a?.transport === "tcp" ? `${plainHost(a.hostname)}:${a.port}` : undefined;
}

/**
 * Remembers the local ends of the proxy's upstream connections, and recognises an MTA
 * connection that is one of them seen from the other side: the upstream led back to the proxy.
 *
 * @example
 * ```ts
 * import { LoopGuard } from "./proxy_loop.ts";
 * import assert from "node:assert/strict";
 * const guard = new LoopGuard();
 * const forget = guard.add({ transport: "tcp", hostname: "127.0.0.1", port: 40000 });
 * assert.equal(guard.isOwn({ transport: "tcp", hostname: "127.0.0.1", port: 40000 }), true);
 * forget();
 * assert.equal(guard.isOwn({ transport: "tcp", hostname: "127.0.0.1", port: 40000 }), false);
 * ```
 */
export class LoopGuard {
  readonly #ends = new Set<string>();

  /**
   * Registers the local end of an upstream connection.
   *
   * @param local The connection's local address.
   * @returns Forgets it again (call when the connection ends).
   */
  add(local: SocketAddress | undefined): () => void {
    const key = endpoint(local);
    if (key === undefined) return () => {};
    this.#ends.add(key);
    return () => this.#ends.delete(key);
  }

  /**
   * Whether an MTA connection comes from one of the registered upstream connections.
   *
   * @param remote The MTA connection's peer address.
   * @returns True when it is the proxy talking to itself.
   */
  isOwn(remote: SocketAddress | undefined): boolean {
    const key = endpoint(remote);
    return key !== undefined && this.#ends.has(key);
  }
}
