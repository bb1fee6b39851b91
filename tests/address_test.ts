import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  formatSocketSpec,
  parseSocketSpec,
  type SocketAddress,
  SocketSpecError,
} from "../lib/server/socket_spec.ts";
import { MilterError } from "../lib/wire/errors.ts";

const tcp = (hostname: string, port: number): SocketAddress => ({
  transport: "tcp",
  hostname,
  port,
});
const unix = (path: string): SocketAddress => ({ transport: "unix", path });

describe("parseSocketSpec()", () => {
  const good: Array<[string, SocketAddress]> = [
    // Sendmail / libmilter
    ["inet:8890@127.0.0.1", tcp("127.0.0.1", 8890)],
    ["inet:8890@localhost", tcp("localhost", 8890)],
    ["inet:2525@mail.example.net", tcp("mail.example.net", 2525)],
    ["inet6:8890@::1", tcp("::1", 8890)],
    ["inet6:8890@[::1]", tcp("::1", 8890)],
    ["inet6:8890@2001:db8::25", tcp("2001:db8::25", 8890)],
    ["INET:8890@127.0.0.1", tcp("127.0.0.1", 8890)],
    ["inet:8890@mail-1.example_host.net.", tcp("mail-1.example_host.net.", 8890)],
    ["inet6:8890@fe80::1%eth0", tcp("fe80::1%eth0", 8890)],
    ["inet6:8890@::ffff:127.0.0.1", tcp("::ffff:127.0.0.1", 8890)],
    ["inet:8890@0.0.0.0", tcp("0.0.0.0", 8890)],
    // Postfix
    ["inet:127.0.0.1:8890", tcp("127.0.0.1", 8890)],
    ["inet:localhost:8890", tcp("localhost", 8890)],
    ["inet:[::1]:8890", tcp("::1", 8890)],
    ["inet6:[2001:db8::1]:10025", tcp("2001:db8::1", 10025)],
    // host-less: loopback
    ["inet:8890", tcp("127.0.0.1", 8890)],
    ["inet6:8890", tcp("::1", 8890)],
    ["inet:0", tcp("127.0.0.1", 0)],
    ["inet:65535@127.0.0.1", tcp("127.0.0.1", 65535)],
    // scheme-less, as Postfix accepts
    ["127.0.0.1:8890", tcp("127.0.0.1", 8890)],
    ["localhost:8890", tcp("localhost", 8890)],
    ["[::1]:8890", tcp("::1", 8890)],
    // unix
    ["unix:/run/milter/m.sock", unix("/run/milter/m.sock")],
    ["local:/var/run/f.sock", unix("/var/run/f.sock")],
    ["unix:relative.sock", unix("relative.sock")],
    ["/run/milter.sock", unix("/run/milter.sock")],
    ["unix:/path with spaces/x.sock", unix("/path with spaces/x.sock")],
    ["  inet:8890@127.0.0.1\n", tcp("127.0.0.1", 8890)],
  ];
  for (const [spec, expected] of good) {
    it(`parses ${JSON.stringify(spec)}`, () => {
      assert.deepEqual(parseSocketSpec(spec), expected);
    });
  }

  const bad: Array<[string, SocketSpecError["problem"], RegExp]> = [
    ["", "empty", /spec is empty/],
    ["   ", "empty", /spec is empty/],
    ["8890", "scheme", /a port alone .*; did you mean inet:8890@127\.0\.0\.1\?$/],
    ["tcp:8890", "scheme", /"tcp" is not a scheme; did you mean inet:8890@127\.0\.0\.1\?$/],
    ["tcp6:8890", "scheme", /did you mean inet6:8890@::1\?$/],
    ["tcp:8890@10.0.0.1", "scheme", /did you mean inet:8890@10\.0\.0\.1\?$/],
    ["tcp:x", "scheme", /did you mean inet:PORT@127\.0\.0\.1\?$/],
    ["localhost", "scheme", /expected "inet:"/],
    ["http://example.com", "scheme", /unknown scheme "http"/],
    ["inet:", "port", /port is missing/],
    ["inet:65536@127.0.0.1", "port", /port 65536 is out of range 0\.\.65535/],
    ["inet:99999", "port", /out of range 0\.\.65535/],
    ["inet:-1@127.0.0.1", "port", /port "-1" is not a number/],
    ["inet:smtp@127.0.0.1", "port", /port "smtp" is not a number/],
    ["inet:8890@", "host", /host after "@" is empty/],
    ["inet:127.0.0.1:", "port", /port "" is not a number/],
    ["inet::8890", "host", /host is empty/],
    ["inet:localhost", "port", /port is missing/],
    ["inet:::1:8890", "host", /IPv6 address needs brackets/],
    ["inet:[::1]8890", "host", /expected "\[ADDRESS\]:PORT"/],
    ["inet:123456789@127.0.0.1", "port", /not a number from 0 to 65535/],
    ["inet:8890@999.1.1.1", "host", /"999\.1\.1\.1" is not a valid IPv4 address/],
    ["inet:8890@0.0.0.0.0", "host", /not a valid IPv4 address/],
    ["inet:8890@127.1", "host", /not a valid IPv4 address/],
    ["inet:8890@127.0.0.1:5", "host", /not a valid IPv6 address/],
    ["inet6:8890@zz::1", "host", /not a valid IPv6 address/],
    ["inet:8890@[::1%a b]", "host", /not valid|invalid zone/],
    ["inet:8890@mail\u0001host", "host", /not a valid host name/],
    ["inet:8890@-bad.example", "host", /not a valid host name/],
    ["inet:8890@a..b", "host", /not a valid host name/],
    ["inet:8890@host with space", "host", /not a valid host name/],
    [`inet:8890@${"a".repeat(64)}.example`, "host", /not a valid host name/],
    ["unix:", "path", /path is missing/],
    ["local:", "path", /path is missing/],
    ["unix:/a\0b", "path", /NUL/],
  ];
  for (const [spec, problem, message] of bad) {
    it(`rejects ${JSON.stringify(spec)} (${problem})`, () => {
      assert.throws(() => parseSocketSpec(spec), (e: unknown) => {
        assert.ok(e instanceof SocketSpecError);
        assert.ok(e instanceof MilterError);
        assert.equal(e.name, "SocketSpecError");
        assert.equal(e.problem, problem);
        assert.equal(e.spec, spec);
        assert.match(e.message, message);
        assert.ok(e.message.includes(JSON.stringify(spec)), e.message);
        return true;
      });
    });
  }
});

describe("formatSocketSpec()", () => {
  it("writes libmilter's PORT@HOST by default", () => {
    assert.equal(formatSocketSpec(tcp("127.0.0.1", 8890)), "inet:8890@127.0.0.1");
    assert.equal(formatSocketSpec(tcp("::1", 8890)), "inet6:8890@::1");
    assert.equal(formatSocketSpec(unix("/run/m.sock")), "unix:/run/m.sock");
  });

  it("writes Postfix's HOST:PORT on request", () => {
    const style = { style: "postfix" } as const;
    assert.equal(formatSocketSpec(tcp("127.0.0.1", 8890), style), "inet:127.0.0.1:8890");
    assert.equal(formatSocketSpec(tcp("::1", 8890), style), "inet:[::1]:8890");
    assert.equal(formatSocketSpec(unix("/run/m.sock"), style), "unix:/run/m.sock");
  });

  it("round-trips through parseSocketSpec in both styles", () => {
    const addresses = [
      tcp("127.0.0.1", 0),
      tcp("::1", 65535),
      tcp("2001:db8::25", 8890),
      tcp("mail.example.net", 25),
      unix("/run/milter/m.sock"),
      unix("relative.sock"),
    ];
    for (const address of addresses) {
      for (const style of ["sendmail", "postfix"] as const) {
        assert.deepEqual(parseSocketSpec(formatSocketSpec(address, { style })), address);
      }
    }
  });
});
