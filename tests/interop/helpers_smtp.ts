/**
 * A small SMTP client over `node:net` for the interop tests: EHLO, MAIL, RCPT..., DATA with
 * dot-stuffing, RSET between messages, QUIT. It reports the reply of the stage where a
 * transaction stopped, and keeps a transcript for assertion messages.
 */
import { connect, type Socket } from "node:net";

/** One SMTP reply: the code, and its text without the code (lines joined by "\n"). */
export interface SmtpReply {
  code: number;
  text: string;
}

/** The stage at which a transaction ended. */
export type SmtpStage = "mail" | "rcpt" | "data" | "eom";

/** The outcome of one message. */
export interface SmtpResult extends SmtpReply {
  /** Where the transaction ended: "eom" is the reply after the final dot. */
  stage: SmtpStage;
  /** True when the reply after the final dot was 2xx. */
  accepted: boolean;
  /** Reply to each RCPT, in order. */
  rcpts: SmtpReply[];
  /** The whole dialogue of this connection so far ("C: ..." / "S: ..." lines). */
  transcript: string;
}

/** One message to send. */
export interface SmtpMessage {
  from: string;
  to: string[];
  /** A string is sent as UTF-8 with bare LF turned into CRLF; bytes are sent as they are. */
  data: string | Uint8Array;
  /** Extra ESMTP parameters of MAIL FROM, e.g. "BODY=8BITMIME". */
  mailParams?: string;
}

const encoder = new TextEncoder();

/** Encodes a message for DATA: line endings (strings only), dot-stuffing and the final dot. */
export function encodeData(data: string | Uint8Array): Uint8Array {
  const raw = typeof data === "string" ? encoder.encode(data.replace(/\r?\n/g, "\r\n")) : data;
  const out: number[] = [];
  let lineStart = true;
  for (const b of raw) {
    if (lineStart && b === 0x2e) out.push(0x2e);
    out.push(b);
    lineStart = b === 0x0a;
  }
  if (!lineStart) out.push(0x0d, 0x0a);
  out.push(0x2e, 0x0d, 0x0a);
  return Uint8Array.from(out);
}

/** An open SMTP connection; use `send()` for each message and `close()` at the end. */
export class SmtpSession {
  readonly #socket: Socket;
  readonly #timeoutMs: number;
  #buffer = "";
  #lines: string[] = [];
  #waiter: (() => void) | undefined;
  #closed = false;
  #error: Error | undefined;
  readonly #transcript: string[] = [];
  /** The server's greeting. */
  greeting: SmtpReply = { code: 0, text: "" };
  /** The reply to EHLO. */
  ehlo: SmtpReply = { code: 0, text: "" };

  private constructor(socket: Socket, timeoutMs: number) {
    this.#socket = socket;
    this.#timeoutMs = timeoutMs;
    socket.on("data", (d: Uint8Array) => {
      // latin1 keeps every byte; replies are ASCII in practice
      this.#buffer += Array.from(d, (b) => String.fromCharCode(b)).join("");
      let i;
      while ((i = this.#buffer.indexOf("\n")) >= 0) {
        this.#lines.push(this.#buffer.slice(0, i).replace(/\r$/, ""));
        this.#buffer = this.#buffer.slice(i + 1);
      }
      this.#wake();
    });
    socket.on("close", () => {
      this.#closed = true;
      this.#wake();
    });
    socket.on("error", (err) => {
      this.#error = err;
      this.#wake();
    });
  }

  /** Connects, reads the greeting and sends EHLO. */
  static async open(
    port: number,
    opts: { host?: string; helo?: string; timeoutMs?: number } = {},
  ): Promise<SmtpSession> {
    const host = opts.host ?? "127.0.0.1";
    const socket = connect({ port, host });
    const session = new SmtpSession(socket, opts.timeoutMs ?? 30_000);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("error", reject);
    });
    session.greeting = await session.#read();
    if (session.greeting.code !== 220) {
      socket.destroy();
      throw new Error(`SMTP greeting was not 220\n${session.transcript}`);
    }
    session.ehlo = await session.command(`EHLO ${opts.helo ?? "client.example.test"}`);
    return session;
  }

  /** The dialogue so far. */
  get transcript(): string {
    return this.#transcript.join("\n");
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async #nextLine(deadline: number): Promise<string> {
    while (this.#lines.length === 0) {
      if (this.#error) throw new Error(`SMTP socket error: ${this.#error.message}`);
      if (this.#closed) throw new Error(`SMTP server closed the connection\n${this.transcript}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Timed out waiting for an SMTP reply\n${this.transcript}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.#lines.shift() as string;
  }

  async #read(): Promise<SmtpReply> {
    const deadline = Date.now() + this.#timeoutMs;
    const texts: string[] = [];
    for (;;) {
      const line = await this.#nextLine(deadline);
      this.#transcript.push("S: " + line);
      const m = /^(\d{3})([ -]?)(.*)$/.exec(line);
      if (!m) throw new Error(`Malformed SMTP reply line ${JSON.stringify(line)}`);
      texts.push(m[3] ?? "");
      if (m[2] !== "-") return { code: Number(m[1]), text: texts.join("\n") };
    }
  }

  /** Sends one command line and returns the reply. */
  async command(line: string): Promise<SmtpReply> {
    this.#transcript.push("C: " + line);
    this.#socket.write(line + "\r\n");
    return await this.#read();
  }

  /** Runs one transaction; on a refusal before the end it sends RSET so the session stays usable. */
  async send(msg: SmtpMessage): Promise<SmtpResult> {
    const rcpts: SmtpReply[] = [];
    const done = async (stage: SmtpStage, reply: SmtpReply): Promise<SmtpResult> => {
      if (stage !== "eom") {
        try {
          await this.command("RSET");
        } catch {
          // the server may have closed after a 421
        }
      }
      return {
        ...reply,
        stage,
        accepted: stage === "eom" && reply.code >= 200 && reply.code < 300,
        rcpts,
        transcript: this.transcript,
      };
    };
    const params = msg.mailParams ? " " + msg.mailParams : "";
    const mail = await this.command(`MAIL FROM:<${msg.from}>${params}`);
    if (mail.code !== 250) return await done("mail", mail);
    let last: SmtpReply = mail;
    for (const to of msg.to) {
      last = await this.command(`RCPT TO:<${to}>`);
      rcpts.push(last);
    }
    if (!rcpts.some((r) => r.code === 250 || r.code === 251)) return await done("rcpt", last);
    const data = await this.command("DATA");
    if (data.code !== 354) return await done("data", data);
    const bytes = encodeData(msg.data);
    this.#transcript.push(`C: <${bytes.length} bytes of message data, dot-stuffed>`);
    this.#socket.write(bytes);
    return await done("eom", await this.#read());
  }

  /** Sends QUIT (when the connection is still open) and closes the socket. */
  async close(): Promise<void> {
    try {
      if (!this.#closed && !this.#error) await this.command("QUIT");
    } catch {
      // the server may close first
    } finally {
      this.#socket.destroy();
    }
  }
}

/** Options of `sendMail`. */
export interface SendMailOptions extends SmtpMessage {
  port: number;
  helo?: string;
  timeoutMs?: number;
}

/** Sends one message on a new connection and returns the reply of the stage where it ended. */
export async function sendMail(opts: SendMailOptions): Promise<SmtpResult> {
  const session = await SmtpSession.open(opts.port, opts);
  try {
    return await session.send(opts);
  } finally {
    await session.close();
  }
}
