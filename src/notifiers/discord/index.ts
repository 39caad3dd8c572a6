import * as z from "zod";
import { send } from "../http.js";
import type { Notifier } from "../notifier.js";
import { requiredSecret, requireSecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";
import { oneLine } from "../text.js";

/** A Discord channel webhook; its URL holds the token, hence secret-capable. */
export const discordNotifierSchema = z
  .strictObject({
    type: z.literal("discord"),
    ...secretKeys("url"),
    timeout: timeoutKey,
  })
  .superRefine(requireSecret("url"));

/** Discord refuses a message longer than this many characters. */
const MAX_CONTENT = 2000;

export function createDiscordNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = discordNotifierSchema.parse(options);
  const url = requiredSecret(name, ctx, "url");
  return {
    name,
    type: "discord",
    async notify(event, opts = {}) {
      if (event.kind === "start") return;
      const text = oneLine(event);
      const content = text.length > MAX_CONTENT ? `${text.slice(0, MAX_CONTENT - 1)}…` : text;
      await send({
        notifier: name,
        url: url(),
        headers: { "content-type": "application/json" },
        // An error text that happens to contain @everyone must not ping the whole server.
        body: JSON.stringify({ content, allowed_mentions: { parse: [] } }),
        timeoutSeconds: o.timeout,
        signal: opts.signal,
      });
    },
  };
}
