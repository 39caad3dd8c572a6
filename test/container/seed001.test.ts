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

// Seed 001's variables as its README lists them, with the database server on this machine.
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
// dbkeep's own names for the same settings (docs/environment.md), used where the image does not read seed 001's yet.
const EQUIVALENT = {
  DB_TYPE: "postgres",
  PGUSER: "postgres",
  PGPASSWORD: PASSWORD,
  PGDATABASE: DB,
  PGHOST: "127.0.0.1",
  PGPORT: "5432",
  KEEP_DAILY: "7",
  KEEP_WEEKLY: "4",
  DBKEEP_SCHEDULE: "0 2 * * *",
  TZ: "UTC",
};

interface CheckedConfig {
  datasources: Record<string, { engine: string; host: string; port: number; database?: string }>;
  jobs: Record<string, unknown>;
}

async function content(db = DB): Promise<string> {
  const r = await pgQuery<{ h: string; n: string }>(db, "SELECT md5(string_agg(id || ':' || email || ':' || plan::text, ',' ORDER BY id)) AS h, count(*)::text AS n FROM accounts");
  return `${r[0]!.n}/${r[0]!.h}`;
}

describe.skipIf(!pgUp)("seed 001's compose service: a pod with the backup daemon, a named volume, /healthz from the host", () => {
  let env: Record<string, string>;
  let job: string;
  let seed001Read = false;

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

  it("seed 001's variables alone: dbkeep either backs up POSTGRES_DB on POSTGRES_HOST, or says it has no configuration; never another database", () => {
    const r = run(["config", "check", "--json"], { env: SEED001 });
    if (r.code === 0) {
      const cfg = JSON.parse(r.stdout) as CheckedConfig;
      const ds = Object.values(cfg.datasources);
      expect(ds).toHaveLength(1);
      expect(ds[0]).toMatchObject({ engine: "postgres", host: "127.0.0.1", port: 5432, database: DB });
      seed001Read = true;
    } else {
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/no config file/);
    }
    // Seed 001 keeps its backups in a local directory; dbkeep's store is named by DBKEEP_STORE.
    env = { ...(seed001Read ? SEED001 : EQUIVALENT), DBKEEP_STORE: "/backups" };
    const checked = run(["config", "check", "--json"], { env });
    expect(checked.code, checked.stderr).toBe(0);
    job = Object.keys((JSON.parse(checked.stdout) as CheckedConfig).jobs)[0]!;
    expect(job).toBeTruthy();
  });

  it("`up`: the daemon serves /healthz, /readyz and /metrics to the host; `exec backup` and `exec list` work; podman's healthcheck passes", async () => {
    expect(env, "the previous test sets the environment").toBeDefined();
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

    // Seed 001's manual operations, through exec into the running service.
    const manual = podman(["exec", BACKUP, "dbkeep", "backup", job]);
    expect(manual.code, manual.stderr).toBe(0);
    const list = podman(["exec", BACKUP, "dbkeep", "list", job, "--json"]);
    expect(list.code, list.stderr).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string }[] }).backups;
    expect(backups).toHaveLength(1);
    expect(backups[0]!.key).toContain(DB);

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
