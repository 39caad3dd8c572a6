import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type Database from "better-sqlite3";
import { stateDir } from "./lock.js";
import type { JobResult } from "./jobs.js";
import { redact } from "./redact.js";

export interface HistoryEntry {
  id: number;
  job: string;
  started_at: string;
  finished_at: string;
  ok: boolean;
  seconds: number;
  bytes: number | null;
  backup: string | null;
  store: string;
  attempts: number;
  error: string | null;
  trigger: string;
  /** Verification by restore (verify: restore, or trigger "verify"): passed or not, and the restore's duration. */
  verified: boolean | null;
  restore_seconds: number | null;
}

/** Where the run history lives: $DBKEEP_STATE_DIR/history.db unless the config's daemon.history says otherwise. */
export function historyPath(configured?: string): string {
  return configured ?? join(stateDir(), "history.db");
}

/**
 * The run history: one row per job run, in an embedded SQLite file, so that `dbkeep history` shows past runs and
 * the daemon knows after a restart when each job last ran. Errors are stored redacted.
 */
export class History {
  readonly #db: Database.Database;

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // Loaded on first use: the native module is not needed on the way to a dump.
    const Sqlite = createRequire(import.meta.url)("better-sqlite3") as typeof Database;
    this.#db = new Sqlite(path);
    this.#db.pragma("journal_mode = WAL");
    this.#db.pragma("busy_timeout = 5000");
    this.#db.exec(`CREATE TABLE IF NOT EXISTS runs (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      job TEXT NOT NULL,
      started_at TEXT NOT NULL,
      finished_at TEXT NOT NULL,
      ok INTEGER NOT NULL,
      seconds REAL NOT NULL,
      bytes INTEGER,
      backup TEXT,
      store TEXT NOT NULL,
      attempts INTEGER NOT NULL,
      error TEXT,
      trigger TEXT NOT NULL DEFAULT 'manual'
    );
    CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started_at);`);
    // Added with verification by restore; older history files get the columns here.
    const cols = new Set((this.#db.prepare("PRAGMA table_info(runs)").all() as { name: string }[]).map((c) => c.name));
    if (!cols.has("verified")) this.#db.exec("ALTER TABLE runs ADD COLUMN verified INTEGER");
    if (!cols.has("restore_seconds")) this.#db.exec("ALTER TABLE runs ADD COLUMN restore_seconds REAL");
  }

  record(r: JobResult, startedAt: Date, trigger: string): void {
    this.#db
      .prepare("INSERT INTO runs (job, started_at, finished_at, ok, seconds, bytes, backup, store, attempts, error, trigger, verified, restore_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .run(
        r.job,
        startedAt.toISOString(),
        new Date(startedAt.getTime() + r.seconds * 1000).toISOString(),
        r.ok ? 1 : 0,
        Math.round(r.seconds * 1000) / 1000,
        r.manifest?.stored_bytes ?? null,
        r.manifest?.id ?? null,
        r.store,
        r.attempts,
        r.error ? redact(r.error.message) : null,
        trigger,
        r.verification ? (r.verification.ok ? 1 : 0) : null,
        r.verification?.restoreSeconds ?? null,
      );
  }

  list(job?: string, limit = 50): HistoryEntry[] {
    const rows = (job
      ? this.#db.prepare("SELECT * FROM runs WHERE job = ? ORDER BY started_at DESC, id DESC LIMIT ?").all(job, limit)
      : this.#db.prepare("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT ?").all(limit)) as (Omit<HistoryEntry, "ok"> & { ok: number })[];
    return rows.map((r) => ({ ...r, ok: r.ok === 1, verified: (r.verified as unknown) === null || r.verified === undefined ? null : (r.verified as unknown) === 1 }));
  }

  /** When the job last started a run, for catch-up after downtime. */
  lastStart(job: string): Date | undefined {
    const row = this.#db.prepare("SELECT max(started_at) AS at FROM runs WHERE job = ?").get(job) as { at: string | null };
    return row.at ? new Date(row.at) : undefined;
  }

  close(): void {
    this.#db.close();
  }
}
