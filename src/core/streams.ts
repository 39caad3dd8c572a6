import { createHash } from "node:crypto";
import { PassThrough, Transform, type Readable, type TransformCallback } from "node:stream";
import { DbkeepError } from "./errors.js";

/**
 * Passes `source` through, but ends only after `done` resolves; if `done` rejects, the stream errors instead.
 * Engines wrap a dump tool's stdout with it so that a tool failing after partial output can never look like a
 * complete dump to the stages and stores downstream. Given `out`, it writes into that stream instead of a new one
 * (one stage less on the hot path of a dump).
 */
export function endAfter(source: Readable, done: Promise<unknown>, out: PassThrough = new PassThrough()): Readable {
  source.on("error", (err) => out.destroy(err));
  done.catch((err: unknown) => out.destroy(err as Error));
  source.pipe(out, { end: false });
  source.once("end", () => {
    done.then(
      () => out.end(),
      (err: unknown) => out.destroy(err as Error),
    );
  });
  out.once("close", () => {
    if (!source.destroyed && !source.readableEnded) source.destroy();
  });
  return out;
}

/** Counts the bytes that flow through. */
export class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

export interface Expected {
  sha256: string;
  bytes?: number;
  /** What to call the object in the error message. */
  what: string;
}

/**
 * SHA-256 and byte count of what flows through. With `expected`, the stream fails at its end instead of ending
 * when the digest or size differs, so nothing downstream ever sees a clean end of unverified data.
 */
export class HashStage extends Transform {
  bytes = 0;
  sha256 = "";
  readonly #hash = createHash("sha256");
  readonly #expected: Expected | undefined;

  constructor(expected?: Expected) {
    super();
    this.#expected = expected;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.sha256 = this.#hash.digest("hex");
    const exp = this.#expected;
    if (exp && exp.bytes !== undefined && exp.bytes !== this.bytes) {
      return cb(new DbkeepError("CHECKSUM_MISMATCH", `${exp.what} is ${this.bytes} bytes, the manifest says ${exp.bytes}`, {
        hint: "the stored object is damaged or truncated; restore another backup",
      }));
    }
    if (exp && exp.sha256 !== this.sha256) {
      return cb(new DbkeepError("CHECKSUM_MISMATCH", `SHA-256 of ${exp.what} does not match its manifest`, {
        details: `expected ${exp.sha256}\nactual   ${this.sha256}`,
        hint: "the stored object is damaged or was changed; restore another backup",
      }));
    }
    cb();
  }
}

/** Reads a small stream fully (manifests, sidecars). Refuses more than `limit` bytes. */
export async function readAll(stream: Readable, limit = 16 * 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += (chunk as Buffer).length;
    if (n > limit) {
      stream.destroy();
      throw new DbkeepError("CORRUPT_BACKUP", `object larger than ${limit} bytes where a small file was expected`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Copies one readable into `n` branches with backpressure: the source is paused until every live branch has taken
 * the chunk, so the slowest consumer sets the pace and memory stays bounded by the branches' buffers. A branch that
 * is destroyed (its consumer failed) is dropped and the others go on; an error of the source destroys every branch.
 */
export function tee(source: Readable, n: number): PassThrough[] {
  const branches = Array.from({ length: n }, () => new PassThrough());
  const live = new Set(branches);
  let waiting = 0;
  const release = () => {
    if (--waiting === 0 && live.size > 0) source.resume();
  };
  for (const b of branches) {
    b.once("close", () => {
      live.delete(b);
      if (live.size === 0 && !source.destroyed && !source.readableEnded) source.destroy();
    });
  }
  source.on("data", (chunk: Buffer) => {
    for (const b of live) {
      if (b.write(chunk)) continue;
      waiting++;
      let settled = false;
      const go = () => {
        if (settled) return;
        settled = true;
        b.off("drain", go);
        b.off("close", go);
        release();
      };
      b.on("drain", go);
      b.on("close", go);
    }
    if (waiting > 0) source.pause();
  });
  source.once("end", () => {
    for (const b of live) b.end();
  });
  source.once("error", (err) => {
    for (const b of live) b.destroy(err);
  });
  return branches;
}
