import type * as z from "zod";
import type { Config } from "../config/load.js";
import { DbkeepError } from "../core/errors.js";
import type { Secret } from "../core/redact.js";
import { discordNotifierSchema } from "./discord/index.js";
import { emailNotifierSchema } from "./email/index.js";
import { gotifyNotifierSchema } from "./gotify/index.js";
import { healthchecksNotifierSchema } from "./healthchecks/index.js";
import type { Notifier } from "./notifier.js";
import { ntfyNotifierSchema } from "./ntfy/index.js";
import { slackNotifierSchema } from "./slack/index.js";
import { teamsNotifierSchema } from "./teams/index.js";
import { telegramNotifierSchema } from "./telegram/index.js";
import { webhookNotifierSchema } from "./webhook/index.js";

export interface NotifierPlugin {
  /** Options of a notifier of this type; checked when the config is loaded. */
  schema: z.ZodType<Record<string, unknown>>;
  /** Fields holding secrets (each also accepted as `<field>_env` and `<field>_file`). */
  secrets: readonly string[];
  /** Secrets are resolved through ctx when a notification is sent, not here. */
  create(name: string, options: Record<string, unknown>, ctx: { secret(field: string): Secret | undefined }): Promise<Notifier>;
}

/** Folder name = `type:` value = registry key. Adding a notifier is a folder and a line here. */
export const NOTIFIERS: Record<string, NotifierPlugin> = {
  email: { schema: emailNotifierSchema, secrets: ["username", "password"], create: async (n, o, c) => (await import("./email/index.js")).createEmailNotifier(n, o, c) },
  webhook: { schema: webhookNotifierSchema, secrets: ["auth_header", "hmac_secret"], create: async (n, o, c) => (await import("./webhook/index.js")).createWebhookNotifier(n, o, c) },
  slack: { schema: slackNotifierSchema, secrets: ["url"], create: async (n, o, c) => (await import("./slack/index.js")).createSlackNotifier(n, o, c) },
  discord: { schema: discordNotifierSchema, secrets: ["url"], create: async (n, o, c) => (await import("./discord/index.js")).createDiscordNotifier(n, o, c) },
  teams: { schema: teamsNotifierSchema, secrets: ["url"], create: async (n, o, c) => (await import("./teams/index.js")).createTeamsNotifier(n, o, c) },
  telegram: { schema: telegramNotifierSchema, secrets: ["bot_token"], create: async (n, o, c) => (await import("./telegram/index.js")).createTelegramNotifier(n, o, c) },
  ntfy: { schema: ntfyNotifierSchema, secrets: ["url", "token"], create: async (n, o, c) => (await import("./ntfy/index.js")).createNtfyNotifier(n, o, c) },
  gotify: { schema: gotifyNotifierSchema, secrets: ["token"], create: async (n, o, c) => (await import("./gotify/index.js")).createGotifyNotifier(n, o, c) },
  healthchecks: { schema: healthchecksNotifierSchema, secrets: ["url"], create: async (n, o, c) => (await import("./healthchecks/index.js")).createHealthchecksNotifier(n, o, c) },
};

/**
 * The notifier `name` of the config. Its secrets are resolved when it first sends, so a notifier whose
 * `password_env` is unset fails its own notification, not the command or job that made it.
 */
export async function createNotifier(config: Config, name: string, warn?: (message: string) => void): Promise<Notifier> {
  const section = config.notifications[name];
  if (!section) {
    const defined = Object.keys(config.notifications);
    throw new DbkeepError("USAGE", `unknown notifier "${name}"${config.file ? ` in ${config.file}` : ""}`, {
      hint: defined.length ? `notifiers: ${defined.join(", ")}` : "the config defines no notifications",
    });
  }
  // Imported here, not at the top: config/load.ts imports this registry to validate the config.
  const { resolveSecret } = await import("../config/load.js");
  return NOTIFIERS[section.type]!.create(name, section.options, { secret: (field) => resolveSecret(section, field, `notifications.${name}`, warn) });
}
