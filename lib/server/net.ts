/**
 * Listen and connect by socket spec with the adapter of the running runtime: Deno's, Bun's, or
 * `node:net` elsewhere. Adapters load on first use, so nothing runtime-specific is imported
 * until a socket is needed. Internal: users open sockets with `listen` from the package's entry
 * point (a milter server) or with the adapters' entry points (`@milterkit/milterkit/node`...).
 *
 * @module
 */

import { type SocketAddress, toSocketAddress } from "./socket_spec.ts";
import type {
  AdapterName,
  Connection,
  ConnectOptions,
  Listener,
  ListenOptions,
  NetworkAdapter,
} from "./adapters/types.ts";

/**
 * The adapter that suits the running runtime: `"deno"` under Deno, `"bun"` under Bun, else
 * `"node"`.
 *
 * @returns The adapter name.
 *
 * @example
 * ```ts
 * import { runtimeAdapterName } from "./net.ts";
 * import assert from "node:assert/strict";
 * assert.ok(["deno", "bun", "node"].includes(runtimeAdapterName()));
 * ```
 */
export function runtimeAdapterName(): AdapterName {
  if ("Deno" in globalThis) return "deno";
  if ("Bun" in globalThis) return "bun";
  return "node";
}

/**
 * Loads an adapter by name. `"deno"` and `"bun"` work only in their own runtime; `"node"` works
 * under Node, Deno and Bun.
 *
 * @param name The adapter (default: the running runtime's, see {@link runtimeAdapterName}).
 * @returns The adapter.
 * @throws {TypeError} The adapter needs a runtime that is not running.
 *
 * @example
 * ```ts
 * import { adapterFor } from "./net.ts";
 * import assert from "node:assert/strict";
 * const adapter = await adapterFor("node");
 * assert.equal(adapter.name, "node");
 * ```
 */
export async function adapterFor(
  name: AdapterName = runtimeAdapterName(),
): Promise<NetworkAdapter> {
  switch (name) {
    case "deno":
      if (!("Deno" in globalThis)) throw new TypeError('Adapter "deno" needs the Deno runtime');
      return (await import("./adapters/deno.ts")).denoAdapter;
    case "bun":
      if (!("Bun" in globalThis)) throw new TypeError('Adapter "bun" needs the Bun runtime');
      return (await import("./adapters/bun.ts")).bunAdapter;
    case "node":
      return (await import("./adapters/node.ts")).nodeAdapter;
    default:
      throw new TypeError(`Unknown adapter ${JSON.stringify(name)}: expected deno, bun or node`);
  }
}

/** Options of {@link listen}: listen options plus an explicit adapter. */
export interface NetListenOptions extends ListenOptions {
  /** The adapter to use (default: the running runtime's). */
  readonly adapter?: NetworkAdapter;
}

/** Options of {@link connect}: connect options plus an explicit adapter. */
export interface NetConnectOptions extends ConnectOptions {
  /** The adapter to use (default: the running runtime's). */
  readonly adapter?: NetworkAdapter;
}

/**
 * Listens on a socket spec (`inet:8890@127.0.0.1`, `inet:127.0.0.1:8890`, `unix:/run/m.sock`)
 * or address. A host-less `inet:PORT` binds loopback.
 *
 * @param spec Socket spec or address.
 * @param options Unix socket mode and stale file removal, backlog, adapter.
 * @returns The listener; `address` has the real port when port 0 was asked.
 * @throws {SocketSpecError} The spec cannot be parsed.
 * @throws {MilterError} The address is in use, or a Unix path holds a file that is not a socket.
 *
 * @example
 * ```ts
 * import { listen as listenSocket } from "./net.ts";
 * import assert from "node:assert/strict";
 * const listener = await listenSocket("inet:0@127.0.0.1");
 * assert.ok(listener.address.transport === "tcp" && listener.address.port > 0);
 * await listener.close();
 * ```
 */
export async function listen(
  spec: string | SocketAddress,
  options: NetListenOptions = {},
): Promise<Listener> {
  const address = toSocketAddress(spec);
  const adapter = options.adapter ?? await adapterFor();
  return adapter.listen(address, options);
}

/**
 * Connects to a socket spec or address.
 *
 * @param spec Socket spec or address.
 * @param options Abort signal, timeout, adapter.
 * @returns The open connection.
 * @throws {SocketSpecError} The spec cannot be parsed.
 * @throws {ConnectionClosedError} The connection was refused, naming the address.
 * @throws {MilterTimeoutError} No answer within `timeoutMs`.
 *
 * @example
 * ```ts
 * import { connect as connectSocket, listen as listenSocket } from "./net.ts";
 * const listener = await listenSocket("inet:0");
 * const conn = await connectSocket(listener.address, { timeoutMs: 5000 });
 * conn.close();
 * await listener.close();
 * ```
 */
export async function connect(
  spec: string | SocketAddress,
  options: NetConnectOptions = {},
): Promise<Connection> {
  const address = toSocketAddress(spec);
  const adapter = options.adapter ?? await adapterFor();
  return adapter.connect(address, options);
}
