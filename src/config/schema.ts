import * as z from "zod";
import { COMPRESSIONS } from "../core/compression.js";
import { decodeRecipient } from "../crypto/keys.js";
import { checkSpan } from "../core/retention.js";
import { checkCron } from "../daemon/schedule.js";
import { verificationSchema } from "../verify/settings.js";

/** `30`, `30s`, `5m`, `2h`, `7d`: seconds. */
export const duration = z.union([z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)?$/, "expected a duration such as 30, 30s, 5m, 2h or 7d")]);

export function durationSeconds(v: number | string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v === "number") return v;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? "s";
  return n * ({ ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[unit]!;
}

const count = z.number().int().nonnegative();
const cronExpression = z.string().superRefine((v, ctx) => {
  const bad = checkCron(v);
  if (bad) ctx.addIssue({ code: "custom", message: bad });
});
const span = z.string().superRefine((v, ctx) => {
  const bad = checkSpan(v);
  if (bad) ctx.addIssue({ code: "custom", message: bad });
});

const policyShape = {
  keep_last: count.optional(),
  keep_hourly: count.optional(),
  keep_daily: count.optional(),
  keep_weekly: count.optional(),
  keep_monthly: count.optional(),
  keep_yearly: count.optional(),
  keep_within: span.optional(),
  keep_within_hourly: span.optional(),
  keep_within_daily: span.optional(),
  keep_within_weekly: span.optional(),
  keep_within_monthly: span.optional(),
  keep_within_yearly: span.optional(),
  min_keep: count.optional(),
  /** Keep the newest N backups that passed `dbkeep verify` (a restore), whatever the other rules say. */
  keep_verified: count.optional(),
};

export const retentionSchema = z.strictObject({
  ...policyShape,
  /** Periods are computed in this time zone (default: the config's timezone, else UTC). */
  timezone: z.string().optional(),
  /** Leftovers of failed or killed runs older than this are removed by prune. */
  orphan_grace: duration.optional(),
  /**
   * A policy of its own for the backups of each type (`backup --type`, a schedule's type), each type counted apart
   * (seed 001: daily keeps 7, weekly keeps 4); backups of other types follow the rules above; manual ones are kept.
   */
  types: z.record(z.string(), z.strictObject(policyShape)).optional(),
  /** A complete policy of its own for the backups in one store (e.g. local keeps 7 daily, cloud keeps 30). */
  stores: z.record(z.string(), z.strictObject({ ...policyShape, types: z.record(z.string(), z.strictObject(policyShape)).optional() })).optional(),
});

export type RetentionConfig = z.infer<typeof retentionSchema>;

export const retrySchema = z.strictObject({
  max_attempts: z.number().int().min(1).default(1),
  delay: duration.default(30),
  backoff_multiplier: z.number().min(1).default(2),
  max_delay: duration.optional(),
});

const recipient = z.string().superRefine((v, ctx) => {
  try {
    decodeRecipient(v);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
  }
});

/**
 * age encryption: whom backups are encrypted to (recipients or a passphrase) and, for restores, the identity or
 * passphrase that decrypts them. Secrets (`passphrase`, `identity`) take `_env` / `_file` like every other secret.
 */
export const encryptionSchema = z
  .strictObject({
    recipients: z.array(recipient).min(1).optional(),
    recipients_file: z.string().min(1).optional(),
    passphrase: z.string().min(1).optional(),
    passphrase_env: z.string().min(1).optional(),
    passphrase_file: z.string().min(1).optional(),
    identity: z.string().min(1).optional(),
    identity_env: z.string().min(1).optional(),
    identity_file: z.string().min(1).optional(),
  })
  .superRefine((e, ctx) => {
    const given = (f: "passphrase" | "identity") => ([f, `${f}_env`, `${f}_file`] as const).filter((k) => e[k] !== undefined);
    for (const f of ["passphrase", "identity"] as const) {
      if (given(f).length > 1) ctx.addIssue({ code: "custom", path: [f], message: `give only one of ${given(f).join(", ")}` });
    }
    if (given("passphrase").length > 0 && (e.recipients || e.recipients_file)) {
      ctx.addIssue({ code: "custom", path: [given("passphrase")[0]!], message: "a passphrase cannot be combined with recipients (age allows a passphrase only on its own)" });
    }
    if (!e.recipients && !e.recipients_file && given("passphrase").length === 0 && given("identity").length === 0) {
      ctx.addIssue({ code: "custom", message: "give recipients, recipients_file or passphrase_env (and identity_file to restore)" });
    }
  });
export type EncryptionConfig = z.infer<typeof encryptionSchema>;

export const jobSchema = z.strictObject({
  datasource: z.string().min(1).describe("the name of a datasource under datasources:"),
  store: z.string().min(1).optional(),
  stores: z.array(z.string().min(1)).min(1).optional(),
  /** With several stores: "all" (default) fails the job when one store failed; "any" only when every store did. */
  require: z.enum(["all", "any"]).default("all"),
  /** `dbkeep daemon`: copy backups missing from a store (e.g. after an outage) on this schedule. */
  sync_schedule: cronExpression.optional(),
  /** ... or at this interval (seed 001's SCHEDULER_SYNC_INTERVAL_SECONDS). */
  sync_every: duration.optional(),
  /** The start of the backups' file names and their directory, instead of the database's name (seed 001's BACKUP_BASE_NAME). */
  basename: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "letters, digits, dots, hyphens and underscores").optional(),
  prefix: z.string().optional(),
  /** true: read back and check size, SHA-256 and structure; restore: verify by a real restore into a scratch target. */
  verify: z.union([z.boolean(), z.literal("restore")]).default(false),
  /** Where `verify: restore` and `dbkeep verify` create scratch databases (default: the job's own server). */
  verify_datasource: z.string().min(1).optional(),
  /** Scratch cluster, migration table, custom SQL assertions, health check, schedule (docs/verify.md). */
  verification: verificationSchema.optional(),
  retry: retrySchema.optional(),
  notify: z.array(z.strictObject({ notifier: z.string().min(1), on: z.enum(["failure", "success", "always"]).default("failure") })).optional(),
  retention: retentionSchema.optional(),
  /** Stop the whole run (all attempts) after this long. */
  timeout: duration.optional(),
  /** `dbkeep daemon`: a cron expression (seconds optional) in the config's timezone ... */
  schedule: cronExpression.optional(),
  /** ... or an interval such as 6h. */
  every: duration.optional(),
  /** `dbkeep daemon`: several cron schedules, each recording its type in the backups it makes (seed 001: daily, weekly). */
  schedules: z.array(z.strictObject({ schedule: cronExpression, type: z.string().regex(/^[a-z][a-z0-9_-]*$/, "a lowercase word such as daily") })).min(1).optional(),
  /** Spread runs that share a time by a random delay up to this long. */
  jitter: duration.optional(),
  /** After downtime, run a missed scheduled run once at start. */
  catch_up: z.boolean().default(false),
  /** Apply retention on its own schedule in the daemon. */
  prune_schedule: cronExpression.optional(),
  /** Apply retention after every successful backup (seed 001 and seed 003 do; restic forget after each run). */
  prune_after_backup: z.boolean().optional(),
  /** Shell commands around the run, with its outcome in DBKEEP_* variables. */
  hooks: z
    .strictObject({
      before: z.string().optional(),
      after: z.string().optional(),
      on_failure: z.string().optional(),
      timeout: duration.default(300),
    })
    .optional(),
  /** Overrides of the datasource's dump settings. */
  format: z.enum(["plain", "custom", "directory"]).optional(),
  compression: z.enum(COMPRESSIONS).optional(),
  compression_level: z.number().int().optional(),
  /**
   * Replaces the top-level encryption block for this job; `false` stores this job's backups unencrypted (the
   * top-level block still decrypts its older, encrypted ones on restore).
   */
  encryption: z.union([z.literal(false), encryptionSchema]).optional(),
  /** A partial backup: these replace the datasource's own (globs; schemas for PostgreSQL only). */
  tables: z.array(z.string().min(1)).min(1).optional(),
  exclude_tables: z.array(z.string().min(1)).min(1).optional(),
  schemas: z.array(z.string().min(1)).min(1).optional(),
  exclude_schemas: z.array(z.string().min(1)).min(1).optional(),
  /** differential: the rows changed since the job's last full backup (PostgreSQL, MySQL/MariaDB). */
  mode: z.enum(["full", "differential"]).optional(),
  /** The column that tells when a row last changed (default updated_at): a timestamp type. */
  basis_column: z.string().min(1).optional(),
  /** Per table (`schema.table` or `table`): its basis column, or null to dump that table whole every time. */
  basis_columns: z.record(z.string(), z.string().min(1).nullable()).optional(),
  /** Store each table's primary keys, so that restore removes rows deleted since the full backup. */
  track_deletes: z.boolean().optional(),
  /** After this many differentials on one full backup, the next run is a full backup (default 7). */
  max_chain: z.number().int().min(1).optional(),
  /** A full backup older than this makes the next run a full backup (default 7d). */
  full_every: duration.optional(),
  /** Moves the safe point of a full backup back by this much (default 1m): clock skew of the writers. */
  cutoff_margin: duration.optional(),
});
export type JobConfig = z.infer<typeof jobSchema>;

const named = z.record(z.string(), z.looseObject({}));

export const daemonSchema = z.strictObject({
  /** Address of /healthz, /readyz and /metrics; 127.0.0.1 only unless said otherwise. */
  listen: z.string().default("127.0.0.1:9187"),
  /** The run history's SQLite file (default: $DBKEEP_STATE_DIR/history.db). */
  history: z.string().optional(),
  /** How long running jobs may finish after SIGTERM before they are stopped. */
  shutdown_grace: duration.default(60),
});

/** The top level; each datasource, store and notifier is then checked by its plug-in's own schema. */
export const configSchema = z.strictObject({
  datasources: named.default({}),
  stores: named.default({}),
  notifications: named.default({}),
  jobs: named.default({}),
  timezone: z.string().optional(),
  daemon: daemonSchema.optional(),
  /** The encryption of every job that has no encryption block of its own. */
  encryption: encryptionSchema.optional(),
});
export type RawConfig = z.infer<typeof configSchema>;
export type DaemonConfig = z.infer<typeof daemonSchema>;
