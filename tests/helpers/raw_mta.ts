/**
 * A bare-bones scripted MTA for unit tests of the filter engine: writes commands, reads
 * replies, with no protocol logic of its own (so it cannot hide engine bugs).
 */
import { FINAL_REPLIES } from "../../lib/wire/command_bits.ts";
import { encodeCommand } from "../../lib/wire/command_codec.ts";
import { FrameDecoder } from "../../lib/wire/frame.ts";
import { decodeReply } from "../../lib/wire/reply_codec.ts";
import type { Command, Duplex, Reply } from "../../lib/wire/types.ts";

export class RawMta {
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new FrameDecoder();
  readonly #queue: Reply[] = [];
  #eof = false;

  constructor(conn: Duplex) {
    this.#writer = conn.writable.getWriter();
    this.#reader = conn.readable.getReader();
  }

  /** Sends commands (each encoded on its own). */
  async send(...cmds: Command[]): Promise<void> {
    for (const c of cmds) await this.#writer.write(encodeCommand(c));
  }

  /** Sends raw bytes. */
  async sendBytes(bytes: Uint8Array): Promise<void> {
    await this.#writer.write(bytes);
  }

  /** Reads the next reply, or undefined at EOF. */
  async next(): Promise<Reply | undefined> {
    while (this.#queue.length === 0) {
      if (this.#eof) return undefined;
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await this.#reader.read();
      } catch {
        this.#eof = true;
        return undefined;
      }
      if (r.done) {
        this.#eof = true;
        return undefined;
      }
      for (const f of this.#decoder.push(r.value)) this.#queue.push(decodeReply(f));
    }
    return this.#queue.shift();
  }

  /** Sends a command and returns the next reply. */
  async ask(cmd: Command): Promise<Reply | undefined> {
    await this.send(cmd);
    return await this.next();
  }

  /** Reads replies until a final one (not a modification or progress); returns all. */
  async untilFinal(): Promise<Reply[]> {
    const out: Reply[] = [];
    while (true) {
      const r = await this.next();
      if (r === undefined) return out;
      out.push(r);
      if (FINAL_REPLIES.has(r.type)) return out;
    }
  }

  /** Standard v6 offer from Postfix/Sendmail. */
  async negotiate(version = 6, actions = 0x1ff, protocol = 0x1fffff): Promise<Reply | undefined> {
    return await this.ask({ type: "optneg", version, actions, protocol });
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
    await this.#writer.abort().catch(() => {});
  }
}
