/**
 * Helpers for testing filters and MTA-side code without sockets: {@link testFilter} and
 * {@link FilterTest} run messages through a filter in process; {@link duplexPair} and
 * {@link chunked} are the in-memory streams underneath.
 *
 * @module
 */

export { chunked, duplexPair } from "./streams.ts";
export {
  FilterTest,
  type FilterTestOptions,
  type MessageParts,
  type StageResult,
  testFilter,
  type TestMessage,
  type TestResult,
} from "./harness.ts";
