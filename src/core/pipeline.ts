import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import type { Duplex, Readable } from "node:stream";
import { pipeline } from "node:stream";
import { compressesNatively, createCompressor, createDecompressor, nativeCompressor, nativeCompressorToFile, type Compression } from "./compression.js";
import { DbkeepError } from "./errors.js";
import { ByteCounter, HashStage, tee, type Expected } from "./streams.js";
import type { StagedFile, Store, StoreSnapshot } from "../stores/store.js";
import type { OsPipe } from "./os-pipe.js";

export interface Progress {
  /** Bytes read from the dump (backup) or from the store (restore). */
  read: number;
  /** Bytes written to the store (backup) or to the database (restore). */
  written: number;
}

export interface ToStoreOptions {
  source: Readable;
  compression: Compression;
  level?: number;
  /** Stages after compression and before hashing: the encryption slot. */
  stages?: Duplex[];
  /**
   * A pipe the dump tool writes into (DumpOptions.output), and the dump's outcome: with a process compressor
   * (zstd, lz4) the compressor reads the pipe directly and `source` is not read. The pipeline closes the read end
   * once the compressor has it (or on failure, which stops the dump tool); undefined (no pipe could be made) means
   * that the dump comes through `source` after all.
   */
  native?: { pipe: Promise<OsPipe | undefined>; done: Promise<unknown> };
  /** One store, or several: the stream is copied to all of them at once and the slowest sets the pace. */
  stores: Store[];
  key: string;
  signal: AbortSignal;
  onProgress?: (p: Progress) => void;
}

/** What happened in one store of a (fan-out) upload. */
export interface StoreOutcome {
  store: Store;
  ok: boolean;
  error?: unknown;
  /** The snapshot the store made of the object, when it keeps snapshots (restic). */
  snapshot?: StoreSnapshot;
}

export interface ToStoreResult {
  rawBytes: number;
  storedBytes: number;
  sha256: string;
  /** One per store, in order; rejected only when no store took the whole stream. */
  outcomes: StoreOutcome[];
}

/**
 * dump -> compress -> [encrypt] -> hash + count -> store(s), in one streaming pass with backpressure end to end:
 * each store reads at its own pace and every stage upstream waits for the slowest. One AbortSignal stops every
 * stage; the first real failure is the one reported. With several stores, a store that fails is dropped and the
 * others go on: the result says which stores hold the object; it rejects only when none does.
 */
export async function streamToStore(opts: ToStoreOptions): Promise<ToStoreResult> {
  const ac = new AbortController();
  const onOuterAbort = () => ac.abort(opts.signal.reason);
  opts.signal.addEventListener("abort", onOuterAbort, { once: true });
  // The dump may fail while the compressor is still starting; pipeline() reports that error once it is attached,
  // so it must not escape as an unhandled 'error' event meanwhile.
  opts.source.on("error", () => undefined);
  const raw = new ByteCounter();
  const hash = new HashStage();
  const timer = opts.onProgress ? setInterval(() => opts.onProgress?.({ read: raw.bytes, written: hash.bytes }), 250) : undefined;
  let first: unknown;
  const note = (err: unknown) => {
    if (first === undefined && !(err instanceof Error && err.name === "AbortError" && ac.signal.aborted)) first = err;
    if (!ac.signal.aborted) ac.abort(err);
  };
  try {
    let head: Readable[];
    let nativeRaw: Promise<number> | undefined;
    const pipe = opts.native && compressesNatively(opts.compression) ? await opts.native.pipe : undefined;
    if (opts.native && pipe) {
      // The dump tool writes straight into the compressor: node carries only the compressed bytes. Once the
      // compressor runs, node's copy of the read end is closed; closed early (a failure), it stops the dump tool.
      try {
        const only = opts.stores.length === 1 && !opts.stages?.length ? opts.stores[0]! : undefined;
        if (only?.stage) {
          // One store on the local file system and nothing to encrypt: the compressor writes the file itself and
          // node reads it behind the compressor only to hash it.
          try {
            return await compressIntoFile(opts, only, only.stage.bind(only), pipe, opts.native.done, ac.signal);
          } catch (err) {
            note(err);
            throw first ?? err;
          }
        }
        const nc = await nativeCompressor(opts.compression, opts.level, pipe.read, opts.native.done, ac.signal);
        head = [nc.stream];
        nativeRaw = nc.rawBytes;
      } finally {
        pipe.closeRead();
      }
    } else {
      head = [opts.source, raw, await createCompressor(opts.compression, opts.level, ac.signal)];
    }
    const flowing = new Promise<void>((resolve, reject) => {
      pipeline([...head, ...(opts.stages ?? []), hash] as unknown as [Readable, Duplex], (err) => (err ? reject(err) : resolve()));
    });
    const outcomes: StoreOutcome[] = opts.stores.map((store) => ({ store, ok: false }));
    const bodies = opts.stores.length === 1 ? [hash] : tee(hash, opts.stores.length);
    const puts = opts.stores.map(async (store, i) => {
      const own = new AbortController();
      const onAbort = () => own.abort(ac.signal.reason);
      ac.signal.addEventListener("abort", onAbort, { once: true });
      try {
        const put = await store.put(opts.key, bodies[i]!, { signal: own.signal });
        outcomes[i]!.ok = true;
        if (put?.snapshot) outcomes[i]!.snapshot = put.snapshot;
      } catch (err) {
        outcomes[i]!.error = err;
        // This store stops reading; the others go on without it. When none is left, everything stops.
        if (outcomes.every((o) => o.error !== undefined)) note(err);
        if (!bodies[i]!.destroyed) bodies[i]!.destroy();
        throw err;
      } finally {
        ac.signal.removeEventListener("abort", onAbort);
      }
    });
    const results = await Promise.allSettled([flowing.catch((e: unknown) => (note(e), Promise.reject(e))), ...puts]);
    const [flow, ...stored] = results;
    if (flow!.status === "rejected" || !stored.some((r) => r.status === "fulfilled")) {
      const putError = outcomes.find((o) => o.error !== undefined)?.error;
      throw first ?? putError ?? (results.find((r) => r.status === "rejected") as PromiseRejectedResult).reason;
    }
    opts.onProgress?.({ read: raw.bytes, written: hash.bytes });
    return { rawBytes: nativeRaw ? await nativeRaw : raw.bytes, storedBytes: hash.bytes, sha256: hash.sha256, outcomes };
  } catch (err) {
    if (opts.signal.aborted && !(err instanceof DbkeepError && err.code !== "ABORTED")) {
      throw new DbkeepError("ABORTED", "backup was cancelled", { cause: err });
    }
    throw err;
  } finally {
    if (timer) clearInterval(timer);
    opts.signal.removeEventListener("abort", onOuterAbort);
  }
}

/**
 * The compressor writes into the store's staged file; node follows the growing file with a reused buffer and
 * hashes what is there, so the compressed bytes are copied once (page cache to node) instead of three times (pipe,
 * node, file). The file is published only when the dump, the compressor and the hash all completed.
 *
 * The file is flushed to disk every FLUSH_EVERY bytes as it grows, so that the final fsync, which the backup waits
 * for, has at most that much left to write: at 1 GB, 16 MiB took 0.02 s from the compressor's exit to dbkeep's,
 * 64 MiB 0.04 s, with no difference in the time before it (docs/benchmarks.md).
 */
const FLUSH_EVERY = 16 << 20;
/**
 * How long the reader waits when it has caught up with the compressor. Each wake-up takes a core from pg_dump or
 * the compressor on a busy machine: at 10 ms, dbkeep's node used 0.7 CPU-s for a 1 GB backup and pg_dump 1.1 s;
 * at 100 ms, 0.5 s and 0.9 s (docs/benchmarks.md). The end of the file is read as soon as the compressor exits.
 */
const CATCH_UP_WAIT_MS = 100;

async function compressIntoFile(
  opts: ToStoreOptions,
  store: Store,
  stage: (key: string) => Promise<StagedFile>,
  pipe: OsPipe,
  upstream: Promise<unknown>,
  signal: AbortSignal,
): Promise<ToStoreResult> {
  const staged = await stage(opts.key);
  try {
    const nc = await nativeCompressorToFile(opts.compression, opts.level, pipe.read, staged.fd, signal);
    pipe.closeRead();
    const finished = Promise.all([nc.done, upstream, nc.rawBytes]);
    let settled = false;
    const settle = finished.then(() => (settled = true), () => (settled = true));
    const hash = createHash("sha256");
    let bytes = 0;
    const timer = opts.onProgress ? setInterval(() => opts.onProgress?.({ read: 0, written: bytes }), 250) : undefined;
    const reader = await open(staged.path, "r");
    try {
      const buf = Buffer.allocUnsafe(4 << 20);
      // Flushing what is already written as the file grows leaves little for commit()'s final fsync to wait for.
      let flushing: Promise<void> | undefined;
      let flushedAt = 0;
      for (;;) {
        const last = settled;
        const { bytesRead } = await reader.read(buf, 0, buf.length, bytes);
        if (bytesRead > 0) {
          hash.update(buf.subarray(0, bytesRead));
          bytes += bytesRead;
          if (!flushing && bytes - flushedAt >= FLUSH_EVERY) {
            flushedAt = bytes;
            flushing = reader.datasync().catch(() => undefined).finally(() => (flushing = undefined));
          }
          continue;
        }
        // Read once more after the compressor exited: everything it wrote is in the file by then.
        if (last) break;
        let wait: NodeJS.Timeout | undefined;
        await Promise.race([settle, new Promise((r) => (wait = setTimeout(r, CATCH_UP_WAIT_MS)))]);
        clearTimeout(wait);
      }
      await flushing;
    } finally {
      if (timer) clearInterval(timer);
      await reader.close();
    }
    const [, , rawBytes] = await finished;
    await staged.commit();
    opts.onProgress?.({ read: rawBytes, written: bytes });
    return { rawBytes, storedBytes: bytes, sha256: hash.digest("hex"), outcomes: [{ store, ok: true }] };
  } catch (err) {
    await staged.abort();
    throw err;
  }
}

export interface FromStoreOptions {
  store: Store;
  key: string;
  expected: Expected;
  compression: Compression;
  /** Stages after hashing and before decompression: the decryption slot. */
  stages?: Duplex[];
  signal: AbortSignal;
  onProgress?: (p: Progress) => void;
}

/**
 * store -> hash check -> [decrypt] -> decompress, as one readable. It ends only if the stored bytes match the
 * manifest's size and SHA-256; otherwise it errors, and a consumer that honours the Engine restore contract has
 * changed nothing.
 *
 * Cancelled (`signal`), the readable errors with ABORTED at once. The same signal kills a process decompressor
 * (zstd, lz4) and the store's download; left to themselves they would end the stream with what their ending looks
 * like from here, ERR_STREAM_PREMATURE_CLOSE or an AbortError, and the consumer would report that instead of the
 * cancel.
 */
export async function streamFromStore(opts: FromStoreOptions): Promise<{ stream: Readable; done: Promise<void> }> {
  const cancelled = () => new DbkeepError("ABORTED", `reading ${opts.key} was cancelled`, { cause: opts.signal.reason });
  if (opts.signal.aborted) throw cancelled();
  const body = await opts.store.get(opts.key, { signal: opts.signal });
  const hash = new HashStage(opts.expected);
  const out = new ByteCounter();
  const decompressor = await createDecompressor(opts.compression, opts.signal);
  const timer = opts.onProgress ? setInterval(() => opts.onProgress?.({ read: hash.bytes, written: out.bytes }), 250) : undefined;
  let stream!: Readable;
  // Registered after the store's and the decompressor's own listeners, but it runs in the same dispatch, before
  // any of their streams has reported its end: `out` errors with ABORTED first and keeps that error.
  const onAbort = () => {
    if (!out.destroyed) out.destroy(cancelled());
  };
  opts.signal.addEventListener("abort", onAbort, { once: true });
  if (opts.signal.aborted) onAbort();
  const done = new Promise<void>((resolve, reject) => {
    stream = pipeline([body, hash, ...(opts.stages ?? []), decompressor, out] as unknown as [Readable, Duplex], (err) => {
      if (timer) clearInterval(timer);
      opts.signal.removeEventListener("abort", onAbort);
      opts.onProgress?.({ read: hash.bytes, written: out.bytes });
      // A checksum mismatch explains every later symptom (a corrupt frame, a tool's syntax error).
      const mismatch = hash.errored;
      if (mismatch instanceof DbkeepError && mismatch.code === "CHECKSUM_MISMATCH") reject(mismatch);
      else if (opts.signal.aborted) reject(out.errored instanceof DbkeepError && out.errored.code === "ABORTED" ? out.errored : cancelled());
      else if (mismatch) reject(mismatch);
      else if (err) reject(err);
      else resolve();
    }) as unknown as Readable;
  });
  done.catch(() => undefined);
  return { stream, done };
}
