import type { Duplex, Readable } from "node:stream";
import { pipeline } from "node:stream";
import { createCompressor, createDecompressor, type Compression } from "./compression.js";
import { DbkeepError } from "./errors.js";
import { ByteCounter, HashStage, type Expected } from "./streams.js";
import type { Store } from "../stores/store.js";

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
  store: Store;
  key: string;
  signal: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface ToStoreResult {
  rawBytes: number;
  storedBytes: number;
  sha256: string;
}

/**
 * dump -> compress -> [encrypt] -> hash + count -> store, in one streaming pass with backpressure end to end:
 * the store reads at its own pace and every stage upstream waits for it. One AbortSignal stops every stage; the
 * first real failure is the one reported.
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
    const compressor = await createCompressor(opts.compression, opts.level, ac.signal);
    const flowing = new Promise<void>((resolve, reject) => {
      pipeline([opts.source, raw, compressor, ...(opts.stages ?? []), hash] as unknown as [Readable, Duplex], (err) => (err ? reject(err) : resolve()));
    });
    const put = opts.store.put(opts.key, hash, { signal: ac.signal });
    const results = await Promise.allSettled([flowing.catch((e: unknown) => (note(e), Promise.reject(e))), put.catch((e: unknown) => (note(e), Promise.reject(e)))]);
    if (results.some((r) => r.status === "rejected")) {
      throw first ?? (results.find((r) => r.status === "rejected") as PromiseRejectedResult).reason;
    }
    opts.onProgress?.({ read: raw.bytes, written: hash.bytes });
    return { rawBytes: raw.bytes, storedBytes: hash.bytes, sha256: hash.sha256 };
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
 */
export async function streamFromStore(opts: FromStoreOptions): Promise<{ stream: Readable; done: Promise<void> }> {
  const body = await opts.store.get(opts.key, { signal: opts.signal });
  const hash = new HashStage(opts.expected);
  const out = new ByteCounter();
  const decompressor = await createDecompressor(opts.compression, opts.signal);
  const timer = opts.onProgress ? setInterval(() => opts.onProgress?.({ read: hash.bytes, written: out.bytes }), 250) : undefined;
  let stream!: Readable;
  const done = new Promise<void>((resolve, reject) => {
    stream = pipeline([body, hash, ...(opts.stages ?? []), decompressor, out] as unknown as [Readable, Duplex], (err) => {
      if (timer) clearInterval(timer);
      opts.onProgress?.({ read: hash.bytes, written: out.bytes });
      // A checksum mismatch explains every later symptom (a corrupt frame, a tool's syntax error).
      const mismatch = hash.errored;
      if (mismatch) reject(mismatch);
      else if (err) reject(err);
      else resolve();
    }) as unknown as Readable;
  });
  done.catch(() => undefined);
  return { stream, done };
}
