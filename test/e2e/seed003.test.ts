import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeepAsync, IN_CI, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";
import { contentOf, myAvailable, myQuery } from "../helpers/mysql.js";
import { startHttpReceiver, type HttpReceiver } from "../helpers/receivers.js";
import { resticRepos } from "../helpers/restic-repo.js";
import { freePort } from "../helpers/redis.js";

/**
 * Seed 003 (a restic backup sidecar) as its users configured it: the environment of its README and compose file,
 * with the hosts pointed at this machine's servers and the repository at a local path or a local S3 server. What
 * they would check: the repository created on the first run, snapshots tagged as before, the right database in
 * them (restored with restic itself, as they would), KEEP_* applied, the webhook with every field and its meaning.
 */
const RESTIC_PASSWORD = "supersecret-password";
const PGPASSWORD = "example";
const RUN = `${process.pid}`;
const PGDB = `seed003_pg_${RUN}`;
const MYDB = `seed003_my_${RUN}`;
const restic = spawnSync("restic", ["version"]).status === 0;
if (!restic && IN_CI) throw new Error("restic is not installed under CI");
const pgUp = restic && (await pgAvailable());
const myUp = restic && (await myAvailable());

interface Payload {
  status: string;
  message: string;
  startedAt: string;
  finishedAt: string;
  durationSeconds: number;
  repository: string;
  dbType: string;
  host: string;
  tags: string[];
  snapshotId: string | null;
  dataAddedBytes: number;
  totalBytesProcessed: number;
  totalDurationSeconds: number;
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
}

interface Snapshot {
  id: string;
  short_id: string;
  tags: string[];
  paths: string[];
}

const SEED_FIELDS = [
  "status", "message", "startedAt", "finishedAt", "durationSeconds", "repository", "dbType", "host", "tags",
  "snapshotId", "dataAddedBytes", "totalBytesProcessed", "totalDurationSeconds", "filesNew", "filesChanged", "filesUnmodified",
];

function resticEnv(repo: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AWS_") && !k.startsWith("RESTIC_")));
  return { ...env, RESTIC_REPOSITORY: repo, RESTIC_PASSWORD, ...extra };
}

function snapshots(repo: string, extra: Record<string, string> = {}): Snapshot[] {
  const r = spawnSync("restic", ["snapshots", "--json", "--no-lock"], { env: resticEnv(repo, extra), encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as Snapshot[];
}

/** The data file of a snapshot, as `restic dump` gives it (what a seed 003 user restores with). */
function resticDump(repo: string, s: Snapshot, extra: Record<string, string> = {}): Buffer {
  return execFileSync("restic", ["dump", "--no-lock", s.id, s.paths[0]!], { env: resticEnv(repo, extra), maxBuffer: 256 * 1024 * 1024 });
}

function hooks(r: HttpReceiver): Payload[] {
  return r.requests.filter((q) => q.path === "/hooks/backup").map((q) => JSON.parse(q.body) as Payload);
}

/** The data snapshot a payload names: the one restic lists with that id. */
function dataSnapshot(repo: string, p: Payload, extra: Record<string, string> = {}): Snapshot {
  const s = snapshots(repo, extra).find((x) => x.short_id === p.snapshotId || x.id === p.snapshotId);
  expect(s, `snapshot ${p.snapshotId} in restic snapshots`).toBeDefined();
  return s!;
}

async function pgContent(db: string): Promise<string> {
  const r = await pgQuery<{ h: string; n: string }>(db, "SELECT md5(string_agg(id || ':' || body, ',' ORDER BY id)) AS h, count(*)::text AS n FROM notes");
  return `${r[0]!.n}/${r[0]!.h}`;
}

function checkPayload(p: Payload, o: { repo: string; dbType: string; host: string; tags: string[] }): void {
  for (const f of SEED_FIELDS) expect(p, `field ${f}`).toHaveProperty(f);
  expect(p.status).toBe("success");
  expect(p.repository).toBe(o.repo);
  expect(p.dbType).toBe(o.dbType);
  expect(p.host).toBe(o.host);
  expect(p.tags).toEqual(o.tags);
  expect(Date.parse(p.finishedAt)).toBeGreaterThanOrEqual(Date.parse(p.startedAt));
  expect(p.durationSeconds).toBeGreaterThan(0);
  // restic's own numbers of the backup of the dump: one new file, read whole, within the run's duration.
  expect(p.totalDurationSeconds).toBeGreaterThan(0);
  expect(p.totalDurationSeconds).toBeLessThanOrEqual(p.durationSeconds);
  expect(p.filesNew + p.filesChanged + p.filesUnmodified).toBe(1);
  expect(p.dataAddedBytes).toBeGreaterThan(0);
}

describe.skipIf(!pgUp)("seed 003's PostgreSQL sidecar (compose example), repository on a local path", () => {
  const root = tempDir("dbkeep-seed003-");
  const freshRepo = resticRepos(join(root, "repos"), RESTIC_PASSWORD);
  let hook: HttpReceiver;
  let source: string;

  /** The postgres-backup service of seed 003's docker-compose.yml, with the webhook lines uncommented. */
  const composeEnv = (repo: string, extra: Record<string, string> = {}): Record<string, string> => ({
    DB_TYPE: "postgres",
    PGHOST: "127.0.0.1",
    PGUSER: "postgres",
    PGPASSWORD,
    PGDATABASE: PGDB,
    RESTIC_REPOSITORY: repo,
    AWS_ACCESS_KEY_ID: "your-access-key",
    AWS_SECRET_ACCESS_KEY: "your-secret-key",
    AWS_DEFAULT_REGION: "eu-west-1",
    RESTIC_PASSWORD,
    RESTIC_TAGS: "app,env=dev",
    WEBHOOK_URL: `${hook.url}/hooks/backup`,
    WEBHOOK_AUTH_HEADER: "Authorization: Bearer your-token",
    WEBHOOK_TIMEOUT_SECONDS: "10",
    KEEP_DAILIES: "7",
    KEEP_WEEKLIES: "4",
    KEEP_MONTHLIES: "12",
    KEEP_YEARLIES: "3",
    CRON_SCHEDULE: "0 2 * * *",
    TZ: "Europe/Amsterdam",
    RESTIC_CACHE_DIR: join(root, "cache"),
    ...extra,
  });

  beforeAll(async () => {
    hook = await startHttpReceiver();
    await pgQuery("postgres", `DROP DATABASE IF EXISTS "${PGDB}"`);
    await pgQuery("postgres", `CREATE DATABASE "${PGDB}"`);
    await pgQuery(PGDB, "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g");
    source = await pgContent(PGDB);
  });

  afterAll(async () => {
    await hook?.close();
    if (pgUp) {
      await pgQuery("postgres", `DROP DATABASE IF EXISTS "${PGDB}" WITH (FORCE)`);
      await pgQuery("postgres", `DROP DATABASE IF EXISTS "${PGDB}_r" WITH (FORCE)`);
    }
  });

  it("run-once: the repository is created on the first run, one tagged snapshot holds the database, the webhook has every field with its meaning", async () => {
    hook.reset();
    const repo = join(root, "new-repo");
    expect(existsSync(repo)).toBe(false);
    const r = await dbkeepAsync(["run-once"], composeEnv(repo, { BACKUP_DIR: "/backup" }), 120_000);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(repo, "config"))).toBe(true);
    // Seed 003's BACKUP_DIR has no meaning here: said so, with what to do instead.
    expect(r.stderr).toMatch(/BACKUP_DIR is set but not used: .*DBKEEP_STATE_DIR/);
    for (const secret of [RESTIC_PASSWORD, PGPASSWORD, "your-secret-key", "your-token"]) expect(r.stdout + r.stderr).not.toContain(secret);

    const [p, ...more] = hooks(hook);
    expect(more).toHaveLength(0);
    checkPayload(p!, { repo, dbType: "postgres", host: "127.0.0.1", tags: ["app", "env=dev"] });
    expect(hook.requests[0]!.headers.authorization).toBe("Bearer your-token");
    for (const secret of [RESTIC_PASSWORD, PGPASSWORD, "your-secret-key"]) expect(hook.requests[0]!.body).not.toContain(secret);

    // snapshotId is restic's: the snapshot holding the dump, tagged with RESTIC_TAGS, the type and the host.
    const snap = dataSnapshot(repo, p!);
    expect(snap.tags).toEqual(expect.arrayContaining(["app", "env=dev", "type=postgres", "host=127.0.0.1"]));
    const dump = resticDump(repo, snap);
    // restic's summary read exactly the dump (uncompressed SQL: restic deduplicates and compresses it itself).
    expect(p!.totalBytesProcessed).toBe(dump.length);
    expect(p!.filesNew).toBe(1);
    expect(dump.subarray(0, 200).toString()).toMatch(/PostgreSQL database dump/);

    // Restored the way a seed 003 user would: restic dump into psql.
    await pgQuery("postgres", `DROP DATABASE IF EXISTS "${PGDB}_r"`);
    await pgQuery("postgres", `CREATE DATABASE "${PGDB}_r"`);
    execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", `${PGDB}_r`, "-q", "-v", "ON_ERROR_STOP=1"], { input: dump, stdio: ["pipe", "ignore", "pipe"] });
    expect(await pgContent(`${PGDB}_r`)).toBe(source);

    // `init` on an existing repository leaves it as it is.
    const init = await dbkeepAsync(["init"], composeEnv(repo));
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toContain("is a repository already");
  }, 180_000);

  it("a second run of the same data: restic deduplicates it, and KEEP_DAILIES=7 forgets the first snapshot of the day, as restic forget does", async () => {
    hook.reset();
    const repo = freshRepo();
    const env = composeEnv(repo);
    const first = await dbkeepAsync(["run-once"], env, 120_000);
    expect(first.code, first.stderr).toBe(0);
    const second = await dbkeepAsync(["run-once"], env, 120_000);
    expect(second.code, second.stderr).toBe(0);
    const [p1, p2] = hooks(hook);
    checkPayload(p2!, { repo, dbType: "postgres", host: "127.0.0.1", tags: ["app", "env=dev"] });
    expect(p2!.snapshotId).not.toBe(p1!.snapshotId);
    // The same dump again: the first run stored all of it, the second only the chunks that changed, because the SQL
    // goes to restic uncompressed. (pg_dump's random \restrict key at the start and the end of a plain dump changes
    // the first and the last chunk, and with restic's 1 MiB average chunks a few MB dump has only a few.)
    expect(p2!.totalBytesProcessed).toBe(p1!.totalBytesProcessed);
    expect(p2!.totalBytesProcessed).toBeGreaterThan(5_000_000);
    expect(p1!.dataAddedBytes).toBeGreaterThan(p1!.totalBytesProcessed * 0.9);
    expect(p2!.dataAddedBytes).toBeLessThan(p1!.dataAddedBytes);

    // Two backups on one day, keep_daily 7: the older one's snapshots are forgotten, the newer one's stay.
    const ids = snapshots(repo).map((s) => s.short_id);
    expect(ids).toContain(p2!.snapshotId);
    expect(ids).not.toContain(p1!.snapshotId);
    const list = await dbkeepAsync(["list", "backup", "--json"], env);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as { backups: unknown[] }).backups).toHaveLength(1);

    // forget-prune: the retention again, then restic prune; the newest backup stays restorable.
    const fp = await dbkeepAsync(["forget-prune"], env, 120_000);
    expect(fp.code, fp.stderr).toBe(0);
    expect(fp.stderr).toMatch(/reclaimed the space/);
    const check = spawnSync("restic", ["check", "--no-lock"], { env: resticEnv(repo), encoding: "utf8" });
    expect(check.status, check.stderr).toBe(0);
    expect(resticDump(repo, dataSnapshot(repo, p2!)).length).toBe(p2!.totalBytesProcessed);
  }, 240_000);

  it("a failed run: the webhook says failed, without a snapshot id; exit code 1", async () => {
    hook.reset();
    const repo = freshRepo();
    const r = await dbkeepAsync(["run-once"], composeEnv(repo, { PGDATABASE: `${PGDB}_missing` }), 120_000);
    expect(r.code).toBe(1);
    const [p] = hooks(hook);
    for (const f of SEED_FIELDS) expect(p, `field ${f}`).toHaveProperty(f);
    expect(p).toMatchObject({ status: "failed", snapshotId: null, dataAddedBytes: 0, filesNew: 0, repository: repo });
    expect(hook.requests[0]!.body).not.toContain(RESTIC_PASSWORD);
  }, 120_000);
});

/** `rclone serve restic`: a REST server for restic on a free port, with a user and password. */
async function startRestServer(dir: string, user: string, pass: string): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const child: ChildProcess = spawn("rclone", ["serve", "restic", dir, "--addr", `127.0.0.1:${port}`, "--user", user, "--pass", pass, "--config", "/dev/null"], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const up = await fetch(`http://127.0.0.1:${port}/`, { method: "HEAD" }).then(() => true, () => false);
    if (up) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`rclone serve restic did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `http://${user}:${pass}@127.0.0.1:${port}/`,
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
    },
  };
}

describe.skipIf(!myUp)("seed 003's MariaDB sidecar (compose example), repository on a rest: server with credentials in its URL", () => {
  const REST_PASS = "rest-pass-5f1e";
  let rest: { url: string; stop(): Promise<void> };
  let hook: HttpReceiver;
  let repo: string;
  let root: string;
  let source: Record<string, string>;

  beforeAll(async () => {
    root = tempDir("dbkeep-seed003-rest-");
    rest = await startRestServer(join(root, "data"), "backup", REST_PASS);
    hook = await startHttpReceiver();
    repo = `rest:${rest.url}`;
    await myQuery(`DROP DATABASE IF EXISTS ${MYDB}`);
    await myQuery(`CREATE DATABASE ${MYDB}`);
    await myQuery("CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT seq, REPEAT(MD5(seq), 3) FROM seq_1_to_3000", MYDB);
    source = await contentOf(MYDB);
  });

  afterAll(async () => {
    await hook?.close();
    await rest?.stop();
    if (myUp) {
      await myQuery(`DROP DATABASE IF EXISTS ${MYDB}`);
      await myQuery(`DROP DATABASE IF EXISTS ${MYDB}_r`);
    }
  });

  it("run-once: the repository is created on the server, the database restores from the snapshot the webhook names, the URL's password nowhere", async () => {
    // The mariadb-backup service; MYSQL_PASSWORD is left out because this machine's root has none.
    const env = {
      DB_TYPE: "mysql",
      MYSQL_HOST: "127.0.0.1",
      MYSQL_USER: "root",
      MYSQL_DATABASE: MYDB,
      RESTIC_REPOSITORY: repo,
      RESTIC_PASSWORD,
      RESTIC_TAGS: "app,env=dev",
      WEBHOOK_URL: `${hook.url}/hooks/backup`,
      CRON_SCHEDULE: "0 3 * * *",
      TZ: "Europe/Amsterdam",
      RESTIC_CACHE_DIR: join(root, "cache"),
    };
    const r = await dbkeepAsync(["run-once"], env, 180_000);
    expect(r.code, r.stderr).toBe(0);
    for (const secret of [RESTIC_PASSWORD, REST_PASS]) expect(r.stdout + r.stderr).not.toContain(secret);
    const [p] = hooks(hook);
    // The repository's location without the credentials of its URL.
    checkPayload(p!, { repo: p!.repository, dbType: "mysql", host: "127.0.0.1", tags: ["app", "env=dev"] });
    expect(p!.repository).toMatch(/^rest:http:\/\/.*127\.0\.0\.1:\d+\/$/);
    expect(hook.requests[0]!.body).not.toContain(REST_PASS);
    const snap = dataSnapshot(repo, p!);
    expect(snap.tags).toEqual(expect.arrayContaining(["app", "env=dev", "type=mysql", "host=127.0.0.1"]));
    const dump = resticDump(repo, snap);
    expect(p!.totalBytesProcessed).toBe(dump.length);
    await myQuery(`DROP DATABASE IF EXISTS ${MYDB}_r`);
    await myQuery(`CREATE DATABASE ${MYDB}_r`);
    execFileSync("mariadb", ["-h", "127.0.0.1", "-u", "root", `${MYDB}_r`], { input: dump, stdio: ["pipe", "ignore", "pipe"] });
    expect(await contentOf(`${MYDB}_r`)).toEqual(source);
  }, 240_000);
});
