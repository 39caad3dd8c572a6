import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfigFile } from "../../src/config/load.js";
import { createLogger } from "../../src/core/log.js";
import { planJob, runJob, type JobResult } from "../../src/core/jobs.js";
import { dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { startS3, type TestS3 } from "../helpers/s3-server.js";
import { sqliteContent } from "../helpers/sqlite.js";

/**
 * Concurrency drills: two jobs on one database and one store, and one job run from two machines, all in the same
 * second. Both backups must exist under ids of their own and restore to what each dumped; each job's retention
 * counts and deletes only its own backups.
 */
const quiet = createLogger({ level: "silent" });

describe("concurrency: same database, same store, same second", () => {
  const dir = tempDir("dbkeep-concurrency-");
  let s3: TestS3;
  beforeAll(async () => {
    s3 = await startS3();
    Object.assign(process.env, s3.env);
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
  });
  afterAll(async () => {
    await s3?.stop();
  });

  const stores = {
    local: (name: string) => `  local: { type: local, path: ${join(dir, `store-${name}`)} }`,
    s3: (name: string) =>
      `  local: { type: s3, endpoint: ${s3.endpoint}, bucket: ${s3.bucket}, prefix: ${name}, access_key_env: TEST_S3_ACCESS_KEY, secret_key_env: TEST_S3_SECRET_KEY }`,
  };

  for (const kind of ["local", "s3"] as const) {
    it(`${kind}: two jobs and one job on two machines, three runs at once, give three backups that each restore`, async () => {
      const name = `${kind}-${Date.now()}`;
      const cfg = join(dir, `${name}.yaml`);
      writeFileSync(
        cfg,
        `datasources:\n  app: { engine: sqlite, path: ${join(dir, "app.db")}, compression: zstd }\n  copy: { engine: sqlite, path: ${join(dir, `${name}-copy.db`)} }\nstores:\n${stores[kind](name)}\njobs:\n  nightly: { datasource: app, store: local, retention: { keep_last: 1 } }\n  hourly: { datasource: app, store: local, retention: { keep_last: 1 } }\n`,
        { mode: 0o600 },
      );
      const config = loadConfigFile(cfg);
      const at = new Date("2026-06-01T12:00:00Z");
      // The per-machine lock would make the second "nightly" wait; on two machines there is no common lock.
      const machine = (job: string) => ({ ...planJob(config, job), lock: false });
      const runs = await Promise.all([machine("nightly"), machine("hourly"), machine("nightly")].map((plan) => runJob(plan, { log: quiet, signal: new AbortController().signal, now: () => at })));
      for (const r of runs) expect(r.ok, r.error?.message).toBe(true);
      const ids = runs.map((r) => r.manifest!.id);
      expect(new Set(ids).size).toBe(3);
      // Runs that picked the same id step back and take the next, so the numbers need not be dense.
      for (const id of ids) expect(id).toMatch(/^app-20260601-120000(-\d+)?$/);

      for (const [job, n] of [["nightly", 2], ["hourly", 1]] as const) {
        const list = await dbkeepAsync(["-c", cfg, "list", job, "--json"], s3.env);
        expect(list.code, list.stderr).toBe(0);
        const doc = JSON.parse(list.stdout) as { backups: { id: string; job: string }[]; damaged: unknown[] };
        expect(doc.damaged).toEqual([]);
        expect(doc.backups.filter((b) => b.job === job)).toHaveLength(n);
      }
      for (const r of runs) {
        const back = await dbkeepAsync(["-c", cfg, "restore", r.job, r.manifest!.id, "--to", "copy", "--auto-confirm"], s3.env);
        expect(back.code, back.stderr).toBe(0);
        expect(sqliteContent(join(dir, `${name}-copy.db`))).toEqual(sqliteContent(join(dir, "app.db")));
      }

      // hourly's keep_last: 1 is about hourly's backups only: it has one, so it deletes nothing, and nightly keeps both.
      const p1 = await dbkeepAsync(["-c", cfg, "prune", "hourly", "--json"], s3.env);
      expect(p1.code, p1.stderr).toBe(0);
      expect((JSON.parse(p1.stdout) as { deleted: string[] }).deleted).toEqual([]);
      // nightly's prune deletes its older backup, never hourly's.
      const p2 = await dbkeepAsync(["-c", cfg, "prune", "nightly", "--json"], s3.env);
      const deleted = (JSON.parse(p2.stdout) as { deleted: string[] }).deleted;
      const nightly = runs.filter((r) => r.job === "nightly").map((r) => r.manifest!);
      const older = nightly.sort((a, b) => (a.id < b.id ? -1 : 1))[0]!;
      expect(deleted.filter((k) => k.endsWith(".manifest.json"))).toEqual([expect.stringContaining(`${older.id}.manifest.json`)]);
      const hourly = (r: JobResult[]) => r.find((x) => x.job === "hourly")!.manifest!.id;
      const after = JSON.parse((await dbkeepAsync(["-c", cfg, "list", "hourly", "--json"], s3.env)).stdout) as { backups: { id: string }[] };
      expect(after.backups.map((b) => b.id)).toContain(hourly(runs));
    });
  }

  it("two jobs started by two processes at once both commit, whatever second each lands in", async () => {
    const cfg = join(dir, "procs.yaml");
    writeFileSync(
      cfg,
      `datasources:\n  app: { engine: sqlite, path: ${join(dir, "app.db")} }\nstores:\n  local: { type: local, path: ${join(dir, "store-procs")} }\njobs:\n  a: { datasource: app, store: local }\n  b: { datasource: app, store: local }\n`,
      { mode: 0o600 },
    );
    const db = new Database(join(dir, "app.db"));
    db.exec("CREATE TABLE IF NOT EXISTS busy (n INTEGER)");
    db.close();
    for (let round = 0; round < 3; round++) {
      const [a, b] = await Promise.all([dbkeepAsync(["-c", cfg, "backup", "a"]), dbkeepAsync(["-c", cfg, "backup", "b"])]);
      expect(a.code, a.stderr).toBe(0);
      expect(b.code, b.stderr).toBe(0);
    }
    const all = JSON.parse((await dbkeepAsync(["list", join(dir, "store-procs"), "--json"])).stdout) as { backups: { id: string; job: string }[] };
    expect(all.backups).toHaveLength(6);
    expect(new Set(all.backups.map((b) => b.id)).size).toBe(6);
  });
});
