import type { StorePlugin } from "../plugin.js";
import { AZURE_SECRETS, azureStoreSchema } from "./schema.js";

export const plugin: StorePlugin = {
  schema: azureStoreSchema,
  secrets: AZURE_SECRETS,
  available: true,
  async create(name, o, ctx) {
    const { createAzureStore } = await import("./index.js");
    const opts = azureStoreSchema.parse(o);
    return createAzureStore(opts, `azure:${name}`, {
      connectionString: ctx.secret("connection_string")?.reveal(),
      accountKey: ctx.secret("account_key")?.reveal(),
      sasToken: ctx.secret("sas_token")?.reveal(),
    });
  },
};
