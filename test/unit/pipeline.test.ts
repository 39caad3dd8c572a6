import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { fstatSync, readdirSync, readSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { COMPRESSIONS, createCompressor, createDecompressor, sniffCompression } from "../../src/core/compression.js";
import { backupKeys, checksumLine, type Manifest } from "../../src/core/manifest.js";
import { findBackup } from "../../src/core/listing.js";
import { openPipe, PIPE_BYTES } from "../../src/core/os-pipe.js";
import { streamFromStore, streamToStore } from "../../src/core/pipeline.js";
import { HashStage, endAfter } from "../../src/core/streams.js";
import { createLocalStore } from "../../src/stores/local/index.js";
import type { Store } from "../../src/stores/store.js";
import { tempDir } from "../helpers/env.js";

async function collect(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Text that compresses like a real dump, not like zeros. */
function sample(size: number): Buffer {
  const words = ["alpha", "beta", "gamma", "delta", "INSERT", "VALUES", "NULL", "2026-01-01", "customer", "order"];
  const parts: string[] = [];
  let n = 0;
  let i = 0;
  while (n < size) {
    const w = `${words[i % words.length]}${(i * 7919) % 1000} `;
    parts.push(w);
    n += w.length;
    i++;
  }
  return Buffer.concat([Buffer.from(parts.join("")).subarray(0, size - 64), randomBytes(64)]);
}

describe("compression", () => {
  for (const c of COMPRESSIONS) {
    it(`${c}: what goes in comes out, and the stored bytes are recognisable`, async () => {
      const data = sample(3 * 1024 * 1024);
      const compressed = await collect(Readable.from([data]).pipe(await createCompressor(c)));
      if (c !== "none") {
        expect(compressed.length).toBeLessThan(data.length / 2);
        expect(sniffCompression(compressed)).toBe(c);
      }
      const back = await collect(Readable.from([compressed]).pipe(await createDecompressor(c)));
      expect(back.equals(data)).toBe(true);
    });
  }

  it("a damaged zstd frame fails instead of ending", async () => {
    const compressed = await collect(Readable.from([sample(1024 * 1024)]).pipe(await createCompressor("zstd")));
    const mid = Math.floor(compressed.length / 2);
    compressed[mid] = compressed[mid]! ^ 0xff;
    const d = await createDecompressor("zstd");
    await expect(pipeline(Readable.from([compressed]), d, new Writable({ write: (_c, _e, cb) => cb() }))).rejects.toThrow(/zstd/);
  });
});

describe("streams", () => {
  it("HashStage fails at the end when the digest differs, so consumers never see a clean end", async () => {
    const data = Buffer.from("hello");
    const good = createHash("sha256").update(data).digest("hex");
    await pipeline(Readable.from([data]), new HashStage({ sha256: good, what: "x" }), new Writable({ write: (_c, _e, cb) => cb() }));
    await expect(pipeline(Readable.from([data]), new HashStage({ sha256: "0".repeat(64), what: "x" }), new Writable({ write: (_c, _e, cb) => cb() }))).rejects.toThrow(/SHA-256 of x does not match/);
    await expect(pipeline(Readable.from([data]), new HashStage({ sha256: good, bytes: 6, what: "x" }), new Writable({ write: (_c, _e, cb) => cb() }))).rejects.toThrow(/is 5 bytes, the manifest says 6/);
  });

  it("endAfter turns a tool that failed after writing into an error, not an end", async () => {
    const failed = Promise.reject(new Error("pg_dump failed with exit code 1"));
    failed.catch(() => undefined);
    await expect(collect(endAfter(Readable.from([Buffer.from("partial")]), failed))).rejects.toThrow(/exit code 1/);
    expect((await collect(endAfter(Readable.from([Buffer.from("ok")]), Promise.resolve()))).toString()).toBe("ok");
  });
});

describe("pipeline", () => {
  it("streams to a store and back with matching SHA-256 and counts", async () => {
    const store = createLocalStore({ path: tempDir() });
    const data = sample(2 * 1024 * 1024 + 17);
    const r = await streamToStore({ source: Readable.from([data]), compression: "zstd", stores: [store], key: "db/x.sql.zst", signal: new AbortController().signal });
    expect(r.rawBytes).toBe(data.length);
    expect(r.sha256).toBe(createHash("sha256").update(await collect(await store.get("db/x.sql.zst"))).digest("hex"));
    const { stream, done } = await streamFromStore({ store, key: "db/x.sql.zst", expected: { sha256: r.sha256, bytes: r.storedBytes, what: "x" }, compression: "zstd", signal: new AbortController().signal });
    expect((await collect(stream)).equals(data)).toBe(true);
    await done;
  });

  for (const compression of ["zstd", "gzip"] as const) {
    it(`a source that fails at once (${compression}) is reported, not thrown as an unhandled error`, async () => {
      const store = createLocalStore({ path: tempDir() });
      const source = new Readable({ read() {} });
      source.destroy(new Error("dump could not start"));
      await expect(streamToStore({ source, compression, stores: [store], key: "db/z.sql", signal: new AbortController().signal })).rejects.toThrow(/dump could not start/);
    });
  }

  it("a failing source leaves nothing under the key", async () => {
    const store = createLocalStore({ path: tempDir() });
    const source = new Readable({ read() {} });
    source.push(Buffer.alloc(100_000, 65));
    setTimeout(() => source.destroy(new Error("dump died")), 20);
    await expect(streamToStore({ source, compression: "gzip", stores: [store], key: "db/y.sql.gz", signal: new AbortController().signal })).rejects.toThrow(/dump died/);
    const left = [];
    for await (const o of store.list("")) left.push(o);
    expect(left).toEqual([]);
  });
});

describe("manifest layout", () => {
  it("follows <prefix>/<database>/<database>-<YYYYMMDD-HHMMSS>.<ext> with seed 000's extensions", () => {
    const k = backupKeys("prod", "appdb", new Date("2026-02-10T14:30:00Z"), ".sql", "gzip");
    expect(k).toEqual({
      id: "appdb-20260210-143000",
      data: "prod/appdb/appdb-20260210-143000.sql.gz",
      checksum: "prod/appdb/appdb-20260210-143000.sql.gz.sha256",
      manifest: "prod/appdb/appdb-20260210-143000.manifest.json",
    });
    expect(backupKeys(undefined, "w", new Date("2026-02-10T14:30:00Z"), ".dump", "zstd", 2).data).toBe("w/w-20260210-143000-2.dump.zst");
    expect(checksumLine("ab".repeat(32), k.data)).toBe(`${"ab".repeat(32)}  appdb-20260210-143000.sql.gz\n`);
  });

  it("finds a backup by id, file name or latest", () => {
    const ms = [{ id: "a-2", key: "p/a/a-2.sql.gz" }, { id: "a-1", key: "p/a/a-1.sql.gz" }] as Manifest[];
    expect(findBackup(ms, "latest")?.id).toBe("a-2");
    expect(findBackup(ms, "a-1.sql.gz")?.id).toBe("a-1");
    expect(findBackup(ms, "a-1")?.id).toBe("a-1");
    expect(findBackup(ms, "nope")).toBeUndefined();
  });
});

describe("fan-out to several stores", () => {
  /** A store that reads slowly, or fails after `failAfter` bytes, in front of a real local store. */
  function throttled(inner: Store, o: { delayMs?: number; failAfter?: number }): Store & { seen: () => number } {
    let seen = 0;
    return {
      ...inner,
      name: `${inner.name}-wrapped`,
      seen: () => seen,
      put(key, body, opts) {
        const gate = new Transform({
          transform(chunk: Buffer, _e, cb) {
            seen += chunk.length;
            if (o.failAfter !== undefined && seen > o.failAfter) return cb(new Error("store broke mid-upload"));
            if (o.delayMs) setTimeout(() => cb(null, chunk), o.delayMs);
            else cb(null, chunk);
          },
        });
        body.on("error", (e) => gate.destroy(e));
        return inner.put(key, body.pipe(gate), opts);
      },
    };
  }

  it("one stream, three stores: one failing mid-stream is dropped, the others get every byte; the slowest sets the pace", async () => {
    const data = sample(24 * 1024 * 1024);
    let read = 0;
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < data.length; i += 64 * 1024) {
          read += Math.min(64 * 1024, data.length - i);
          yield data.subarray(i, i + 64 * 1024);
        }
      })(),
    );
    const a = createLocalStore({ path: tempDir() });
    const slow = throttled(createLocalStore({ path: tempDir() }), { delayMs: 1 });
    const broken = throttled(createLocalStore({ path: tempDir() }), { failAfter: 4 * 1024 * 1024 });
    let maxAhead = 0;
    const timer = setInterval(() => (maxAhead = Math.max(maxAhead, read - slow.seen())), 5);
    const r = await streamToStore({ source, compression: "none", stores: [a, slow, broken], key: "db/x.sql", signal: new AbortController().signal });
    clearInterval(timer);
    expect(r.outcomes.map((o) => o.ok)).toEqual([true, true, false]);
    expect(String(r.outcomes[2]!.error)).toMatch(/store broke mid-upload/);
    const want = createHash("sha256").update(data).digest("hex");
    expect(r.sha256).toBe(want);
    for (const s of [a, slow]) expect(createHash("sha256").update(await collect(await s.get("db/x.sql"))).digest("hex")).toBe(want);
    expect(await broken.stat("db/x.sql")).toBeUndefined();
    // Backpressure: the source never ran far ahead of the slowest store (buffers of a few stages, not the file).
    expect(maxAhead).toBeLessThan(4 * 1024 * 1024);
  });

  it("rejects when every store fails, and stops reading the source", async () => {
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < 1000; i++) yield Buffer.alloc(64 * 1024, i);
      })(),
    );
    const s1 = throttled(createLocalStore({ path: tempDir() }), { failAfter: 1024 * 1024 });
    const s2 = throttled(createLocalStore({ path: tempDir() }), { failAfter: 2 * 1024 * 1024 });
    await expect(streamToStore({ source, compression: "none", stores: [s1, s2], key: "k", signal: new AbortController().signal })).rejects.toThrow(/store broke mid-upload/);
    expect(source.destroyed).toBe(true);
  });
});

describe("a dump piped into a compressor that writes the local store's file itself", () => {
  /**
   * A dump tool stand-in: a child process that writes `data` in slices, pausing between them, into a kernel pipe
   * (as pg_dump does in a backup) whose read end the pipeline gives the compressor.
   */
  async function producer(data: Buffer, opts: { failAfter?: number; pauseMs?: number } = {}) {
    const dir = tempDir();
    const file = join(dir, "input");
    writeFileSync(file, data);
    const script = `
      const fs = require("fs"); const data = fs.readFileSync(${JSON.stringify(file)});
      const slice = 256 * 1024; let at = 0;
      const next = () => {
        if (${opts.failAfter ?? -1} >= 0 && at >= ${opts.failAfter ?? -1}) process.exit(3);
        if (at >= data.length) return;
        const end = Math.min(at + slice, data.length);
        process.stdout.write(data.subarray(at, end), () => { at = end; setTimeout(next, ${opts.pauseMs ?? 5}); });
      };
      next();`;
    const pipe = await openPipe();
    if (!pipe) throw new Error("no pipe could be made (mkfifo missing?)");
    const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", pipe.write, "ignore"] });
    pipe.closeWrite();
    const done = new Promise<void>((resolve, reject) => child.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`dump tool exited with ${code}`)))));
    done.catch(() => undefined);
    return { pipe, done, child };
  }

  async function leftovers(store: Store): Promise<string[]> {
    const keys: string[] = [];
    for await (const o of store.list("")) keys.push(o.key);
    return keys;
  }

  for (const compression of ["zstd", "lz4"] as const) {
    it(`${compression}: the stored file is complete, its SHA-256 and sizes are right, and it decompresses to the dump`, async () => {
      const store = createLocalStore({ path: tempDir() });
      expect(store.stage).toBeTypeOf("function");
      // Larger than the compressors' blocks (lz4 4 MiB, zstd -T0 jobs of a few MiB) and written slowly, so the
      // file grows while it is read and hashed, and the reader catches up and waits several times.
      const data = Buffer.concat([sample(16 * 1024 * 1024), randomBytes(4 * 1024 * 1024), sample(4 * 1024 * 1024 + 5)]);
      const p = await producer(data, { pauseMs: 3 });
      const key = `db/x.sql.${compression}`;
      const r = await streamToStore({
        source: Readable.from([]), compression, stores: [store], key, signal: new AbortController().signal,
        native: { pipe: Promise.resolve(p.pipe), done: p.done },
      });
      const stored = await collect(await store.get(key));
      expect(r.storedBytes).toBe(stored.length);
      expect(r.sha256).toBe(createHash("sha256").update(stored).digest("hex"));
      expect(r.rawBytes).toBe(data.length);
      expect(r.outcomes.map((o) => o.ok)).toEqual([true]);
      const back = await collect(Readable.from([stored]).pipe(await createDecompressor(compression)));
      expect(back.equals(data)).toBe(true);
      expect(await leftovers(store)).toEqual([key]);
    });
  }

  it("a dump tool that fails halfway leaves nothing, not even a partial file", async () => {
    const store = createLocalStore({ path: tempDir() });
    const p = await producer(sample(4 * 1024 * 1024), { failAfter: 1024 * 1024 });
    await expect(streamToStore({
      source: Readable.from([]), compression: "zstd", stores: [store], key: "db/y.sql.zst", signal: new AbortController().signal,
      native: { pipe: Promise.resolve(p.pipe), done: p.done },
    })).rejects.toThrow(/dump tool exited with 3/);
    expect(await leftovers(store)).toEqual([]);
  });

  it("where no pipe could be made, the dump comes through node and is compressed there", async () => {
    const store = createLocalStore({ path: tempDir() });
    const data = sample(3 * 1024 * 1024);
    const r = await streamToStore({
      source: Readable.from([data]), compression: "zstd", stores: [store], key: "db/v.sql.zst", signal: new AbortController().signal,
      native: { pipe: Promise.resolve(undefined), done: Promise.resolve() },
    });
    expect(r.rawBytes).toBe(data.length);
    const stored = await collect(await store.get("db/v.sql.zst"));
    expect((await collect(Readable.from([stored]).pipe(await createDecompressor("zstd")))).equals(data)).toBe(true);
  });

  it("the pipe is a kernel pipe (not a socket) and leaves no FIFO behind", async () => {
    const before = readdirSync(tmpdir()).filter((f) => f.startsWith("dbkeep-pipe-"));
    const pipe = await openPipe();
    expect(pipe).toBeDefined();
    expect(fstatSync(pipe!.read).isFIFO()).toBe(true);
    expect(fstatSync(pipe!.write).isFIFO()).toBe(true);
    expect(readdirSync(tmpdir()).filter((f) => f.startsWith("dbkeep-pipe-"))).toEqual(before);
    pipe!.closeRead();
    pipe!.closeWrite();
    pipe!.closeWrite(); // idempotent
  });

  it("the pipe's buffer is enlarged to 1 MiB on Linux, as the kernel reports it (F_GETPIPE_SZ)", async () => {
    const pipe = await openPipe();
    expect(pipe?.bytes).toBe(PIPE_BYTES);
    // Asked of the pipe itself, through the write end this time: the size belongs to the pipe.
    const asked = spawnSync("perl", ["-e", "print fcntl(STDOUT, 1032, 0) + 0"], { stdio: ["ignore", pipe!.write, "inherit"] });
    expect(asked.status).toBe(0);
    const buf = Buffer.alloc(64);
    const size = buf.subarray(0, readSync(pipe!.read, buf, 0, buf.length, null)).toString();
    expect(Number(size)).toBe(PIPE_BYTES);
    pipe!.closeRead();
    pipe!.closeWrite();
  });

  it("without perl the pipe keeps the system's default size and works the same", async () => {
    const bin = tempDir();
    symlinkSync("/usr/bin/mkfifo", join(bin, "mkfifo"));
    const saved = process.env.PATH;
    process.env.PATH = bin;
    let pipe;
    try {
      pipe = await openPipe();
    } finally {
      process.env.PATH = saved;
    }
    expect(pipe).toBeDefined();
    expect(pipe!.bytes).toBeUndefined();
    writeSync(pipe!.write, "through the pipe");
    const buf = Buffer.alloc(64);
    expect(buf.subarray(0, readSync(pipe!.read, buf, 0, buf.length, null)).toString()).toBe("through the pipe");
    pipe!.closeRead();
    pipe!.closeWrite();
  });

  it("a store that cannot even stage the file stops the dump tool (its pipe has no reader) and leaves nothing", async () => {
    const store = createLocalStore({ path: tempDir() });
    const failing: Store = { ...store, stage: () => Promise.reject(new Error("cannot stage")) };
    const p = await producer(sample(4 * 1024 * 1024), { pauseMs: 1 });
    await expect(streamToStore({
      source: Readable.from([]), compression: "zstd", stores: [failing], key: "db/w.sql.zst", signal: new AbortController().signal,
      native: { pipe: Promise.resolve(p.pipe), done: p.done },
    })).rejects.toThrow(/cannot stage/);
    // Without a reader the tool's next write fails (EPIPE): it ends instead of waiting for ever.
    await expect(p.done).rejects.toThrow(/dump tool exited/);
    expect(await leftovers(store)).toEqual([]);
  });

  it("cancelling stops the compressor and the dump and leaves nothing", async () => {
    const store = createLocalStore({ path: tempDir() });
    const p = await producer(sample(8 * 1024 * 1024), { pauseMs: 50 });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error("stop")), 200);
    await expect(streamToStore({
      source: Readable.from([]), compression: "zstd", stores: [store], key: "db/z.sql.zst", signal: ac.signal,
      native: { pipe: Promise.resolve(p.pipe), done: p.done },
    })).rejects.toThrow(/cancelled|stopped|stop/);
    await p.done.catch(() => undefined);
    expect(p.child.exitCode !== 0 || p.child.signalCode !== null).toBe(true);
    expect(await leftovers(store)).toEqual([]);
  });
});
