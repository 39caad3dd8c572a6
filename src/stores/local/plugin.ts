import type { StorePlugin } from "../plugin.js";
import { localStoreSchema } from "./schema.js";

export const plugin: StorePlugin = {
  schema: localStoreSchema,
  secrets: [],
  available: true,
  async create(name, o) {
    const { createLocalStore } = await import("./index.js");
    return createLocalStore(localStoreSchema.parse(o), `local:${name}`);
  },
};
