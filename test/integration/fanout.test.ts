import { createHash } from "node:crypto";
import { copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { startS3, type TestS3 } from "../helpers/s3-server.js";
import { sqliteContent } from "../helpers/sqlite.js";

/** The one data file of the backup in a local store directory. */
function dataFile(storeDir: string): string {
  const files = readdirSync(join(storeDir, "app")).filter((f) => f.endsWith(".db.zst"));
  expect(files).toHaveLength(1);
  return join(storeDir, "app", files[0]!);
}

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

interface Status {
  stores: string[];
  backups: { id: string; in: Record<string, boolean> }[];
  missing: Record<string, number>;
}

/** Three stores: two local directories and an S3 bucket reached through a proxy that can be made to fail. */
function setup(proxy: FaultProxy, extra = "") {
  const dir = tempDir();
  copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
  const cfg = join(dir, "dbkeep.yaml");
  writeFileSync(
    cfg,
    `datasources:
  app: { engine: sqlite, path: ${join(dir, "app.db")}, compression: zstd }
  copy: { engine: sqlite, path: ${join(dir, "copy.db")} }
stores:
  local: { type: local, path: ${join(dir, "local")} }
  usb: { type: local, path: ${join(dir, "usb")} }
  cloud:
    type: s3
    endpoint: ${proxy.endpoint}
    bucket: dbkeep-test
    prefix: fanout-${Date.now()}-${Math.random().toString(36).slice(2)}
    access_key_env: TEST_S3_ACCESS_KEY
    secret_key_env: TEST_S3_SECRET_KEY
    max_attempts: 1
jobs:
  app-backup:
    datasource: app
    stores: [local, cloud, usb]
    verify: true
${extra}`,
    { mode: 0o600 },
  );
  return { dir, cfg };
}

describe("one backup to several stores at once", () => {
  let s3: TestS3;
  let proxy: FaultProxy;
  beforeAll(async () => {
    s3 = await startS3();
    proxy = await startFaultProxy(s3.endpoint, { rate: 0, seed: 3, faults: ["503"] });
  });
  afterAll(async () => {
    await proxy?.stop();
    await s3?.stop();
  });

  it("one store failing: the other two hold a complete, verified backup; status shows the gap; sync fills it, once", async () => {
    const { dir, cfg } = setup(proxy);
    const run = (args: string[]) => dbkeepAsync(["-c", cfg, ...args], s3.env);
    proxy.setRate(1);
    const b = await run(["backup", "app-backup", "--json"]);
    proxy.setRate(0);
    expect(b.code, b.stderr).toBe(1);
    const doc = JSON.parse(b.stdout) as { jobs: { ok: boolean; backup?: string; error?: string; hint?: string }[] };
    const job = doc.jobs[0]!;
    expect(job.ok).toBe(false);
    expect(job.error).toMatch(/is in local:local, local:usb but not in s3:cloud/);
    expect(job.hint).toMatch(/dbkeep sync app-backup/);
    const id = job.backup!;
    // Both local copies are complete: data, sidecar and manifest, and the data matches its sidecar.
    for (const store of ["local", "usb"]) {
      const data = dataFile(join(dir, store));
      expect(readFileSync(data + ".sha256", "utf8").split(/\s+/)[0]).toBe(sha256(data));
      expect(readdirSync(join(dir, store, "app")).some((f) => f === `${id}.manifest.json`)).toBe(true);
    }

    const st = await run(["status", "app-backup", "--json"]);
    expect(st.code, st.stderr).toBe(0);
    const status = JSON.parse(st.stdout) as Status;
    expect(status.missing).toEqual({ "local:local": 0, "s3:cloud": 1, "local:usb": 0 });
    expect(status.backups).toEqual([{ id, in: { "local:local": true, "s3:cloud": false, "local:usb": true }, started_at: expect.any(String), stored_bytes: expect.any(Number) }]);
    const human = await run(["status", "app-backup"]);
    expect(human.stdout).toMatch(/MISSING/);
    expect(human.stdout).toMatch(/s3:cloud is missing 1: dbkeep sync app-backup copies them/);

    const s1 = await run(["sync", "app-backup", "--json"]);
    expect(s1.code, s1.stderr).toBe(0);
    expect((JSON.parse(s1.stdout) as { copied: { id: string; from: string; to: string }[] }).copied).toEqual([{ id, from: "local:local", to: "s3:cloud", bytes: expect.any(Number) }]);
    const s2 = await run(["sync", "app-backup", "--json"]);
    expect((JSON.parse(s2.stdout) as { copied: unknown[] }).copied).toEqual([]);
    expect((JSON.parse((await run(["status", "app-backup", "--json"])).stdout) as Status).missing).toEqual({ "local:local": 0, "s3:cloud": 0, "local:usb": 0 });

    // The copy in the cloud restores to the same database.
    const r = await run(["restore", "app-backup", "--store", "cloud", "--to", "copy"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/from s3:cloud/);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));

    // A backup whose data object is gone from a store is damaged there, not "ok": status and list say so with exit
    // code 1, and sync replaces it from a store that holds it intact.
    rmSync(dataFile(join(dir, "usb")));
    const damaged = await run(["status", "app-backup", "--json"]);
    expect(damaged.code).toBe(1);
    const seen = JSON.parse(damaged.stdout) as Status & { backups: { damaged?: Record<string, string> }[] };
    expect(seen.missing).toEqual({ "local:local": 0, "s3:cloud": 0, "local:usb": 1 });
    expect(seen.backups[0]!.damaged).toEqual({ "local:usb": expect.stringMatching(/\.db\.zst is missing/) });
    const all = await run(["list", "app-backup", "--store", "usb", "--all"]);
    expect(all.code).toBe(1);
    expect(all.stdout).toMatch(/DAMAGED .*\.db\.zst is missing/);
    const refill = JSON.parse((await run(["sync", "app-backup", "--json"])).stdout) as { copied: { to: string }[] };
    expect(refill.copied.map((x) => x.to)).toEqual(["local:usb"]);
    expect(sha256(dataFile(join(dir, "usb")))).toBe(sha256(dataFile(join(dir, "local"))));
  });

  it("require: any succeeds with a warning; a retry copies the backup to the store that failed", async () => {
    const { cfg } = setup(proxy, "    require: any\n");
    proxy.setRate(1);
    const b = await dbkeepAsync(["-c", cfg, "--log-format", "json", "backup", "app-backup"], s3.env);
    proxy.setRate(0);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toMatch(/but not in s3:cloud/);

    // With retries, the store that failed gets the same backup copied from one that has it.
    const { cfg: cfg2 } = setup(proxy, "    retry: { max_attempts: 3, delay: 1s }\n");
    const from = proxy.requests.length;
    proxy.setRate(1);
    const pending = dbkeepAsync(["-c", cfg2, "--log-format", "json", "backup", "app-backup", "--json"], s3.env);
    // Heal the store as soon as the first attempt has failed there; the retry comes a second later.
    while (!proxy.requests.slice(from).some((q) => q.fault)) await new Promise((res) => setTimeout(res, 20));
    proxy.setRate(0);
    const b2 = await pending;
    expect(b2.code, b2.stderr).toBe(0);
    expect(b2.stderr).toMatch(/copying backup .* to s3:cloud again/);
    const st = JSON.parse((await dbkeepAsync(["-c", cfg2, "status", "app-backup", "--json"], s3.env)).stdout) as Status;
    expect(st.missing).toEqual({ "local:local": 0, "s3:cloud": 0, "local:usb": 0 });
  });

  it("restore falls back to the next store when the first holds a damaged copy; download verifies", async () => {
    const { dir, cfg } = setup(proxy);
    const run = (args: string[]) => dbkeepAsync(["-c", cfg, ...args], s3.env);
    expect((await run(["backup", "app-backup"])).code).toBe(0);
    const data = dataFile(join(dir, "local"));
    const bytes = readFileSync(data);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    writeFileSync(data, bytes);

    const r = await run(["restore", "app-backup", "--to", "copy"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/the copy in local:local is damaged; trying the next store/);
    expect(r.stdout).toMatch(/from s3:cloud/);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));

    // download from the damaged store: refused, and no file left behind.
    const out = join(dir, "out.db.zst");
    const bad = await run(["download", "app-backup", "--store", "local", "-o", out]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/SHA-256 of .* does not match/);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.includes("partial"))).toEqual([]);
    const good = await run(["download", "app-backup", "--store", "usb", "-o", out]);
    expect(good.code, good.stderr).toBe(0);
    expect(sha256(out)).toBe(readFileSync(dataFile(join(dir, "usb")) + ".sha256", "utf8").split(/\s+/)[0]);
    const plain = join(dir, "plain.db");
    const ex = await run(["download", "app-backup", "--store", "cloud", "--extract", "-o", plain]);
    expect(ex.code, ex.stderr).toBe(0);
    expect(readFileSync(plain).subarray(0, 15).toString()).toBe("SQLite format 3");
  });

  it("stores check probes each store and names the one that fails", async () => {
    const { cfg } = setup(proxy);
    const ok = await dbkeepAsync(["-c", cfg, "stores", "check"], s3.env);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout.match(/ ok /g)).toHaveLength(3);
    proxy.setRate(1);
    const bad = await dbkeepAsync(["-c", cfg, "stores", "check", "--json"], s3.env);
    proxy.setRate(0);
    expect(bad.code).toBe(1);
    const doc = JSON.parse(bad.stdout) as { ok: boolean; stores: { store: string; ok: boolean; steps: { step: string; ok: boolean; error?: string }[] }[] };
    expect(doc.ok).toBe(false);
    expect(doc.stores.map((s) => [s.store, s.ok])).toEqual([["local", true], ["usb", true], ["cloud", false]]);
    expect(doc.stores[2]!.steps[0]).toMatchObject({ step: "write", ok: false });
  });

  it("one-off mode: --to twice writes one dump to a directory and an s3:// URL; both list and restore", async () => {
    const dir = tempDir();
    const src = join(dir, "app.db");
    copyFileSync(join(ROOT, "examples/app.db"), src);
    const url = `s3://dbkeep-test/oneoff-${Date.now()}?endpoint=${encodeURIComponent(s3.endpoint)}`;
    const env = { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" };
    const b = await dbkeepAsync(["backup", `sqlite:${src}`, "--to", join(dir, "backups"), "--to", url, "--compression", "zstd"], env);
    expect(b.code, b.stderr).toBe(0);
    const l = await dbkeepAsync(["list", url, "--json"], env);
    expect(l.code, l.stderr).toBe(0);
    const listed = (JSON.parse(l.stdout) as { backups: { id: string }[] }).backups;
    expect(listed).toHaveLength(1);
    const local = JSON.parse((await dbkeepAsync(["list", join(dir, "backups"), "--json"])).stdout) as { backups: { id: string; sha256: string }[] };
    expect(local.backups.map((x) => x.id)).toEqual(listed.map((x) => x.id));
    const r = await dbkeepAsync(["restore", url, "latest", "--to", `sqlite:${join(dir, "copy.db")}`], env);
    expect(r.code, r.stderr).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(src));
    const bad = await dbkeepAsync(["list", "s3://dbkeep-test/x?nonsense=1"], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/invalid s3 store URL .*unknown parameter "nonsense"/);
  });

  it("status and sync follow each store's own retention: a backup the store prunes is not missing there", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  app: { engine: sqlite, path: ${join(dir, "app.db")} }
stores:
  local: { type: local, path: ${join(dir, "local")} }
  usb: { type: local, path: ${join(dir, "usb")} }
jobs:
  app-backup:
    datasource: app
    stores: [local, usb]
    retention: { keep_last: 5, stores: { usb: { keep_last: 1 } } }
`,
      { mode: 0o600 },
    );
    const run = (args: string[]) => dbkeepAsync(["-c", cfg, ...args]);
    expect((await run(["backup", "app-backup"])).code).toBe(0);
    await new Promise((res) => setTimeout(res, 1100));
    expect((await run(["backup", "app-backup"])).code).toBe(0);
    expect((await run(["prune", "app-backup"])).code).toBe(0);
    const st = JSON.parse((await run(["status", "app-backup", "--json"])).stdout) as Status & { backups: { not_kept_by_retention?: string[] }[] };
    expect(st.missing).toEqual({ "local:local": 0, "local:usb": 0 });
    expect(st.backups[1]!.not_kept_by_retention).toEqual(["local:usb"]);
    expect((await run(["status", "app-backup"])).stdout).toMatch(/ok +- *$/m);
    const sync = JSON.parse((await run(["sync", "app-backup", "--json"])).stdout) as { copied: unknown[]; skipped: { to: string }[] };
    expect(sync.copied).toEqual([]);
    expect(sync.skipped.map((x) => x.to)).toEqual(["local:usb"]);
  });
});
