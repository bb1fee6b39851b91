/**
 * A generated "day" of milter traffic as a proxy recording: sessions spread over hours, with
 * known verdicts, reasons and reply latencies, for the tests of `dump --stats` and `--html`.
 */
import { RecordingWriter } from "../../lib/inspect/recording.ts";
import { encodeCommand } from "../../lib/wire/command_codec.ts";
import { encodeReply } from "../../lib/wire/reply_codec.ts";
import type { Command, Reply } from "../../lib/wire/types.ts";

/** 2026-11-20T06:00:00Z */
export const TRAFFIC_T0 = Date.UTC(2026, 10, 20, 6);

/** Reply latency per stage in ms (EOM varies by session: 20 + 10 × (i mod 7)). */
export const LATENCY: Readonly<Record<string, number>> = {
  optneg: 0.2,
  connect: 1,
  helo: 0.5,
  envfrom: 2,
  envrcpt: 1.5,
  header: 0.1,
  eoh: 0.2,
  body: 0.3,
};

/** What session `i` does, by `i % 10`. */
export const PLAN = [
  "accept",
  "accept",
  "accept",
  "accept",
  "accept",
  "accept",
  "accept-one-rcpt-refused",
  "reject-eom",
  "tempfail-mail",
  "discard",
] as const;

/**
 * The lines of a recording of `n` sessions spread evenly over `hours` hours. With `jitter`,
 * latencies vary (deterministically) by a factor of up to about 1 + 4 × jitter, like real ones.
 */
export function trafficRecording(n: number, hours: number, jitter = 0): string[] {
  const lines: string[] = [];
  let seed = 12345;
  const noise = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const u = seed / 2 ** 32;
    return 1 + jitter * (u < 0.9 ? u : 4 * u); // a long tail for one in ten
  };
  let now = TRAFFIC_T0;
  const w = new RecordingWriter((l) => lines.push(l), { now: () => now });
  for (let i = 0; i < n; i++) {
    now = TRAFFIC_T0 + Math.floor((i * hours * 3_600_000) / n);
    const id = `c${i}`;
    const plan = PLAN[i % 10]!;
    w.start(id, { mta: `192.0.2.1:${40000 + i}`, filter: "127.0.0.1:8890" });
    const c = (cmd: Command) => w.data(id, "to-filter", encodeCommand(cmd), now += 1);
    const r = (rep: Reply, stage: string) => {
      now += (stage === "eom" ? 20 + 10 * (i % 7) : LATENCY[stage]!) * noise();
      w.data(id, "to-mta", encodeReply(rep), now);
    };
    const ok = (stage: string) => r({ type: "continue" }, stage);
    c({ type: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff });
    r({ type: "optneg", version: 6, actions: 0x1, protocol: 0 }, "optneg");
    c({
      type: "connect",
      hostname: `h${i}.example`,
      family: "inet",
      port: 40000 + i,
      address: "192.0.2.1",
    });
    ok("connect");
    c({ type: "helo", name: `h${i}.example` });
    ok("helo");
    c({ type: "mail", sender: `<s${i}@example.test>`, args: [] });
    if (plan === "tempfail-mail") {
      r({ type: "replycode", text: "451 4.7.1 Greylisted, try again later" }, "envfrom");
      c({ type: "abort" });
      c({ type: "quit" });
      w.end(id);
      continue;
    }
    ok("envfrom");
    c({ type: "rcpt", recipient: "<a@example.test>", args: [] });
    ok("envrcpt");
    if (plan === "accept-one-rcpt-refused") {
      c({ type: "rcpt", recipient: "<nobody@example.test>", args: [] });
      r({ type: "replycode", text: "550 5.1.1 No such user" }, "envrcpt");
    }
    c({ type: "header", name: "Subject", value: `message ${i}` });
    ok("header");
    c({ type: "eoh" });
    ok("eoh");
    c({ type: "body", chunk: new TextEncoder().encode(`body of message ${i}\r\n`) });
    ok("body");
    c({ type: "eom" });
    if (plan === "reject-eom") r({ type: "replycode", text: "550 5.7.1 Spam detected" }, "eom");
    else if (plan === "discard") r({ type: "discard" }, "eom");
    else {
      w.data(
        id,
        "to-mta",
        encodeReply({ type: "addheader", name: "X-Scanned", value: "yes" }),
        now,
      );
      r({ type: "accept" }, "eom");
    }
    c({ type: "quit" });
    w.end(id);
  }
  return lines;
}
