import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DbkeepError, isDbkeepError } from "../../src/core/errors.js";
import { createGcsStore } from "../../src/stores/gcs/index.js";
import { plugin } from "../../src/stores/gcs/plugin.js";
import { gcsStoreSchema } from "../../src/stores/gcs/schema.js";
import type { Store } from "../../src/stores/store.js";
import { startGcsFake, type GcsFake } from "../helpers/gcs-fake.js";
import { storeConformance } from "./store.suite.js";

// Verified against a local fake of the GCS JSON API (test/helpers/gcs-fake.ts), not against the real service.
const BUCKETS = Array.from({ length: 8 }, (_, i) => `bucket-${i}`);
let fake: GcsFake;
let next = 0;

beforeAll(async () => {
  fake = await startGcsFake({ buckets: BUCKETS, denied: ["denied-bucket"] });
});
afterAll(async () => {
  await fake?.stop();
});

function makeStore(extra: Record<string, unknown> = {}, bucket = BUCKETS[next++]!): Store {
  return createGcsStore(gcsStoreSchema.parse({ type: "gcs", bucket, prefix: "backups/prod", endpoint: fake.endpoint, chunk_size: "2MiB", ...extra }), `gcs:${bucket}`);
}

/** A body that yields `size` bytes and then never ends: only an abort or an error stops a put of it. */
function endless(size: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent < size) {
        sent += 256 * 1024;
        this.push(Buffer.alloc(256 * 1024, sent % 251));
      }
    },
  });
}

// Against the fake the transfer costs are the test process's own (it serves in-process), so 32 MiB keeps it fast.
storeConformance("gcs (local fake of the JSON API)", async () => makeStore({ list_page_size: 7 }), { bigBytes: 32 * 1024 * 1024, pageSize: 7 });

describe("gcs store specifics (local fake of the JSON API)", () => {
  it("uploads in chunks: nothing is visible before the final one, and an aborted upload's session is cancelled", async () => {
    const store = makeStore();
    const bucket = store.name.slice("gcs:".length);
    const before = fake.sessions();
    const ac = new AbortController();
    const put = store.put("abort/x.bin", endless(5 * 1024 * 1024), { signal: ac.signal });
    // Wait until the session exists and a chunk was sent, while the object is still absent.
    for (let i = 0; i < 200 && fake.sessions().receivedOpen < 4 * 1024 * 1024; i++) await new Promise((r) => setTimeout(r, 20));
    expect(fake.sessions().receivedOpen).toBe(4 * 1024 * 1024);
    expect(fake.objects(bucket)).toEqual([]);
    ac.abort();
    await expect(put).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ABORTED"));
    const after = fake.sessions();
    expect(after.opened).toBe(before.opened + 1);
    expect(after.cancelled).toBe(before.cancelled + 1);
    expect(after.open).toBe(before.open);
    expect(fake.objects(bucket)).toEqual([]);
    expect(await store.stat("abort/x.bin")).toBeUndefined();
  });

  it("a failing source cancels its session too, and lists page by page", async () => {
    const store = makeStore({ list_page_size: 2 });
    const before = fake.sessions();
    const src = endless(3 * 1024 * 1024);
    setTimeout(() => src.destroy(new Error("dump failed")), 100);
    await expect(store.put("f/x.bin", src)).rejects.toThrow(/dump failed/);
    expect(fake.sessions().cancelled).toBe(before.cancelled + 1);
    const keys = ["p/1", "p/2", "p/3", "p/4", "p/5"];
    for (const k of keys) await store.put(k, Readable.from([Buffer.from(k)]));
    const listed: string[] = [];
    for await (const o of store.list("p/")) listed.push(o.key);
    expect(listed.sort()).toEqual(keys);
  });

  it("ifAbsent sends ifGenerationMatch=0: an upload whose name was taken while it ran fails when it completes, and its object never appears", async () => {
    const slow = makeStore();
    const bucket = slow.name.slice("gcs:".length);
    const fast = makeStore({}, bucket);
    expect(slow.atomicCreate).toBe(true);
    const src = new Readable({ read() {} });
    src.push(Buffer.alloc(3 * 1024 * 1024, 7));
    const before = fake.sessions();
    const put = slow.put("race/k.bin", src, { ifAbsent: true });
    for (let i = 0; i < 200 && fake.sessions().receivedOpen - before.receivedOpen < 2 * 1024 * 1024; i++) await new Promise((r) => setTimeout(r, 20));
    expect(fake.sessions().open).toBe(before.open + 1);
    // The name is free when the session opens; another upload takes it meanwhile.
    await fast.put("race/k.bin", Readable.from([Buffer.from("the winner")]), { ifAbsent: true });
    src.push(Buffer.alloc(1024, 8));
    src.push(null);
    await expect(put).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
    const back: Buffer[] = [];
    for await (const c of await fast.get("race/k.bin")) back.push(c as Buffer);
    expect(Buffer.concat(back).toString()).toBe("the winner");
    expect(fake.objects(bucket)).toEqual(["backups/prod/race/k.bin"]);
    expect(fake.sessions().open).toBe(before.open);
    // The empty body takes the other path (one multipart request): refused at once.
    await expect(slow.put("race/k.bin", Readable.from([]), { ifAbsent: true })).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ALREADY_EXISTS"));
  });

  it("access denied is one line with a hint; an unreachable endpoint is retryable; a missing bucket says so", async () => {
    const denied = makeStore({}, "denied-bucket");
    const e1 = (await denied.put("x.bin", Readable.from([Buffer.from("x")])).catch((e: unknown) => e)) as DbkeepError;
    expect(e1).toBeInstanceOf(DbkeepError);
    expect(e1.message).toMatch(/^\[store:gcs:denied-bucket\] upload of x\.bin failed: access denied to bucket "denied-bucket" .*\(HTTP 403\)/);
    expect(e1.message).not.toContain("\n");
    expect(e1.hint).toMatch(/credentials_file/);
    expect(e1.retryable).toBe(false);
    const e2 = (await denied.stat("x.bin").catch((e: unknown) => e)) as DbkeepError;
    expect(e2.message).toMatch(/access denied/);

    const missing = makeStore({}, "no-such-bucket");
    const e3 = (await missing.get("x.bin").catch((e: unknown) => e)) as DbkeepError;
    expect(e3.code).toBe("STORE_FAILED");
    expect(e3.message).toMatch(/bucket "no-such-bucket" .*does not exist/);

    const dead = createGcsStore(gcsStoreSchema.parse({ type: "gcs", bucket: "b-1", endpoint: "http://127.0.0.1:9", max_attempts: 1 }), "gcs:dead");
    const e4 = (await dead.stat("x").catch((e: unknown) => e)) as DbkeepError;
    expect(e4.code).toBe("STORE_FAILED");
    expect(e4.retryable).toBe(true);
    expect(e4.hint).toMatch(/reachable/);
  });

  it("options: one credential source, chunk_size a multiple of 256KiB", () => {
    const issues = (o: Record<string, unknown>) => {
      const r = plugin.schema.safeParse({ type: "gcs", bucket: "backups", ...o });
      return r.success ? [] : r.error.issues.map((i) => i.message);
    };
    expect(issues({ credentials_file: "/k.json", project_id: "p", chunk_size: "16MiB" })).toEqual([]);
    expect(issues({ credentials_json_env: "GCS_KEY" })).toEqual([]);
    expect(issues({ credentials_file: "/k.json", credentials_json_env: "GCS_KEY" })).toContainEqual(expect.stringMatching(/give only one of/));
    expect(issues({ chunk_size: "1000KB" })).toContainEqual(expect.stringMatching(/multiple of 256KiB/));
    expect(plugin.secrets).toEqual(["credentials_json"]);
  });
});
