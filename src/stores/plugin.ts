import type * as z from "zod";
import { DbkeepError } from "../core/errors.js";
import type { Secret } from "../core/redact.js";
import type { Store } from "./store.js";

export interface StoreContext {
  /** Resolves `field`, `field_env` or `field_file` of the store's section (undefined when none is given). */
  secret(field: string): Secret | undefined;
  /** Warnings that do not stop the run (e.g. a credential file readable by others). */
  warn?(message: string): void;
}

export interface StorePlugin {
  schema: z.ZodType<Record<string, unknown>>;
  /** Fields that may be given as `field`, `field_env` or `field_file`; redacted by `config check`. */
  secrets: readonly string[];
  /** False for store types whose options are accepted but that cannot run in this version. */
  available: boolean;
  create(name: string, options: Record<string, unknown>, ctx: StoreContext): Promise<Store>;
}

/** For a store type whose options are accepted but that is not built yet. */
export function notAvailable(type: string): StorePlugin["create"] {
  return async (name) => {
    throw new DbkeepError("NOT_AVAILABLE", `[store:${name}] store type "${type}" is not available in this version of dbkeep`, {
      hint: "use a local store for now (type: local, path: ...)",
    });
  };
}
