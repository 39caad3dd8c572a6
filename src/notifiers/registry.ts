import { z } from "zod";

export interface NotifierPlugin {
  schema: z.ZodType<Record<string, unknown>>;
  secrets: readonly string[];
  available: boolean;
}

const addresses = z.union([z.string(), z.array(z.string())]);

/** Seed 000's email notifier. Accepted in the config; sending is not in this version yet. */
export const NOTIFIERS: Record<string, NotifierPlugin> = {
  email: {
    schema: z.strictObject({
      type: z.literal("email"),
      smtp_host: z.string().min(1),
      smtp_port: z.coerce.number().int().min(1).max(65535).default(587),
      username: z.string().optional(),
      username_env: z.string().optional(),
      username_file: z.string().optional(),
      password: z.string().optional(),
      password_env: z.string().optional(),
      password_file: z.string().optional(),
      from: z.string().min(1),
      to: addresses,
      use_tls: z.boolean().default(true),
    }),
    secrets: ["username", "password"],
    available: false,
  },
};
