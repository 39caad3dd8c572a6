import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { startGcsFake, type GcsFake } from "../helpers/gcs-fake.js";
import { sqliteContent, sqliteJobConfig } from "../helpers/sqlite.js";

// Against a local fake of the GCS JSON API (in this process, hence the asynchronous CLI runs), not the real service.
describe("dbkeep with a gcs store (local fake of the JSON API)", () => {
  let fake: GcsFake;
  beforeAll(async () => {
    fake = await startGcsFake({ buckets: ["backups"] });
  });
  afterAll(async () => {
    await fake?.stop();
  });

  it("backs up a SQLite database into a bucket, lists it and restores it identical", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = sqliteJobConfig(dir, {
      compression: "gzip",
      store: "cloud",
      stores: `  cloud: { type: gcs, bucket: backups, prefix: dbkeep/prod, endpoint: "${fake.endpoint}", project_id: test }`,
    });
    const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"]);
    expect(b.stderr).not.toMatch(/error/);
    expect(b.code).toBe(0);
    const list = await dbkeepAsync(["-c", cfg, "list", "app-backup", "--json"]);
    expect(list.code).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string }[] }).backups;
    expect(backups).toHaveLength(1);
    expect(fake.objects("backups")).toContain(`dbkeep/prod/${backups[0]!.key}`);
    expect(fake.objects("backups").every((n) => n.startsWith("dbkeep/prod/app/"))).toBe(true);
    const r = await dbkeepAsync(["-c", cfg, "restore", "app-backup", "--to", "copy"]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
  });
});
