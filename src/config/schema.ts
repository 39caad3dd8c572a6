import { z } from "zod";
import { COMPRESSIONS } from "../core/compression.js";

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

export const retentionSchema = z.strictObject({
  keep_last: count.optional(),
  keep_hourly: count.optional(),
  keep_daily: count.optional(),
  keep_weekly: count.optional(),
  keep_monthly: count.optional(),
  keep_yearly: count.optional(),
  min_keep: count.optional(),
});

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
