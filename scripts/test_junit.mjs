// scripts/test_junit.mjs - reading the JUnit XML reports of `deno test` and `bun test` for
// scripts/test.mjs: plain Node 20 ESM, no dependencies. Deno reports a describe as a test with
// steps (only leaves count); Bun nests describes as testsuites (every testcase is a leaf).

function unescapeXml(s) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"')
    .replace(/&apos;/g, "'").replace(/&#10;/g, "\n").replace(/&amp;/g, "&");
}

/** Every testcase of a JUnit report: name, classname, file, whether it failed (and why), skipped. */
export function parseCases(xml) {
  const cases = [];
  const re = /<testcase\b([^>]*?)(?:\/>|>([\s\S]*?)<\/testcase>)/g;
  for (let m; (m = re.exec(xml));) {
    const attr = (k) => {
      const a = new RegExp(`\\b${k}="([^"]*)"`).exec(m[1]);
      return a ? unescapeXml(a[1]) : "";
    };
    const body = m[2] ?? "";
    const fail = /<(failure|error)\b([^>]*)/.exec(body);
    cases.push({
      name: attr("name"),
      classname: attr("classname"),
      file: attr("file"),
      failed: fail !== null,
      failMessage: fail ? unescapeXml((/message="([^"]*)"/.exec(fail[2]) ?? ["", ""])[1]) : "",
      skipped: /<skipped\b/.test(body),
    });
  }
  return cases;
}

/** Deno: a describe is a test whose `it`s are steps named "describe > it"; count leaves only. */
export function countDeno(xml) {
  const cases = parseCases(xml);
  const parents = new Set();
  for (const c of cases) {
    const parts = c.name.split(" > ");
    for (let i = 1; i < parts.length; i++) parents.add(parts.slice(0, i).join(" > "));
  }
  const r = { passed: 0, failed: 0, skipped: 0, failures: [] };
  for (const c of cases) {
    const where = c.classname.startsWith("ext:") ? c.name : `${c.classname} > ${c.name}`;
    if (parents.has(c.name)) {
      // A describe fails by itself for a failing hook (its steps' failures are counted already).
      if (c.failed && !/^\d+ test steps? failed/.test(c.failMessage)) {
        r.failed++;
        r.failures.push(`${where} (${firstLine(c.failMessage)})`);
      }
      continue;
    }
    if (c.failed) {
      r.failed++;
      r.failures.push(`${where} (${firstLine(c.failMessage)})`);
    } else if (c.skipped) r.skipped++;
    else r.passed++;
  }
  return r;
}

/** Bun: describes are nested testsuites, every testcase is a leaf. */
export function countBun(xml) {
  const r = { passed: 0, failed: 0, skipped: 0, failures: [] };
  for (const c of parseCases(xml)) {
    if (c.failed) {
      r.failed++;
      const path = [c.file, ...c.classname.split(" > ").reverse().filter(Boolean), c.name];
      r.failures.push(`${path.join(" > ")} (${firstLine(c.failMessage)})`);
    } else if (c.skipped) r.skipped++;
    else r.passed++;
  }
  return r;
}

/** The first non-blank line of a message, cut to 120 characters. */
export function firstLine(s) {
  const line = s.split("\n").find((l) => l.trim() !== "") ?? "";
  return line.length > 120 ? line.slice(0, 117) + "..." : line;
}

/** Removes ANSI colour sequences. */
export function stripAnsi(s) {
  // deno-lint-ignore no-control-regex
  return s.replace(/\u001b\[[0-9;]*m/g, "");
}
