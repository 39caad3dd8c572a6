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
/** `staged`: the store offers stage() (files a compressor writes itself), which is then held to its contract. */
export function storeConformance(name: string, make: () => Promise<Store>, opts: { bigBytes?: number; staged?: boolean } = {}): void {
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

    it("an aborted put leaves nothing visible", async () => {
      const ac = new AbortController();
      const body = generated(50 * 1024 * 1024, 3);
      setTimeout(() => ac.abort(), 10);
      await expect(store.put("abort/k.bin", body.stream, { signal: ac.signal })).rejects.toThrow();
      expect(await store.stat("abort/k.bin")).toBeUndefined();
      expect((await listAll(store, "abort/")).filter((o) => !o.partial)).toEqual([]);
    });

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
    });
  });
}
