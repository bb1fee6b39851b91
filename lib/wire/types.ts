/**
 * The protocol's vocabulary as plain tagged data: frames, MTA commands, filter replies.
 * Strings are "byte-exact": valid UTF-8 reads as text, and any other byte survives as a lone
 * surrogate (see `lib/text.ts`), so decode → encode always gives back the same bytes.
 *
 * @module
 */

/**
 * The one seam of the toolkit: a pair of byte streams. A socket, an in-memory pipe or a
 * recording replay all look like this.
 *
 * @example
 * ```ts
 * import type { Duplex } from "@milterkit/milterkit";
 * const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
 * const loop: Duplex = { readable, writable };
 * ```
 */
export interface Duplex {
  /** Bytes coming from the peer. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes going to the peer. */
  readonly writable: WritableStream<Uint8Array>;
  /**
   * A direct path to the socket without web streams, when the adapter has one (the filter
   * engine's hot path). Once taken, `readable` and `writable` are not used any more.
   */
  readonly channel?: () => ByteChannel;
}

/**
 * Bytes to and from a peer without web streams: what a socket adapter offers the filter engine
 * so a round trip costs no stream machinery. Reads pause the socket while unread data piles up.
 *
 * @example
 * ```ts
 * import type { ByteChannel } from "@milterkit/milterkit/wire";
 * async function echoOnce(ch: ByteChannel): Promise<void> {
 *   const chunk = await ch.read();
 *   if (chunk) await ch.write(chunk);
 *   await ch.end();
 * }
 * ```
 */
export interface ByteChannel {
  /**
   * The next chunk (a fresh buffer the adapter never writes again), or null at the end of the
   * stream; a promise when nothing has arrived yet.
   *
   * @throws {ConnectionClosedError} when the connection failed.
   */
  read(): Uint8Array | null | Promise<Uint8Array | null>;
  /** Stops reading: a pending read gives null, and what the peer still sends is dropped. */
  cancel(): void;
  /**
   * Writes bytes (in order with earlier writes).
   *
   * @returns undefined when they were taken at once; else a promise that resolves when they
   * are written and rejects when the connection failed.
   */
  write(bytes: Uint8Array): Promise<void> | undefined;
  /** Sends FIN once everything written is out. */
  end(): Promise<void>;
  /** Closes both directions now, dropping unsent data. */
  destroy(): void;
}

/**
 * One frame on the wire: a command or response byte and its payload.
 *
 * @example
 * ```ts
 * import type { Frame } from "@milterkit/milterkit/wire";
 * const quit: Frame = { code: 0x51, payload: new Uint8Array(0) };
 * ```
 */
export interface Frame {
  /** Command (MTA → filter) or response (filter → MTA) byte. */
  readonly code: number;
  /** The data after the code byte (may be empty). */
  readonly payload: Uint8Array;
}

/**
 * Address family of the SMTP client in SMFIC_CONNECT: `inet` ('4'), `inet6` ('6'),
 * `unix` ('L') or `unknown` ('U', no port and no address).
 */
export type ConnectFamily = "inet" | "inet6" | "unix" | "unknown";

/**
 * Commands sent by the MTA to the filter (`SMFIC_*`), one variant per command byte.
 *
 * @example
 * ```ts
 * import { encodeCommand, type Command } from "@milterkit/milterkit/wire";
 * const helo: Command = { type: "helo", name: "client.example.net" };
 * const bytes = encodeCommand(helo);
 * ```
 */
export type Command =
  /** `O` option negotiation from the MTA. `extra` keeps bytes after the 12 fixed ones. */
  | {
    readonly type: "optneg";
    readonly version: number;
    readonly actions: number;
    readonly protocol: number;
    readonly extra?: Uint8Array;
  }
  /** `D` macros for the command whose byte is `stage` (e.g. "C", "M", Postfix also "L", "B"). */
  | {
    readonly type: "macro";
    readonly stage: string;
    readonly macros: ReadonlyArray<readonly [name: string, value: string]>;
  }
  /**
   * `C` connection info. `address` is normalised (Sendmail's `IPv6:` prefix removed);
   * `rawAddress` holds the wire text when it differs, so re-encoding is byte-exact.
   */
  | {
    readonly type: "connect";
    readonly hostname: string;
    readonly family: ConnectFamily;
    readonly port?: number;
    readonly address?: string;
    readonly rawAddress?: string;
  }
  /** `H` HELO/EHLO argument. */
  | { readonly type: "helo"; readonly name: string }
  /** `M` sender as written (normally `<a@b>`) and ESMTP arguments, one per string. */
  | { readonly type: "mail"; readonly sender: string; readonly args: readonly string[] }
  /** `R` recipient as written and ESMTP arguments. */
  | { readonly type: "rcpt"; readonly recipient: string; readonly args: readonly string[] }
  /** `T` DATA. */
  | { readonly type: "data" }
  /** `L` header; folded values keep their LF + whitespace. */
  | { readonly type: "header"; readonly name: string; readonly value: string }
  /** `N` end of headers. */
  | { readonly type: "eoh" }
  /** `B` body chunk. */
  | { readonly type: "body"; readonly chunk: Uint8Array }
  /** `E` end of message; `chunk` holds data carried in the frame (libmilter accepts it; MTAs never send it). */
  | { readonly type: "eom"; readonly chunk?: Uint8Array }
  /** `A` abort the current message. */
  | { readonly type: "abort" }
  /** `Q` quit. */
  | { readonly type: "quit" }
  /** `K` quit, a new connection follows on the same socket. */
  | { readonly type: "quit_nc" }
  /** `U` unrecognised SMTP command line. */
  | { readonly type: "unknown"; readonly line: string }
  /** A command byte this toolkit does not know, kept as it came. */
  | { readonly type: "raw"; readonly code: number; readonly payload: Uint8Array };

/** The `type` tag of a {@link Command}. */
export type CommandType = Command["type"];

/**
 * One macro list of an OPTNEG reply: the stage number (`SMFIM_*`) and the space-separated names.
 */
export interface SymbolList {
  /** `SMFIM_*` stage number (0 connect … 6 eoh). */
  readonly stage: number;
  /** Macro names separated by spaces, e.g. `"{auth_authen} {mail_addr}"`. */
  readonly macros: string;
}

/**
 * The modification responses, legal only between the MTA's end of message and the final answer.
 *
 * @example
 * ```ts
 * import type { Modification } from "@milterkit/milterkit/wire";
 * const tag: Modification = { type: "addheader", name: "X-Spam", value: "yes" };
 * ```
 */
export type Modification =
  /** `h` append a header. */
  | { readonly type: "addheader"; readonly name: string; readonly value: string }
  /** `i` insert header `name` at position `index` (0 = top). */
  | {
    readonly type: "insheader";
    readonly name: string;
    readonly index: number;
    readonly value: string;
  }
  /** `m` change the `index`-th (1-based) occurrence of `name`; empty value deletes it. */
  | {
    readonly type: "chgheader";
    readonly name: string;
    readonly index: number;
    readonly value: string;
  }
  /** `b` a chunk of the replacement body (the first one truncates the body). */
  | { readonly type: "replbody"; readonly chunk: Uint8Array }
  /** `+` add a recipient. */
  | { readonly type: "addrcpt"; readonly recipient: string }
  /** `2` add a recipient with one space-separated ESMTP argument string. */
  | { readonly type: "addrcpt_par"; readonly recipient: string; readonly args?: string }
  /** `-` delete a recipient (as it was received). */
  | { readonly type: "delrcpt"; readonly recipient: string }
  /** `e` change the envelope sender, with one optional ESMTP argument string. */
  | { readonly type: "chgfrom"; readonly sender: string; readonly args?: string }
  /** `q` quarantine (hold) the message with a reason; not a final answer. */
  | { readonly type: "quarantine"; readonly reason: string };

/**
 * Responses sent by the filter to the MTA (`SMFIR_*`).
 *
 * @example
 * ```ts
 * import { encodeReply, type Reply } from "@milterkit/milterkit/wire";
 * const reject: Reply = { type: "replycode", text: "550 5.7.1 Go away" };
 * const bytes = encodeReply(reject);
 * ```
 */
export type Reply =
  /** `O` the filter's negotiation answer, with optional macro lists (SETSYMLIST). */
  | {
    readonly type: "optneg";
    readonly version: number;
    readonly actions: number;
    readonly protocol: number;
    readonly symlists?: readonly SymbolList[];
  }
  /** `c` continue. */
  | { readonly type: "continue" }
  /** `a` accept. */
  | { readonly type: "accept" }
  /** `r` reject. */
  | { readonly type: "reject" }
  /** `t` tempfail. */
  | { readonly type: "tempfail" }
  /** `d` discard. */
  | { readonly type: "discard" }
  /** `s` skip. */
  | { readonly type: "skip" }
  /** `p` progress (keep-alive). */
  | { readonly type: "progress" }
  /** `4` shutdown: 421 and disconnect (Postfix only). */
  | { readonly type: "shutdown" }
  /** `f` connection failure (reserved; no MTA implements it). */
  | { readonly type: "connfail" }
  /** `y` a complete SMTP reply such as `"550 5.7.1 text"`, multi-line joined with CRLF. */
  | { readonly type: "replycode"; readonly text: string }
  | Modification
  /** A response byte this toolkit does not know (or `l`), kept as it came. */
  | { readonly type: "raw"; readonly code: number; readonly payload: Uint8Array };

/** The `type` tag of a {@link Reply}. */
export type ReplyType = Reply["type"];

/**
 * The outcome of option negotiation, as both sides hold it afterwards.
 *
 * @example
 * ```ts
 * import type { Negotiated } from "@milterkit/milterkit/wire";
 * const n: Negotiated = { version: 6, actions: 0x1, protocol: 0, symlists: [] };
 * ```
 */
export interface Negotiated {
  /** Protocol version agreed (min of both). */
  readonly version: number;
  /** `SMFIF_*` actions the filter may use. */
  readonly actions: number;
  /** `SMFIP_*` bits in force (NO*, NR_*, features). */
  readonly protocol: number;
  /** Macro lists the filter asked for. */
  readonly symlists: readonly SymbolList[];
}

/** The MTA whose behaviour the client imitates where MTAs differ. */
export type MtaStyle = "postfix" | "sendmail";

/** Which way bytes travel in a milter conversation. */
export type Direction = "to-filter" | "to-mta";

/**
 * The stages of a milter conversation, one vocabulary for both sides: the filter's handlers,
 * the MTA client's results, recordings and CLI output. Named after libmilter's callbacks
 * (`xxfi_envfrom`, `xxfi_envrcpt`); the commands themselves keep their `SMFIC_*` names
 * (`{ type: "mail" }`, `{ type: "rcpt" }`).
 */
export type Stage =
  | "connect"
  | "helo"
  | "envfrom"
  | "envrcpt"
  | "data"
  | "header"
  | "eoh"
  | "body"
  | "eom"
  | "unknown";

/** Letters of the `D` frames: the stages C H M R T N E, plus Postfix's L (header), B (body), U. */
export type MacroStageLetter = "C" | "H" | "M" | "R" | "T" | "L" | "N" | "B" | "E" | "U";
