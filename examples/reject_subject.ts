/**
 * Rejects messages whose Subject matches a rule, with a custom SMTP reply.
 *
 *   MILTERKIT_REJECT_SUBJECT='viagra|lottery' milterkit serve examples/reject_subject.ts
 *
 * The pattern is a case-insensitive regular expression (default: `viagra|casino bonus`).
 */
import { defineFilter } from "@milterkit/milterkit";
import process from "node:process";

const pattern = new RegExp(process.env.MILTERKIT_REJECT_SUBJECT ?? "viagra|casino bonus", "i");

export default defineFilter({
  name: "reject-subject",
  // The decision is made per header; nothing else needs answering.
  header({ name, value }) {
    if (name.toLowerCase() === "subject" && pattern.test(value)) {
      return {
        code: 550,
        enhanced: "5.7.1",
        text: "Message refused: subject matches a local rule",
      };
    }
  },
});
