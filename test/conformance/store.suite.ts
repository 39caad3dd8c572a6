import { createHash } from "node:crypto";
import { writeSync } from "node:fs";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isDbkeepError } from "../../src/core/errors.js";
import type { Store, StoreObject } from "../../src/stores/store.js";

/** Deterministic pseudo-random bytes, generated as they are read: nothing is held in memory. */
function generated(size: number, seed = 1): { stream: Readable; sha256: Promise<string> } {
  const hash = createHash("sha256");
  let left = size;
  let x = seed;
  let resolve!: (s: string) => void;
  const sha256 = new Promise<string>((r) => (resolve = r));
  const stream = new Readable({
    read() {
      if (left === 0) {
        resolve(hash.digest("hex"));
        this.push(null);
        return;
      }
      const n = Math.min(left, 256 * 1024);
      const buf = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) {
        if (i % 4 === 0) x = (x * 1664525 + 1013904223) >>> 0;
        buf[i] = (x >>> ((i % 4) * 8)) & 0xff;
      }
      hash.update(buf);
      left -= n;
      this.push(buf);
    },
  });
  return { stream, sha256 };
}

async function sha256Of(r: Readable): Promise<{ sha256: string; bytes: number }> {
  const h = createHash("sha256");
  let bytes = 0;
  for await (const c of r) {
    h.update(c as Buffer);
    bytes += (c as Buffer).length;
  }
  return { sha256: h.digest("hex"), bytes };
}

async function listAll(store: Store, prefix: string): Promise<StoreObject[]> {
  const out: StoreObject[] = [];
  for await (const o of store.list(prefix)) out.push(o);
  return out;
}

/**
 * The contract every Store must meet (see src/stores/store.ts). A store's own test file is a few lines that call
 * this with a factory for a fresh, empty store.
 */
export interface ConformanceOptions {
  /** Size of the memory-bounded roundtrip (200 MiB by default). */
  bigBytes?: number;
  /** The store offers stage() (files a compressor writes itself), which is then held to its contract. */
  staged?: boolean;
  /**
   * The page size of the store's listings as `make` configures it, for stores that page: list() is then checked
   * over more objects than two pages hold.
   */
  pageSize?: number;
  /** False for a test server that cannot take concurrent writes of one key (s3rver writes objects in place). */
  sameKeyConcurrency?: boolean;
}

export function storeConformance(name: string, make: () => Promise<Store>, opts: ConformanceOptions = {}): void {
  describe(`store conformance: ${name}`, () => {
    let store: Store;
    beforeAll(async () => {
      store = await make();
    });
    afterAll(async () => {
      await store?.close();
    });

    for (const size of [0, 1, 5 * 1024 * 1024 + 1]) {
      it(`roundtrips a ${size}-byte streamed body with equal SHA-256`, async () => {
        const body = generated(size, size + 7);
        const key = `rt/body-${size}.bin`;
        const put = await store.put(key, body.stream);
        expect(put.bytes).toBe(size);
        const back = await sha256Of(await store.get(key));
        expect(back).toEqual({ sha256: await body.sha256, bytes: size });
        expect((await store.stat(key))?.size).toBe(size);
      });
    }

    const big = opts.bigBytes ?? 200 * 1024 * 1024;
    it(`streams ${Math.round(big / 1024 / 1024)} MiB both ways with memory bounded`, async () => {
      const before = process.memoryUsage().rss;
      let peak = before;
      const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
      try {
        const body = generated(big, 99);
        await store.put("rt/big.bin", body.stream);
        const back = await sha256Of(await store.get("rt/big.bin"));
        expect(back).toEqual({ sha256: await body.sha256, bytes: big });
      } finally {
        clearInterval(timer);
      }
      expect(peak - before).toBeLessThan(96 * 1024 * 1024);
    });

    it("lists nested keys with spaces and unicode, each once, and only under the prefix", async () => {
      const keys = ["ls/a/x.sql.gz", "ls/a/sub dir/y z.dump", "ls/a/ünï cødé/本.tar", "ls/b/other.sql"];
      for (const k of keys) await store.put(k, Readable.from([Buffer.from(k)]));
      const listed = (await listAll(store, "ls/a/")).map((o) => o.key).sort();
      expect(listed).toEqual(keys.slice(0, 3).sort());
      const all = (await listAll(store, "ls/")).map((o) => o.key);
      expect(new Set(all).size).toBe(all.length);
      expect(all).toHaveLength(4);
      for (const o of await listAll(store, "ls/a/")) expect(o.size).toBe(Buffer.byteLength(o.key));
    });

    it("get of a missing key rejects with STORE_NOT_FOUND; stat gives undefined", async () => {
      await expect(store.get("missing/nothing.bin")).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "STORE_NOT_FOUND"));
      expect(await store.stat("missing/nothing.bin")).toBeUndefined();
    });

    it("delete is idempotent", async () => {
      await store.put("del/one.bin", Readable.from([Buffer.from("1")]));
      await store.delete(["del/one.bin", "del/never-existed.bin"]);
      await store.delete(["del/one.bin"]);
      expect(await store.stat("del/one.bin")).toBeUndefined();
      expect(await listAll(store, "del/")).toEqual([]);
    });

    it("a failing source leaves nothing visible, and a previous object under the key stays as it was", async () => {
      await store.put("fail/k.bin", Readable.from([Buffer.from("previous")]));
      const source = new Readable({ read() {} });
      source.push(Buffer.alloc(1024 * 1024, 1));
      setTimeout(() => source.destroy(new Error("source failed")), 30);
      await expect(store.put("fail/k.bin", source)).rejects.toThrow(/source failed/);
      const source2 = new Readable({ read() {} });
      source2.push(Buffer.alloc(1024, 1));
      setTimeout(() => source2.destroy(new Error("source failed")), 10);
      await expect(store.put("fail/new.bin", source2)).rejects.toThrow();
      expect((await sha256Of(await store.get("fail/k.bin"))).bytes).toBe(8);
      expect((await listAll(store, "fail/")).filter((o) => !o.partial).map((o) => o.key)).toEqual(["fail/k.bin"]);
    });

    it("an aborted put rejects with ABORTED and leaves nothing visible; a previous object under the key stays as it was", async () => {
      const ac = new AbortController();
      const body = generated(50 * 1024 * 1024, 3);
      setTimeout(() => ac.abort(), 10);
      await expect(store.put("abort/k.bin", body.stream, { signal: ac.signal })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ABORTED"));
      expect(await store.stat("abort/k.bin")).toBeUndefined();
      expect((await listAll(store, "abort/")).filter((o) => !o.partial)).toEqual([]);

      await store.put("abort/old.bin", Readable.from([Buffer.from("previous")]));
      const ac2 = new AbortController();
      setTimeout(() => ac2.abort(), 10);
      await expect(store.put("abort/old.bin", generated(50 * 1024 * 1024, 4).stream, { signal: ac2.signal })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ABORTED"));
      // A signal aborted before the put starts: nothing is sent at all.
      const gone = new AbortController();
      gone.abort();
      await expect(store.put("abort/never.bin", Readable.from([Buffer.from("x")]), { signal: gone.signal })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ABORTED"));
      const old = await sha256Of(await store.get("abort/old.bin"));
      expect(old).toEqual({ sha256: createHash("sha256").update("previous").digest("hex"), bytes: 8 });
      expect((await listAll(store, "abort/")).filter((o) => !o.partial).map((o) => o.key)).toEqual(["abort/old.bin"]);
    });

    // Bodies of one request and of several (past 8 MiB, the usual part, block and chunk size).
    for (const size of [3, 9 * 1024 * 1024 + 3]) {
      it(`put with ifAbsent creates a missing key, and on an existing key (${size} bytes) rejects with ALREADY_EXISTS leaving it unchanged`, async () => {
        const key = `absent/k-${size}.bin`;
        const first = generated(size, 11);
        await store.put(key, first.stream, { ifAbsent: true });
        const want = { sha256: await first.sha256, bytes: size };
        expect(await sha256Of(await store.get(key))).toEqual(want);
        const second = generated(size, 12);
        await expect(store.put(key, second.stream, { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
        expect(await sha256Of(await store.get(key))).toEqual(want);
        expect((await listAll(store, "absent/")).filter((o) => !o.partial && o.key === key)).toHaveLength(1);
        // Without ifAbsent the same key is replaced, as before.
        const third = generated(size, 13);
        await store.put(key, third.stream);
        expect(await sha256Of(await store.get(key))).toEqual({ sha256: await third.sha256, bytes: size });
      });
    }

    if (opts.sameKeyConcurrency !== false) it("concurrent puts of one key with ifAbsent: never a mixed object; with atomicCreate exactly one succeeds", async () => {
      const n = 5;
      const bodies = Array.from({ length: n }, (_, i) => Buffer.from(`writer ${i} `.repeat(1000 + i)));
      const results = await Promise.allSettled(bodies.map((b) => store.put("race/k.bin", Readable.from([b]), { ifAbsent: true })));
      const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
      for (const r of results) if (r.status === "rejected") expect(isDbkeepError(r.reason, "ALREADY_EXISTS"), String(r.reason)).toBe(true);
      if (won.length === 0) {
        // Only a store that checks after writing (restic) may refuse them all: nothing is then left under the key.
        expect(store.atomicCreate).toBeFalsy();
        expect(await store.stat("race/k.bin")).toBeUndefined();
        return;
      }
      const stored = await sha256Of(await store.get("race/k.bin"));
      const candidates = bodies.map((b) => ({ sha256: createHash("sha256").update(b).digest("hex"), bytes: b.length }));
      expect(candidates).toContainEqual(stored);
      // Read after the puts: a store that finds out whether the service decides (S3) knows it by now.
      if (store.atomicCreate) {
        expect(won).toHaveLength(1);
        expect(stored).toEqual(candidates[won[0]!]);
      }
      expect((await listAll(store, "race/")).filter((o) => !o.partial).map((o) => o.key)).toEqual(["race/k.bin"]);
    });

    if (opts.pageSize !== undefined) {
      const page = opts.pageSize;
      it(`lists every object once over more than two pages (${page} a page)`, async () => {
        const keys = Array.from({ length: 2 * page + 3 }, (_, i) => `page/${String(i).padStart(4, "0")}.bin`);
        await Promise.all(keys.map((k) => store.put(k, Readable.from([Buffer.from(k)]))));
        const listed = (await listAll(store, "page/")).filter((o) => !o.partial).map((o) => o.key);
        expect(listed.slice().sort()).toEqual(keys);
        expect(new Set(listed).size).toBe(listed.length);
        const sub = (await listAll(store, "page/001")).map((o) => o.key).sort();
        expect(sub).toEqual(keys.filter((k) => k.startsWith("page/001")));
      });
    }

    if (opts.staged) it("a staged file is invisible until commit, published by it, and removed by abort", async () => {
      if (!store.stage) throw new Error(`${name} offers no stage()`);
      await store.put("staged/k.bin", Readable.from([Buffer.from("previous")]));
      const s = await store.stage("staged/k.bin");
      writeSync(s.fd, Buffer.from("new content"));
      expect((await sha256Of(await store.get("staged/k.bin"))).bytes).toBe(8);
      await s.commit();
      expect((await store.stat("staged/k.bin"))?.size).toBe(11);
      const a = await store.stage("staged/gone.bin");
      writeSync(a.fd, Buffer.alloc(1000, 1));
      await a.abort();
      expect(await store.stat("staged/gone.bin")).toBeUndefined();
      expect((await listAll(store, "staged/")).map((o) => o.key)).toEqual(["staged/k.bin"]);

      // commit({ ifAbsent }) refuses an existing key, removes its file, and publishes a missing one.
      const dup = await store.stage("staged/k.bin");
      writeSync(dup.fd, Buffer.from("other"));
      await expect(dup.commit({ ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
      expect((await sha256Of(await store.get("staged/k.bin"))).bytes).toBe(11);
      const fresh = await store.stage("staged/new.bin");
      writeSync(fresh.fd, Buffer.from("fresh"));
      await fresh.commit({ ifAbsent: true });
      expect((await sha256Of(await store.get("staged/new.bin"))).bytes).toBe(5);
      expect((await listAll(store, "staged/")).map((o) => o.key).sort()).toEqual(["staged/k.bin", "staged/new.bin"]);
    });
  });
}
