import { spawnSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { rcloneEnv, startS3, type TestS3 } from "../helpers/s3-server.js";
import { sqliteContent, sqliteJobConfig } from "../helpers/sqlite.js";

/** What rclone (an independent S3 client) sees under `path` of the bucket: path -> size. */
function rcloneLs(s3: TestS3, path: string): Record<string, number> {
  const r = spawnSync("rclone", ["lsjson", "-R", "--files-only", `x:${s3.bucket}/${path}`], { env: rcloneEnv(s3.endpoint), encoding: "utf8" });
  expect(r.stderr).toBe("");
  return Object.fromEntries((JSON.parse(r.stdout) as { Path: string; Size: number }[]).map((o) => [o.Path, o.Size]));
}

function config(dir: string, endpoint: string, extra = "", prefix = "dbkeep/prod"): string {
  return sqliteJobConfig(dir, {
    store: "s3name",
    stores: `  s3name:
    type: s3
    endpoint: ${endpoint}
    bucket: dbkeep-test
    prefix: ${prefix}
    access_key_env: TEST_S3_ACCESS_KEY
    secret_key_env: TEST_S3_SECRET_KEY
${extra}`,
  });
}

describe("dbkeep with an s3 store (s3rver)", () => {
  let s3: TestS3;
  let proxy: FaultProxy;
  beforeAll(async () => {
    s3 = await startS3();
    proxy = await startFaultProxy(s3.endpoint, { rate: 0.25, seed: 7, faults: ["reset", "500", "503"] });
  });
  afterAll(async () => {
    await proxy?.stop();
    await s3?.stop();
  });

  it("backs up a SQLite database into a bucket, lists it and restores it identical; rclone sees the same objects", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = config(dir, s3.endpoint);
    const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"], s3.env);
    expect(b.stderr).not.toMatch(/error|warn/i);
    expect(b.code).toBe(0);
    const list = await dbkeepAsync(["-c", cfg, "list", "app-backup", "--json"], s3.env);
    expect(list.code).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string; stored_bytes?: number; size?: number }[] }).backups;
    expect(backups).toHaveLength(1);
    const seen = rcloneLs(s3, "dbkeep/prod");
    expect(Object.keys(seen)).toContain(backups[0]!.key);
    expect(Object.keys(seen).every((k) => k.startsWith("app/"))).toBe(true);
    expect(Object.keys(seen).some((k) => k.endsWith(".manifest.json"))).toBe(true);

    const r = await dbkeepAsync(["-c", cfg, "restore", "app-backup", "--to", "copy"], s3.env);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
  });

  it("completes a backup and a restore through an endpoint failing a quarter of its requests", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = config(dir, proxy.endpoint, "    max_attempts: 8\n");
    const from = proxy.requests.length;
    const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"], s3.env);
    expect(b.code, b.stderr).toBe(0);
    const r = await dbkeepAsync(["-c", cfg, "restore", "app-backup", "--to", "copy"], s3.env);
    expect(r.code, r.stderr).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
    const faults = proxy.requests.slice(from).filter((q) => q.fault);
    expect(faults.length).toBeGreaterThanOrEqual(3);
  });

  it("a byte changed on the way to a service that checks nothing fails the backup and lists nothing; a clean run then works", async () => {
    const flipping = await startFaultProxy(s3.endpoint, { rate: 0, flipByteOf: { method: "PUT", path: /\/dbkeep\/flip\//, times: 1000 } });
    try {
      const dir = tempDir();
      copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
      const cfg = config(dir, flipping.endpoint, "", "dbkeep/flip");
      const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"], s3.env);
      expect(b.code).toBe(1);
      expect(b.stderr).toMatch(/is not the MD5 [0-9a-f]{32} of the bytes sent, 2 times; the object was deleted/);
      expect(flipping.requests.filter((r) => r.fault === "flipped-byte").length).toBeGreaterThanOrEqual(2);
      const list = await dbkeepAsync(["-c", cfg, "list", "app-backup", "--json", "--all"], s3.env);
      expect((JSON.parse(list.stdout) as { backups: unknown[] }).backups).toEqual([]);
      // Nothing of the backup is in the bucket: no data object, no sidecar, no manifest.
      expect(Object.keys(rcloneLs(s3, "dbkeep/flip")).filter((k) => !k.endsWith(".dbkeep-last-run.json"))).toEqual([]);

      const direct = config(dir, s3.endpoint, "", "dbkeep/flip");
      const ok = await dbkeepAsync(["-c", direct, "backup", "app-backup"], s3.env);
      expect(ok.code, ok.stderr).toBe(0);
      const listed = await dbkeepAsync(["-c", direct, "list", "app-backup", "--json"], s3.env);
      expect((JSON.parse(listed.stdout) as { backups: unknown[] }).backups).toHaveLength(1);
      const r = await dbkeepAsync(["-c", direct, "restore", "app-backup", "--to", "copy"], s3.env);
      expect(r.code, r.stderr).toBe(0);
      expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
    } finally {
      await flipping.stop();
    }
  });

  it("a wrong access key fails with one line and a hint, without the secret", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = config(dir, s3.endpoint, "    max_attempts: 1\n");
    const secret = "Secret-Value-Never-Printed-1234";
    const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"], { TEST_S3_ACCESS_KEY: "NOTAKEY", TEST_S3_SECRET_KEY: secret });
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/InvalidAccessKeyId/);
    expect(b.stderr).toMatch(/hint: check the credentials from access_key\/secret_key \(TEST_S3_ACCESS_KEY, TEST_S3_SECRET_KEY\)/);
    expect(b.stdout + b.stderr).not.toContain(secret);
  });
});
