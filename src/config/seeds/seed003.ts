/**
 * Seed 003's environment: a restic backup sidecar (DB_TYPE, RESTIC_REPOSITORY, RESTIC_PASSWORD(_FILE), RESTIC_TAGS,
 * KEEP_*, BACKUP_INTERVAL_SECONDS, CRON_SCHEDULE, TZ, WEBHOOK_*) read as that tool read it, into dbkeep's one sidecar
 * job. env.ts builds the job from the variables both tools share; this file adds what is seed 003's own: the restic
 * store, its defaults (7/4/12/3 retention applied after every backup and pruned, tags `db,encrypted`, one run and
 * exit when no schedule is set, the database hosts `postgres` / `mysql` / `mongo`), uncompressed SQL dumps for
 * restic's deduplication and compression, MongoDB's deterministic archive, and the webhook's fields.
 */

import { DbkeepError } from "../../core/errors.js";

/** RESTIC_REPOSITORY without DBKEEP_STORE: the store is seed 003's restic repository. */
export function isSeed003Env(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.RESTIC_REPOSITORY) && !env.DBKEEP_STORE;
}

export interface SeedVariable {
  name: string;
  /** Whether dbkeep does what seed 003 did with it. */
  supported: boolean;
  /** What dbkeep does with it, or what to use instead. */
  dbkeep: string;
}

/** Every variable seed 003 reads (its README and its entrypoint), and what dbkeep makes of it. */
export const SEED003_VARIABLES: readonly SeedVariable[] = [
  { name: "DB_TYPE", supported: true, dbkeep: "the engine: postgres (postgresql, pg), mysql, mariadb, mongo (mongodb)" },
  { name: "RESTIC_REPOSITORY", supported: true, dbkeep: "a restic store (any restic location), created on the first run" },
  { name: "RESTIC_PASSWORD", supported: true, dbkeep: "the repository's password, read from the environment when restic runs" },
  { name: "RESTIC_PASSWORD_FILE", supported: true, dbkeep: "handed to restic as it is" },
  { name: "RESTIC_PASSWORD_COMMAND", supported: true, dbkeep: "handed to restic as it is" },
  { name: "RESTIC_TAGS", supported: true, dbkeep: "tags of every snapshot (default db,encrypted, plus type=<DB_TYPE> and host=<host>) and the webhook's tags" },
  { name: "RESTIC_CACHE_DIR", supported: true, dbkeep: "handed to restic" },
  { name: "BACKUP_INTERVAL_SECONDS", supported: true, dbkeep: "every: N seconds; 0 or unset (without CRON_SCHEDULE): one backup, then exit" },
  { name: "CRON_SCHEDULE", supported: true, dbkeep: "the job's schedule, run by `dbkeep start` (the daemon); wins over the interval" },
  { name: "TZ", supported: true, dbkeep: "the time zone of the schedule and of the retention's days (default UTC)" },
  { name: "KEEP_DAILIES", supported: true, dbkeep: "keep_daily (default 7), applied after every successful backup" },
  { name: "KEEP_WEEKLIES", supported: true, dbkeep: "keep_weekly (default 4)" },
  { name: "KEEP_MONTHLIES", supported: true, dbkeep: "keep_monthly (default 12)" },
  { name: "KEEP_YEARLIES", supported: true, dbkeep: "keep_yearly (default 3)" },
  { name: "PRUNE_ON_SUCCESS", supported: true, dbkeep: "restic prune after the retention's forget (default true; false, 0 or no turn it off)" },
  { name: "AWS_ACCESS_KEY_ID", supported: true, dbkeep: "handed to restic (as every AWS_*, B2_*, AZURE_*, GOOGLE_*, OS_*, ST_*, RESTIC_REST_* variable)" },
  { name: "AWS_SECRET_ACCESS_KEY", supported: true, dbkeep: "handed to restic" },
  { name: "AWS_DEFAULT_REGION", supported: true, dbkeep: "handed to restic" },
  { name: "WEBHOOK_URL", supported: true, dbkeep: "a webhook notifier, after every run (success and failure), seed 003's payload fields" },
  { name: "WEBHOOK_METHOD", supported: true, dbkeep: "the webhook's method (POST, PUT, PATCH)" },
  { name: "WEBHOOK_AUTH_HEADER", supported: true, dbkeep: "a whole header line, `Authorization: Bearer <token>`, read when sending" },
  { name: "WEBHOOK_EXTRA_HEADERS", supported: true, dbkeep: "comma-separated Key=Value headers" },
  { name: "WEBHOOK_TIMEOUT_SECONDS", supported: true, dbkeep: "the webhook's timeout (default 10)" },
  { name: "PGHOST", supported: true, dbkeep: "PostgreSQL host (default postgres)" },
  { name: "PGPORT", supported: true, dbkeep: "PostgreSQL port (default 5432)" },
  { name: "PGUSER", supported: true, dbkeep: "PostgreSQL user (default postgres)" },
  { name: "PGPASSWORD", supported: true, dbkeep: "PostgreSQL password, read from the environment when pg_dump runs" },
  { name: "PGDATABASE", supported: true, dbkeep: "the database (default postgres)" },
  { name: "PG_DUMP_ALL", supported: true, dbkeep: "true: every database with pg_dumpall" },
  { name: "MYSQL_HOST", supported: true, dbkeep: "MySQL/MariaDB host (default mysql)" },
  { name: "MYSQL_PORT", supported: true, dbkeep: "MySQL/MariaDB port (default 3306)" },
  { name: "MYSQL_USER", supported: true, dbkeep: "MySQL/MariaDB user (default root)" },
  { name: "MYSQL_PASSWORD", supported: true, dbkeep: "MySQL/MariaDB password, read from the environment when the dump runs" },
  { name: "MYSQL_DATABASE", supported: true, dbkeep: "one database; empty: every database" },
  { name: "MONGO_URI", supported: true, dbkeep: "the MongoDB connection string (a secret: it is never printed)" },
  { name: "MONGODB_URI", supported: true, dbkeep: "the same, when MONGO_URI is not set" },
  { name: "MONGO_HOST", supported: true, dbkeep: "MongoDB host without a URI (default mongo)" },
  { name: "MONGO_PORT", supported: true, dbkeep: "MongoDB port (default 27017)" },
  { name: "MONGO_USER", supported: true, dbkeep: "MongoDB user" },
  { name: "MONGO_PASSWORD", supported: true, dbkeep: "MongoDB password, read from the environment when mongodump runs" },
  { name: "MONGO_AUTH_DB", supported: true, dbkeep: "--authenticationDatabase" },
  {
    name: "BACKUP_DIR",
    supported: false,
    dbkeep: "dbkeep streams the dump into restic without a work directory; its own state (locks, run history) goes in DBKEEP_STATE_DIR",
  },
  { name: "BACKUP_WORK_DIR", supported: false, dbkeep: "dbkeep streams the dump into restic, nothing is written to disk first; remove it" },
];

/** seed 003's retention when KEEP_* are not set: its entrypoint's defaults. */
const DEFAULT_RETENTION = { keep_daily: 7, keep_weekly: 4, keep_monthly: 12, keep_yearly: 3 };

/** Variables of restic's backends, handed to restic (dbkeep gives its tools a minimal environment otherwise). */
const BACKEND_VARIABLE = /^(AWS_|B2_|AZURE_|GOOGLE_|OS_|ST_|RESTIC_REST_|RCLONE_)|^(RESTIC_CACHE_DIR|RESTIC_PASSWORD_COMMAND|RESTIC_COMPRESSION|RESTIC_PACK_SIZE|RESTIC_KEY_HINT)$/;

const truthy = (v: string | undefined, dflt: boolean) => (v === undefined || v === "" ? dflt : !/^(false|0|no|off)$/i.test(v.trim()));

/** DB_TYPE as seed 003 accepted it, by dbkeep's name. */
function dbType(env: NodeJS.ProcessEnv): string {
  const t = (env.DB_TYPE ?? "").toLowerCase();
  return t === "pg" || t === "postgresql" ? "postgres" : t === "mongodb" ? "mongo" : t;
}

/** The database host seed 003 put in its webhook's `host` and in the `host=` tag. */
function hostHint(env: NodeJS.ProcessEnv): string {
  const t = dbType(env);
  if (t === "postgres") return env.PGHOST || "postgres";
  if (t === "mysql" || t === "mariadb") return env.MYSQL_HOST || "mysql";
  if (t === "mongo") return env.MONGO_HOST || "mongo";
  return "unknown";
}

/** RESTIC_TAGS as seed 003 split it (default `db,encrypted`). */
function userTags(env: NodeJS.ProcessEnv): string[] {
  return (env.RESTIC_TAGS ?? "db,encrypted")
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
}

/**
 * The environment as env.ts reads it, with seed 003's defaults filled in: its DB_TYPE spellings and its database
 * hosts and users. Only names and non-secret defaults are added; secrets stay where they are.
 */
export function seed003Env(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const t = dbType(env);
  const out: NodeJS.ProcessEnv = { ...env, ...(t === "postgres" ? { DB_TYPE: "postgres" } : {}) };
  if (t === "postgres") {
    out.PGHOST ||= "postgres";
    out.PGUSER ||= "postgres";
    if (!/^(true|1|yes)$/i.test(env.PG_DUMP_ALL ?? "")) out.PGDATABASE ||= "postgres";
  }
  if (t === "mysql" || t === "mariadb") {
    out.MYSQL_HOST ||= "mysql";
    out.MYSQL_USER ||= "root";
  }
  return out;
}

/** The datasource under seed 003: MongoDB its own way, the others as env.ts reads them with seed 003's defaults. */
export function seed003Source(env: NodeJS.ProcessEnv, base: (env: NodeJS.ProcessEnv) => Record<string, unknown>): Record<string, unknown> {
  return !env.DBKEEP_SOURCE && dbType(env) === "mongo" ? seed003MongoSource(env) : base(env.DBKEEP_SOURCE ? env : seed003Env(env));
}

/** seed 003's MongoDB source: a URI (MONGO_URI, else MONGODB_URI) or its parts, every database, a deterministic archive. */
export function seed003MongoSource(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const uriVar = env.MONGO_URI ? "MONGO_URI" : env.MONGODB_URI ? "MONGODB_URI" : undefined;
  return {
    engine: "mongodb",
    ...(uriVar
      ? { uri_env: uriVar }
      : {
          host: env.MONGO_HOST || "mongo",
          port: Number(env.MONGO_PORT || 27017),
          ...(env.MONGO_USER && env.MONGO_PASSWORD ? { user: env.MONGO_USER, password_env: "MONGO_PASSWORD" } : {}),
          ...(env.MONGO_USER && env.MONGO_PASSWORD && env.MONGO_AUTH_DB ? { auth_db: env.MONGO_AUTH_DB } : {}),
        }),
    // seed 003 made a tar of the dump's files in sorted order, compressed with zstd -3, so that unchanged data gave
    // the same bytes for restic to deduplicate: one collection after another in the archive does the same here.
    parallel_collections: 1,
    compression: "zstd",
    compression_level: 3,
  };
}

/** The restic store of RESTIC_REPOSITORY. */
export function seed003Store(env: NodeJS.ProcessEnv): Record<string, unknown> {
  if (!env.RESTIC_PASSWORD && !env.RESTIC_PASSWORD_FILE && !env.RESTIC_PASSWORD_COMMAND) {
    throw new DbkeepError("CONFIG_INVALID", "RESTIC_REPOSITORY is set, but neither RESTIC_PASSWORD nor RESTIC_PASSWORD_FILE", {
      hint: "set RESTIC_PASSWORD_FILE to a file holding the repository's password (or RESTIC_PASSWORD)",
    });
  }
  const backendEnv: Record<string, { env: string }> = {};
  for (const name of Object.keys(env).sort()) if (BACKEND_VARIABLE.test(name) && env[name]) backendEnv[name] = { env: name };
  return {
    type: "restic",
    // Not a secret: credentials go in AWS_* and the like; one written into a rest: URL is masked wherever it is shown.
    repository: env.RESTIC_REPOSITORY,
    ...(env.RESTIC_PASSWORD ? { password_env: "RESTIC_PASSWORD" } : env.RESTIC_PASSWORD_FILE ? { password_file: env.RESTIC_PASSWORD_FILE } : {}),
    ...(Object.keys(backendEnv).length ? { env: backendEnv } : {}),
    init: true,
    prune: truthy(env.PRUNE_ON_SUCCESS, true),
    tags: [...userTags(env), `type=${dbType(env)}`, `host=${hostHint(env)}`],
  };
}

/**
 * seed 003's own behaviour on top of the job env.ts built: retention defaults applied after every backup, dumps left
 * uncompressed for restic (which deduplicates and compresses them itself), one run when no schedule is set, and the
 * webhook's dbType, host and tags as seed 003 sent them.
 */
export function applySeed003(env: NodeJS.ProcessEnv, raw: Record<string, unknown>, once: boolean): { raw: Record<string, unknown>; once: boolean } {
  const jobs = raw.jobs as Record<string, Record<string, unknown>>;
  const job = Object.values(jobs)[0]!;
  const source = (raw.datasources as Record<string, Record<string, unknown>>).source!;
  job.retention = { ...DEFAULT_RETENTION, ...(job.retention as object | undefined) };
  job.prune_after_backup = true;
  if (!env.DBKEEP_COMPRESSION && source.engine !== "mongodb") job.compression = "none";
  const scheduled = Boolean(env.DBKEEP_SCHEDULE || env.CRON_SCHEDULE) || Number(env.BACKUP_INTERVAL_SECONDS || 0) > 0;
  const hooks = raw.notifications as Record<string, Record<string, unknown>>;
  if (hooks.webhook) hooks.webhook.fields = { dbType: env.DB_TYPE ?? "", host: hostHint(env), tags: (env.RESTIC_TAGS ?? "db,encrypted").split(",") };
  return { raw, once: once || !scheduled };
}

/** Warnings for seed 003's variables that dbkeep does not use, each saying what to do instead. */
export function seed003Warnings(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const v of SEED003_VARIABLES) if (!v.supported && env[v.name] !== undefined) out.push(`${v.name} is set but not used: ${v.dbkeep}`);
  if (env.RESTIC_REPOSITORY && env.DBKEEP_STORE) {
    out.push("RESTIC_REPOSITORY is set but ignored: DBKEEP_STORE is set too and is the store; unset DBKEEP_STORE to back up into the restic repository");
  }
  if (!env.WEBHOOK_URL) {
    for (const n of ["WEBHOOK_METHOD", "WEBHOOK_AUTH_HEADER", "WEBHOOK_EXTRA_HEADERS", "WEBHOOK_TIMEOUT_SECONDS"]) {
      if (env[n]) out.push(`${n} is set but ignored: no WEBHOOK_URL is set, so no webhook is sent`);
    }
  }
  if (env.PRUNE_ON_SUCCESS && !/^(true|false|1|0|yes|no|on|off)$/i.test(env.PRUNE_ON_SUCCESS.trim())) {
    out.push(`PRUNE_ON_SUCCESS="${env.PRUNE_ON_SUCCESS}" is read as true (restic prune after forget); set true or false`);
  }
  const t = dbType(env);
  if (t !== "mongo" && ["MONGO_URI", "MONGODB_URI", "MONGO_HOST", "MONGO_USER"].some((n) => env[n])) {
    out.push(`the MONGO_* variables are ignored: DB_TYPE is ${env.DB_TYPE ?? "not set"}; set DB_TYPE=mongo to back up MongoDB`);
  }
  return out;
}
