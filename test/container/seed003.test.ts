import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pgAvailable, pgQuery } from "../helpers/env.js";
import { myAvailable, myQuery } from "../helpers/mysql.js";
import { startHttpReceiver, type HttpReceiver } from "../helpers/receivers.js";
import { freePort } from "../helpers/redis.js";
import { httpGet, podman, removeContainers, RUN_ID, run, runAsync, sh, UNAVAILABLE, until, volumeDir } from "./podman.js";

// Seed 003's users run a sidecar next to the database, configured by environment variables alone: DB_TYPE and the
// engine's own variables, BACKUP_INTERVAL_SECONDS=0 or `run-once` for one backup, CRON_SCHEDULE for the default
// command, retention as KEEP_*, a webhook after each run. docs/environment.md lists what dbkeep reads today.
const PGDB = `dbkeepc3${RUN_ID}`;
const MYDB = `dbkeepc3${RUN_ID}`;
const PGPASSWORD = `pg-${randomBytes(6).toString("hex")}`;

const pgUp = !UNAVAILABLE && (await pgAvailable());
const myUp = !UNAVAILABLE && (await myAvailable());

const pgEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  DB_TYPE: "postgres",
  PGHOST: "127.0.0.1",
  PGPORT: "5432",
  PGUSER: "postgres",
  PGPASSWORD,
  PGDATABASE: PGDB,
  DBKEEP_STORE: "/backups",
  KEEP_DAILIES: "7",
  KEEP_WEEKLIES: "4",
  ...extra,
});

async function pgContent(): Promise<string> {
  const r = await pgQuery<{ h: string; n: string }>(PGDB, "SELECT md5(string_agg(id || ':' || body, ',' ORDER BY id)) AS h, count(*)::text AS n FROM notes");
  return `${r[0]!.n}/${r[0]!.h}`;
}

async function myContent(): Promise<string> {
  return (await myQuery("SELECT COUNT(*), MD5(GROUP_CONCAT(id, ':', body ORDER BY id)) FROM notes", MYDB))[0]!.join("/");
}

interface Listing {
  backups: { id: string; key: string }[];
}

/** The backups in the store directory, as `dbkeep list /backups --json` inside the image shows them. */
function listStore(backups: string): Listing["backups"] {
  const l = run(["list", "/backups", "--json"], { volumes: [`${backups}:/backups`] });
  expect(l.code, l.stderr).toBe(0);
  return (JSON.parse(l.stdout) as Listing).backups;
}

/** Whether the image's dbkeep has seed 003's `run-once` command; until it does, `backup --all` is the equivalent. */
function runOnceCommand(): string[] {
  const help = run(["--help"]);
  return /^\s+run-once\b/m.test(help.stdout) ? ["run-once"] : ["backup", "--all"];
}

describe.skipIf(!pgUp)("seed 003's sidecar, PostgreSQL: environment variables only", () => {
  let backups: string;
  let hook: HttpReceiver;
  let before: string;

  beforeAll(async () => {
    backups = volumeDir("dbkeep-ctr003-pg-");
    hook = await startHttpReceiver();
    await pgQuery("postgres", `CREATE DATABASE "${PGDB}"`);
    await pgQuery(PGDB, "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 3000) g");
    before = await pgContent();
  });

  afterAll(async () => {
    await hook?.close();
    if (pgUp) await pgQuery("postgres", `DROP DATABASE IF EXISTS "${PGDB}" WITH (FORCE)`);
  });

  it("BACKUP_INTERVAL_SECONDS=0 with the default command: one backup, the webhook told, exit 0; restore brings the data back", async () => {
    // Asynchronously: the webhook's receiver runs in this process.
    const r = await runAsync([], { volumes: [`${backups}:/backups`], env: pgEnv({ BACKUP_INTERVAL_SECONDS: "0", WEBHOOK_URL: `${hook.url}/hook`, WEBHOOK_AUTH_HEADER: "Authorization: Bearer t0ken" }) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toContain(PGPASSWORD);
    const list = listStore(backups);
    expect(list).toHaveLength(1);
    expect(list[0]!.key).toContain(`${PGDB}/${PGDB}-`);
    // Seed 003's payload, sent from inside the container to the receiver on the host.
    const posts = hook.requests.filter((q) => q.path === "/hook");
    expect(posts).toHaveLength(1);
    const payload = JSON.parse(posts[0]!.body) as { status: string; dbType: string };
    expect(payload).toMatchObject({ status: "success", dbType: "postgres" });
    expect(posts[0]!.headers.authorization).toBe("Bearer t0ken");

    await pgQuery(PGDB, "TRUNCATE notes");
    const restore = run(["restore", "backup", "--auto-confirm"], { volumes: [`${backups}:/backups`], env: pgEnv() });
    expect(restore.code, restore.stderr).toBe(0);
    expect(await pgContent()).toBe(before);
  });

  it("`run-once` (today `backup --all`, until the command exists) adds one backup and exits", () => {
    const n = listStore(backups).length;
    const r = run(runOnceCommand(), { volumes: [`${backups}:/backups`], env: pgEnv() });
    expect(r.code, r.stderr).toBe(0);
    expect(listStore(backups)).toHaveLength(n + 1);
  });

  it("CRON_SCHEDULE with the default command: the daemon runs the job on the schedule, serves /healthz, stops cleanly on SIGTERM", async () => {
    const port = await freePort();
    const name = `dbkeep-ctr003-cron-${RUN_ID}`;
    const n = listStore(backups).length;
    try {
      // Every 3 seconds (dbkeep's cron takes an optional seconds field), in seed 003's TZ.
      const start = run([], {
        detach: true,
        name,
        volumes: [`${backups}:/backups`],
        env: pgEnv({ CRON_SCHEDULE: "*/3 * * * * *", TZ: "Europe/Amsterdam", DBKEEP_LISTEN: `127.0.0.1:${port}` }),
      });
      expect(start.code, start.stderr).toBe(0);
      const health = await until("/healthz", async () => {
        const res = await httpGet(`http://127.0.0.1:${port}/healthz`);
        return res?.status === 200 ? res.body : undefined;
      });
      expect(health.trim()).toBe("ok");
      // Two scheduled runs at least, each a backup of its own.
      const metrics = await until(
        "two scheduled runs",
        async () => {
          const text = (await httpGet(`http://127.0.0.1:${port}/metrics`))?.body ?? "";
          const m = /dbkeep_job_runs_total\{[^}]*result="success"[^}]*\} (\d+)/.exec(text);
          return m && Number(m[1]) >= 2 ? text : undefined;
        },
        45_000,
      );
      expect(metrics).toMatch(/dbkeep_job_runs_total/);
      const stop = podman(["stop", "-t", "60", name]);
      expect(stop.code, stop.stderr).toBe(0);
      const state = JSON.parse(podman(["inspect", name, "--format", "{{json .State}}"]).stdout) as { ExitCode: number };
      expect(state.ExitCode).toBe(0);
      const logs = podman(["logs", name]);
      expect(logs.stdout + logs.stderr).toMatch(/scheduled backup/);
      expect(logs.stdout + logs.stderr).not.toContain(PGPASSWORD);
      expect(listStore(backups).length).toBeGreaterThanOrEqual(n + 2);
    } finally {
      removeContainers(name);
    }
  });

  it("RESTIC_REPOSITORY instead of DBKEEP_STORE: a snapshot in the repository, or a refusal that names it, never a silent success", () => {
    const repo = volumeDir("dbkeep-ctr003-restic-");
    const { DBKEEP_STORE: _store, ...noStore } = pgEnv();
    const env = { ...noStore, RESTIC_REPOSITORY: "/repo", RESTIC_PASSWORD: "restic-secret" };
    const r = run(runOnceCommand(), { volumes: [`${repo}:/repo`], env });
    if (r.code === 0) {
      const snaps = sh("restic -r /repo snapshots --json", { volumes: [`${repo}:/repo`], env: { RESTIC_PASSWORD: "restic-secret" } });
      expect(snaps.code, snaps.stderr).toBe(0);
      expect((JSON.parse(snaps.stdout) as unknown[]).length).toBeGreaterThanOrEqual(1);
    } else {
      expect(r.stderr).toContain("RESTIC_REPOSITORY");
    }
  });
});

describe.skipIf(!myUp)("seed 003's sidecar, MariaDB: environment variables only", () => {
  let backups: string;

  beforeAll(async () => {
    backups = volumeDir("dbkeep-ctr003-my-");
    await myQuery(`CREATE DATABASE ${MYDB}`);
    await myQuery("CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)", MYDB);
    await myQuery("INSERT INTO notes SELECT seq, REPEAT(MD5(seq), 2) FROM seq_1_to_2500", MYDB);
  });

  afterAll(async () => {
    if (!myUp) return;
    for (const [name] of await myQuery(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '${MYDB}%'`)) await myQuery(`DROP DATABASE \`${name}\``);
  });

  it("DB_TYPE=mariadb with MYSQL_* and `run-once`: the backup restores the same rows", async () => {
    const env = { DB_TYPE: "mariadb", MYSQL_HOST: "127.0.0.1", MYSQL_PORT: "3306", MYSQL_USER: "root", MYSQL_DATABASE: MYDB, DBKEEP_STORE: "/backups", DBKEEP_COMPRESSION: "zstd" };
    const before = await myContent();
    const r = run(runOnceCommand(), { volumes: [`${backups}:/backups`], env });
    expect(r.code, r.stderr).toBe(0);
    expect(listStore(backups)).toHaveLength(1);
    await myQuery("DELETE FROM notes WHERE id % 2 = 0", MYDB);
    expect(await myContent()).not.toBe(before);
    const restore = run(["restore", "backup", "--auto-confirm"], { volumes: [`${backups}:/backups`], env });
    expect(restore.code, restore.stderr).toBe(0);
    expect(await myContent()).toBe(before);
  });
});
