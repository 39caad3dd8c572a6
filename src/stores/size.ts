import * as z from "zod";

const MIB = 1024 * 1024;
const UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: MIB, mb: 1e6, mib: MIB, g: 1024 * MIB, gb: 1e9, gib: 1024 * MIB };

export const MiB = MIB;

/** A size option of a store: "16MiB", "16M", "8 MB" or a number of bytes. */
export const byteSize = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v);
  const unit = m ? UNITS[(m[2] ?? "").toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    ctx.addIssue({ code: "custom", message: `invalid size "${v}" (e.g. 16MiB or a number of bytes)` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * unit);
});

/** `<field>`, `<field>_env`, `<field>_file`: the three ways a store secret can be given. */
export function secretKeys<F extends string>(field: F) {
  return {
    [field]: z.string().min(1).optional(),
    [`${field}_env`]: z.string().min(1).optional(),
    [`${field}_file`]: z.string().min(1).optional(),
  } as Record<F | `${F}_env` | `${F}_file`, z.ZodOptional<z.ZodString>>;
}

/** Whether any form of secret `field` is given. */
export function hasSecret(o: Record<string, unknown>, field: string): boolean {
  return o[field] !== undefined || o[`${field}_env`] !== undefined || o[`${field}_file`] !== undefined;
}

/** "prod/db" -> "prod/db/", "" -> "": the namespace a store's keys live under. */
export function normalisePrefix(prefix: string | undefined): string {
  const p = (prefix ?? "").replace(/^\/+/, "");
  return p === "" || p.endsWith("/") ? p : `${p}/`;
}
