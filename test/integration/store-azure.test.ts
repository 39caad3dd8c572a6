import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BlobServiceClient } from "@azure/storage-blob";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AZURITE_KEY, azuriteAvailable, startAzurite, type TestAzurite } from "../helpers/azurite-server.js";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";
import { sqliteContent, sqliteJobConfig } from "../helpers/sqlite.js";

const available = azuriteAvailable();

describe.skipIf(!available)("dbkeep with an azure store (Azurite)", () => {
  let azurite: TestAzurite;
  beforeAll(async () => {
    azurite = await startAzurite();
    await BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("backups").create();
  }, 60_000);
  afterAll(async () => {
    await azurite?.stop();
  });

  it("backs up a SQLite database into a container, lists it, restores it identical, and never prints the key", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = sqliteJobConfig(dir, {
      store: "cloud",
      stores: `  cloud:
    type: azure
    container: backups
    prefix: dbkeep/prod
    connection_string_env: TEST_AZURE_CONNECTION
    access_tier: Cool`,
    });
    const env = { TEST_AZURE_CONNECTION: azurite.connectionString };

    const b = dbkeep(["-c", cfg, "backup", "app-backup"], { env });
    expect(b.stderr).not.toMatch(/error/);
    expect(b.code).toBe(0);

    const list = dbkeep(["-c", cfg, "list", "app-backup", "--json"], { env });
    expect(list.code).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string; job: string }[] }).backups;
    expect(backups).toHaveLength(1);
    expect(backups[0]!.key).toMatch(/^app\/(app\/)?app-\d{8}-\d{6}\.db\.zst$/);

    // The objects are where the config says: container "backups", under dbkeep/prod/.
    const names: string[] = [];
    for await (const blob of BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("backups").listBlobsFlat()) names.push(blob.name);
    expect(names).toContain(`dbkeep/prod/${backups[0]!.key}`);
    expect(names.every((n) => n.startsWith("dbkeep/prod/app/"))).toBe(true);

    const r = dbkeep(["-c", cfg, "restore", "app-backup", "--to", "copy"], { env });
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));

    const check = dbkeep(["-c", cfg, "config", "check"], { env });
    expect(check.code).toBe(0);
    for (const out of [b, list, r, check]) {
      expect(out.stdout + out.stderr).not.toContain(AZURITE_KEY);
    }
  });

  it("a wrong account key fails the job with one line and a hint, exit 1, without the key", () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = join(dir, "dbkeep.yaml");
    const wrong = Buffer.alloc(64, 7).toString("base64");
    writeFileSync(
      cfg,
      `datasources:
  app: { engine: sqlite, path: ${join(dir, "app.db")} }
stores:
  cloud: { type: azure, container: backups, account: devstoreaccount1, endpoint: "${azurite.endpoint}", account_key_env: TEST_AZURE_KEY }
jobs:
  app-backup: { datasource: app, store: cloud }
`,
      { mode: 0o600 },
    );
    const res = dbkeep(["-c", cfg, "backup", "app-backup"], { env: { TEST_AZURE_KEY: wrong } });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/\[store:azure:cloud\] .*access denied/);
    expect(res.stderr).toMatch(/hint: .*account_key/);
    expect(res.stdout + res.stderr).not.toContain(wrong);
  });
});
