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

// Pages of 7 instead of 1000: the paging of listings is checked with a few dozen objects. s3rver writes an object in
// place (truncate, then write), so concurrent writes of one key can mix on it, which S3 itself never does: the
// concurrent-create check runs against the proxy below, which serialises writes of a key.
storeConformance("s3 (s3rver)", async () => s3Store({ list_page_size: 7 }), { pageSize: 7, sameKeyConcurrency: false });

describe("s3 with a service that honours If-None-Match (s3rver behind a proxy that adds it)", () => {
  let conditional: FaultProxy;
  beforeAll(async () => {
    conditional = await startFaultProxy(s3.endpoint, { rate: 0, conditionalWrites: true });
  });
  afterAll(async () => {
    await conditional?.stop();
  });

  storeConformance("s3 (If-None-Match honoured)", async () => s3Store({ endpoint: conditional.endpoint, part_size: "5MiB" }), { bigBytes: 16 * 1024 * 1024 });

  it("finds out once that the service decides, then sends If-None-Match: * and maps its 412 to ALREADY_EXISTS", async () => {
    const store = s3Store({ endpoint: conditional.endpoint, part_size: "5MiB" });
    expect(store.atomicCreate).toBe(false);
    const from = conditional.requests.length;
    await store.put("c/one.bin", Readable.from([Buffer.from("one")]), { ifAbsent: true });
    expect(store.atomicCreate).toBe(true);
    const probes = conditional.requests.slice(from).filter((r) => r.url.includes(".dbkeep-probe/conditional-"));
    expect(probes.some((r) => r.fault === "precondition-failed" && r.method === "PUT")).toBe(true);
    expect(probes.some((r) => r.fault === "precondition-failed" && r.method === "POST")).toBe(true);

    const again = conditional.requests.length;
    await expect(store.put("c/one.bin", Readable.from([Buffer.from("two")]), { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
    const big = body(6 * 1024 * 1024, 3);
    await expect(store.put("c/one.bin", big.stream, { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
    const seen = conditional.requests.slice(again);
    // No second probe, no HEAD before publishing: the service's answer decides.
    expect(seen.filter((r) => r.url.includes(".dbkeep-probe/"))).toEqual([]);
    expect(seen.filter((r) => r.method === "HEAD")).toEqual([]);
    const refused = seen.filter((r) => r.fault === "precondition-failed");
    expect(refused.map((r) => r.method)).toEqual(["PUT", "POST"]);
    for (const r of refused) expect(r.headers["if-none-match"]).toBe("*");
    expect((await sha256(await store.get("c/one.bin"))).bytes).toBe(3);
    await store.close();
  });
});

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

  it("s3rver ignores If-None-Match on writes: the store finds that out, does not claim atomicCreate and checks just before publishing", async () => {
    const store = s3Store({ endpoint: proxy.endpoint, part_size: "5MiB" });
    await store.put("plain/a.bin", Readable.from([Buffer.from("a")]), { ifAbsent: true });
    expect(store.atomicCreate).toBe(false);
    const from = proxy.requests.length;
    await expect(store.put("plain/a.bin", Readable.from([Buffer.from("b")]), { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
    await expect(store.put("plain/a.bin", body(6 * 1024 * 1024, 4).stream, { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
    await store.put("plain/b.bin", body(6 * 1024 * 1024, 5).stream, { ifAbsent: true });
    const seen = proxy.requests.slice(from);
    expect(seen.filter((r) => r.headers["if-none-match"])).toEqual([]);
    // The refused single PUT was never sent; the refused multipart upload was never completed.
    const writes = seen.filter((r) => (r.method === "PUT" && !r.url.includes("partNumber=")) || (r.method === "POST" && r.url.includes("uploadId=")));
    expect(writes.map((r) => decodeURIComponent(r.url).replace(/\?.*/, "").split("/").pop())).toEqual(["b.bin"]);
    expect((await sha256(await store.get("plain/a.bin"))).bytes).toBe(1);
    expect((await store.stat("plain/b.bin"))?.size).toBe(6 * 1024 * 1024);
    await store.close();
  });

  it("sends the Content-MD5 of every part and of a single PUT", async () => {
    const store = s3Store({ endpoint: proxy.endpoint, part_size: "5MiB" });
    const size = 12 * 1024 * 1024 + 7;
    const data = body(size, 21);
    const whole: Buffer[] = [];
    for await (const c of body(size, 21).stream) whole.push(c as Buffer);
    const all = Buffer.concat(whole);
    const from = proxy.requests.length;
    await store.put("md5/multi.bin", data.stream);
    await store.put("md5/single.bin", Readable.from([all.subarray(0, 1000)]));
    const md5 = (b: Buffer) => createHash("md5").update(b).digest("base64");
    const sent = proxy.requests.slice(from).filter((r) => r.method === "PUT").map((r) => r.headers["content-md5"]);
    const mib5 = 5 * 1024 * 1024;
    expect(sent).toEqual([md5(all.subarray(0, mib5)), md5(all.subarray(mib5, 2 * mib5)), md5(all.subarray(2 * mib5)), md5(all.subarray(0, 1000))]);
    await store.close();
  });

  it("s3rver checks no checksum: with verify_etag off, a byte changed on the way is stored (what the ETag comparison catches)", async () => {
    const flipping = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /unchecked\/x\.bin/, times: 1 } });
    try {
      const prefix = `unchecked-${randomBytes(3).toString("hex")}`;
      const store = s3Store({ prefix, endpoint: flipping.endpoint, verify_etag: false });
      const data = body(100_000, 31);
      await store.put("unchecked/x.bin", data.stream);
      expect(flipping.requests.filter((r) => r.fault === "flipped-byte")).toHaveLength(1);
      const stored = await sha256(await s3Store({ prefix }).get("unchecked/x.bin"));
      expect(stored.bytes).toBe(100_000);
      expect(stored.sha256).not.toBe(data.sha256);
      await store.close();
    } finally {
      await flipping.stop();
    }
  });

  it("a byte changed on the way in a single PUT: the body goes once more; changed twice, the put fails and nothing is stored", async () => {
    const once = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /flip\/once\.bin/, times: 1 } });
    const prefix = `flip-${randomBytes(3).toString("hex")}`;
    try {
      const store = s3Store({ prefix, endpoint: once.endpoint });
      const data = body(300_000, 41);
      expect((await store.put("flip/once.bin", data.stream)).bytes).toBe(300_000);
      expect(once.requests.filter((r) => r.fault === "flipped-byte")).toHaveLength(1);
      expect(await sha256(await s3Store({ prefix }).get("flip/once.bin"))).toEqual({ sha256: data.sha256, bytes: 300_000 });
      await store.close();
    } finally {
      await once.stop();
    }
    const twice = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /flip\/twice\.bin/, times: 2 } });
    try {
      const store = s3Store({ prefix, endpoint: twice.endpoint });
      await s3Store({ prefix }).put("flip/twice.bin", Readable.from([Buffer.from("previous")]));
      const err = (await store.put("flip/twice.bin", body(300_000, 42).stream).catch((e: unknown) => e)) as DbkeepError;
      expect(err.message).toMatch(/^\[store:s3:test\] upload of flip\/twice\.bin failed: the service's ETag [0-9a-f]{32} is not the MD5 [0-9a-f]{32} of the bytes sent, 2 times; the object was deleted$/);
      expect(err.retryable).toBe(true);
      expect(err.hint).toMatch(/verify_etag: false/);
      expect(twice.requests.filter((r) => r.fault === "flipped-byte")).toHaveLength(2);
      expect(await store.stat("flip/twice.bin")).toBeUndefined();
      expect((await listAll(store, "flip/")).map((o) => o.key)).toEqual(["flip/once.bin"]);
      await store.close();
    } finally {
      await twice.stop();
    }
  });

  it("a byte changed on the way in a part: the part goes once more; changed twice, the upload is aborted and a previous object stays", async () => {
    const prefix = `flipmp-${randomBytes(3).toString("hex")}`;
    const once = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /mp\/once\.bin\?.*partNumber=2/, times: 1 } });
    try {
      const store = s3Store({ prefix, endpoint: once.endpoint, part_size: "5MiB" });
      const data = body(12 * 1024 * 1024, 51);
      await store.put("mp/once.bin", data.stream);
      expect(once.requests.filter((r) => r.fault === "flipped-byte")).toHaveLength(1);
      expect(await sha256(await s3Store({ prefix }).get("mp/once.bin"))).toEqual({ sha256: data.sha256, bytes: 12 * 1024 * 1024 });
      await store.close();
    } finally {
      await once.stop();
    }
    const twice = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /mp\/twice\.bin\?.*partNumber=2/, times: 2 } });
    try {
      const store = s3Store({ prefix, endpoint: twice.endpoint, part_size: "5MiB" });
      await s3Store({ prefix }).put("mp/twice.bin", Readable.from([Buffer.from("previous")]));
      const err = (await store.put("mp/twice.bin", body(12 * 1024 * 1024, 52).stream).catch((e: unknown) => e)) as DbkeepError;
      expect(err.message).toMatch(/upload of mp\/twice\.bin failed: part 2 arrived changed 2 times \(the service's ETag [0-9a-f]{32} is not the MD5 [0-9a-f]{32} of the bytes sent\); nothing was stored$/);
      expect(err.retryable).toBe(true);
      // Never completed: the previous object is the one there.
      expect(twice.requests.filter((r) => r.method === "POST" && r.url.includes("uploadId="))).toEqual([]);
      expect(await sha256(await store.get("mp/twice.bin"))).toEqual({ sha256: createHash("sha256").update("previous").digest("hex"), bytes: 8 });
      await store.close();
    } finally {
      await twice.stop();
    }
  });

  it("a service that checks Content-MD5 answers BadDigest: the part goes once more; refused twice, the put fails", async () => {
    const prefix = `bad-${randomBytes(3).toString("hex")}`;
    const checking = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /bad\/one\.bin/, times: 2, checkMd5: true } });
    try {
      const store = s3Store({ prefix, endpoint: checking.endpoint, part_size: "5MiB", max_attempts: 1 });
      const err = (await store.put("bad/one.bin", body(1000, 61).stream).catch((e: unknown) => e)) as DbkeepError;
      expect(err.message).toMatch(/upload of bad\/one\.bin failed: the body arrived changed 2 times \(the service answered BadDigest\); nothing was stored$/);
      expect(err.retryable).toBe(true);
      expect(await store.stat("bad/one.bin")).toBeUndefined();
      expect(checking.requests.filter((r) => r.fault === "flipped-byte")).toHaveLength(2);
      await store.close();
    } finally {
      await checking.stop();
    }
    const once = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /bad\/mp\.bin\?.*partNumber=1/, times: 1, checkMd5: true } });
    try {
      const store = s3Store({ prefix, endpoint: once.endpoint, part_size: "5MiB", max_attempts: 1 });
      const data = body(7 * 1024 * 1024, 62);
      await store.put("bad/mp.bin", data.stream);
      expect(once.requests.filter((r) => r.fault === "flipped-byte")).toHaveLength(1);
      expect(await sha256(await store.get("bad/mp.bin"))).toEqual({ sha256: data.sha256, bytes: 7 * 1024 * 1024 });
      await store.close();
    } finally {
      await once.stop();
    }
  });

  it("a service whose part ETags are opaque (as R2's were): the completed object's ETag is compared, and a changed part fails the put", async () => {
    const prefix = `opaque-${randomBytes(3).toString("hex")}`;
    const warnings: string[] = [];
    const clean = await startFaultProxy(s3.endpoint, { rate: 0, opaquePartEtags: true });
    try {
      const store = s3Store({ prefix, endpoint: clean.endpoint, part_size: "5MiB" }, S3RVER_KEY, (m) => warnings.push(m));
      const data = body(11 * 1024 * 1024, 71);
      await store.put("opaque/ok.bin", data.stream);
      expect(await sha256(await store.get("opaque/ok.bin"))).toEqual({ sha256: data.sha256, bytes: 11 * 1024 * 1024 });
      await store.close();
    } finally {
      await clean.stop();
    }
    const flipping = await startFaultProxy(s3.endpoint, { rate: 0, opaquePartEtags: true, flipByteOf: { method: "PUT", path: /opaque\/bad\.bin\?.*partNumber=3/, times: 1 } });
    try {
      const store = s3Store({ prefix, endpoint: flipping.endpoint, part_size: "5MiB" }, S3RVER_KEY, (m) => warnings.push(m));
      const err = (await store.put("opaque/bad.bin", body(11 * 1024 * 1024, 72).stream).catch((e: unknown) => e)) as DbkeepError;
      expect(err.message).toMatch(/upload of opaque\/bad\.bin failed: the service's ETag [0-9a-f]{32}-3 of the completed object is not [0-9a-f]{32}-3, the MD5 of the 3 parts sent; the object was deleted$/);
      expect(err.retryable).toBe(true);
      expect(await store.stat("opaque/bad.bin")).toBeUndefined();
      expect((await listAll(store, "opaque/")).map((o) => o.key)).toEqual(["opaque/ok.bin"]);
      await store.close();
    } finally {
      await flipping.stop();
    }
    // Opaque part ETags alone are no reason to warn: the completed object's ETag was checked.
    expect(warnings.filter((w) => /ETag/.test(w))).toEqual([]);
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
