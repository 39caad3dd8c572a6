import * as z from "zod";
import { byteSize, hasSecret, MiB, secretKeys } from "../size.js";

export const GCS_SECRETS = ["credentials_json"] as const;

export const gcsStoreSchema = z
  .strictObject({
    type: z.literal("gcs"),
    bucket: z.string().regex(/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/, "bucket names are 3-222 lowercase letters, digits, dots, hyphens and underscores"),
    prefix: z.string().optional(),
    project_id: z.string().min(1).optional(),
    /** Path of a service-account key file (JSON). Without it and without credentials_json: application default credentials. */
    credentials_file: z.string().min(1).optional(),
    /** The service-account key itself (JSON), usually as credentials_json_env. */
    ...secretKeys("credentials_json"),
    /** API endpoint for an emulator or a private endpoint, e.g. http://127.0.0.1:4443 */
    endpoint: z.url().optional(),
    /** Send credentials to a custom endpoint too (private endpoints); emulators want none, the default. */
    endpoint_auth: z.boolean().optional(),
    /** Size of one resumable-upload request; memory held by an upload is about twice this. A multiple of 256KiB. */
    chunk_size: byteSize.optional(),
    /** Attempts per request, with the client's exponential backoff, before a request fails. */
    max_attempts: z.number().int().min(1).max(20).optional(),
    /** Page size of listings; only tests have a reason to lower it. */
    list_page_size: z.number().int().min(1).max(5000).optional(),
  })
  .superRefine((o, ctx) => {
    if (o.credentials_file !== undefined && hasSecret(o, "credentials_json")) {
      ctx.addIssue({ code: "custom", path: ["credentials_file"], message: "give only one of credentials_file, credentials_json (or _env / _file)" });
    }
    if (o.chunk_size !== undefined && (o.chunk_size % (256 * 1024) !== 0 || o.chunk_size > 1024 * MiB)) {
      ctx.addIssue({ code: "custom", path: ["chunk_size"], message: "chunk_size must be a multiple of 256KiB, at most 1GiB" });
    }
    if (o.endpoint_auth !== undefined && o.endpoint === undefined) {
      ctx.addIssue({ code: "custom", path: ["endpoint_auth"], message: "endpoint_auth applies only with endpoint" });
    }
  });
export type GcsStoreOptions = z.infer<typeof gcsStoreSchema>;
