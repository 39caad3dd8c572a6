import * as z from "zod";
import type { StorePlugin } from "../plugin.js";

/** Seed 000's keys (`host`, `user`, `port`, `path`, `key_file`, `password_*`) plus host key checking and timeouts. */
export const sshStoreSchema = z.strictObject({
  type: z.literal("ssh"),
  host: z.string().min(1),
  user: z.string().min(1).optional(),
  port: z.coerce.number().int().min(1).max(65535).default(22),
  path: z.string().min(1),
  key_file: z.string().min(1).optional(),
  key_passphrase: z.string().optional(),
  key_passphrase_env: z.string().optional(),
  key_passphrase_file: z.string().optional(),
  password: z.string().optional(),
  password_env: z.string().optional(),
  password_file: z.string().optional(),
  known_hosts: z.string().min(1).optional(),
  host_key: z
    .string()
    .regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/, 'expected a fingerprint as `ssh-keygen -lf` prints it, e.g. "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"')
    .optional(),
  timeout: z.coerce.number().positive().default(30),
});
export type SshStoreOptions = z.infer<typeof sshStoreSchema>;

export const plugin: StorePlugin = {
  schema: sshStoreSchema,
  secrets: ["password", "key_passphrase"],
  available: true,
  async create(name, o, ctx) {
    const { createSshStore } = await import("./index.js");
    return createSshStore(sshStoreSchema.parse(o), {
      name: `ssh:${name}`,
      password: () => ctx.secret("password"),
      keyPassphrase: () => ctx.secret("key_passphrase"),
      ...(ctx.warn ? { warn: ctx.warn } : {}),
    });
  },
};
