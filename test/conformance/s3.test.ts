import { spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isDbkeepError, type DbkeepError } from "../../src/core/errors.js";
import { Secret } from "../../src/core/redact.js";
import { createS3Store, type S3StoreConfig } from "../../src/stores/s3/index.js";
import { s3StoreSchema } from "../../src/stores/s3/plugin.js";
import type { Store, StoreObject } from "../../src/stores/store.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { rcloneEnv, S3RVER_KEY, startS3, type TestS3 } from "../helpers/s3-server.js";
import { storeConformance } from "./store.suite.js";

let s3: TestS3;
beforeAll(async () => {
  s3 = await startS3();
});
afterAll(async () => {
  await s3?.stop();
});

let n = 0;
function s3Store(o: Partial<S3StoreConfig> = {}, creds = S3RVER_KEY, warn?: (m: string) => void): Store {
  const opts = s3StoreSchema.parse({ type: "s3", bucket: s3.bucket, endpoint: s3.endpoint, prefix: `t${++n}-${randomBytes(3).toString("hex")}`, ...o });
  return createS3Store(opts, { name: "s3:test", accessKey: new Secret(creds.accessKeyId), secretKey: new Secret(creds.secretAccessKey), ...(warn ? { warn } : {}) });
}

async function listAll(store: Store, prefix = ""): Promise<StoreObject[]> {
  const out: StoreObject[] = [];
  for await (const o of store.list(prefix)) out.push(o);
  return out;
}

async function sha256(r: Readable): Promise<{ sha256: string; bytes: number }> {
  const h = createHash("sha256");
  let bytes = 0;
  for await (const c of r) {
    h.update(c as Buffer);
    bytes += (c as Buffer).length;
  }
  return { sha256: h.digest("hex"), bytes };
}

/** A body of `size` seeded bytes, made as it is read, and its SHA-256 (computed by a first pass). */
function body(size: number, seed: number): { stream: Readable; sha256: string } {
  function* chunks(): Generator<Buffer> {
    let x = seed;
    for (let off = 0; off < size; off += 1024 * 1024) {
      const b = Buffer.allocUnsafe(Math.min(1024 * 1024, size - off));
      for (let i = 0; i + 4 <= b.length; i += 4) {
        x = (x * 1664525 + 1013904223) >>> 0;
        b.writeUInt32LE(x, i);
      }
      b.fill(seed & 0xff, b.length - (b.length % 4));
      yield b;
    }
  }
  const h = createHash("sha256");
  for (const b of chunks()) h.update(b);
  return { stream: Readable.from(chunks()), sha256: h.digest("hex") };
}

storeConformance("s3 (s3rver)", async () => s3Store());

describe("s3 store specifics", () => {
  let proxy: FaultProxy;
  beforeAll(async () => {
    proxy = await startFaultProxy(s3.endpoint, { rate: 0 });
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it("writes objects an independent S3 client (rclone) reads with the same size and SHA-256", async () => {
    const prefix = `rclone-${randomBytes(3).toString("hex")}`;
    const store = s3Store({ prefix, part_size: "5MiB" });
    const multi = body(12 * 1024 * 1024 + 5, 11);
    const single = body(1000, 12);
    await store.put("db/app 1.sql.zst", multi.stream);
    await store.put("db/small.json", single.stream);
    const env = rcloneEnv(s3.endpoint);
    const ls = spawnSync("rclone", ["lsjson", "-R", "--files-only", `x:${s3.bucket}/${prefix}`], { env, encoding: "utf8" });
    expect(ls.stderr).toBe("");
    const listed = (JSON.parse(ls.stdout) as { Path: string; Size: number }[]).map((o) => [o.Path, o.Size]).sort();
    expect(listed).toEqual([["db/app 1.sql.zst", 12 * 1024 * 1024 + 5], ["db/small.json", 1000]]);
    for (const [key, want] of [["db/app 1.sql.zst", multi], ["db/small.json", single]] as const) {
      const cat = spawn("rclone", ["cat", `x:${s3.bucket}/${prefix}/${key}`], { env, stdio: ["ignore", "pipe", "inherit"] });
      const got = await sha256(cat.stdout);
      expect(got.sha256).toBe(want.sha256);
    }
    await store.close();
  });

  it("lists page by page (ListObjectsV2 continuation) and deletes in batches (DeleteObjects)", async () => {
    // Pages and batches of 7 instead of 1000: the same code paths with 25 objects instead of thousands.
    const store = s3Store({ endpoint: proxy.endpoint, list_page_size: 7 });
    const keys = Array.from({ length: 25 }, (_, i) => `many/${String(i).padStart(4, "0")}.bin`);
    await Promise.all(keys.map((k) => store.put(k, Readable.from([Buffer.from(k)]))));
    const from = proxy.requests.length;
    const listed = await listAll(store, "many/");
    expect(listed.map((o) => o.key).sort()).toEqual(keys);
    expect(listed.every((o) => o.size === 13 && !o.partial)).toBe(true);
    const lists = proxy.requests.slice(from).filter((r) => r.method === "GET" && r.url.includes("list-type=2"));
    const calls = [...new Map(lists.map((r) => [r.headers["amz-sdk-invocation-id"], r])).values()];
    expect(calls.length).toBeGreaterThanOrEqual(4);
    expect(calls.filter((r) => r.url.includes("continuation-token=")).length).toBe(calls.length - 1);
    expect((await listAll(store, "many/001")).map((o) => o.key).sort()).toEqual(keys.slice(10, 20));

    const before = proxy.requests.length;
    await store.delete([...keys, "many/never-was.bin"]);
    const deletes = proxy.requests.slice(before).filter((r) => r.method === "POST" && r.url.includes("delete"));
    // Calls, not attempts: a retried request (e.g. on a keep-alive socket the proxy just closed) keeps its invocation id.
    expect(new Set(deletes.map((r) => r.headers["amz-sdk-invocation-id"])).size).toBe(4); // 26 keys, 7 a call
    expect(await listAll(store, "many/")).toEqual([]);
    await store.close();
  });

  it("sends expected_bucket_owner, storage_class and sse on every request that takes them", async () => {
    const store = s3Store({ endpoint: proxy.endpoint, expected_bucket_owner: "123456789012", storage_class: "STANDARD_IA", sse: "AES256", part_size: "5MiB" });
    const from = proxy.requests.length;
    await store.put("owner/small.bin", Readable.from([Buffer.from("x")]));
    await store.put("owner/multi.bin", body(6 * 1024 * 1024, 5).stream);
    await sha256(await store.get("owner/multi.bin"));
    await store.stat("owner/small.bin");
    await listAll(store, "owner/");
    await store.delete(["owner/small.bin", "owner/multi.bin"]);
    const seen = proxy.requests.slice(from);
    expect(seen.length).toBeGreaterThanOrEqual(9);
    for (const r of seen) expect(r.headers["x-amz-expected-bucket-owner"], `${r.method} ${r.url}`).toBe("123456789012");
    // Object creation: the single PutObject and CreateMultipartUpload carry the storage class and encryption.
    const creates = seen.filter((r) => (r.method === "PUT" && !r.url.includes("uploadId=")) || (r.method === "POST" && r.url.includes("uploads")));
    expect(creates.length).toBe(2);
    for (const r of creates) {
      expect(r.headers["x-amz-storage-class"]).toBe("STANDARD_IA");
      expect(r.headers["x-amz-server-side-encryption"]).toBe("AES256");
    }
    await store.close();
  });

  // s3rver checks the access key id but not SigV4 signatures, so a wrong secret key cannot be refused here.
  it("wrong credentials give one line with a hint, never the secret", async () => {
    const secret = "WrongSecretValue-9f8e7d6c5b4a";
    for (const creds of [{ accessKeyId: "NOSUCHKEYID", secretAccessKey: secret }]) {
      const store = s3Store({ max_attempts: 1 }, creds);
      const err = (await store.put("creds/x.bin", Readable.from([Buffer.from("x")])).catch((e: unknown) => e)) as DbkeepError;
      expect(isDbkeepError(err, "STORE_FAILED")).toBe(true);
      expect(err.message).toMatch(/^\[store:s3:test\] upload of creds\/x.bin failed: InvalidAccessKeyId: /);
      expect(err.message).not.toContain("\n");
      expect(err.hint).toMatch(/check the credentials from access_key\/secret_key/);
      expect(`${err.message} ${err.hint} ${String(err.details)}`).not.toContain(secret);
      expect(err.retryable).toBe(false);
      await store.close();
    }
  });

  it("a missing bucket is named with a hint; an unreachable endpoint is retryable", async () => {
    const store = s3Store({ bucket: "no-such-bucket-here", max_attempts: 1 });
    const err = (await listAll(store).catch((e: unknown) => e)) as DbkeepError;
    expect(err.message).toMatch(/bucket no-such-bucket-here does not exist/);
    expect(err.hint).toMatch(/check bucket, endpoint and region/);
    await store.close();

    const down = await startFaultProxy(s3.endpoint, { rate: 0 });
    await down.stop();
    const gone = s3Store({ endpoint: down.endpoint, max_attempts: 2 });
    const e2 = (await gone.stat("x").catch((e: unknown) => e)) as DbkeepError;
    expect(isDbkeepError(e2, "STORE_FAILED")).toBe(true);
    expect(e2.retryable).toBe(true);
    expect(e2.hint).toMatch(/is reachable/);
    await gone.close();
  });

  it("5xx answers past max_attempts are flagged retryable", async () => {
    const failing = await startFaultProxy(s3.endpoint, { rate: 1, faults: ["503"] });
    try {
      const store = s3Store({ endpoint: failing.endpoint, max_attempts: 2 });
      const err = (await store.put("x/y.bin", Readable.from([Buffer.from("y")])).catch((e: unknown) => e)) as DbkeepError;
      expect(err.message).toMatch(/SlowDown/);
      expect(err.retryable).toBe(true);
      expect(failing.requests.length).toBe(2);
      await store.close();
    } finally {
      await failing.stop();
    }
  });

  it("a server that stores a single PUT short gets the body once more; twice short, the upload fails and nothing is left", async () => {
    const lossy = await startFaultProxy(s3.endpoint, { rate: 0, loseBodyOf: { method: "PUT", path: /lost\/once\.bin(\?|$)/, times: 1 } });
    try {
      const store = s3Store({ endpoint: lossy.endpoint });
      const put = await store.put("lost/once.bin", Readable.from([Buffer.from("twenty-five bytes of it!!")]));
      expect(put.bytes).toBe(25);
      expect(lossy.requests.filter((r) => r.fault === "lost-body")).toHaveLength(1);
      expect((await sha256(await store.get("lost/once.bin"))).bytes).toBe(25);
      await store.close();
    } finally {
      await lossy.stop();
    }
    const broken = await startFaultProxy(s3.endpoint, { rate: 0, loseBodyOf: { method: "PUT", path: /lost\/twice\.bin(\?|$)/, times: 2 } });
    try {
      const store = s3Store({ endpoint: broken.endpoint });
      const err = (await store.put("lost/twice.bin", Readable.from([Buffer.from("x".repeat(25))])).catch((e: unknown) => e)) as DbkeepError;
      expect(err.message).toMatch(/is 0 bytes on the server but 25 were sent; the object was deleted/);
      expect(err.retryable).toBe(true);
      expect(await store.stat("lost/twice.bin")).toBeUndefined();
      await store.close();
    } finally {
      await broken.stop();
    }
  });

  it("a 40 MiB multipart upload (5 MiB parts) through a proxy failing ~25% of requests completes intact", async () => {
    const faulty = await startFaultProxy(s3.endpoint, { rate: 0.25, seed: 42, faults: ["reset", "503", "500"] });
    try {
      const prefix = `faults-${randomBytes(3).toString("hex")}`;
      const store = s3Store({ prefix, endpoint: faulty.endpoint, part_size: "5MiB", upload_concurrency: 2, max_attempts: 6 });
      const data = body(40 * 1024 * 1024, 77);
      const put = await store.put("faults/big.bin", data.stream);
      expect(put.bytes).toBe(40 * 1024 * 1024);
      const faults = faulty.requests.filter((r) => r.fault);
      expect(faults.length).toBeGreaterThanOrEqual(2);
      expect(faults.length / faulty.requests.length).toBeGreaterThan(0.1);
      expect(faults.map((r) => r.fault)).toContain("reset");
      // Read back around the proxy, straight from the server.
      const direct = s3Store({ prefix });
      expect(await sha256(await direct.get("faults/big.bin"))).toEqual({ sha256: data.sha256, bytes: 40 * 1024 * 1024 });
      await store.close();
      await direct.close();
    } finally {
      await faulty.stop();
    }
  });
});
