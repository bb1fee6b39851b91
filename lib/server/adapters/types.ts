/**
 * The contract every socket adapter (Deno, Bun, `node:net`) implements: listeners that yield
 * connections, and connections that are a {@link Duplex} of byte streams.
 *
 * @module
 */

import type { SocketAddress } from "../socket_spec.ts";
import type { Duplex } from "../../wire/types.ts";

/**
 * One open socket as a pair of byte streams. Closing `writable` half-closes (sends FIN) and
 * `readable` keeps delivering the peer's remaining bytes until its EOF. Every chunk `readable`
 * yields is a fresh buffer that the adapter never writes again, so decoders may keep views into
 * it. Runtime failures (reset, broken pipe) surface as `ConnectionClosedError`.
 *
 * @example
 * ```ts
 * import type { Connection } from "@milterkit/milterkit/node";
 * function describe(conn: Connection): string {
 *   return conn.remote?.transport ?? "unnamed peer";
 * }
 * ```
 */
export interface Connection extends Duplex {
  /** The peer's address (`undefined` for an unnamed Unix socket peer). */
  readonly remote: SocketAddress | undefined;
  /** This end's address (`undefined` for an unnamed Unix socket). */
  readonly local: SocketAddress | undefined;
  /** Closes both directions at once, dropping unsent data; safe to call more than once. */
  close(): void;
}

/**
 * A listening socket: iterate it for incoming connections; iteration ends after `close()`.
 *
 * @example
 * ```ts
 * import type { Listener } from "@milterkit/milterkit/node";
 * async function acceptOne(listener: Listener): Promise<void> {
 *   for await (const conn of listener) {
 *     conn.close();
 *     break;
 *   }
 * }
 * ```
 */
export interface Listener extends AsyncIterable<Connection> {
  /** The bound address, with the real port when port 0 was asked. */
  readonly address: SocketAddress;
  /**
   * Stops accepting (connections already accepted stay open), ends the iteration and removes
   * the Unix socket file this listener created.
   */
  close(): Promise<void>;
}

/**
 * Options of {@link NetworkAdapter.listen}.
 *
 * @example
 * ```ts
 * import type { ListenOptions } from "@milterkit/milterkit/node";
 * const options: ListenOptions = { unixMode: 0o666, removeStale: true };
 * ```
 */
export interface ListenOptions {
  /** Permission bits set on a Unix socket file (default `0o660`). */
  readonly unixMode?: number;
  /**
   * Remove a stale Unix socket file at the path before listening (default true). Only a socket
   * nobody listens on is removed; any other file is an error and stays untouched.
   */
  readonly removeStale?: boolean;
  /** Length of the kernel's accept queue, where the runtime lets it be set. */
  readonly backlog?: number;
  /**
   * TCP only: set `SO_REUSEPORT`, so several processes can listen on the same address and the
   * kernel spreads new connections across them (Linux). Deno needs `--unstable-net` for it; Node
   * before 22.12 ignores it (use `node:cluster` there).
   */
  readonly reusePort?: boolean;
}

/**
 * Options of {@link NetworkAdapter.connect}.
 *
 * @example
 * ```ts
 * import type { ConnectOptions } from "@milterkit/milterkit/node";
 * const options: ConnectOptions = { timeoutMs: 5000, signal: AbortSignal.timeout(10_000) };
 * ```
 */
export interface ConnectOptions {
  /** Aborts the attempt; the promise rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Gives up after this many milliseconds with a `MilterTimeoutError`. */
  readonly timeoutMs?: number;
}

/** Which socket implementation an adapter uses. */
export type AdapterName = "deno" | "bun" | "node";

/**
 * A runtime's sockets behind one interface: listen and connect over TCP or Unix sockets.
 *
 * @example
 * ```ts
 * import { adapterFor } from "../net.ts";
 * const adapter = await adapterFor("node");
 * const listener = await adapter.listen({ transport: "tcp", hostname: "127.0.0.1", port: 0 });
 * await listener.close();
 * ```
 */
export interface NetworkAdapter {
  /** The implementation's name. */
  readonly name: AdapterName;
  /**
   * Listens on an address.
   *
   * @param address Where to listen; port 0 picks a free port.
   * @param options Unix socket mode, stale file removal, backlog.
   * @returns The listener, already bound.
   */
  listen(address: SocketAddress, options?: ListenOptions): Promise<Listener>;
  /**
   * Connects to an address.
   *
   * @param address Where to connect.
   * @param options Abort signal and timeout.
   * @returns The open connection.
   */
  connect(address: SocketAddress, options?: ConnectOptions): Promise<Connection>;
}
