import * as z from "zod";
import { checkCron } from "../daemon/schedule.js";

const seconds = z.union([z.number().nonnegative(), z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)?$/, "expected a duration such as 30, 30s, 5m, 2h or 7d")]);

/**
 * A job's `verification:` block: how `dbkeep verify` (and `verify: restore`) restores and what it checks beyond
 * the built-in checks. Every key is optional.
 */
export const verificationSchema = z.strictObject({
  /** PostgreSQL: restore into a temporary cluster (initdb from the local server binaries) instead of a scratch database. */
  scratch_cluster: z.boolean().default(false),
  /** Without verify_datasource, scratch databases go on the job's own server; false refuses that. */
  allow_source_server: z.boolean().default(true),
  /** `dbkeep daemon`: verify the latest backup on this cron schedule (e.g. weekly), besides any verify: restore. */
  schedule: z
    .string()
    .superRefine((v, ctx) => {
      const bad = checkCron(v);
      if (bad) ctx.addIssue({ code: "custom", message: bad });
    })
    .optional(),
  /** Rows per foreign key looked at by the orphan check (large tables are sampled). */
  orphan_sample_rows: z.number().int().positive().default(10000),
  /** Schema-migration state: golang-migrate's schema_migrations by default, or any table and columns. */
  migrations: z
    .strictObject({
      table: z.string().min(1).default("schema_migrations"),
      version_column: z.string().min(1).default("version"),
      /** A boolean column; null for tools without one. */
      dirty_column: z.string().min(1).nullable().default("dirty"),
      /** Fail unless the latest version is this one. */
      expect_version: z.union([z.string(), z.number()]).optional(),
    })
    .optional(),
  /** Custom SQL: the first column of the first row must equal `expect` (compared as text). */
  assertions: z
    .array(z.strictObject({ name: z.string().min(1).regex(/^[A-Za-z0-9_.-]+$/, "letters, digits, '_', '.' and '-'"), query: z.string().min(1), expect: z.union([z.string(), z.number(), z.boolean(), z.null()]) }))
    .optional(),
  /**
   * Seed 001's check 8: an application pointed at the scratch copy answers. `command` (optional) is started with
   * DATABASE_URL / PG* / MYSQL_* / REDIS_URL of the scratch target; `url` must answer `expect_status` in time.
   */
  health_check: z
    .strictObject({
      url: z.string().url(),
      command: z.string().min(1).optional(),
      expect_status: z.number().int().min(100).max(599).default(200),
      timeout: seconds.default(60),
    })
    .optional(),
});
export type VerificationConfig = z.infer<typeof verificationSchema>;

export const DEFAULT_VERIFICATION: VerificationConfig = verificationSchema.parse({});
