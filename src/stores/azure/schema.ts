import * as z from "zod";
import { byteSize, hasSecret, MiB, secretKeys } from "../size.js";

export const AZURE_SECRETS = ["connection_string", "account_key", "sas_token"] as const;

export const azureStoreSchema = z
  .strictObject({
    type: z.literal("azure"),
    container: z.string().regex(/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/, "container names are 3-63 lowercase letters, digits and single hyphens"),
    prefix: z.string().optional(),
    /** Storage account name (with account_key or sas_token). */
    account: z.string().min(1).optional(),
    /** Blob service URL, e.g. http://127.0.0.1:10000/devstoreaccount1 (Azurite) or a sovereign cloud's endpoint. */
    endpoint: z.url().optional(),
    ...secretKeys("connection_string"),
    ...secretKeys("account_key"),
    ...secretKeys("sas_token"),
    access_tier: z.enum(["Hot", "Cool", "Cold", "Archive"]).optional(),
    /** Size of one staged block; memory held by an upload is about block_size x (upload_concurrency + 1). */
    block_size: byteSize.optional(),
    upload_concurrency: z.number().int().min(1).max(32).optional(),
    /** Attempts per request, with the SDK's exponential backoff, before a request fails. */
    max_attempts: z.number().int().min(1).max(20).optional(),
    /** Page size of listings; only tests have a reason to lower it. */
    list_page_size: z.number().int().min(1).max(5000).optional(),
  })
  .superRefine((o, ctx) => {
    const given = AZURE_SECRETS.filter((f) => hasSecret(o, f));
    if (given.length === 0) {
      ctx.addIssue({ code: "custom", path: ["connection_string"], message: "give connection_string, account + account_key, or sas_token with account or endpoint (each also as _env / _file)" });
    } else if (given.length > 1) {
      ctx.addIssue({ code: "custom", path: [given[1]!], message: `give only one of ${given.join(", ")}` });
    }
    if (hasSecret(o, "account_key") && !o.account) ctx.addIssue({ code: "custom", path: ["account"], message: "account_key needs account (the storage account name)" });
    if (hasSecret(o, "sas_token") && !o.account && !o.endpoint) ctx.addIssue({ code: "custom", path: ["account"], message: "sas_token needs account or endpoint" });
    if (hasSecret(o, "connection_string") && (o.account || o.endpoint)) {
      ctx.addIssue({ code: "custom", path: ["connection_string"], message: "connection_string already names the account and endpoint: remove account / endpoint" });
    }
    if (o.block_size !== undefined && (o.block_size < 64 * 1024 || o.block_size > 4000 * MiB)) {
      ctx.addIssue({ code: "custom", path: ["block_size"], message: "block_size must be between 64KiB and 4000MiB (Azure's limits)" });
    }
  });
export type AzureStoreOptions = z.infer<typeof azureStoreSchema>;
