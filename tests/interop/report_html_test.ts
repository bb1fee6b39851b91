/**
 * The `dump --html` report in a real headless Chromium (Debian's package): it renders, the
 * charts carry the data of the statistics, the session viewer works, nothing is fetched from
 * anywhere and nothing is logged to the console. A screenshot is checked and, with
 * MILTERKIT_UPDATE_SCREENSHOTS=1, written to docs/dump-report.png for the README.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { inflateSync } from "node:zlib";
import { dumpCommand } from "../../lib/cli/dump.ts";
import { fakeIo } from "../helpers/fake_io.ts";
import { trafficRecording } from "../helpers/traffic.ts";
import { type Page, withPage } from "./helpers_chromium.ts";

const tmp = mkdtempSync(join(tmpdir(), "milterkit-report-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function dump(args: string[]) {
  const io = fakeIo();
  const code = await dumpCommand.run(args, io);
  assert.equal(code, 0, io.err());
  return io.out();
}

/** Width and height from a PNG's IHDR, and the number of distinct bytes of its pixels. */
function png(bytes: Uint8Array): { width: number; height: number; distinct: number } {
  assert.deepEqual([...bytes.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const idat: Uint8Array[] = [];
  for (let p = 8; p < bytes.length;) {
    const len = dv.getUint32(p);
    const type = new TextDecoder().decode(bytes.subarray(p + 4, p + 8));
    if (type === "IDAT") idat.push(bytes.subarray(p + 8, p + 8 + len));
    p += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  return { width: dv.getUint32(16), height: dv.getUint32(20), distinct: new Set(raw).size };
}

describe("dump --html in headless Chromium", () => {
  let url: string;
  // deno-lint-ignore no-explicit-any
  let stats: any;
  before(async () => {
    const rec = join(tmp, "day.jsonl");
    writeFileSync(rec, trafficRecording(600, 24, 0.8).join("\n") + "\n");
    const html = join(tmp, "report.html");
    await dump([rec, "--html", html]);
    stats = JSON.parse(await dump([rec, "--stats", "--json"])).stats;
    url = `file://${html}`;
  });

  const open = <T>(fn: (page: Page) => Promise<T>) =>
    withPage(url, { width: 1280, height: 1800, ready: 'document.body.dataset.ready === "1"' }, fn);

  it(
    "renders with charts that hold the statistics, a working viewer, no errors, no fetches; screenshot",
    { timeout: 60_000 },
    async () => {
      await open(async (page) => {
        const bars = await page.evaluate<{ kind: string; count: number }[]>(
          `[...document.querySelectorAll("#verdicts-chart rect.bar")].map((r) => ({ kind: r.dataset.kind, count: Number(r.dataset.count) }))`,
        );
        const byKind: Record<string, number> = {};
        for (const b of bars) byKind[b.kind] = (byKind[b.kind] ?? 0) + b.count;
        assert.deepEqual(byKind, stats.verdicts);
        const hist = await page.evaluate<Record<string, number>>(
          `Object.fromEntries([...document.querySelectorAll("figure.hist")].map((f) => [f.dataset.stage, [...f.querySelectorAll("rect.bar")].reduce((n, r) => n + Number(r.dataset.count), 0)]))`,
        );
        assert.deepEqual(
          hist,
          Object.fromEntries(
            Object.entries(stats.latency).map(([k, v]) => [k, (v as { count: number }).count]),
          ),
        );
        const chart = await page.evaluate<{ width: number; height: number }>(
          `(() => { const r = document.getElementById("verdicts-chart").getBoundingClientRect(); return { width: r.width, height: r.height }; })()`,
        );
        assert.ok(chart.width > 600 && chart.height > 100, JSON.stringify(chart));
        // pick a rejected session in the viewer
        const picked = await page.evaluate<{ id: string; rows: number; verdict: string }>(`(() => {
        const list = document.getElementById("session-list");
        const o = [...list.options].find((o) => /REJECT 550 5\\.7\\.1/.test(o.textContent));
        list.value = o.value;
        list.dispatchEvent(new Event("change"));
        return {
          id: document.querySelector("#session-view h3").textContent,
          rows: document.querySelectorAll("#timeline .ev").length,
          verdict: [...document.querySelectorAll("#session-view .verdict")].map((p) => p.textContent).join(),
        };
      })()`);
        assert.match(picked.id, /^day\.jsonl#c\d+$/);
        assert.ok(picked.rows >= 15, `${picked.rows} rows`);
        assert.match(picked.verdict, /550 5\.7\.1 Spam detected/);
        assert.deepEqual(page.log.errors, []);
        assert.deepEqual(page.log.requests.filter((u) => u !== url), []);
        // the screenshot: a full, non-blank page (the README shows it)
        const shot = await page.screenshot();
        const p = png(shot);
        assert.equal(p.width, 1280);
        assert.equal(p.height, 1800);
        assert.ok(p.distinct > 64, `${p.distinct} distinct byte values: blank?`);
        if (process.env.MILTERKIT_UPDATE_SCREENSHOTS === "1") {
          writeFileSync(new URL("../../docs/dump-report.png", import.meta.url), shot);
        }
      });
    },
  );
});
