import * as z from "zod";
import { envMapSchema } from "../child-env.js";
import type { StorePlugin } from "../plugin.js";

/** restic's tag syntax: `--tag a,b` is two tags, so a tag holds no comma; restic trims spaces around each. */
const tag = z.string().min(1).regex(/^[^,\s](?:[^,]*[^,\s])?$/, "a restic tag holds no comma and no leading or trailing space");

export const resticStoreSchema = z
  .strictObject({
    type: z.literal("restic"),
    /** RESTIC_REPOSITORY: a path, `sftp:...`, `s3:...`, `rest:...`, `rclone:...` (passed in the environment, never argv). */
    repository: z.string().min(1).optional(),
    repository_env: z.string().min(1).optional(),
    repository_file: z.string().min(1).optional(),
    password: z.string().optional(),
    password_env: z.string().min(1).optional(),
    /** Handed to restic as RESTIC_PASSWORD_FILE. */
    password_file: z.string().min(1).optional(),
    /** Extra environment for restic's backend (AWS_ACCESS_KEY_ID, B2_ACCOUNT_KEY, ...): literals, { env: NAME } or { file: PATH }. */
    env: envMapSchema.optional(),
    /** Run `restic init` when the repository does not exist yet (on the first put). */
    init: z.boolean().default(false),
    /** restic --host of the snapshots dbkeep writes, and the only host whose snapshots it lists. */
    host: z.string().min(1).default("dbkeep"),
    /**
     * Run `restic prune` once, when the store is closed, after dbkeep forgot snapshots (a retention pass, a key written
     * again). Off by default: prune rewrites packs; schedule it yourself (`dbkeep forget-prune`).
     */
    prune: z.boolean().default(false),
    /** Extra tags on every snapshot dbkeep writes. */
    tags: z.array(tag).default([]),
    /** The restic binary (default: `restic` from PATH). */
    bin: z.string().min(1).optional(),
  })
  .superRefine((o, ctx) => {
    const repo = [o.repository, o.repository_env, o.repository_file].filter((v) => v !== undefined).length;
    if (repo === 0 && o.env?.RESTIC_REPOSITORY === undefined) {
      ctx.addIssue({ code: "custom", path: ["repository"], message: "missing repository (or repository_env / repository_file)" });
    }
    if (repo > 1) ctx.addIssue({ code: "custom", path: ["repository"], message: "give only one of repository, repository_env, repository_file" });
    const pw = [o.password, o.password_env, o.password_file].filter((v) => v !== undefined).length;
    const envPw = ["RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND"].some((k) => o.env?.[k] !== undefined);
    if (pw === 0 && !envPw) ctx.addIssue({ code: "custom", path: ["password"], message: "missing password_env or password_file (the repository's password)" });
    for (const t of o.tags) if (t === "dbkeep" || t.startsWith("key=")) ctx.addIssue({ code: "custom", path: ["tags"], message: `tag "${t}" is reserved by dbkeep` });
  });
export type ResticStoreOptions = z.infer<typeof resticStoreSchema>;

export const plugin: StorePlugin = {
  schema: resticStoreSchema as unknown as z.ZodType<Record<string, unknown>>,
  secrets: ["password"],
  available: true,
  async create(name, o, ctx) {
    const { createResticStore } = await import("./index.js");
    const opts = resticStoreSchema.parse(o);
    return createResticStore(opts, {
      name: `restic:${name}`,
      configPath: `stores.${name}`,
      repository: opts.repository ?? ctx.secret("repository")?.reveal(),
      password: ctx.secret("password"),
      ...(ctx.warn ? { warn: ctx.warn } : {}),
    });
  },
};
