import * as z from "zod";
import { DbkeepError } from "../core/errors.js";
import type { Secret } from "../core/redact.js";

/** What a notifier factory gets besides its options: secrets, resolved only when a notification is sent. */
export interface NotifierContext {
  secret(field: string): Secret | undefined;
}

/** `<field>`, `<field>_env`, `<field>_file`: the three ways every secret can be given. */
export function secretKeys<F extends string>(field: F) {
  return {
    [field]: z.string().min(1).optional(),
    [`${field}_env`]: z.string().min(1).optional(),
    [`${field}_file`]: z.string().min(1).optional(),
  } as Record<F | `${F}_env` | `${F}_file`, z.ZodOptional<z.ZodString>>;
}

/** A config check for a secret the notifier cannot work without. */
export function requireSecret(field: string) {
  return (o: Record<string, unknown>, ctx: z.core.$RefinementCtx) => {
    if (o[field] === undefined && o[`${field}_env`] === undefined && o[`${field}_file`] === undefined) {
      ctx.addIssue({ code: "custom", path: [field], message: `missing ${field} (give ${field}, ${field}_env or ${field}_file)` });
    }
  };
}

/** Seconds; fractions allowed. Every HTTP notifier has one so that a dead endpoint cannot hold a job run. */
export const timeoutKey = z.number().positive().max(600).default(10);

/**
 * Resolves a secret on first use and keeps it. A missing environment variable or unreadable file becomes this
 * notifier's failure, not a crash of the run that wanted to notify.
 */
export function lazySecret(name: string, ctx: NotifierContext, field: string): () => string | undefined {
  let resolved: { value: string | undefined } | undefined;
  return () => {
    if (!resolved) {
      try {
        resolved = { value: ctx.secret(field)?.reveal() };
      } catch (err) {
        const e = err instanceof DbkeepError ? err : undefined;
        throw new DbkeepError("NOTIFY_FAILED", `[notifier:${name}] ${e?.message ?? (err as Error).message}`, { hint: e?.hint, cause: err });
      }
    }
    return resolved.value;
  };
}

/** Like lazySecret, for the secrets a notifier cannot work without (the schema makes sure one form is given). */
export function requiredSecret(name: string, ctx: NotifierContext, field: string): () => string {
  const get = lazySecret(name, ctx, field);
  return () => {
    const v = get();
    if (v === undefined || v === "") throw new DbkeepError("NOTIFY_FAILED", `[notifier:${name}] ${field} is empty`);
    return v;
  };
}
