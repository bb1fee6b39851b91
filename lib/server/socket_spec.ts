/**
 * Socket specs as Postfix and Sendmail write them (`inet:8890@127.0.0.1`, `inet:host:8890`,
 * `inet6:8890@[::1]`, `unix:/run/milter.sock`), parsed into plain {@link SocketAddress} data.
 * Pure: no sockets, no file system.
 *
 * @module
 */

import { MilterError } from "../wire/errors.ts";

/**
 * Where to listen or connect: a TCP host and port, or a Unix socket path.
 *
 * @example
 * ```ts
 * import type { SocketAddress } from "@milterkit/milterkit";
 * const tcp: SocketAddress = { transport: "tcp", hostname: "127.0.0.1", port: 8890 };
 * const unix: SocketAddress = { transport: "unix", path: "/run/milter.sock" };
 * ```
 */
export type SocketAddress =
  | { readonly transport: "tcp"; readonly hostname: string; readonly port: number }
  | { readonly transport: "unix"; readonly path: string };

/** What was wrong with a socket spec. */
export type SocketSpecProblem = "empty" | "scheme" | "port" | "host" | "path";

/**
 * A socket spec that cannot be parsed: an unknown scheme, a bad port, a missing host or path.
 *
 * @example
 * ```ts
 * import { parseSocketSpec } from "./socket_spec.ts";
 * import { SocketSpecError } from "@milterkit/milterkit";
 * import assert from "node:assert/strict";
 * assert.throws(() => parseSocketSpec("inet:99999@127.0.0.1"), SocketSpecError);
 * ```
 */
export class SocketSpecError extends MilterError {
  /** The spec as given. */
  readonly spec: string;
  /** Which part is wrong. */
  readonly problem: SocketSpecProblem;
  /** A spec that is probably what was meant (`inet:8890@127.0.0.1` for `8890`), if any. */
  readonly suggestion: string | undefined;

  /**
   * Creates the error.
   *
   * @param message What is wrong, naming the part.
   * @param spec The spec as given.
   * @param problem Which part is wrong.
   * @param suggestion A spec that is probably what was meant.
   */
  constructor(message: string, spec: string, problem: SocketSpecProblem, suggestion?: string) {
    super(message);
    this.name = "SocketSpecError";
    this.spec = spec;
    this.problem = problem;
    this.suggestion = suggestion;
  }
}

const LOOPBACK4 = "127.0.0.1";
const LOOPBACK6 = "::1";

function fail(
  spec: string,
  problem: SocketSpecProblem,
  detail: string,
  suggestion?: string,
): never {
  throw new SocketSpecError(
    `Invalid socket spec ${JSON.stringify(spec)}: ${detail}` +
      (suggestion === undefined ? "" : `; did you mean ${suggestion}?`),
    spec,
    problem,
    suggestion,
  );
}

/** Words people write for "TCP" in front of a port that are not a scheme (nor a host). */
const NOT_A_SCHEME = new Set(["tcp", "tcp4", "tcp6", "ip", "ipv4", "ipv6", "inet4", "port"]);

function parsePort(spec: string, text: string): number {
  if (!/^[0-9]{1,5}$/.test(text)) {
    fail(spec, "port", `port ${JSON.stringify(text)} is not a number from 0 to 65535`);
  }
  const port = Number(text);
  if (port > 65535) fail(spec, "port", `port ${port} is out of range 0..65535`);
  return port;
}

function parseHost(spec: string, text: string): string {
  const host = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (host === "") fail(spec, "host", "host is empty");
  const why = hostProblem(host);
  if (why !== undefined) fail(spec, "host", `host ${JSON.stringify(text)} ${why}`);
  return host;
}

const LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * Why HOST cannot name a machine (undefined when it can): an IPv4 address must have four parts
 * of 0..255, an IPv6 address must parse (a `%zone` suffix is allowed), a name is dot-separated
 * labels of letters, digits, `-` and `_` (at most 253 characters).
 */
function hostProblem(host: string): string | undefined {
  if (host.includes(":")) {
    const [address, zone] = host.split("%", 2);
    if (zone !== undefined && !/^[A-Za-z0-9_.-]+$/.test(zone)) return "has an invalid zone";
    try {
      new URL(`http://[${address}]/`);
      return undefined;
    } catch {
      return "is not a valid IPv6 address";
    }
  }
  if (/^[0-9.]+$/.test(host)) {
    const parts = host.split(".");
    const ok = parts.length === 4 &&
      parts.every((part) => /^[0-9]{1,3}$/.test(part) && Number(part) <= 255);
    return ok ? undefined : "is not a valid IPv4 address";
  }
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  if (name.length > 253 || !name.split(".").every((label) => LABEL.test(label))) {
    return "is not a valid host name or address";
  }
  return undefined;
}

/** Splits `HOST:PORT` or `[V6]:PORT` (Postfix) at the port's colon. */
function splitHostPort(spec: string, text: string): [host: string, port: string] {
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end < 0 || text[end + 1] !== ":") {
      fail(spec, "host", `expected "[ADDRESS]:PORT", got ${JSON.stringify(text)}`);
    }
    return [text.slice(0, end + 1), text.slice(end + 2)];
  }
  const colon = text.lastIndexOf(":");
  if (colon < 0) fail(spec, "port", `port is missing in ${JSON.stringify(text)}`);
  const host = text.slice(0, colon);
  if (host.includes(":")) {
    fail(spec, "host", `an IPv6 address needs brackets or "PORT@HOST": ${JSON.stringify(text)}`);
  }
  return [host, text.slice(colon + 1)];
}

function tcp(spec: string, rest: string, v6: boolean): SocketAddress {
  if (rest === "") fail(spec, "port", "port is missing");
  const at = rest.lastIndexOf("@");
  let hostText: string | undefined;
  let portText: string;
  if (at >= 0) {
    // Sendmail/libmilter: PORT@HOST
    portText = rest.slice(0, at);
    hostText = rest.slice(at + 1);
    if (hostText === "") fail(spec, "host", 'host after "@" is empty');
  } else if (/^[0-9]+$/.test(rest)) {
    portText = rest;
  } else {
    // Postfix: HOST:PORT or [HOST]:PORT
    [hostText, portText] = splitHostPort(spec, rest);
  }
  const port = parsePort(spec, portText);
  const hostname = hostText === undefined
    ? (v6 ? LOOPBACK6 : LOOPBACK4)
    : parseHost(spec, hostText);
  return { transport: "tcp", hostname, port };
}

function unix(spec: string, path: string): SocketAddress {
  if (path === "") fail(spec, "path", "path is missing");
  if (path.includes("\0")) fail(spec, "path", "path contains a NUL byte");
  return { transport: "unix", path };
}

/**
 * Parses a socket spec as written in Postfix's `smtpd_milters` or Sendmail's `X` line
 * (`S=`): `inet:PORT@HOST`, `inet:HOST:PORT`, `inet6:PORT@HOST` (HOST may be `[::1]` or `::1`),
 * `inet:PORT` (loopback; `inet6:PORT` gives `::1`), `unix:PATH`, `local:PATH`, and the
 * scheme-less `HOST:PORT`, `[::1]:PORT` and `/absolute/path`.
 *
 * @param spec The spec text; surrounding whitespace is ignored.
 * @returns The address it names.
 * @throws {SocketSpecError} Unknown scheme, port outside 0..65535, empty host or path.
 *
 * @example
 * ```ts
 * import { parseSocketSpec } from "./socket_spec.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(parseSocketSpec("inet:8890@127.0.0.1"),
 *   { transport: "tcp", hostname: "127.0.0.1", port: 8890 });
 * assert.deepEqual(parseSocketSpec("unix:/run/milter.sock"),
 *   { transport: "unix", path: "/run/milter.sock" });
 * ```
 */
export function parseSocketSpec(spec: string): SocketAddress {
  const text = spec.trim();
  if (text === "") fail(spec, "empty", "spec is empty");
  if (text.startsWith("/")) return unix(spec, text);
  if (text.startsWith("[")) return tcp(spec, text, true);
  const colon = text.indexOf(":");
  if (colon < 0) {
    const suggestion = /^[0-9]{1,5}$/.test(text) ? `inet:${text}@${LOOPBACK4}` : undefined;
    fail(
      spec,
      "scheme",
      suggestion === undefined
        ? 'expected "inet:", "inet6:", "unix:", "local:" or "HOST:PORT"'
        : "a port alone is not a socket spec",
      suggestion,
    );
  }
  const scheme = text.slice(0, colon).toLowerCase();
  const rest = text.slice(colon + 1);
  if (NOT_A_SCHEME.has(scheme)) {
    const v6 = scheme.endsWith("6");
    let meant = v6 ? `inet6:PORT@${LOOPBACK6}` : `inet:PORT@${LOOPBACK4}`;
    try {
      meant = formatSocketSpec(tcp(spec, rest, v6));
    } catch {
      // Not even the rest parses: suggest the shape.
    }
    fail(spec, "scheme", `${JSON.stringify(scheme)} is not a scheme`, meant);
  }
  switch (scheme) {
    case "inet":
      return tcp(spec, rest, false);
    case "inet6":
      return tcp(spec, rest, true);
    case "unix":
    case "local":
      return unix(spec, rest);
  }
  if (/^[0-9]+$/.test(rest) && !scheme.includes("@")) {
    // Bare HOST:PORT, as Postfix accepts it.
    return tcp(spec, text, false);
  }
  return fail(
    spec,
    "scheme",
    `unknown scheme ${JSON.stringify(scheme)}, expected "inet", "inet6", "unix" or "local"`,
  );
}

/** Options of {@link formatSocketSpec}. */
export interface FormatSocketSpecOptions {
  /**
   * `"sendmail"` (default) writes `inet:PORT@HOST` / `inet6:PORT@HOST`, as libmilter and
   * Sendmail's `S=` do; `"postfix"` writes `inet:HOST:PORT` / `inet:[::1]:PORT` for
   * `smtpd_milters`.
   */
  readonly style?: "sendmail" | "postfix";
}

/**
 * Writes an address as a socket spec that {@link parseSocketSpec} reads back to the same address.
 *
 * @param address The address.
 * @param options Which MTA's spelling to use.
 * @returns The spec, e.g. `inet:8890@127.0.0.1` or `unix:/run/milter.sock`.
 *
 * @example
 * ```ts
 * import { formatSocketSpec } from "./socket_spec.ts";
 * import assert from "node:assert/strict";
 * const addr = { transport: "tcp", hostname: "::1", port: 8890 } as const;
 * assert.equal(formatSocketSpec(addr), "inet6:8890@::1");
 * assert.equal(formatSocketSpec(addr, { style: "postfix" }), "inet:[::1]:8890");
 * ```
 */
export function formatSocketSpec(
  address: SocketAddress,
  options: FormatSocketSpecOptions = {},
): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  const v6 = address.hostname.includes(":");
  if (options.style === "postfix") {
    return `inet:${v6 ? `[${address.hostname}]` : address.hostname}:${address.port}`;
  }
  return `${v6 ? "inet6" : "inet"}:${address.port}@${address.hostname}`;
}

/**
 * A socket spec parsed, or an address passed through: what `listen`/`connect` take.
 *
 * @param spec Socket spec (`inet:8890@127.0.0.1`, `unix:/run/m.sock`) or address.
 * @returns The address.
 * @throws {SocketSpecError} The spec cannot be parsed.
 */
export function toSocketAddress(spec: string | SocketAddress): SocketAddress {
  return typeof spec === "string" ? parseSocketSpec(spec) : spec;
}
