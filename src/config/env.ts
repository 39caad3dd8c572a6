import { DbkeepError } from "../core/errors.js";
import { durationSeconds } from "./schema.js";
import { sourceFromUrl, storeFromUrl } from "./urls.js";
import { isSeed001Env, seed001Config } from "./seeds/seed001.js";
import { applySeed003, isSeed003Env, seed003Source, seed003Store, seed003Warnings } from "./seeds/seed003.js";

/** The variables that put dbkeep in sidecar mode when there is no config file. */
export function isSidecarEnv(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.DBKEEP_SOURCE || env.DB_TYPE) || isSeed001Env(env);
}

export interface SidecarConfig {
  raw: Record<string, unknown>;
  /** BACKUP_INTERVAL_SECONDS=0: run once and exit. */
  once: boolean;
  /** Variables that are set but not used, each with what to use instead. */
  warnings?: string[];
}

const num = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined || v === "") return undefined;
  if (!/^\d+$/.test(v)) throw new DbkeepError("CONFIG_INVALID", `${name}: expected a whole number, got "${v}"`);
  return Number(v);
};

/** DBKEEP_SHUTDOWN_GRACE: seconds, or a duration such as 20s or 1m. */
function grace(v: string): string | number {
  if (/^\d+$/.test(v)) return Number(v);
  if (durationSeconds(v) === undefined) throw new DbkeepError("CONFIG_INVALID", `DBKEEP_SHUTDOWN_GRACE: expected seconds or a duration such as 20s, got "${v}"`);
  return v;
}

/**
 * One job built from environment variables alone (containers next to a database; docs/environment.md lists every
 * variable). Secrets stay in the environment: the config refers to them with *_env, so they are read when needed
 * and never copied into the config.
 */
export function configFromEnv(env: NodeJS.ProcessEnv): SidecarConfig {
  if (!env.DBKEEP_SOURCE && !env.DB_TYPE && isSeed001Env(env)) return seed001Config(env);
  const seed003 = isSeed003Env(env);
  const datasource = seed003 ? seed003Source(env, sidecarSource) : sidecarSource(env);
  const store = sidecarStore(env);
  const job: Record<string, unknown> = { datasource: "source", store: "store" };
  if (env.DBKEEP_PREFIX) job.prefix = env.DBKEEP_PREFIX;
  if (env.DBKEEP_COMPRESSION) job.compression = env.DBKEEP_COMPRESSION;
  if (env.DBKEEP_VERIFY) job.verify = /^restore$/i.test(env.DBKEEP_VERIFY) ? "restore" : /^(1|true|yes)$/i.test(env.DBKEEP_VERIFY);
  const schedule = env.DBKEEP_SCHEDULE ?? env.CRON_SCHEDULE;
  const interval = num(env.BACKUP_INTERVAL_SECONDS, "BACKUP_INTERVAL_SECONDS");
  let once = false;
  if (schedule) job.schedule = schedule;
  else if (interval !== undefined && interval > 0) job.every = interval;
  else {
    job.every = 86400;
    once = interval === 0;
  }
  const retention: Record<string, number> = {};
  for (const [key, names] of Object.entries({
    keep_last: ["KEEP_LAST"],
    keep_hourly: ["KEEP_HOURLY", "KEEP_HOURLIES"],
    keep_daily: ["KEEP_DAILY", "KEEP_DAILIES"],
    keep_weekly: ["KEEP_WEEKLY", "KEEP_WEEKLIES"],
    keep_monthly: ["KEEP_MONTHLY", "KEEP_MONTHLIES"],
    keep_yearly: ["KEEP_YEARLY", "KEEP_YEARLIES"],
  })) {
    for (const n of names) {
      const v = num(env[n], n);
      if (v !== undefined) retention[key] = v;
    }
  }
  if (Object.keys(retention).length) job.retention = retention;

  const notifications: Record<string, Record<string, unknown>> = {};
  if (env.WEBHOOK_URL) {
    notifications.webhook = {
      type: "webhook",
      url: env.WEBHOOK_URL,
      ...(env.WEBHOOK_METHOD ? { method: env.WEBHOOK_METHOD } : {}),
      ...(env.WEBHOOK_AUTH_HEADER ? { auth_header_env: "WEBHOOK_AUTH_HEADER" } : {}),
      ...(env.WEBHOOK_EXTRA_HEADERS ? { headers: env.WEBHOOK_EXTRA_HEADERS } : {}),
      ...(env.WEBHOOK_TIMEOUT_SECONDS ? { timeout: num(env.WEBHOOK_TIMEOUT_SECONDS, "WEBHOOK_TIMEOUT_SECONDS") } : {}),
    };
  }
  if (env.HEALTHCHECKS_URL) notifications.healthchecks = { type: "healthchecks", url_env: "HEALTHCHECKS_URL" };
  if (Object.keys(notifications).length) job.notify = Object.keys(notifications).map((n) => ({ notifier: n, on: "always" }));

  const raw: Record<string, unknown> = {
    datasources: { source: datasource },
    stores: { store },
    notifications,
    jobs: { [env.DBKEEP_JOB ?? "backup"]: job },
    ...(env.TZ ? { timezone: env.TZ } : {}),
    ...(env.DBKEEP_LISTEN || env.DBKEEP_SHUTDOWN_GRACE
      ? { daemon: { ...(env.DBKEEP_LISTEN ? { listen: env.DBKEEP_LISTEN } : {}), ...(env.DBKEEP_SHUTDOWN_GRACE ? { shutdown_grace: grace(env.DBKEEP_SHUTDOWN_GRACE) } : {}) } }
      : {}),
  };
  return { ...(seed003 ? applySeed003(env, raw, once) : { raw, once }), warnings: seed003Warnings(env) };
}

function sidecarSource(env: NodeJS.ProcessEnv): Record<string, unknown> {
  if (env.DBKEEP_SOURCE) {
    const options = sourceFromUrl(env.DBKEEP_SOURCE).options;
    if (options.password !== undefined) {
      throw new DbkeepError("CONFIG_INVALID", "DBKEEP_SOURCE holds a password", {
        hint: "keep it out of the URL: set PGPASSWORD (or MYSQL_PASSWORD, REDIS_PASSWORD) beside DBKEEP_SOURCE",
      });
    }
    const passwordVar = { postgres: "PGPASSWORD", mysql: "MYSQL_PASSWORD", mariadb: "MYSQL_PASSWORD", redis: "REDIS_PASSWORD" }[String(options.engine)];
    const tls = options.engine === "postgres" ? { ...pgSslEnv(env), ...options } : options;
    return passwordVar && env[passwordVar] ? { ...tls, password_env: passwordVar } : tls;
  }
  const type = (env.DB_TYPE ?? "").toLowerCase();
  if (type === "postgres" || type === "postgresql") {
    return {
      engine: "postgres",
      host: env.PGHOST ?? "localhost",
      ...(env.PGPORT ? { port: Number(env.PGPORT) } : {}),
      ...(env.PGUSER ? { user: env.PGUSER } : {}),
      ...(env.PGPASSWORD ? { password_env: "PGPASSWORD" } : env.PGPASSWORD_FILE ? { password_file: env.PGPASSWORD_FILE } : {}),
      ...pgSslEnv(env),
      ...(/^(true|1|yes)$/i.test(env.PG_DUMP_ALL ?? "")
        ? { all_databases: true, ...(env.PGDATABASE ? { database: env.PGDATABASE } : {}) }
        : { database: env.PGDATABASE ?? env.PGUSER ?? "postgres" }),
    };
  }
  if (type === "mysql" || type === "mariadb") {
    return {
      engine: type,
      host: env.MYSQL_HOST ?? "localhost",
      ...(env.MYSQL_PORT ? { port: Number(env.MYSQL_PORT) } : {}),
      ...(env.MYSQL_USER ? { user: env.MYSQL_USER } : {}),
      ...(env.MYSQL_PASSWORD ? { password_env: "MYSQL_PASSWORD" } : env.MYSQL_PASSWORD_FILE ? { password_file: env.MYSQL_PASSWORD_FILE } : {}),
      ...(env.MYSQL_DATABASE ? { database: env.MYSQL_DATABASE } : { all_databases: true }),
    };
  }
  if (type === "mongo" || type === "mongodb") return { engine: "mongodb", uri_env: "MONGO_URI" };
  throw new DbkeepError("CONFIG_INVALID", `DB_TYPE "${env.DB_TYPE}" is not one of postgres, mysql, mariadb, mongo`, { hint: "or set DBKEEP_SOURCE to a URL such as postgres://user@host/db" });
}

/** libpq's TLS variables as datasource keys (the URL's own ?sslmode= wins). */
function pgSslEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [v, key] of [["PGSSLMODE", "sslmode"], ["PGSSLROOTCERT", "sslrootcert"], ["PGSSLCERT", "sslcert"], ["PGSSLKEY", "sslkey"]] as const) {
    if (env[v]) out[key] = env[v];
  }
  return out;
}

function sidecarStore(env: NodeJS.ProcessEnv): Record<string, unknown> {
  if (env.DBKEEP_STORE) return { ...storeFromUrl(env.DBKEEP_STORE).options };
  if (env.RESTIC_REPOSITORY) return seed003Store(env);
  throw new DbkeepError("CONFIG_INVALID", "sidecar mode needs DBKEEP_STORE (a directory or store URL) or RESTIC_REPOSITORY", { hint: "e.g. DBKEEP_STORE=/backups" });
}
