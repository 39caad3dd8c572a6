import { spawn, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, cleanup, IN_CI, PG, pgAvailable, pgQuery, tempDir, type CliResult } from "../helpers/env.js";
import { startGcsFake, type GcsFake } from "../helpers/gcs-fake.js";
import { contentOf } from "../helpers/pgcompare.js";

// A user of seed 001 (the PostgreSQL Backup Scheduler) swaps its image for dbkeep's and keeps the environment of
// its README: POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB (+ POSTGRES_HOST, here the local server) and
// GCS_BUCKET_NAME. What stands in for what cannot exist here: DBKEEP_STORE for the volume mounted at /backups, the
// GCS fake (test/helpers/gcs-fake.ts, named by DBKEEP_GCS_ENDPOINT) for GCS, a
// dummy key file for the service account.
const hex = randomBytes(4).toString("hex");
const DB = `seed001_e2e_${hex}`;
const COPY = `seed001_e2e_copy_${hex}`;
const ADOPTED = `seed001_e2e_adopted_${hex}`;
const BUCKET = `seed001-${hex}`;
const PASSWORD = `pw-${randomBytes(6).toString("hex")}`;
const pgUp = await pgAvailable();

let fake: GcsFake;
let dir: string;
let store: string;
let seed: Record<string, string>;

/** The CLI with exactly the given environment (no variables of the test process leak in), asynchronously: the GCS fake answers from this process. */
function run(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "--log-format", "text", ...args], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, ...CLI_ENV, ...seed, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      expect(stdout + stderr, "the password never appears").not.toContain(PASSWORD);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

interface Listed {
  backups: { id: string; key: string; type?: string; database: string; sha256: string }[];
}

async function listed(args: string[] = [], env: Record<string, string> = {}): Promise<Listed["backups"]> {
  const r = await run(["list", "--json", ...args], env);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as Listed).backups;
}

/** The retention settings of the tests from "retention by type" on: every later run has them, as a compose file would. */
const RETENTION = { BACKUP_RETENTION_DAILY: "2", BACKUP_RETENTION_WEEKLY: "1", GCS_RETENTION_ENABLED: "true", GCS_RETENTION_DAILY: "3", GCS_RETENTION_WEEKLY: "1" };

const count = (bs: { type?: string }[]) => {
  const out: Record<string, number> = {};
  for (const b of bs) out[b.type ?? "-"] = (out[b.type ?? "-"] ?? 0) + 1;
  return out;
};

async function backup(type: string, env: Record<string, string> = {}): Promise<void> {
  const r = await run(["backup", "--type", type], env);
  expect(r.code, r.stderr).toBe(0);
}

describe.skipIf(!pgUp && !IN_CI)("seed 001's environment and commands", () => {
  beforeAll(async () => {
    dir = tempDir("dbkeep-seed001-");
    store = join(dir, "backups");
    fake = await startGcsFake({ buckets: [BUCKET] });
    const credentials = join(dir, "credentials.json");
    writeFileSync(credentials, JSON.stringify({ type: "service_account", project_id: "seed001", client_email: "backup@seed001.iam.gserviceaccount.com" }), { mode: 0o600 });
    seed = {
      // Quick Start, step 1, as written.
      POSTGRES_USER: "postgres",
      POSTGRES_PASSWORD: PASSWORD,
      POSTGRES_DB: DB,
      GCS_BUCKET_NAME: BUCKET,
      // The configuration table's other variables that differ here from their defaults.
      POSTGRES_HOST: PG.host,
      POSTGRES_PORT: String(PG.port),
      GCS_CREDENTIALS_PATH: credentials,
      LOG_LEVEL: "INFO",
      // Stand-ins (see above).
      DBKEEP_STORE: store,
      DBKEEP_GCS_ENDPOINT: fake.endpoint,
    };
    await pgQuery("postgres", `CREATE DATABASE "${DB}"`);
    await pgQuery(DB, `CREATE TYPE plan AS ENUM ('free', 'pro');
      CREATE TABLE accounts (id serial PRIMARY KEY, email text UNIQUE NOT NULL, plan plan NOT NULL, created timestamptz NOT NULL DEFAULT '2026-01-01');
      CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
      INSERT INTO schema_migrations VALUES (20260101, false);
      INSERT INTO accounts (email, plan) SELECT 'u' || g || '@example.com', (CASE WHEN g % 7 = 0 THEN 'pro' ELSE 'free' END)::plan FROM generate_series(1, 3000) g`);
  });

  afterAll(async () => {
    await fake?.stop();
    if (pgUp) for (const db of [DB, COPY, ADOPTED]) await pgQuery("postgres", `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
    if (dir) cleanup(dir);
  });

  it("the README's variables alone select POSTGRES_DB on POSTGRES_HOST, seed 001's schedule and retention, and the GCS store", async () => {
    const r = await run(["config", "check", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const cfg = JSON.parse(r.stdout) as {
      datasources: Record<string, Record<string, unknown>>;
      stores: Record<string, Record<string, unknown>>;
      jobs: Record<string, Record<string, unknown>>;
      timezone: string;
    };
    expect(Object.values(cfg.datasources)).toEqual([expect.objectContaining({ engine: "postgres", host: PG.host, port: PG.port, user: "postgres", database: DB, format: "custom", dump_compression: 9 })]);
    expect(cfg.stores.gcs).toMatchObject({ type: "gcs", bucket: BUCKET, prefix: "backups/postgres", max_attempts: 3 });
    const job = Object.values(cfg.jobs)[0]!;
    expect(job.schedules).toEqual([{ schedule: "0 2 * * *", type: "daily" }, { schedule: "0 3 * * 0", type: "weekly" }]);
    expect(cfg.timezone).toBe("UTC");
    expect(job.retention).toEqual({ types: { daily: { keep_last: 7 }, weekly: { keep_last: 4 } }, stores: { gcs: {} } });
    expect(job.sync_every).toBe(1800);
  });

  it("the daemon prints the job it built at start, without the password, and its first run is a daily backup", async () => {
    const r = await run(["daemon", "--once"], { DBKEEP_LISTEN: "127.0.0.1:0" });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`engine:    postgres, database ${DB} on ${PG.host}:${PG.port}`);
    expect(r.stderr).toContain("password from $POSTGRES_PASSWORD");
    expect(r.stderr).toMatch(/daily: cron "0 2 \* \* \*"; weekly: cron "0 3 \* \* 0"; sync every 1800s \(UTC\)/);
    expect(r.stderr).toMatch(/stores: +local \(type=local, path=.*\); gcs \(type=gcs, bucket=seed001-/);
    expect(r.stderr).toMatch(/retention: types=\{"daily":\{"keep_last":7\},"weekly":\{"keep_last":4\}\}/);
    expect(count(await listed())).toEqual({ daily: 1 });
  });

  it("files are named as seed 001 names them (BACKUP_BASE_NAME, pg_dump -Fc at BACKUP_COMPRESSION_LEVEL), and restore to the database's content", async () => {
    const files = readdirSync(join(store, "postgres_db")).filter((f) => f.endsWith(".dump"));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^postgres_db-\d{8}-\d{6}\.dump$/);
    const file = join(store, "postgres_db", files[0]!);
    expect(readFileSync(file).subarray(0, 5).toString()).toBe("PGDMP");
    // pg_dump's own compression at seed 001's default level 9.
    expect(execFileSync("pg_restore", ["-l", file], { encoding: "utf8" })).toMatch(/Compression: (9|gzip)/);
    // What a seed 001 user does with a backup file: pg_restore it.
    await pgQuery("postgres", `CREATE DATABASE "${COPY}"`);
    execFileSync("pg_restore", ["-h", PG.host, "-p", String(PG.port), "-U", PG.user, "-d", COPY, file]);
    expect(await contentOf(COPY)).toEqual(await contentOf(DB));
    // The same file in GCS under GCS_BACKUP_PREFIX.
    expect(fake.objects(BUCKET)).toContain(`backups/postgres/postgres_db/${files[0]}`);

    const named = await run(["backup", "--type", "manual"], { BACKUP_BASE_NAME: "shop_db", BACKUP_COMPRESSION_LEVEL: "0" });
    expect(named.code, named.stderr).toBe(0);
    const other = readdirSync(join(store, "shop_db")).filter((f) => f.endsWith(".dump"));
    expect(other).toHaveLength(1);
    expect(other[0]).toMatch(/^shop_db-\d{8}-\d{6}\.dump$/);
    expect(execFileSync("pg_restore", ["-l", join(store, "shop_db", other[0]!)], { encoding: "utf8" })).toMatch(/Compression: (0|none)/);
  });

  it("retention by type: daily and weekly kept by count, manual never pruned; GCS keeps everything until GCS_RETENTION_ENABLED", async () => {
    const env = { BACKUP_RETENTION_DAILY: RETENTION.BACKUP_RETENTION_DAILY, BACKUP_RETENTION_WEEKLY: RETENTION.BACKUP_RETENTION_WEEKLY };
    for (const t of ["daily", "daily", "weekly", "weekly", "manual", "daily"]) await backup(t, env);
    expect(count(await listed())).toEqual({ daily: 2, weekly: 1, manual: 1 });
    expect(count(await listed(["--type", "daily"]))).toEqual({ daily: 2 });
    // GCS: retention is off by default (seed 001): all 4 daily (the daemon's and 3), 2 weekly, 1 manual.
    expect(count(await listed(["--cloud"]))).toEqual({ daily: 4, weekly: 2, manual: 1 });

    await backup("daily", RETENTION);
    expect(count(await listed(["--cloud"]))).toEqual({ daily: 3, weekly: 1, manual: 1 });
    expect(count(await listed())).toEqual({ daily: 2, weekly: 1, manual: 1 });
    // The newest of each type is the one kept: the local and cloud newest daily are the same backup.
    const [local, gcs] = [await listed(["--type", "daily"]), await listed(["--type", "daily", "--cloud"])];
    expect(gcs[0]!.id).toBe(local[0]!.id);
    expect(fake.objects(BUCKET).filter((k) => k.startsWith("backups/postgres/postgres_db/") && k.endsWith(".dump"))).toHaveLength(5);
  });

  it("status, upload (a backup GCS missed is copied there) and download KEY (checksum-verified, as stored)", async () => {
    const newest = (await listed())[0]!;
    // An upload that did not happen: the backup's objects are gone from the bucket.
    const { createGcsStore } = await import("../../src/stores/gcs/index.js");
    const { gcsStoreSchema } = await import("../../src/stores/gcs/schema.js");
    const gcs = createGcsStore(gcsStoreSchema.parse({ type: "gcs", bucket: BUCKET, prefix: "backups/postgres", endpoint: fake.endpoint }), "gcs");
    const mine: string[] = [];
    for await (const o of gcs.list(`postgres_db/${newest.id}.`)) mine.push(o.key);
    expect(mine.length).toBeGreaterThan(1);
    await gcs.delete(mine);
    await gcs.close();

    const before = await run(["status"], RETENTION);
    expect(before.stdout).toMatch(/MISSING/);
    const up = await run(["upload"], RETENTION);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toContain(`copied  ${newest.id}  local:local -> gcs:gcs`);
    const after = await run(["status"], RETENTION);
    expect(after.code, after.stderr).toBe(0);
    expect(after.stdout).not.toMatch(/MISSING/);

    const key = `backups/postgres/${newest.key}`;
    expect(fake.objects(BUCKET)).toContain(key);
    const dl = await run(["download", key]);
    expect(dl.code, dl.stderr).toBe(0);
    const got = readFileSync(join(dir, newest.key.split("/").pop()!));
    expect(createHash("sha256").update(got).digest("hex")).toBe(newest.sha256);

    // The downloaded file given back is recognised as the backup it is: not stored twice.
    const n = (await listed()).length;
    const file = await run(["upload", "--file", join(dir, newest.key.split("/").pop()!)]);
    expect(file.code, file.stderr).toBe(0);
    expect(file.stdout).toContain(`already in the store as backup ${newest.id}`);
    expect((await listed()).length).toBe(n);
  });

  it("upload --file adopts a pg_dump -Fc file from seed 001's backup tree: it is listed locally and in GCS, and restores equal", async () => {
    const old = join(dir, "old", "manual");
    mkdirSync(old, { recursive: true });
    const file = join(old, "postgres_db_manual_20250101_120000.dump");
    execFileSync("pg_dump", ["-h", PG.host, "-p", String(PG.port), "-U", PG.user, "-Fc", "-f", file, DB]);
    const up = await run(["upload", "--file", file]);
    expect(up.code, up.stderr).toBe(0);
    const id = "postgres_db-20250101-120000";
    expect(up.stdout).toContain(`imported as ${id}`);
    const mine = (await listed()).find((b) => b.id === id);
    // Named by BACKUP_BASE_NAME like its own backups; the type from the path (manual: never pruned), the time from the name.
    expect(mine).toMatchObject({ type: "manual", database: DB, key: `postgres_db/${id}.dump` });
    expect((await listed(["--cloud"])).map((b) => b.id)).toContain(id);
    const r = await run(["restore", "backup", id, "--to", `postgres://postgres@${PG.host}:${PG.port}/${ADOPTED}`]);
    expect(r.code, r.stderr).toBe(0);
    expect(await contentOf(ADOPTED)).toEqual(await contentOf(DB));
  });

  it("test checks the database and both stores; a database that does not exist fails it", async () => {
    const ok = await run(["test"]);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/source \(postgres\)/);
    expect(ok.stdout).toMatch(/^local +ok/m);
    expect(ok.stdout).toMatch(/^gcs +ok/m);
    const bad = await run(["test"], { POSTGRES_DB: `${DB}_missing` });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/✗|error|does not exist/i);
  });

  it("the daemon arms seed 001's two schedules (daily 02:00 UTC, weekly Sunday 03:00 UTC) and runs each with its type", async () => {
    const { seed001Config } = await import("../../src/config/seeds/seed001.js");
    const { validateConfig } = await import("../../src/config/load.js");
    const { runDaemon } = await import("../../src/daemon/daemon.js");
    const { createLogger } = await import("../../src/core/log.js");
    const { PassThrough } = await import("node:stream");
    // In this process, without GCS and the password (trust auth): the schedules are what is looked at.
    const all: Record<string, string> = { ...seed, ...RETENTION, DBKEEP_STORE: join(dir, "daemon-store") };
    const { GCS_BUCKET_NAME: _g, POSTGRES_PASSWORD: _p, ...env } = all;
    const daemon = async (schedules: { schedule: string; type: string }[] | undefined, ms: number) => {
      const { raw } = seed001Config(env);
      if (schedules) (raw.jobs as Record<string, Record<string, unknown>>).backup!.schedules = schedules;
      const lines: Record<string, unknown>[] = [];
      const stream = new PassThrough();
      stream.on("data", (d: Buffer) => lines.push(...d.toString().trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)));
      const stop = new AbortController();
      setTimeout(() => stop.abort(), ms);
      const code = await runDaemon({ loadConfig: () => validateConfig(raw, "environment"), log: createLogger({ format: "json", stream }), shutdown: stop.signal, listen: "127.0.0.1:0", historyPath: join(dir, `history-${randomBytes(3).toString("hex")}.db`) });
      expect(code).toBe(0);
      return lines;
    };
    const armed = (await daemon(undefined, 300)).filter((l) => typeof l.type === "string" && l.next);
    const next = Object.fromEntries(armed.map((l) => [l.type, new Date(String(l.next))]));
    expect(next.daily!.toISOString()).toMatch(/T02:00:00\.000Z$/);
    expect(next.weekly!.toISOString()).toMatch(/T03:00:00\.000Z$/);
    expect(next.weekly!.getUTCDay()).toBe(0);
    expect(next.daily!.getTime() - Date.now()).toBeLessThanOrEqual(86_400_000);

    // The same daemon with the two schedules a few seconds apart: each run records its schedule's type.
    await daemon([{ schedule: "*/4 * * * * *", type: "daily" }, { schedule: "2-58/4 * * * * *", type: "weekly" }], 6500);
    const { listBackups } = await import("../../src/core/listing.js");
    const { createLocalStore } = await import("../../src/stores/local/index.js");
    const local = createLocalStore({ path: join(dir, "daemon-store") }, "local");
    const types = (await listBackups(local, "postgres_db/")).backups.map((b) => b.type);
    expect(types).toContain("daily");
    expect(types).toContain("weekly");
  });

  it("`backup --type bogus` exits 2 and backs nothing up; unsupported and misspelt seed variables are named with what to use instead", async () => {
    const n = (await listed()).length;
    const bogus = await run(["backup", "--type", "bogus"]);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toMatch(/'bogus' is invalid. Expected one of .*daily.*weekly.*manual/);
    expect((await listed()).length).toBe(n);

    const r = await run(["list"], { RESTORE_BACKUP_FILE: "/backups/daily/x.dump", GCS_RETENTON_DAILY: "10" });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/RESTORE_BACKUP_FILE is set, but dbkeep does not use it: .*dbkeep verify/);
    expect(r.stderr).toMatch(/GCS_RETENTON_DAILY is set, but dbkeep does not use it: not a variable of seed 001 nor of dbkeep/);
    const level = await run(["list"], { LOG_LEVEL: "LOUD" });
    expect(level.code).toBe(2);
    expect(level.stderr).toMatch(/LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR/);
    const missing = await run(["list"], { POSTGRES_DB: "" });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/POSTGRES_DB not set/);
  });
});
