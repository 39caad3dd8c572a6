import * as z from "zod";
import type { StorePlugin } from "../plugin.js";

const MIB = 1024 * 1024;
const UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, kb: 1000, kib: 1024, m: MIB, mb: 1e6, mib: MIB, g: 1024 * MIB, gb: 1e9, gib: 1024 * MIB };

/** "16MiB", "16M", "8 MB" or a number of bytes. */
const byteSize = z.union([z.number().int().positive(), z.string()]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v);
  const unit = m ? UNITS[(m[2] ?? "").toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    ctx.addIssue({ code: "custom", message: `invalid size "${v}" (e.g. 16MiB or a number of bytes)` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * unit);
});

export const s3StoreSchema = z
  .strictObject({
    type: z.literal("s3"),
    endpoint: z.string().optional(),
    region: z.string().optional(),
    bucket: z.string().min(1),
    prefix: z.string().optional(),
    force_path_style: z.boolean().optional(),
    access_key: z.string().optional(),
    access_key_env: z.string().optional(),
    access_key_file: z.string().optional(),
    secret_key: z.string().optional(),
    secret_key_env: z.string().optional(),
    secret_key_file: z.string().optional(),
    expected_bucket_owner: z.string().regex(/^\d{12}$/, "expected_bucket_owner is a 12-digit AWS account id").optional(),
    storage_class: z.string().min(1).optional(),
    sse: z.enum(["AES256", "aws:kms"]).optional(),
    sse_kms_key_id: z.string().min(1).optional(),
    /** Size of one multipart part (S3's minimum is 5 MiB). Memory held by an upload is about part_size x (upload_concurrency + 1). */
    part_size: byteSize.optional(),
    upload_concurrency: z.number().int().min(1).max(32).optional(),
    /** Attempts per request, with the SDK's backoff, before a request fails. */
    max_attempts: z.number().int().min(1).max(20).optional(),
    /** Page size of listings and delete batches (S3's maximum, 1000, by default); only tests have a reason to lower it. */
    list_page_size: z.number().int().min(1).max(1000).optional(),
    /**
     * Compare the service's ETags with the MD5 of what was sent (on by default). Off only for a service whose ETags
     * are not MD5 digests although they look like them; Content-MD5 is sent either way.
     */
    verify_etag: z.boolean().optional(),
  })
  .superRefine((o, ctx) => {
    if (o.part_size !== undefined && (o.part_size < 5 * MIB || o.part_size > 5 * 1024 * MIB)) {
      ctx.addIssue({ code: "custom", path: ["part_size"], message: "part_size must be between 5MiB and 5GiB (S3's limits)" });
    }
    if (o.sse_kms_key_id !== undefined && o.sse !== "aws:kms") {
      ctx.addIssue({ code: "custom", path: ["sse_kms_key_id"], message: 'sse_kms_key_id needs sse: "aws:kms"' });
    }
  });
export type S3StoreOptions = z.infer<typeof s3StoreSchema>;
/** The options as written in a config file (sizes may be strings). */
export type S3StoreConfig = z.input<typeof s3StoreSchema>;

export const plugin: StorePlugin = {
  schema: s3StoreSchema as unknown as z.ZodType<Record<string, unknown>>,
  secrets: ["access_key", "secret_key"],
  available: true,
  async create(name, o, ctx) {
    const { createS3Store } = await import("./index.js");
    const opts = s3StoreSchema.parse(o);
    return createS3Store(opts, {
      name: `s3:${name}`,
      accessKey: ctx.secret("access_key"),
      secretKey: ctx.secret("secret_key"),
      ...(ctx.warn ? { warn: ctx.warn } : {}),
    });
  },
};
