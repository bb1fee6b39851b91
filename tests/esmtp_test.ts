import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseAddress, parseEsmtpArgs, splitAddress, splitEsmtpArgs } from "../lib/mail/esmtp.ts";

describe("parseEsmtpArgs()", () => {
  it("upper-cases keywords, keeps values and the raw text", () => {
    assert.deepEqual(
      parseEsmtpArgs(["size=86", "BODY=8BITMIME", "SMTPUTF8", "ORCPT=rfc822;a=b@c"]),
      [
        { name: "SIZE", value: "86", raw: "size=86" },
        { name: "BODY", value: "8BITMIME", raw: "BODY=8BITMIME" },
        { name: "SMTPUTF8", value: undefined, raw: "SMTPUTF8" },
        { name: "ORCPT", value: "rfc822;a=b@c", raw: "ORCPT=rfc822;a=b@c" },
      ],
    );
  });

  it("keeps an empty value apart from a bare keyword and skips empty strings", () => {
    assert.deepEqual(parseEsmtpArgs(["ENVID=", ""]), [{ name: "ENVID", value: "", raw: "ENVID=" }]);
  });
});

describe("splitEsmtpArgs()", () => {
  it("splits the single argument string of CHGFROM / ADDRCPT_PAR", () => {
    assert.deepEqual(splitEsmtpArgs("NOTIFY=NEVER ORCPT=rfc822;x@y"), [
      "NOTIFY=NEVER",
      "ORCPT=rfc822;x@y",
    ]);
    assert.deepEqual(splitEsmtpArgs(" \tRET=HDRS  "), ["RET=HDRS"]);
    assert.deepEqual(splitEsmtpArgs(undefined), []);
    assert.deepEqual(splitEsmtpArgs(""), []);
  });
});

describe("parseAddress()", () => {
  it("strips angle brackets and keeps the raw text", () => {
    assert.deepEqual(parseAddress("<a@example.com>"), {
      address: "a@example.com",
      raw: "<a@example.com>",
    });
  });

  it("gives an empty address for the null sender, bracketed or not", () => {
    assert.equal(parseAddress("<>").address, "");
    assert.equal(parseAddress("").address, "");
  });

  it("accepts Postfix's non-SMTP form without brackets and surrounding spaces", () => {
    assert.equal(parseAddress("a@example.com").address, "a@example.com");
    assert.equal(parseAddress("  < a@example.com >  ").address, "a@example.com");
  });

  it("drops an RFC 5321 source route", () => {
    assert.equal(
      parseAddress("<@relay.example,@b.example:u@example.com>").address,
      "u@example.com",
    );
  });

  it("leaves a half-bracketed address alone", () => {
    assert.equal(parseAddress("<a@example.com").address, "<a@example.com");
  });
});

describe("splitAddress()", () => {
  it("splits at the last @", () => {
    assert.deepEqual(splitAddress('"a@b"@example.com'), { local: '"a@b"', domain: "example.com" });
    assert.deepEqual(splitAddress("postmaster"), { local: "postmaster", domain: "" });
  });
});
