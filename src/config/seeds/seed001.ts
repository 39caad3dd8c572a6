import { existsSync } from "node:fs";
import { DbkeepError } from "../../core/errors.js";
import { storeFromUrl } from "../urls.js";

/**
 * Seed 001 (the PostgreSQL Backup Scheduler: pg_dump -Fc, daily/weekly/manual backups, GCS) configured by its own
 * environment variables: POSTGRES_USER / POSTGRES_DB are enough to select sidecar mode, without DB_TYPE.
 * docs/migrating.md maps every variable; docs/environment.md lists them.
 */
export function isSeed001Env(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.POSTGRES_DB || env.POSTGRES_USER);
}

/** Seed 001's default credentials path: used when it exists and GCS_CREDENTIALS_PATH is not set. */
export const SEED001_CREDENTIALS = "/gcs-credentials/credentials.json";

const LOG_LEVELS: Record<string, "debug" | "info" | "warn" | "error"> = { DEBUG: "debug", INFO: "info", WARNING: "warn", WARN: "warn", ERROR: "error", CRITICAL: "error" };

/** LOG_LEVEL (DEBUG, INFO, WARNING, ERROR) as dbkeep's log level, in seed 001's mode; undefined otherwise or when unset. */
export function seed001LogLevel(env: NodeJS.ProcessEnv): "debug" | "info" | "warn" | "error" | undefined {
  if (!isSeed001Env(env) || env.DBKEEP_SOURCE || env.DB_TYPE || !env.LOG_LEVEL) return undefined;
  return LOG_LEVELS[env.LOG_LEVEL.toUpperCase()];
}

function whole(env: NodeJS.ProcessEnv, name: string, def: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = env[name];
  if (v === undefined || v === "") return def;
  if (!/^\d+$/.test(v.trim()) || Number(v) < min || Number(v) > max) {
    throw new DbkeepError("CONFIG_INVALID", `${name}: expected a whole number${max < Number.MAX_SAFE_INTEGER ? ` from ${min} to ${max}` : ""}, got "${v}"`);
  }
  return Number(v);
}

function flag(env: NodeJS.ProcessEnv, name: string): boolean {
  const v = (env[name] ?? "").trim().toLowerCase();
  if (v === "" || ["false", "0", "no", "off"].includes(v)) return false;
  if (["true", "1", "yes", "on"].includes(v)) return true;
  throw new DbkeepError("CONFIG_INVALID", `${name}: expected true or false, got "${env[name]}"`);
}

/**
 * The job seed 001 would run: POSTGRES_DB on POSTGRES_HOST dumped with pg_dump -Fc at BACKUP_COMPRESSION_LEVEL into
 * files named BACKUP_BASE_NAME-<YYYYMMDD-HHMMSS>.dump in a local store (DBKEEP_STORE, default /backups) and, with
 * GCS_BUCKET_NAME, in GCS too; daily backups at 02:00 UTC and weekly ones on Sundays at 03:00 UTC, each type kept by
 * count (manual ones never pruned), pruned after each backup; a GCS copy missed by an outage is made again every
 * SCHEDULER_SYNC_INTERVAL_SECONDS. The password stays in POSTGRES_PASSWORD (password_env), never copied.
 */
export function seed001Config(env: NodeJS.ProcessEnv): { raw: Record<string, unknown>; once: boolean } {
  const missing = ["POSTGRES_USER", "POSTGRES_DB"].filter((n) => !env[n]);
  if (missing.length) {
    throw new DbkeepError("CONFIG_INVALID", `${missing.join(" and ")} not set: seed 001's settings need POSTGRES_USER and POSTGRES_DB`, {
      hint: "set both (and POSTGRES_PASSWORD, POSTGRES_HOST), or use DBKEEP_SOURCE=postgres://user@host/db",
    });
  }
  if (env.LOG_LEVEL && !LOG_LEVELS[env.LOG_LEVEL.toUpperCase()]) {
    throw new DbkeepError("CONFIG_INVALID", `LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got "${env.LOG_LEVEL}"`);
  }
  const source = {
    engine: "postgres",
    host: env.POSTGRES_HOST || "postgres",
    port: whole(env, "POSTGRES_PORT", 5432, 1, 65535),
    user: env.POSTGRES_USER,
    ...(env.POSTGRES_PASSWORD !== undefined ? { password_env: "POSTGRES_PASSWORD" } : env.POSTGRES_PASSWORD_FILE ? { password_file: env.POSTGRES_PASSWORD_FILE } : {}),
    database: env.POSTGRES_DB,
    format: "custom",
    // pg_dump compresses (-Fc -Z level), as seed 001 does: the files are plain .dump files pg_restore reads.
    compression: "none",
    dump_compression: whole(env, "BACKUP_COMPRESSION_LEVEL", 9, 0, 9),
  };
  const stores: Record<string, Record<string, unknown>> = { local: env.DBKEEP_STORE ? { ...storeFromUrl(env.DBKEEP_STORE).options } : { type: "local", path: "/backups" } };
  const gcs = Boolean(env.GCS_BUCKET_NAME);
  if (gcs) {
    const credentials = env.GCS_CREDENTIALS_PATH || (existsSync(SEED001_CREDENTIALS) ? SEED001_CREDENTIALS : undefined);
    stores.gcs = {
      type: "gcs",
      bucket: env.GCS_BUCKET_NAME,
      prefix: env.GCS_BACKUP_PREFIX ?? "backups/postgres",
      ...(credentials ? { credentials_file: credentials } : {}),
      max_attempts: Math.max(1, whole(env, "GCS_UPLOAD_RETRY_MAX", 3, 1, 20)),
      // An emulator or a private endpoint (dbkeep's own variable; seed 001 always talks to storage.googleapis.com).
      ...(env.DBKEEP_GCS_ENDPOINT ? { endpoint: env.DBKEEP_GCS_ENDPOINT } : {}),
    };
  }
  const local = { daily: { keep_last: whole(env, "BACKUP_RETENTION_DAILY", 7, 1) }, weekly: { keep_last: whole(env, "BACKUP_RETENTION_WEEKLY", 4, 1) } };
  const cloud = flag(env, "GCS_RETENTION_ENABLED") ? { types: { daily: { keep_last: whole(env, "GCS_RETENTION_DAILY", 30, 1) }, weekly: { keep_last: whole(env, "GCS_RETENTION_WEEKLY", 90, 1) } } } : {};
  const job: Record<string, unknown> = {
    datasource: "source",
    stores: Object.keys(stores),
    // As in seed 001, the local backup is what counts; a GCS upload that failed is made again by the sync.
    ...(gcs ? { require: "any", sync_every: whole(env, "SCHEDULER_SYNC_INTERVAL_SECONDS", 1800, 1) } : {}),
    basename: env.BACKUP_BASE_NAME || "postgres_db",
    schedules: [
      { schedule: "0 2 * * *", type: "daily" },
      { schedule: "0 3 * * 0", type: "weekly" },
    ],
    prune_after_backup: true,
    retention: { types: local, ...(gcs ? { stores: { gcs: cloud } } : {}) },
  };
  return {
    raw: {
      datasources: { source },
      stores,
      jobs: { [env.DBKEEP_JOB ?? "backup"]: job },
      timezone: "UTC",
      ...(env.DBKEEP_LISTEN || env.DBKEEP_SHUTDOWN_GRACE
        ? { daemon: { ...(env.DBKEEP_LISTEN ? { listen: env.DBKEEP_LISTEN } : {}), ...(env.DBKEEP_SHUTDOWN_GRACE ? { shutdown_grace: /^\d+$/.test(env.DBKEEP_SHUTDOWN_GRACE) ? Number(env.DBKEEP_SHUTDOWN_GRACE) : env.DBKEEP_SHUTDOWN_GRACE } : {}) } }
        : {}),
    },
    once: false,
  };
}
