import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfigFile } from "../../src/config/load.js";
import { DbkeepError } from "../../src/core/errors.js";
import { createLogger } from "../../src/core/log.js";
import { planJob, runJob } from "../../src/core/jobs.js";
import type { Store } from "../../src/stores/store.js";
import { createDb, dbkeep, dropDb, pgAvailable, pgQuery, ROOT, tempDir } from "../helpers/env.js";

const PGDB = "dbkeep_it_jobs";
const available = await pgAvailable();

function config(dir: string, jobs: string, extraDatasources = ""): string {
  copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
  const file = join(dir, "dbkeep.yaml");
  writeFileSync(
    file,
    `datasources:
  app: { engine: sqlite, path: ${join(dir, "app.db")}, compression: zstd }
  gone: { engine: sqlite, path: ${join(dir, "gone.db")} }
  pg: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${PGDB}, format: custom, compression: lz4 }
  pgplain: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${PGDB} }
${extraDatasources}
stores:
  local: { type: local, path: ${join(dir, "backups")} }
jobs:
${jobs}
`,
    { mode: 0o600 },
  );
  return file;
}

describe.skipIf(!available)("jobs", () => {
  let state: string;
  beforeAll(async () => {
    state = tempDir();
    await createDb(PGDB);
    await pgQuery(PGDB, "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat(' x', 20) AS v FROM generate_series(1, 300000) g");
  });
  afterAll(async () => {
    await dropDb(PGDB);
  });
  const env = () => ({ DBKEEP_STATE_DIR: state });

  it("--all --parallel 2: one job fails, the others complete, the summary shows all three, exit 1", () => {
    const dir = tempDir();
    const cfg = config(dir, "  one: { datasource: app, store: local, prefix: one }\n  two: { datasource: gone, store: local }\n  three: { datasource: pg, store: local }");
    const r = dbkeep(["-c", cfg, "backup", "--all", "--parallel", "2"], { env: env() });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/one\s+ok\s+/);
    expect(r.stdout).toMatch(/two\s+FAILED\s+/);
    expect(r.stdout).toMatch(/three\s+ok\s+/);
    expect(r.stdout).toContain("2 succeeded, 1 failed");
    expect(r.stderr).toContain("error: job two: SQLite database");
    const json = dbkeep(["-c", cfg, "backup", "--all", "--parallel", "2", "--json"], { env: env() });
    const doc = JSON.parse(json.stdout) as { ok: boolean; succeeded: number; failed: number; jobs: { job: string; ok: boolean; attempts: number }[] };
    expect(doc).toMatchObject({ ok: false, succeeded: 2, failed: 1 });
    expect(doc.jobs.map((j) => [j.job, j.ok])).toEqual([["one", true], ["two", false], ["three", true]]);
  });

  it("a job never runs twice at once: a live lock refuses, a dead process's lock is taken over with a line that says so", () => {
    const dir = tempDir();
    const cfg = config(dir, "  one: { datasource: app, store: local }");
    const locks = join(state, "locks");
    mkdirSync(locks, { recursive: true });
    writeFileSync(join(locks, "one.lock"), JSON.stringify({ pid: process.pid, host: hostname(), since: "2026-01-01T00:00:00Z" }));
    const busy = dbkeep(["-c", cfg, "backup", "one"], { env: env() });
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain(`job one is already running (pid ${process.pid}`);
    writeFileSync(join(locks, "one.lock"), JSON.stringify({ pid: 2 ** 22 + 12345, host: hostname(), since: "2026-01-01T00:00:00Z" }));
    const taken = dbkeep(["-c", cfg, "backup", "one"], { env: env() });
    expect(taken.code).toBe(0);
    expect(taken.stderr).toMatch(/took over the stale lock of job one \(pid \d+ is gone\)/);
    expect(existsSync(join(locks, "one.lock"))).toBe(false);
  });

  it("hooks: before, after and on_failure run with the outcome in their environment and their output in the log", () => {
    const dir = tempDir();
    const out = join(dir, "hooks.log");
    const hooks = `{ before: 'echo "before $DBKEEP_JOB $DBKEEP_STATUS" >> ${out}; echo hello from before', after: 'echo "after $DBKEEP_STATUS $DBKEEP_BACKUP $DBKEEP_BYTES" >> ${out}', on_failure: 'echo "failure $DBKEEP_ERROR" >> ${out}', timeout: 10 }`;
    const cfg = config(dir, `  ok: { datasource: app, store: local, hooks: ${hooks} }\n  bad: { datasource: gone, store: local, hooks: ${hooks} }\n  blocked: { datasource: app, store: local, prefix: blocked, hooks: { before: 'exit 3' } }`);
    const ok = dbkeep(["-c", cfg, "backup", "ok"], { env: env() });
    expect(ok.code).toBe(0);
    expect(ok.stderr).toContain("hello from before");
    const bad = dbkeep(["-c", cfg, "backup", "bad"], { env: env() });
    expect(bad.code).toBe(1);
    const lines = readFileSync(out, "utf8").trim().split("\n");
    expect(lines[0]).toBe("before ok pending");
    expect(lines[1]).toMatch(/^after success app-\d{8}-\d{6} \d+$/);
    expect(lines[2]).toBe("before bad pending");
    expect(lines[3]).toBe("after failure  ");
    expect(lines[4]).toMatch(/^failure SQLite database .*gone\.db not found$/);
    const blocked = dbkeep(["-c", cfg, "backup", "blocked"], { env: env() });
    expect(blocked.code).toBe(1);
    expect(blocked.stderr).toMatch(/sh failed with exit code 3 \(before hook of job blocked\)/);
    const listed = JSON.parse(dbkeep(["-c", cfg, "list", "blocked", "--json", "--all"], { env: env() }).stdout) as { backups: unknown[]; incomplete: unknown[] };
    expect(listed).toMatchObject({ backups: [], incomplete: [] });
  });

  it("a per-job timeout stops the dump and leaves nothing visible", () => {
    const dir = tempDir();
    const cfg = config(dir, "  slow: { datasource: pg, store: local, timeout: 1s, compression: zstd, compression_level: 19 }");
    const r = dbkeep(["-c", cfg, "backup", "slow"], { env: env() });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("job slow timed out after 1s");
    const listed = JSON.parse(dbkeep(["-c", cfg, "list", "slow", "--json", "--all"], { env: env() }).stdout) as { backups: unknown[]; incomplete: unknown[] };
    expect(listed.backups).toEqual([]);
    expect(listed.incomplete).toEqual([]);
  });

  it("retry: a store that fails twice with a retryable error succeeds on the third attempt, backoff honoured", async () => {
    const dir = tempDir();
    const cfg = config(dir, "  flaky: { datasource: app, store: local, retry: { max_attempts: 3, delay: 5, backoff_multiplier: 3 } }");
    const plan = planJob(loadConfigFile(cfg), "flaky");
    let failures = 0;
    const waits: number[] = [];
    const flaky = (s: Store): Store => ({
      ...s,
      async put(key: string, body: Readable, o?: { signal?: AbortSignal }) {
        if (key.endsWith(".zst") && failures < 2) {
          failures++;
          body.resume();
          throw new DbkeepError("STORE_FAILED", "503 Slow Down", { retryable: true });
        }
        return s.put(key, body, o);
      },
    });
    const r = await runJob({ ...plan, lock: false }, { log: createLogger({ level: "silent" }), signal: new AbortController().signal, wrapStore: flaky, sleep: async (sec) => void waits.push(sec) });
    expect(r.ok).toBe(true);
    expect(r.attempts).toBe(3);
    expect(waits).toEqual([5, 15]);
    expect(readdirSync(join(dir, "backups/app")).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(1);
    expect(readdirSync(join(dir, "backups/app")).filter((f) => f.includes("partial"))).toEqual([]);
  });

  it("an error that is not retryable is not retried", async () => {
    const dir = tempDir();
    const cfg = config(dir, "  gone: { datasource: gone, store: local, retry: { max_attempts: 5, delay: 1 } }");
    const waits: number[] = [];
    const r = await runJob({ ...planJob(loadConfigFile(cfg), "gone"), lock: false }, { log: createLogger({ level: "silent" }), signal: new AbortController().signal, sleep: async (s) => void waits.push(s) });
    expect(r.ok).toBe(false);
    expect(r.attempts).toBe(1);
    expect(waits).toEqual([]);
  });

  it("verify: true reads each backup back and runs the engine's structural check", () => {
    const dir = tempDir();
    const cfg = config(dir, "  c: { datasource: pg, store: local, verify: true }\n  p: { datasource: pgplain, store: local, prefix: p, verify: true }\n  s: { datasource: app, store: local, verify: true }");
    const r = dbkeep(["-c", cfg, "--log-format", "text", "backup", "--all"], { env: env() });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/pg_restore --list reads \d+ entries/);
    expect(r.stderr).toContain("plain dump is complete");
    expect(r.stderr).toMatch(/SQLite integrity_check ok, 3 tables/);
  });
});
