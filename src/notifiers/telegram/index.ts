import * as z from "zod";
import { send } from "../http.js";
import type { Notifier } from "../notifier.js";
import { requiredSecret, requireSecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";
import { oneLine } from "../text.js";

export const telegramNotifierSchema = z
  .strictObject({
    type: z.literal("telegram"),
    ...secretKeys("bot_token"),
    /** A numeric chat id, or `@channelname`. */
    chat_id: z.union([z.string().min(1), z.number().int()]),
    /** Another Bot API server (a self-hosted one, or a local one in tests). */
    api_url: z.string().min(1).optional(),
    timeout: timeoutKey,
  })
  .superRefine(requireSecret("bot_token"));

/** Telegram refuses a message longer than this many characters. */
const MAX_TEXT = 4096;

export function createTelegramNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = telegramNotifierSchema.parse(options);
  const token = requiredSecret(name, ctx, "bot_token");
  const api = (o.api_url ?? "https://api.telegram.org").replace(/\/+$/, "");
  return {
    name,
    type: "telegram",
    async notify(event, opts = {}) {
      if (event.kind === "start") return;
      const line = oneLine(event);
      const text = line.length > MAX_TEXT ? `${line.slice(0, MAX_TEXT - 1)}…` : line;
      await send({
        notifier: name,
        url: `${api}/bot${token()}/sendMessage`,
        headers: { "content-type": "application/json" },
        // Plain text (no parse_mode): an error text full of <, > and _ must not be read as markup.
        body: JSON.stringify({ chat_id: o.chat_id, text, link_preview_options: { is_disabled: true } }),
        timeoutSeconds: o.timeout,
        signal: opts.signal,
      });
    },
  };
}
