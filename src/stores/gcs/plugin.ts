import { statSync } from "node:fs";
import type { StorePlugin } from "../plugin.js";
import { GCS_SECRETS, gcsStoreSchema } from "./schema.js";

export const plugin: StorePlugin = {
  schema: gcsStoreSchema,
  secrets: GCS_SECRETS,
  available: true,
  async create(name, o, ctx) {
    const { createGcsStore } = await import("./index.js");
    const opts = gcsStoreSchema.parse(o);
    if (opts.credentials_file) {
      const mode = statSync(opts.credentials_file, { throwIfNoEntry: false })?.mode;
      if (mode !== undefined && (mode & 0o044) !== 0) {
        ctx.warn?.(`stores.${name}.credentials_file: ${opts.credentials_file} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
      }
    }
    return createGcsStore(opts, `gcs:${name}`, { credentialsJson: ctx.secret("credentials_json")?.reveal() });
  },
};
