import { z } from "zod";
import { COMPRESSIONS } from "../core/compression.js";
import { checkSpan } from "../core/retention.js";

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
};

export const retentionSchema = z.strictObject({
  ...policyShape,
  /** Periods are computed in this time zone (default: the config's timezone, else UTC). */
  timezone: z.string().optional(),
  /** Leftovers of failed or killed runs older than this are removed by prune. */
  orphan_grace: duration.optional(),
  /** A complete policy of its own for the backups in one store (e.g. local keeps 7 daily, cloud keeps 30). */
  stores: z.record(z.string(), z.strictObject(policyShape)).optional(),
});

export type RetentionConfig = z.infer<typeof retentionSchema>;

export const retrySchema = z.strictObject({
  max_attempts: z.number().int().min(1).default(1),
  delay: duration.default(30),
  backoff_multiplier: z.number().min(1).default(2),
  max_delay: duration.optional(),
});

export const jobSchema = z.strictObject({
  datasource: z.string().min(1),
  store: z.string().min(1).optional(),
  stores: z.array(z.string().min(1)).min(1).optional(),
  prefix: z.string().optional(),
  verify: z.boolean().default(false),
  retry: retrySchema.optional(),
  notify: z.array(z.strictObject({ notifier: z.string().min(1), on: z.enum(["failure", "success", "always"]).default("failure") })).optional(),
  retention: retentionSchema.optional(),
  /** Overrides of the datasource's dump settings. */
  format: z.enum(["plain", "custom", "directory"]).optional(),
  compression: z.enum(COMPRESSIONS).optional(),
  compression_level: z.number().int().optional(),
});
export type JobConfig = z.infer<typeof jobSchema>;

const named = z.record(z.string(), z.looseObject({}));

/** The top level; each datasource, store and notifier is then checked by its plug-in's own schema. */
export const configSchema = z.strictObject({
  datasources: named.default({}),
  stores: named.default({}),
  notifications: named.default({}),
  jobs: named.default({}),
  timezone: z.string().optional(),
});
export type RawConfig = z.infer<typeof configSchema>;
