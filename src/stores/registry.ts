import { plugin as azure } from "./azure/plugin.js";
import { plugin as gcs } from "./gcs/plugin.js";
import { plugin as local } from "./local/plugin.js";
import type { StorePlugin } from "./plugin.js";
import { plugin as rclone } from "./rclone/plugin.js";
import { plugin as restic } from "./restic/plugin.js";
import { plugin as s3 } from "./s3/plugin.js";
import { plugin as ssh } from "./ssh/plugin.js";

export type { StoreContext, StorePlugin } from "./plugin.js";

/**
 * Folder name = `type:` value = registry key. Adding a store is a folder with a plugin.ts and a line here. Each
 * plugin.ts holds only its schema; the implementation (and its SDK) is imported when a store is opened.
 */
export const STORES: Record<string, StorePlugin> = { local, s3, ssh, gcs, azure, restic, rclone };
