/** Small proxy recordings built in tests: one session, a MAIL and the filter's replies to it. */
import { RecordingWriter } from "../../lib/inspect/recording.ts";
import { encodeCommand } from "../../lib/wire/command_codec.ts";
import { encodeReply } from "../../lib/wire/reply_codec.ts";
import type { Reply } from "../../lib/wire/types.ts";

/** The lines of a recording of session `id`: OPTNEG both ways, MAIL <x@y>, then `replies`. */
export function mailRecording(
  id: string,
  peers: { mta?: string; filter?: string },
  replies: Reply[],
): string[] {
  const lines: string[] = [];
  const w = new RecordingWriter((l) => lines.push(l));
  w.start(id, peers);
  w.data(
    id,
    "to-filter",
    encodeCommand({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff }),
  );
  w.data(id, "to-mta", encodeReply({ type: "optneg", version: 6, actions: 1, protocol: 0 }));
  w.data(id, "to-filter", encodeCommand({ type: "mail", sender: "<x@y>", args: [] }));
  for (const r of replies) w.data(id, "to-mta", encodeReply(r));
  w.end(id);
  return lines;
}
