/**
 * What sidecar mode tells its user at start, so that nothing of a replaced tool's environment is silently ignored:
 * the job it built (engine, database, stores, schedule, retention; secrets only by the name of the variable that
 * holds them), and a warning for each variable of a replaced tool that dbkeep does not act on, with what to use
 * instead. Each seed tool registers one table below.
 */

import { SEED003_VARIABLES } from "./seed003.js";

export interface UnsupportedVar {
  name: string;
  /** What to use instead, one line. */
  instead: string;
}

interface SeedTable {
  seed: string;
  /** Variables of the tool that dbkeep does not act on, with what to use instead. */
  unsupported: Record<string, string>;
  /** Name prefixes of the tool's variables: a set variable with one of them that no table knows is reported too. */
  prefixes: string[];
  /** The tool's variables that dbkeep reads (src/config/seeds/seedNNN.ts). */
  known: string[];
}

const SEED_TABLES: SeedTable[] = [
  {
    seed: "001",
    unsupported: {
      RESTORE_BACKUP_FILE: "restore-test-setup is not needed: `dbkeep verify` restores the latest backup into a scratch database and checks it; `dbkeep restore FILE --to URL` restores a given file",
      RESTORE_DB_NAME: "`dbkeep verify` makes and drops its own scratch database",
      API_HEALTH_URL: "the verification block's health check (docs/verify.md)",
    },
    prefixes: ["POSTGRES_", "BACKUP_", "GCS_", "SCHEDULER_"],
    known: [
      "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_HOST", "POSTGRES_PORT",
      "BACKUP_BASE_NAME", "BACKUP_RETENTION_DAILY", "BACKUP_RETENTION_WEEKLY", "BACKUP_COMPRESSION_LEVEL",
      "SCHEDULER_SYNC_INTERVAL_SECONDS",
      "GCS_BUCKET_NAME", "GCS_CREDENTIALS_PATH", "GCS_BACKUP_PREFIX", "GCS_UPLOAD_RETRY_MAX",
      "GCS_RETENTION_ENABLED", "GCS_RETENTION_DAILY", "GCS_RETENTION_WEEKLY",
      "LOG_LEVEL",
    ],
  },
];

// Seed 003's unused variables are named by seed003Warnings (with seed 003's own wording); here its variables only
// count as known, so that a prefix of another seed's table does not call them misspellings.
SEED_TABLES.push({ seed: "003", unsupported: {}, prefixes: ["RESTIC_", "KEEP_", "WEBHOOK_"], known: SEED003_VARIABLES.map((v) => v.name) });

/** dbkeep's own variables that share a prefix with a seed tool's (docs/environment.md). */
const DBKEEP_OWN = ["BACKUP_INTERVAL_SECONDS", "POSTGRES_PASSWORD_FILE"];

/** Variables of the replaced tools set in `env` that dbkeep does not act on, in name order. */
export function unsupportedSeedVars(env: NodeJS.ProcessEnv): UnsupportedVar[] {
  const known = new Set([...DBKEEP_OWN, ...SEED_TABLES.flatMap((t) => t.known)]);
  const out = new Map<string, string>();
  for (const t of SEED_TABLES) {
    for (const [name, instead] of Object.entries(t.unsupported)) if (env[name] !== undefined) out.set(name, instead);
  }
  for (const name of Object.keys(env)) {
    if (out.has(name) || known.has(name)) continue;
    const owner = SEED_TABLES.find((t) => t.prefixes.some((p) => name.startsWith(p)));
    if (owner) out.set(name, `not a variable of seed ${owner.seed} nor of dbkeep (a misspelling?); docs/environment.md lists the variables`);
  }
  return [...out].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, instead]) => ({ name, instead }));
}

const SECRET_KEY = /pass(word|phrase)?$|secret|token|credentials_json$|^uri$|key$/i;

/** A section's options as `key=value`, secrets replaced by "<redacted>" and *_env / *_file shown as where they come from. */
function options(o: Record<string, unknown>, skip: string[] = []): string {
  return Object.entries(o)
    .filter(([k]) => !skip.includes(k))
    .map(([k, v]) => {
      if (k.endsWith("_env")) return `${k.slice(0, -4)} from $${String(v)}`;
      if (k.endsWith("_file") && SECRET_KEY.test(k.slice(0, -5))) return `${k.slice(0, -5)} from file ${String(v)}`;
      if (SECRET_KEY.test(k)) return `${k}=<redacted>`;
      return `${k}=${typeof v === "object" && v !== null ? JSON.stringify(v) : String(v)}`;
    })
    .join(", ");
}

/**
 * The job(s) sidecar mode built from the environment, for a person to read at start: one line each for the
 * engine and database, the stores, the schedule and the retention. No secret values, only where they are read from.
 */
export function describeSidecarJob(raw: Record<string, unknown>): string {
  const sections = (k: string) => (raw[k] ?? {}) as Record<string, Record<string, unknown>>;
  const lines: string[] = [];
  for (const [name, job] of Object.entries(sections("jobs"))) {
    lines.push(`job ${name} (built from the environment):`);
    const ds = sections("datasources")[String(job.datasource)] ?? {};
    lines.push(`  engine:    ${String(ds.engine)}, database ${String(ds.database ?? (ds.all_databases ? "(all)" : "(default)"))}${ds.host ? ` on ${String(ds.host)}${ds.port ? `:${String(ds.port)}` : ""}` : ""}`);
    const rest = options(ds, ["engine", "database", "host", "port"]);
    if (rest) lines.push(`             ${rest}`);
    const storeNames = (job.stores as string[] | undefined) ?? [String(job.store)];
    lines.push(`  stores:    ${storeNames.map((s) => `${s} (${options(sections("stores")[s] ?? {})})`).join("; ")}`);
    const when: string[] = [];
    if (job.schedule) when.push(`cron "${String(job.schedule)}"`);
    if (job.every !== undefined) when.push(`every ${String(job.every)}s`);
    for (const s of (job.schedules as { schedule: string; type: string }[] | undefined) ?? []) when.push(`${s.type}: cron "${s.schedule}"`);
    if (job.sync_every !== undefined) when.push(`sync every ${String(job.sync_every)}s`);
    if (job.sync_schedule) when.push(`sync cron "${String(job.sync_schedule)}"`);
    lines.push(`  schedule:  ${when.join("; ") || "none"} (${String(raw.timezone ?? "UTC")})`);
    const other = Object.entries(job).filter(([k]) => !["datasource", "store", "stores", "schedule", "every", "schedules", "sync_every", "sync_schedule", "retention", "notify"].includes(k));
    if (other.length) lines.push(`  settings:  ${options(Object.fromEntries(other))}`);
    lines.push(`  retention: ${job.retention ? options(job.retention as Record<string, unknown>) : "none (nothing is deleted)"}`);
    const notify = (job.notify as { notifier: string }[] | undefined) ?? [];
    if (notify.length) lines.push(`  notify:    ${notify.map((n) => `${n.notifier} (${options(sections("notifications")[n.notifier] ?? {})})`).join("; ")}`);
  }
  return lines.join("\n");
}
