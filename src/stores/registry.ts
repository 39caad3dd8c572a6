import { z } from "zod";
import type { Secret } from "../core/redact.js";
import { localStoreSchema } from "./local/index.js";
import type { Store } from "./store.js";

export interface StoreContext {
  secret(field: string): Secret | undefined;
}

export interface StorePlugin {
  schema: z.ZodType<Record<string, unknown>>;
  secrets: readonly string[];
  /** False for store types whose options are accepted (seed 000's config works as it is) but that cannot run yet. */
  available: boolean;
  create(name: string, options: Record<string, unknown>, ctx: StoreContext): Promise<Store>;
}

const s3Schema = z.strictObject({
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
});

const sshSchema = z.strictObject({
  type: z.literal("ssh"),
  host: z.string().min(1),
  user: z.string().optional(),
  port: z.coerce.number().int().min(1).max(65535).default(22),
  path: z.string().min(1),
  key_file: z.string().optional(),
  password: z.string().optional(),
  password_env: z.string().optional(),
  password_file: z.string().optional(),
});

function notYet(type: string): StorePlugin["create"] {
  return async (name) => {
    const { DbkeepError } = await import("../core/errors.js");
    throw new DbkeepError("NOT_AVAILABLE", `[store:${name}] store type "${type}" is not available in this version of dbkeep`, {
      hint: "use a local store for now (type: local, path: ...)",
    });
  };
}

/** Folder name = `type:` value = registry key. Adding a store is a folder and a line here. */
export const STORES: Record<string, StorePlugin> = {
  local: {
    schema: localStoreSchema,
    secrets: [],
    available: true,
    async create(name, o) {
      const { createLocalStore } = await import("./local/index.js");
      return createLocalStore(localStoreSchema.parse(o), `local:${name}`);
    },
  },
  s3: { schema: s3Schema, secrets: ["access_key", "secret_key"], available: false, create: notYet("s3") },
  ssh: { schema: sshSchema, secrets: ["password"], available: false, create: notYet("ssh") },
};
