import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, ROOT, tempDir } from "../helpers/env.js";

const PGDB = "dbkeep_it_daemon";
const available = await pgAvailable();

interface Daemon {
  child: ChildProcess;
  log: () => string;
  url: Promise<string>;
  exited: Promise<number>;
}

/** Starts `dbkeep daemon` on a free port and finds the port in its log. */
function startDaemon(args: string[], env: Record<string, string> = {}, cwd = ROOT): Daemon {
  const child = spawn(process.execPath, [CLI, ...args, "daemon", "--listen", "127.0.0.1:0"], { cwd, env: { ...process.env, ...CLI_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  let resolveUrl!: (u: string) => void;
  const url = new Promise<string>((r) => (resolveUrl = r));
  child.stderr!.on("data", (d: Buffer) => {
    log += d.toString();
    const m = /"address":"127\.0\.0\.1:(\d+)"/.exec(log);
    if (m) resolveUrl(`http://127.0.0.1:${m[1]}`);
  });
  const exited = new Promise<number>((r) => child.once("close", (code) => r(code ?? -1)));
  return { child, log: () => log, url, exited };
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function metric(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line ? Number(line.split(" ").pop()) : undefined;
}

function manifests(dir: string): { id: string; stored_bytes: number; finished_at: string }[] {
  try {
    return readdirSync(dir)
      .filter((f) => f.endsWith(".manifest.json"))
      .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as { id: string; stored_bytes: number; finished_at: string })
      .sort((a, b) => (a.finished_at < b.finished_at ? -1 : 1));
  } catch {
    return [];
  }
}

/** What a stopped run left in a store directory besides the job's last-run record (a directory removed: nothing). */
function leftovers(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true }).map(String).filter((f) => f !== ".dbkeep-last-run.json");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

describe.skipIf(!available)("dbkeep daemon", () => {
  beforeAll(async () => {
    await createDb(PGDB);
    await pgQuery(PGDB, "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat(' x', 30) AS v FROM generate_series(1, 400000) g");
  });
  afterAll(async () => {
    await dropDb(PGDB);
  });

  it("runs a seconds-level schedule, reports it in /metrics, reloads on SIGHUP (valid and invalid), stops on SIGTERM with 0", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = join(dir, "dbkeep.yaml");
    const base = `datasources:\n  app: { engine: sqlite, path: ${join(dir, "app.db")} }\nstores:\n  local: { type: local, path: ${join(dir, "backups")} }\ndaemon: { history: ${join(dir, "history.db")} }\njobs:\n  app: { datasource: app, store: local, schedule: "*/2 * * * * *" }\n`;
    writeFileSync(cfg, base, { mode: 0o600 });
    const d = startDaemon(["-c", cfg]);
    try {
      const url = await d.url;
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      // Ready once the first check of every store finished (it runs right after the server starts listening).
      await until("ready", async () => (await fetch(`${url}/readyz`)).status === 200);
      await until("two scheduled backups", () => manifests(join(dir, "backups/app")).length >= 2);
      await until("metrics of two runs", async () => (metric(await (await fetch(`${url}/metrics`)).text(), "dbkeep_job_runs_total", 'job="app",result="success"') ?? 0) >= 2);
      const text = await (await fetch(`${url}/metrics`)).text();
      const ms = manifests(join(dir, "backups/app"));
      const successes = metric(text, "dbkeep_job_runs_total", 'job="app",result="success"')!;
      expect(successes).toBeGreaterThanOrEqual(2);
      expect(metric(text, "dbkeep_job_runs_total", 'job="app",result="failure"')).toBe(0);
      const lastSuccess = metric(text, "dbkeep_job_last_success_timestamp_seconds", 'job="app"')!;
      const matching = ms.find((m) => Math.abs(Date.parse(m.finished_at) / 1000 - lastSuccess) < 0.01);
      expect(matching, "last success matches a manifest").toBeDefined();
      expect(metric(text, "dbkeep_job_last_size_bytes", 'job="app"')).toBe(matching!.stored_bytes);
      expect(metric(text, "dbkeep_job_next_run_timestamp_seconds", 'job="app"')!).toBeGreaterThan(Date.now() / 1000 - 1);
      expect(metric(text, "dbkeep_store_uploaded_bytes_total", 'store="local:local"')).toBeGreaterThan(0);

      // A valid reload adds a job; an invalid one is refused and the running config kept.
      writeFileSync(cfg, base + `  second: { datasource: app, store: local, prefix: second, every: 1s }\n`);
      d.child.kill("SIGHUP");
      await until("the reloaded second job to run", () => manifests(join(dir, "backups/second/app")).length >= 1);
      writeFileSync(cfg, "jobs: [this is: not valid\n");
      d.child.kill("SIGHUP");
      await until("the refused reload", () => d.log().includes("config reload refused"));
      const after = await (await fetch(`${url}/metrics`)).text();
      expect(metric(after, "dbkeep_config_reloads_total", 'result="success"')).toBe(1);
      expect(metric(after, "dbkeep_config_reloads_total", 'result="failure"')).toBe(1);
      const before = manifests(join(dir, "backups/app")).length;
      await until("runs going on after the refused reload", () => manifests(join(dir, "backups/app")).length > before);

      d.child.kill("SIGTERM");
      expect(await d.exited).toBe(0);
      // The history survives the daemon.
      writeFileSync(cfg, base);
      const h = JSON.parse(dbkeep(["-c", cfg, "history", "app", "--json"]).stdout) as { runs: { ok: boolean; trigger: string }[] };
      expect(h.runs.length).toBeGreaterThanOrEqual(2);
      expect(h.runs.every((r) => r.ok && r.trigger === "schedule")).toBe(true);
    } finally {
      d.child.kill("SIGKILL");
    }
  });

  it("sync_schedule copies a backup missing from one of a job's stores", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = join(dir, "dbkeep.yaml");
    const head = `datasources:\n  app: { engine: sqlite, path: ${join(dir, "app.db")} }\nstores:\n  a: { type: local, path: ${join(dir, "a")} }\n  b: { type: local, path: ${join(dir, "b")} }\ndaemon: { history: ${join(dir, "history.db")} }\njobs:\n`;
    writeFileSync(cfg, head + "  app: { datasource: app, store: a }\n", { mode: 0o600 });
    expect(dbkeep(["-c", cfg, "backup", "app"]).code).toBe(0);
    writeFileSync(cfg, head + '  app: { datasource: app, stores: [a, b], sync_schedule: "* * * * * *" }\n', { mode: 0o600 });
    const d = startDaemon(["-c", cfg]);
    try {
      await d.url;
      await until("the backup copied to store b", () => manifests(join(dir, "b/app")).length === 1);
      expect(manifests(join(dir, "b/app"))[0]!.id).toBe(manifests(join(dir, "a/app"))[0]!.id);
      d.child.kill("SIGTERM");
      expect(await d.exited).toBe(0);
    } finally {
      d.child.kill("SIGKILL");
    }
  });

  it("SIGTERM while a job runs: after the grace period the job is stopped cleanly, nothing partial is left, exit 0", async () => {
    const dir = tempDir();
    const cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:\n  pg: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${PGDB}, compression: zstd, compression_level: 19 }\nstores:\n  local: { type: local, path: ${join(dir, "backups")} }\ndaemon: { history: ${join(dir, "history.db")}, shutdown_grace: 1 }\njobs:\n  slow: { datasource: pg, store: local, every: 1h }\n`,
      { mode: 0o600 },
    );
    const d = startDaemon(["-c", cfg]);
    try {
      await until("the dump to be writing", () => {
        try {
          return readdirSync(join(dir, "backups", PGDB)).some((f) => f.includes(".dbkeep-partial-"));
        } catch {
          return false;
        }
      });
      d.child.kill("SIGTERM");
      expect(await d.exited).toBe(0);
      expect(d.log()).toContain("grace period over: stopping running jobs");
      expect(leftovers(join(dir, "backups", PGDB))).toEqual([]);
    } finally {
      d.child.kill("SIGKILL");
    }
  });

  it("sidecar mode: environment variables alone give a scheduled backup; BACKUP_INTERVAL_SECONDS=0 runs once and exits", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const env = { DBKEEP_SOURCE: `sqlite:${join(dir, "app.db")}`, DBKEEP_STORE: join(dir, "backups"), DBKEEP_SCHEDULE: "*/1 * * * * *", KEEP_LAST: "2", DBKEEP_STATE_DIR: join(dir, "state") };
    const d = startDaemon([], env, dir);
    try {
      await until("a sidecar backup", () => manifests(join(dir, "backups/app")).length >= 1);
      d.child.kill("SIGTERM");
      expect(await d.exited).toBe(0);
    } finally {
      d.child.kill("SIGKILL");
    }
    const once = startDaemon([], { DBKEEP_SOURCE: `sqlite:${join(dir, "app.db")}`, DBKEEP_STORE: join(dir, "once"), BACKUP_INTERVAL_SECONDS: "0", DBKEEP_STATE_DIR: join(dir, "state2") }, dir);
    expect(await once.exited).toBe(0);
    expect(manifests(join(dir, "once/app"))).toHaveLength(1);
  });

  it("BACKUP_INTERVAL_SECONDS=0 runs now even when the history has a run from a minute ago, and exits", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const env = { DBKEEP_SOURCE: `sqlite:${join(dir, "app.db")}`, DBKEEP_STORE: join(dir, "backups"), BACKUP_INTERVAL_SECONDS: "0", DBKEEP_STATE_DIR: join(dir, "state") };
    for (let run = 1; run <= 3; run++) {
      // Backup ids have a resolution of one second.
      await new Promise((r) => setTimeout(r, 1100));
      const once = startDaemon([], env, dir);
      const code = await Promise.race([once.exited, new Promise<string>((r) => setTimeout(() => r("still running after 60 s"), 60_000))]);
      once.child.kill("SIGKILL");
      expect(code, once.log()).toBe(0);
      expect(manifests(join(dir, "backups/app"))).toHaveLength(run);
    }
    const h = JSON.parse(dbkeep(["history", "--json"], { cwd: dir, env }).stdout) as { runs: { ok: boolean; trigger: string }[] };
    expect(h.runs.map((r) => [r.ok, r.trigger])).toEqual([[true, "schedule"], [true, "schedule"], [true, "schedule"]]);
  });

  it("a single run (BACKUP_INTERVAL_SECONDS=0) that fails exits 1, as dbkeep backup would", async () => {
    const dir = tempDir();
    const once = startDaemon([], { DBKEEP_SOURCE: pgUrl("dbkeep_it_daemon_missing_db"), DBKEEP_STORE: join(dir, "backups"), BACKUP_INTERVAL_SECONDS: "0", DBKEEP_STATE_DIR: join(dir, "state") }, dir);
    expect(await once.exited).toBe(1);
    expect(once.log()).toContain("dbkeep_it_daemon_missing_db");
  });

  it("SIGTERM stops a single run within DBKEEP_SHUTDOWN_GRACE: the dump is stopped, nothing partial is left, exit 143", async () => {
    const dir = tempDir();
    const store = join(dir, "backups");
    const d = startDaemon([], { DBKEEP_SOURCE: pgUrl(PGDB, "compression=zstd&level=19"), DBKEEP_STORE: store, BACKUP_INTERVAL_SECONDS: "0", DBKEEP_SHUTDOWN_GRACE: "1", DBKEEP_STATE_DIR: join(dir, "state") }, dir);
    try {
      await until("the dump to be writing", () => {
        try {
          return readdirSync(join(store, PGDB)).some((f) => f.includes(".dbkeep-partial-"));
        } catch {
          return false;
        }
      });
      const signalled = Date.now();
      d.child.kill("SIGTERM");
      expect(await d.exited).toBe(143);
      // One second of grace, then the time to stop pg_dump and remove the partial upload; not a timing test.
      expect(Date.now() - signalled).toBeLessThan(20_000);
      expect(d.log()).toContain("grace period over: stopping running jobs");
      expect(leftovers(join(store, PGDB))).toEqual([]);
    } finally {
      d.child.kill("SIGKILL");
    }
  });
});
