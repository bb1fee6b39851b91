/**
 * Harness for interop tests against real peers nobody on the team wrote: a private Postfix
 * instance, the libmilter C test filter, OpenDKIM; plus an SMTP client and a Maildir reader.
 * The same file runs under `deno test -A` and `bun test` (only `node:*` modules).
 *
 * Typical use:
 *
 *   before(async () => {
 *     ensurePeers();
 *     filter = await startLibmilterFilter();
 *     mta = await startPostfix({ milters: filter.address });
 *   });
 *   after(async () => { await mta?.stop(); await filter?.stop(); });
 *   it("...", async () => {
 *     const r = await sendMail({ port: mta.port, from: "a@example.test", to: ["b@example.test"],
 *       data: "Subject: hi\n\nbody\n" });
 *     const [msg] = await readMaildir(mta.maildir);
 *   });
 *
 * Every process is killed by `stop()`, and at the latest when the test process exits. Ports are
 * picked dynamically, so runs under Deno and Bun never clash.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import {
  ensurePeers,
  freePort,
  LAB_DIR,
  onExit,
  type PeerProcess,
  PEERS_DIR,
  run,
  startPeer,
} from "./helpers_process.ts";

export {
  ensurePeers,
  freePort,
  isListening,
  LAB_DIR,
  type PeerProcess,
  PEERS_DIR,
  sleep,
  waitForPort,
} from "./helpers_process.ts";
export {
  encodeData,
  sendMail,
  type SendMailOptions,
  type SmtpMessage,
  type SmtpReply,
  type SmtpResult,
  SmtpSession,
  type SmtpStage,
} from "./helpers_smtp.ts";
export {
  headerValues,
  type MaildirMessage,
  type ParsedMessage,
  parseMessage,
  readMaildir,
  type ReadMaildirOptions,
} from "./helpers_maildir.ts";

/** Options of `startPostfix`. */
export interface PostfixOptions {
  /** SMTP port on 127.0.0.1 (default: a free one). */
  smtpPort?: number;
  /** `smtpd_milters`: "inet:127.0.0.1:PORT", a comma separated list, or "none". */
  milters: string;
  /** Extra main.cf lines (appended last, so they override), e.g. "milter_protocol = 2". */
  extraMainCf?: string | string[];
  /** `milter_default_action` (default "tempfail"). */
  defaultAction?: "accept" | "reject" | "tempfail" | "quarantine";
}

/** A running private Postfix instance. */
export interface PostfixInstance {
  /** SMTP port on 127.0.0.1. */
  port: number;
  /** The instance directory (etc/, queue/, data/, maildir/, maillog). */
  dir: string;
  /** The Maildir every @example.test recipient is delivered to (files appear in `new/`). */
  maildir: string;
  /** Postfix's log so far. */
  log(): string;
  /** Stops the instance and deletes its directory (kept when MILTERKIT_KEEP_LAB=1). */
  stop(): Promise<void>;
}

/**
 * Starts a private Postfix instance (`postfix -c DIR`, loopback only, no DNS): every address
 * @example.test is delivered into one Maildir, any other goes to the error transport.
 */
export async function startPostfix(opts: PostfixOptions): Promise<PostfixInstance> {
  ensurePeers();
  const port = opts.smtpPort ?? await freePort();
  mkdirSync(`${LAB_DIR}/postfix`, { recursive: true, mode: 0o755 });
  const dir = mkdtempSync(`${LAB_DIR}/postfix/p${process.pid}-${port}-`);
  writeFileSync(`${dir}/owner.pid`, `${process.pid}\n`);
  const extra = Array.isArray(opts.extraMainCf) ? opts.extraMainCf.join("\n") : opts.extraMainCf;
  const script = PEERS_DIR + "postfix.sh";
  const keep = process.env.MILTERKIT_KEEP_LAB === "1";
  const stopSync = () => {
    try {
      const pid = Number(readFileSync(`${dir}/queue/pid/master.pid`, "latin1").trim());
      if (pid > 0) process.kill(pid, "SIGTERM");
    } catch {
      // not running
    }
    if (!keep) rmSync(dir, { recursive: true, force: true });
  };
  const removeHook = onExit(stopSync);
  try {
    await run("bash", [script, "up", dir, String(port), opts.milters || "none"], {
      MILTER_DEFAULT_ACTION: opts.defaultAction ?? "tempfail",
      POSTFIX_EXTRA: extra ?? "",
      MILTERKIT_LAB_DIR: LAB_DIR,
    });
  } catch (err) {
    removeHook();
    await run("bash", [script, "down", dir, ...(keep ? [] : ["--purge"])]).catch(() => "");
    throw err;
  }
  let stopped = false;
  return {
    port,
    dir,
    maildir: `${dir}/maildir`,
    log: () => {
      try {
        return readFileSync(`${dir}/maillog`, "utf8");
      } catch {
        return "";
      }
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      removeHook();
      await run("bash", [script, "down", dir, ...(keep ? [] : ["--purge"])]);
    },
  };
}

/**
 * Builds (when the source changed) and starts the libmilter C test filter
 * (`scripts/peers/libmilter-filter/testfilter.c`) on 127.0.0.1:port. Mode "full" adds
 * `X-Libmilter-Test: yes` and reacts to Subject keywords (REJECTME, TEMPFAILME, DISCARDME,
 * QUARANTINEME, MODIFYME) and to MAIL FROM <early-reject@...>; "noop" only continues.
 */
export async function startLibmilterFilter(
  port?: number,
  mode: "full" | "noop" = "full",
): Promise<PeerProcess> {
  ensurePeers();
  const p = port ?? await freePort();
  const script = PEERS_DIR + "libmilter-filter.sh";
  const bin = (await run("bash", [script, "build"], { MILTERKIT_LAB_DIR: LAB_DIR })).trim();
  return await startPeer("libmilter testfilter", bin, [`inet:${p}@127.0.0.1`, mode], p);
}

/**
 * Starts OpenDKIM on 127.0.0.1:port. "sign" (default) signs mail whose From: is @example.test
 * (selector `lab`); "verify" adds Authentication-Results using the lab key without DNS.
 */
export async function startOpenDkim(
  port?: number,
  mode: "sign" | "verify" = "sign",
): Promise<PeerProcess> {
  ensurePeers();
  const p = port ?? await freePort();
  const script = PEERS_DIR + "opendkim.sh";
  const conf =
    (await run("bash", [script, "conf", String(p), mode], { MILTERKIT_LAB_DIR: LAB_DIR }))
      .trim();
  const removeConf = () => rmSync(conf, { force: true });
  return await startPeer("opendkim", "/usr/sbin/opendkim", ["-f", "-x", conf], p, removeConf);
}
