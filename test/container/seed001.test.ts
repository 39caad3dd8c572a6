import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pgAvailable, pgQuery } from "../helpers/env.js";
import { freePort } from "../helpers/redis.js";
import { httpGet, podman, removeContainers, RUN_ID, run, UNAVAILABLE, until } from "./podman.js";

// Seed 001's users run a compose project: a `backup` service with a scheduler inside, next to PostgreSQL, configured
// by POSTGRES_* variables, with `docker exec backup ... backup --type manual` / `list` for manual work. Here the
// project is a podman pod on the host's network (as compose puts services on one network), with a named volume for
// the backups, and the daemon's /healthz, /readyz and /metrics read from the host.
const DB = `dbkeepc1${RUN_ID}`;
const POD = `dbkeep-ctr001-${RUN_ID}`;
const BACKUP = `${POD}-backup`;
const RESTORE = `${POD}-restore-test`;
const VOLUME = `${POD}-backups`;
const PASSWORD = "seed001-password";

const pgUp = !UNAVAILABLE && (await pgAvailable());

// Seed 001's variables as its README lists them, with the database server on this machine. The backups go to the
// image's /backups volume (DBKEEP_STORE's default in seed 001's mode), as seed 001's went to its ./backups volume.
const SEED001 = {
  POSTGRES_USER: "postgres",
  POSTGRES_PASSWORD: PASSWORD,
  POSTGRES_DB: DB,
  POSTGRES_HOST: "127.0.0.1",
  POSTGRES_PORT: "5432",
  BACKUP_RETENTION_DAILY: "7",
  BACKUP_RETENTION_WEEKLY: "4",
  LOG_LEVEL: "INFO",
};

interface CheckedConfig {
  datasources: Record<string, { engine: string; host: string; port: number; database?: string }>;
  stores: Record<string, { type: string; path?: string }>;
  jobs: Record<string, { schedules?: { schedule: string; type: string }[] }>;
}

async function content(db = DB): Promise<string> {
  const r = await pgQuery<{ h: string; n: string }>(db, "SELECT md5(string_agg(id || ':' || email || ':' || plan::text, ',' ORDER BY id)) AS h, count(*)::text AS n FROM accounts");
  return `${r[0]!.n}/${r[0]!.h}`;
}

describe.skipIf(!pgUp)("seed 001's compose service: a pod with the backup daemon, a named volume, /healthz from the host", () => {
  const env: Record<string, string> = SEED001;
  let job: string;

  beforeAll(async () => {
    await pgQuery("postgres", `CREATE DATABASE "${DB}"`);
    await pgQuery(DB, `CREATE TYPE plan AS ENUM ('free', 'pro');
      CREATE TABLE accounts (id serial PRIMARY KEY, email text UNIQUE NOT NULL, plan plan NOT NULL);
      INSERT INTO accounts (email, plan) SELECT 'u' || g || '@example.com', (CASE WHEN g % 5 = 0 THEN 'pro' ELSE 'free' END)::plan FROM generate_series(1, 1200) g`);
  });

  afterAll(async () => {
    removeContainers(BACKUP, RESTORE);
    podman(["pod", "rm", "-f", POD]);
    podman(["volume", "rm", "-f", VOLUME]);
    if (pgUp) for (const db of [DB, `${DB}_copy`]) await pgQuery("postgres", `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
  });

  it("seed 001's variables alone: dbkeep backs up POSTGRES_DB on POSTGRES_HOST into /backups, on seed 001's schedule", () => {
    const r = run(["config", "check", "--json"], { env: SEED001 });
    expect(r.code, r.stderr).toBe(0);
    const cfg = JSON.parse(r.stdout) as CheckedConfig;
    const ds = Object.values(cfg.datasources);
    expect(ds).toHaveLength(1);
    expect(ds[0]).toMatchObject({ engine: "postgres", host: "127.0.0.1", port: 5432, database: DB });
    expect(Object.values(cfg.stores)).toEqual([{ type: "local", path: "/backups" }]);
    job = Object.keys(cfg.jobs)[0]!;
    expect(cfg.jobs[job]!.schedules).toEqual([{ schedule: "0 2 * * *", type: "daily" }, { schedule: "0 3 * * 0", type: "weekly" }]);
    expect(r.stdout + r.stderr).not.toContain(PASSWORD);
  });

  it("`up`: the daemon serves /healthz, /readyz and /metrics to the host; `exec backup` and `exec list` work; podman's healthcheck passes", async () => {
    expect(job, "the previous test reads the job's name").toBeTruthy();
    const port = await freePort();
    expect(podman(["pod", "create", "--name", POD, "--network", "host"]).code).toBe(0);
    expect(podman(["volume", "create", VOLUME]).code).toBe(0);
    const up = run([], { detach: true, pod: POD, name: BACKUP, volumes: [`${VOLUME}:/backups`], env: { ...env, DBKEEP_LISTEN: `127.0.0.1:${port}` } });
    expect(up.code, up.stderr).toBe(0);

    const health = await until("/healthz", async () => {
      const r = await httpGet(`http://127.0.0.1:${port}/healthz`);
      return r?.status === 200 ? r.body : undefined;
    });
    expect(health.trim()).toBe("ok");
    const ready = await until("/readyz", async () => {
      const r = await httpGet(`http://127.0.0.1:${port}/readyz`);
      return r?.status === 200 ? r.body : undefined;
    });
    expect(ready.trim()).toBe("ready");
    // The image's HEALTHCHECK (node fetching /healthz on $DBKEEP_LISTEN's port), run by podman.
    const hc = podman(["healthcheck", "run", BACKUP]);
    expect(hc.code, hc.stdout + hc.stderr).toBe(0);

    // Seed 001's manual operations, through exec into the running service, as its README writes them.
    const manual = podman(["exec", BACKUP, "dbkeep", "backup", "--type", "manual"]);
    expect(manual.code, manual.stderr).toBe(0);
    const list = podman(["exec", BACKUP, "dbkeep", "list", "--json"]);
    expect(list.code, list.stderr).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string; type?: string; database: string }[] }).backups;
    expect(backups).toHaveLength(1);
    expect(backups[0]).toMatchObject({ type: "manual", database: DB });
    expect(backups[0]!.key).toMatch(/^postgres_db\/postgres_db-\d{8}-\d{6}\.dump$/);
    const status = podman(["exec", BACKUP, "dbkeep", "status"]);
    expect(status.code, status.stderr).toBe(0);
    // The job it built, printed at start without the password.
    const logs = podman(["logs", BACKUP]);
    expect(logs.stdout + logs.stderr).toContain(`database ${DB} on 127.0.0.1:5432`);
    expect(logs.stdout + logs.stderr).not.toContain(PASSWORD);

    const metrics = (await httpGet(`http://127.0.0.1:${port}/metrics`))?.body ?? "";
    expect(metrics).toMatch(/^dbkeep_up 1$/m);
    expect(metrics).toMatch(new RegExp(`dbkeep_job_next_run_timestamp_seconds\\{job="${job}"\\} \\d+`));
  });

  it("a second service of the project restores the backup from the shared volume into a scratch database; `down` stops the daemon cleanly", async () => {
    const before = await content();
    const target = `postgres://postgres@127.0.0.1:5432/${DB}_copy`;
    const r = run(["restore", "/backups", "latest", "--to", target, "--auto-confirm"], { pod: POD, name: RESTORE, volumes: [`${VOLUME}:/backups:ro`] });
    expect(r.code, r.stderr).toBe(0);
    expect(await content(`${DB}_copy`)).toBe(before);

    const down = podman(["pod", "stop", "-t", "60", POD]);
    expect(down.code, down.stderr).toBe(0);
    const state = JSON.parse(podman(["inspect", BACKUP, "--format", "{{json .State}}"]).stdout) as { ExitCode: number; Status: string };
    expect(state.Status).toBe("exited");
    expect(state.ExitCode).toBe(0);
    const logs = podman(["logs", BACKUP]);
    expect(logs.stdout + logs.stderr).toMatch(/dbkeep daemon stopped/);
    expect(logs.stdout + logs.stderr).not.toContain(PASSWORD);
  });
});
