import { PassThrough } from "node:stream";
import type { Dump, DumpResult } from "./engine.js";

/**
 * Runs an engine's dump in the background, writing into the stream the pipeline reads. If the dump fails, the
 * stream is destroyed with its error, so the stages downstream see an error and never a clean end.
 */
export function startDump(run: (out: PassThrough) => Promise<DumpResult>): Dump {
  const out = new PassThrough();
  const done = run(out).catch((err: unknown) => {
    out.destroy(err as Error);
    throw err;
  });
  done.catch(() => undefined); // awaited by the caller; never an unhandled rejection meanwhile
  return { stream: out, done };
}
