/**
 * Greylisting with its state in Redis, so every `milterkit serve` instance and every worker sees
 * the same list: the first attempt of a (client IP, sender, recipient) triplet is answered 451
 * for that recipient; a retry after `GREYLIST_DELAY_S` (default 300) but within
 * `GREYLIST_WINDOW_S` (default 4 h) passes and the triplet is then let through for
 * `GREYLIST_PASS_S` (default 36 days). Authenticated senders (`{auth_authen}`) skip it. The
 * decision is one atomic Lua script on the Redis server with the server's clock, so instances
 * never race or disagree about time. When Redis does not answer within 1 s the message passes
 * (fail open) and the error is logged.
 *
 *   MILTERKIT_REDIS_URL=redis://127.0.0.1:6379 milterkit serve examples/greylist_redis.ts
 *
 * Needs the `ioredis` package beside the script (`npm install ioredis`).
 */
import { defineFilter } from "@milterkit/milterkit";
import { Redis } from "ioredis";
import process from "node:process";

const env = process.env;
const delayMs = 1000 * Number(env.GREYLIST_DELAY_S ?? 300);
const windowMs = 1000 * Number(env.GREYLIST_WINDOW_S ?? 4 * 3600);
const passMs = 1000 * Number(env.GREYLIST_PASS_S ?? 36 * 86400);

const connect = () => {
  const client = new Redis(env.MILTERKIT_REDIS_URL ?? "redis://127.0.0.1:6379", {
    lazyConnect: true, // at the first message, not when `serve --check` loads the script
    commandTimeout: 1000,
    maxRetriesPerRequest: 1,
  });
  client.on("error", () => {}); // it reconnects by itself; each failed check is reported below
  return client;
};

/** The connection, handed over on SIGHUP reloads instead of opening one more each time. */
export const state = { redis: connect() };
export function restore(previous: typeof state): void {
  state.redis.disconnect();
  state.redis = previous.redis;
}

/**
 * KEYS[1] the triplet; ARGV delay, window, pass (ms). Returns 0 to pass, else the ms to wait
 * (-1 for a first attempt).
 */
const GREYLIST = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local first = redis.call('GET', KEYS[1])
if not first then
  redis.call('SET', KEYS[1], now, 'PX', ARGV[2])
  return -1
end
if first == 'pass' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 0
end
local waited = now - tonumber(first)
if waited < tonumber(ARGV[1]) then return tonumber(ARGV[1]) - waited end
redis.call('SET', KEYS[1], 'pass', 'PX', ARGV[3])
return 0
`;

export default defineFilter({
  name: "greylist-redis",
  async envrcpt(rcpt, ctx) {
    if (ctx.macro("{auth_authen}")) return "continue";
    const key = `greylist:${ctx.client?.address ?? "?"}:${
      (ctx.sender?.address ?? "").toLowerCase()
    }:${rcpt.address.toLowerCase()}`;
    let wait: number;
    try {
      wait = Number(await state.redis.eval(GREYLIST, 1, key, delayMs, windowMs, passMs));
    } catch (e) {
      process.stderr.write(`greylist: Redis unavailable, passing: ${(e as Error).message}\n`);
      return "continue";
    }
    if (wait === 0) return "continue";
    const seconds = Math.ceil((wait < 0 ? delayMs : wait) / 1000);
    return {
      code: 451,
      enhanced: "4.7.1",
      text: `Greylisted: please try again in ${seconds} s`,
    };
  },
});
