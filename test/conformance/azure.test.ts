import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, BlobServiceClient, generateAccountSASQueryParameters, StorageSharedKeyCredential } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DbkeepError, isDbkeepError } from "../../src/core/errors.js";
import { createAzureStore, type AzureCredentials } from "../../src/stores/azure/index.js";
import { plugin } from "../../src/stores/azure/plugin.js";
import { azureStoreSchema } from "../../src/stores/azure/schema.js";
import type { Store } from "../../src/stores/store.js";
import { AZURITE_ACCOUNT, AZURITE_KEY, azuriteAvailable, startAzurite, type TestAzurite } from "../helpers/azurite-server.js";
import { storeConformance } from "./store.suite.js";

const available = azuriteAvailable();
let azurite: TestAzurite | undefined;
let service: BlobServiceClient;

beforeAll(async () => {
  if (!available) return;
  azurite = await startAzurite();
  service = BlobServiceClient.fromConnectionString(azurite.connectionString);
}, 60_000);
afterAll(async () => {
  await azurite?.stop();
});

let n = 0;
async function freshContainer(): Promise<string> {
  const name = `c${Date.now().toString(36)}-${n++}`;
  await service.getContainerClient(name).create();
  return name;
}

async function makeStore(extra: Record<string, unknown> = {}, creds?: AzureCredentials): Promise<Store> {
  const container = await freshContainer();
  const opts = azureStoreSchema.parse({ type: "azure", container, prefix: "backups/prod", connection_string_env: "UNUSED", ...extra });
  return createAzureStore(opts, `azure:${container}`, creds ?? { connectionString: azurite!.connectionString });
}

/** A body that yields `size` bytes and then never ends: only an abort or an error stops a put of it. */
function endless(size: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent < size) {
        sent += 256 * 1024;
        this.push(randomBytes(256 * 1024));
      }
    },
  });
}

describe.skipIf(!available)("azure store (Azurite)", () => {
  // 200 MiB, the suite's default, runs in a few seconds against Azurite on this machine.
  // Pages of 7 instead of 1000: the paging of listings is checked with a few dozen blobs.
  storeConformance("azure", () => makeStore({ list_page_size: 7 }), { pageSize: 7 });

  it("ifAbsent is the service's decision: the commit carries If-None-Match: * and its refusal is ALREADY_EXISTS", async () => {
    const store = await makeStore({ block_size: "1MiB" });
    expect(store.atomicCreate).toBe(true);
    await store.put("c/k.bin", Readable.from([Buffer.alloc(3 * 1024 * 1024, 1)]), { ifAbsent: true });
    const err = (await store.put("c/k.bin", Readable.from([Buffer.alloc(2 * 1024 * 1024, 2)]), { ifAbsent: true }).catch((e: unknown) => e)) as DbkeepError;
    expect(isDbkeepError(err, "ALREADY_EXISTS")).toBe(true);
    // Refused by the service (the blob was not looked up first): Azurite answers as Azure does.
    expect((err.cause as { statusCode?: number }).statusCode).toBe(409);
    expect((err.cause as { code?: string }).code).toBe("BlobAlreadyExists");
    expect((await store.stat("c/k.bin"))?.size).toBe(3 * 1024 * 1024);
  });

  it("an aborted upload commits nothing: no blob, no committed block list, a previous blob intact", async () => {
    const store = await makeStore({ block_size: "1MiB" });
    const containerName = store.name.slice("azure:".length);
    const blob = service.getContainerClient(containerName).getBlockBlobClient("backups/prod/abort/x.bin");
    const ac = new AbortController();
    const body = endless(6 * 1024 * 1024);
    const put = store.put("abort/x.bin", body, { signal: ac.signal });
    // Abort once blocks were staged, so that the commit is what the abort prevents.
    for (let i = 0; i < 200; i++) {
      const staged = await blob.getBlockList("uncommitted").catch(() => undefined);
      if ((staged?.uncommittedBlocks?.length ?? 0) >= 2) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    ac.abort();
    await expect(put).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ABORTED"));
    const list = await blob.getBlockList("all");
    expect(list.uncommittedBlocks?.length ?? 0).toBeGreaterThanOrEqual(2);
    expect(list.committedBlocks ?? []).toEqual([]);
    await expect(blob.getProperties()).rejects.toMatchObject({ statusCode: 404 });
    expect(await store.stat("abort/x.bin")).toBeUndefined();

    // Over an existing blob: the abort leaves the previous content as it was.
    await store.put("abort/y.bin", Readable.from([Buffer.from("previous")]));
    const ac2 = new AbortController();
    const put2 = store.put("abort/y.bin", endless(4 * 1024 * 1024), { signal: ac2.signal });
    setTimeout(() => ac2.abort(), 100);
    await expect(put2).rejects.toSatisfy((e: unknown) => isDbkeepError(e, "ABORTED"));
    const back: Buffer[] = [];
    for await (const c of await store.get("abort/y.bin")) back.push(c as Buffer);
    expect(Buffer.concat(back).toString()).toBe("previous");
    await store.close();
  });

  it("a wrong account key fails with one line and a hint, without the key, and is not retried", async () => {
    const wrongKey = randomBytes(64).toString("base64");
    const container = await freshContainer();
    const store = createAzureStore(azureStoreSchema.parse({ type: "azure", container, account: AZURITE_ACCOUNT, endpoint: azurite!.endpoint, account_key_env: "K" }), "azure:bad", { accountKey: wrongKey });
    const err = await store.put("x.bin", Readable.from([Buffer.from("x")])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DbkeepError);
    const e = err as DbkeepError;
    expect(e.message).toMatch(/^\[store:azure:bad\] upload of x\.bin failed: access denied \(\w+\)/);
    expect(e.message).not.toContain("\n");
    expect(e.hint).toMatch(/account_key/);
    expect(e.retryable).toBe(false);
    for (const text of [e.message, e.hint ?? ""]) {
      expect(text).not.toContain(wrongKey);
      expect(text).not.toContain(AZURITE_KEY);
    }
    const listErr = await (async () => {
      for await (const _ of store.list("")) void _;
    })().catch((x: unknown) => x);
    expect((listErr as DbkeepError).message).toMatch(/access denied/);
  });

  it("works with a SAS token and an endpoint, lists across pages, deletes several keys at once, and sets the access tier", async () => {
    const container = await freshContainer();
    const sas = generateAccountSASQueryParameters(
      {
        expiresOn: new Date(Date.now() + 3600_000),
        permissions: AccountSASPermissions.parse("rwdlac"),
        resourceTypes: AccountSASResourceTypes.parse("sco").toString(),
        services: AccountSASServices.parse("b").toString(),
      },
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
    ).toString();
    const store = createAzureStore(azureStoreSchema.parse({ type: "azure", container, endpoint: azurite!.endpoint, sas_token_env: "S", list_page_size: 2, access_tier: "Cool" }), "azure:sas", { sasToken: sas });
    const keys = ["p/1", "p/2", "p/3", "p/4", "p/5"];
    for (const k of keys) await store.put(k, Readable.from([Buffer.from(k)]));
    const listed: string[] = [];
    for await (const o of store.list("p/")) listed.push(o.key);
    expect(listed.sort()).toEqual(keys);
    const props = await service.getContainerClient(container).getBlobClient("p/1").getProperties();
    expect(props.accessTier).toBe("Cool");
    await store.delete([...keys, "p/missing"]);
    const after: string[] = [];
    for await (const o of store.list("p/")) after.push(o.key);
    expect(after).toEqual([]);
  });

  it("a missing container and an unreachable endpoint are reported clearly; only the latter is retryable", async () => {
    const store = createAzureStore(azureStoreSchema.parse({ type: "azure", container: "no-such-container", connection_string_env: "X" }), "azure:nc", { connectionString: azurite!.connectionString });
    const e1 = (await store.put("a", Readable.from([Buffer.from("a")])).catch((e: unknown) => e)) as DbkeepError;
    expect(e1.message).toMatch(/container "no-such-container" .* does not exist/);
    expect(e1.hint).toMatch(/az storage container create/);
    expect(e1.retryable).toBe(false);
    const e2 = (await store.get("a").catch((e: unknown) => e)) as DbkeepError;
    expect(e2.code).toBe("STORE_FAILED");

    const dead = createAzureStore(
      azureStoreSchema.parse({ type: "azure", container: "c11", account: AZURITE_ACCOUNT, endpoint: "http://127.0.0.1:9/devstoreaccount1", account_key_env: "K", max_attempts: 1 }),
      "azure:dead",
      { accountKey: AZURITE_KEY },
    );
    const e3 = (await dead.stat("a").catch((e: unknown) => e)) as DbkeepError;
    expect(e3.code).toBe("STORE_FAILED");
    expect(e3.retryable).toBe(true);
    expect(e3.hint).toMatch(/reachable/);
  });
});

describe("azure store options", () => {
  it("needs exactly one way to authenticate, and account with account_key", () => {
    const ok = plugin.schema.safeParse({ type: "azure", container: "backups", account: "acct", account_key_env: "AZ_KEY", block_size: "16MiB", access_tier: "Cool" });
    expect(ok.success).toBe(true);
    const issues = (o: Record<string, unknown>) => {
      const r = plugin.schema.safeParse({ type: "azure", container: "backups", ...o });
      return r.success ? [] : r.error.issues.map((i) => i.message);
    };
    expect(issues({})).toEqual([expect.stringMatching(/give connection_string, account \+ account_key, or sas_token/)]);
    expect(issues({ connection_string_env: "A", sas_token_env: "B", account: "x" })).toContainEqual(expect.stringMatching(/give only one of/));
    expect(issues({ account_key_env: "A" })).toContainEqual(expect.stringMatching(/account_key needs account/));
    expect(issues({ sas_token_env: "A" })).toContainEqual(expect.stringMatching(/sas_token needs account or endpoint/));
    expect(issues({ sas_token_env: "A", account: "x", block_size: "1KiB" })).toContainEqual(expect.stringMatching(/block_size must be/));
    expect(plugin.secrets).toEqual(["connection_string", "account_key", "sas_token"]);
  });
});
