/**
 * The version of the toolkit and binary (kept equal to deno.json and package.json by a test).
 *
 * @module
 */

/** The version printed by `milterkit --version` and written into recordings. */
export const VERSION = "0.1.0";
