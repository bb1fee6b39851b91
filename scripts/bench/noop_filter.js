// A no-op milterkit filter for benchmarks: a handler for every event libmilter's no-op filter
// has a callback for (so both answer the same commands), each answering "continue".
// Plain JavaScript without imports, so `milterkit serve` loads it under Bun, Deno and Node.
const cont = () => undefined;
export default {
  name: "noop",
  connect: cont,
  helo: cont,
  envfrom: cont,
  envrcpt: cont,
  header: cont,
  eoh: cont,
  body: cont,
  eom: cont,
  abort: cont,
  close: cont,
};
