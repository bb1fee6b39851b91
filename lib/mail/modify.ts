/**
 * Applies a filter's end-of-message modifications to a message and its envelope the way the
 * MTA does (milter-protocol.md §7, Postfix's cleanup_milter.c by default), so `milterkit send`
 * can show what would be delivered.
 *
 * @module
 */

import { concatBytes } from "../wire/concat.ts";
import { MilterProtocolError } from "../wire/errors.ts";
import { parseAddress, splitEsmtpArgs } from "./esmtp.ts";
import { type MessageHeader, type ParsedMessage, parseHeaderField, toCrlf } from "./message.ts";
import type { Modification, MtaStyle } from "../wire/types.ts";

/**
 * One envelope recipient.
 *
 * @example
 * ```ts
 * import type { EnvelopeRecipient } from "@milterkit/milterkit/mta";
 * const r: EnvelopeRecipient = { recipient: "<b@example.com>", args: ["NOTIFY=NEVER"] };
 * ```
 */
export interface EnvelopeRecipient {
  /** The address as written in RCPT TO or SMFIR_ADDRCPT (`<b@example.com>`). */
  readonly recipient: string;
  /** ESMTP arguments, one per string. */
  readonly args: readonly string[];
}

/**
 * The SMTP envelope of one message.
 *
 * @example
 * ```ts
 * import type { Envelope } from "@milterkit/milterkit/mta";
 * const e: Envelope = { sender: "<a@example.org>", senderArgs: [], recipients: [] };
 * ```
 */
export interface Envelope {
  /** The sender as written in MAIL FROM (`<a@example.org>`, `<>`). */
  readonly sender: string;
  /** ESMTP arguments of MAIL FROM. */
  readonly senderArgs: readonly string[];
  /** Recipients in order. */
  readonly recipients: readonly EnvelopeRecipient[];
}

/** Options of {@link applyModifications}. */
export interface ApplyOptions {
  /**
   * Whose rules: `postfix` (default) skips deleted headers when counting CHGHEADER occurrences
   * and refuses REPLBODY mixed with other requests; `sendmail` keeps counting deleted ones.
   */
  readonly mta?: MtaStyle;
  /**
   * The MTA's own first `Received:` header (the filter never saw it): it sits on top of the
   * header list, counts for INSHEADER indexes (0 = above it) but not for CHGHEADER, and is
   * part of the result. Text form `"Received: from …\n\tby …"` or a field.
   */
  readonly receivedHeader?: string | MessageHeader;
  /** SMFIP_HDR_LEADSPC was negotiated: values are used verbatim, no space is inserted. */
  readonly headerLeadingSpace?: boolean;
}

/**
 * What the MTA would deliver.
 *
 * @example
 * ```ts
 * import type { AppliedMessage } from "@milterkit/milterkit/mta";
 * const a: AppliedMessage = {
 *   message: { headers: [], body: new Uint8Array() },
 *   envelope: { sender: "<>", senderArgs: [], recipients: [] },
 *   quarantine: undefined,
 *   bodyReplaced: false,
 * };
 * ```
 */
export interface AppliedMessage {
  /** Headers (with the MTA's Received header when given) and body after the changes. */
  readonly message: ParsedMessage;
  /** The envelope after CHGFROM / ADDRCPT / ADDRCPT_PAR / DELRCPT. */
  readonly envelope: Envelope;
  /** The reason of the last QUARANTINE request (the message is held), if any. */
  readonly quarantine: string | undefined;
  /** Whether REPLBODY replaced the body. */
  readonly bodyReplaced: boolean;
}

interface Entry {
  name: string;
  value: string;
  deleted: boolean;
  readonly own: boolean;
}

function findOccurrence(entries: Entry[], name: string, index: number, mta: MtaStyle): number {
  const lower = name.toLowerCase();
  let seen = 0;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (e.own || e.name.toLowerCase() !== lower) continue;
    if (e.deleted && mta === "postfix") continue;
    if (++seen === index) return i;
  }
  return -1;
}

/**
 * Applies modifications in order, as the MTA does at end of message:
 * - ADDHEADER appends; INSHEADER inserts before the `index`-th header of the full list
 *   including the MTA's own Received header (0 = very top, ≥ count = append);
 * - CHGHEADER changes the `index`-th (1-based, index 0 = 1) occurrence of the name
 *   (case-insensitive, the MTA's Received header not counted); an empty value deletes it; a
 *   missing occurrence is appended (non-empty value) or ignored (empty);
 * - values are written `Name: value` (one space inserted) unless `headerLeadingSpace`;
 * - REPLBODY: the first chunk truncates the body, later ones append; line ends become CRLF;
 * - ADDRCPT / ADDRCPT_PAR append a recipient, DELRCPT removes every recipient whose address
 *   matches with or without angle brackets, CHGFROM replaces the sender;
 * - QUARANTINE records the reason.
 *
 * @param message The message as received (what the filter saw).
 * @param envelope The envelope as received.
 * @param modifications The requests, in the order the filter sent them.
 * @param options MTA rules, own Received header, HDR_LEADSPC.
 * @returns The message, envelope and quarantine state the MTA would deliver.
 * @throws {MilterProtocolError} for requests the MTA refuses: an empty header name (reason
 * `malformed`), REPLBODY chunks interleaved with other requests under Postfix (`unexpected`).
 *
 * @example
 * ```ts
 * import { applyModifications, parseMessage } from "@milterkit/milterkit/mta";
 * import assert from "node:assert/strict";
 * const msg = parseMessage(new TextEncoder().encode("Subject: hi\r\n\r\nbody\r\n"));
 * const env = { sender: "<a@b>", senderArgs: [], recipients: [{ recipient: "<c@d>", args: [] }] };
 * const out = applyModifications(msg, env, [
 *   { type: "chgheader", index: 1, name: "Subject", value: "[SPAM] hi" },
 *   { type: "addrcpt", recipient: "<e@f>" },
 * ]);
 * assert.deepEqual(out.message.headers, [{ name: "Subject", value: " [SPAM] hi" }]);
 * assert.equal(out.envelope.recipients.length, 2);
 * ```
 */
export function applyModifications(
  message: ParsedMessage,
  envelope: Envelope,
  modifications: readonly Modification[],
  options: ApplyOptions = {},
): AppliedMessage {
  const mta = options.mta ?? "postfix";
  const space = options.headerLeadingSpace ? "" : " ";
  const entries: Entry[] = [];
  if (options.receivedHeader !== undefined) {
    const r = typeof options.receivedHeader === "string"
      ? parseHeaderField(options.receivedHeader)
      : options.receivedHeader;
    entries.push({ name: r.name, value: r.value, deleted: false, own: true });
  }
  for (const h of message.headers) {
    entries.push({ name: h.name, value: h.value, deleted: false, own: false });
  }
  let sender = envelope.sender;
  let senderArgs = envelope.senderArgs;
  let recipients = [...envelope.recipients];
  let quarantine: string | undefined;
  let body: Uint8Array[] | undefined;
  let replbody: "none" | "open" | "closed" = "none";

  for (const mod of modifications) {
    if (replbody === "open" && mod.type !== "replbody") replbody = "closed";
    switch (mod.type) {
      case "addheader":
      case "insheader":
      case "chgheader":
        if (mod.name === "") {
          throw new MilterProtocolError(`Cannot apply ${mod.type}: the header name is empty`, {
            reason: "malformed",
          });
        }
    }
    switch (mod.type) {
      case "addheader":
        entries.push({ name: mod.name, value: space + mod.value, deleted: false, own: false });
        break;
      case "insheader": {
        const entry = { name: mod.name, value: space + mod.value, deleted: false, own: false };
        let live = 0;
        let at = entries.length;
        for (let i = 0; i < entries.length; i++) {
          if (entries[i]!.deleted) continue;
          if (live === mod.index) {
            at = i;
            break;
          }
          live++;
        }
        entries.splice(at, 0, entry);
        break;
      }
      case "chgheader": {
        const i = findOccurrence(entries, mod.name, Math.max(1, mod.index), mta);
        if (mod.value === "") {
          if (i >= 0) entries[i]!.deleted = true;
        } else if (i >= 0) {
          const e = entries[i]!;
          e.name = mod.name;
          e.value = space + mod.value;
          e.deleted = false;
        } else {
          entries.push({ name: mod.name, value: space + mod.value, deleted: false, own: false });
        }
        break;
      }
      case "replbody":
        if (replbody === "closed" && mta === "postfix") {
          throw new MilterProtocolError(
            "Cannot apply replbody: body replacement chunks are interleaved with other requests",
            { reason: "unexpected" },
          );
        }
        body ??= [];
        body.push(mod.chunk);
        replbody = "open";
        break;
      case "addrcpt":
        recipients.push({ recipient: mod.recipient, args: [] });
        break;
      case "addrcpt_par":
        recipients.push({ recipient: mod.recipient, args: splitEsmtpArgs(mod.args) });
        break;
      case "delrcpt": {
        const target = parseAddress(mod.recipient).address;
        recipients = recipients.filter((r) => parseAddress(r.recipient).address !== target);
        break;
      }
      case "chgfrom":
        sender = mod.sender;
        senderArgs = splitEsmtpArgs(mod.args);
        break;
      case "quarantine":
        quarantine = mod.reason;
        break;
    }
  }
  return {
    message: {
      headers: entries.filter((e) => !e.deleted).map((e) => ({ name: e.name, value: e.value })),
      body: body === undefined ? message.body : toCrlf(concatBytes(body)),
    },
    envelope: { sender, senderArgs, recipients },
    quarantine,
    bodyReplaced: body !== undefined,
  };
}
