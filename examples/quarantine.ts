/**
 * Holds messages with risky attachments (executables, scripts, macro documents) in the MTA's
 * quarantine (Postfix: the hold queue) for an admin to review, instead of delivering them.
 *
 *   milterkit serve examples/quarantine.ts
 *   postqueue -j | grep hold            # on Postfix, see what was held
 */
import { decodeText, defineFilter } from "@milterkit/milterkit";

const RISKY = /\bfilename\*?=\s*"?[^"\r\n;]*\.(exe|scr|js|vbs|bat|cmd|jar|docm|xlsm|iso)"?/i;

export default defineFilter({
  name: "quarantine-risky-attachments",
  actions: ["quarantine", "addHeader"],
  bufferBody: true,
  maxBodyBytes: 20 * 1024 * 1024,
  onBodyLimit: "truncate",
  eom(ctx) {
    const m = RISKY.exec(decodeText(ctx.body ?? new Uint8Array(0)));
    if (!m) return;
    ctx.quarantine(`risky attachment type .${m[1]!.toLowerCase()}`);
    ctx.addHeader("X-Quarantined", `risky attachment type .${m[1]!.toLowerCase()}`);
  },
});
