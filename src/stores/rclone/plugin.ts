import * as z from "zod";
import { envMapSchema } from "../child-env.js";
import type { StorePlugin } from "../plugin.js";

/** Option names that carry credentials: those belong in `env:` (or config_file), never on rclone's argument list. */
const SECRET_OPTION = /pass|secret|token|credential|auth|sas|cookie|(^|[-_])key($|[-_](id|pem|data)$)|account[-_]key|private/i;

/**
 * `name:path`, `name:` or an on-the-fly remote `:backend,opt=value:path`. The remote is part of rclone's argument
 * list, so parameters of an on-the-fly remote may not hold credentials.
 */
const remote = z
  .string()
  .min(1)
  .superRefine((v, ctx) => {
    const m = /^(:?[^:,/]+)((?:,[^:]*)?):/.exec(v);
    if (!m) {
      ctx.addIssue({ code: "custom", message: 'expected "name:path" (a remote of the rclone config or of the env: map, then a path)' });
      return;
    }
    for (const param of (m[2] ?? "").split(",").filter(Boolean)) {
      const key = param.split("=")[0] ?? "";
      if (SECRET_OPTION.test(key)) ctx.addIssue({ code: "custom", message: `the remote's parameter "${key}" looks like a credential: set it in env: (RCLONE_<BACKEND>_${key.toUpperCase()}) instead` });
    }
  });

const flag = z.string().superRefine((v, ctx) => {
  const m = /^--([a-z0-9][a-z0-9-]*)(=.*)?$/i.exec(v);
  if (!m) {
    ctx.addIssue({ code: "custom", message: `"${v}" is not a long flag: write it as --name or --name=value` });
    return;
  }
  const name = m[1] ?? "";
  if (SECRET_OPTION.test(name) && !/-file$/.test(name)) {
    ctx.addIssue({ code: "custom", message: `--${name} looks like a credential: give it in env: (RCLONE_${name.toUpperCase().replace(/-/g, "_")}), never as a flag` });
  }
  if (/^(config|header|header-upload|header-download)$/.test(name)) {
    ctx.addIssue({ code: "custom", message: `--${name} is not accepted in flags${name === "config" ? " (use config_file)" : " (headers may carry credentials; use env:)"}` });
  }
});

export const rcloneStoreSchema = z.strictObject({
  type: z.literal("rclone"),
  remote,
  /** rclone.conf to use (RCLONE_CONFIG); default: rclone's own (~/.config/rclone/rclone.conf). */
  config_file: z.string().min(1).optional(),
  /** Extra environment for rclone: RCLONE_CONFIG_<REMOTE>_<OPTION>, RCLONE_<FLAG>, ...; literals, { env: NAME } or { file: PATH }. */
  env: envMapSchema.optional(),
  /** Extra rclone flags, e.g. ["--transfers=4", "--s3-upload-concurrency=8"]; never credentials. */
  flags: z.array(flag).default([]),
  /** The rclone binary (default: `rclone` from PATH). */
  bin: z.string().min(1).optional(),
});
export type RcloneStoreOptions = z.infer<typeof rcloneStoreSchema>;

export const plugin: StorePlugin = {
  schema: rcloneStoreSchema as unknown as z.ZodType<Record<string, unknown>>,
  secrets: [],
  available: true,
  async create(name, o, ctx) {
    const { createRcloneStore } = await import("./index.js");
    return createRcloneStore(rcloneStoreSchema.parse(o), { name: `rclone:${name}`, configPath: `stores.${name}`, ...(ctx.warn ? { warn: ctx.warn } : {}) });
  },
};
