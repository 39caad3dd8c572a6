import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { COMPRESSIONS, createCompressor } from "../../src/core/compression.js";
import { DbkeepError } from "../../src/core/errors.js";
import { streamFromStore } from "../../src/core/pipeline.js";
import { createLocalStore } from "../../src/stores/local/index.js";
import { tempDir } from "../helpers/env.js";

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * A restore cancelled by SIGTERM: the signal also kills a process decompressor (zstd, lz4) and stops the store's
 * download. What the reader of the stream sees must be the cancel (ABORTED), never how those stages ended
 * (ERR_STREAM_PREMATURE_CLOSE, AbortError), which the CLI printed as "error: Premature close" with exit 1.
 */
describe("cancelling a restore stream", () => {
  for (const compression of COMPRESSIONS) {
    it(`${compression}: the stream and its outcome report ABORTED`, async () => {
      const store = createLocalStore({ path: tempDir() });
      // Incompressible, so that the stream is still flowing when the cancel comes.
      const raw = randomBytes(8 * 1024 * 1024);
      const stored = await collect(Readable.from([raw]).pipe(await createCompressor(compression)));
      await store.put("k", Readable.from([stored]));
      const ac = new AbortController();
      const { stream, done } = await streamFromStore({
        store,
        key: "k",
        expected: { sha256: createHash("sha256").update(stored).digest("hex"), bytes: stored.length, what: "k" },
        compression,
        signal: ac.signal,
      });
      let read = 0;
      const consumed = (async () => {
        for await (const c of stream) {
          read += (c as Buffer).length;
          // A slow reader, as a restore tool is.
          await new Promise((r) => setTimeout(r, 1));
          if (read > 256 * 1024 && !ac.signal.aborted) ac.abort(new Error("SIGTERM"));
        }
      })();
      const err = await consumed.then(() => undefined, (e: unknown) => e);
      expect(read).toBeLessThan(raw.length);
      expect(err).toBeInstanceOf(DbkeepError);
      expect((err as DbkeepError).code).toBe("ABORTED");
      await expect(done).rejects.toMatchObject({ code: "ABORTED" });
      await store.close();
    });
  }
});
