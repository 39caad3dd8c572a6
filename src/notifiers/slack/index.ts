import * as z from "zod";
import { send } from "../http.js";
import type { Notifier } from "../notifier.js";
import { requiredSecret, requireSecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";
import { oneLine } from "../text.js";

/** A Slack incoming webhook; its URL is the credential, hence secret-capable. */
export const slackNotifierSchema = z
  .strictObject({
    type: z.literal("slack"),
    ...secretKeys("url"),
    timeout: timeoutKey,
  })
  .superRefine(requireSecret("url"));

/** Slack reads `<...>` as links and mentions; an error text must show as written. */
export function slackEscape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function createSlackNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = slackNotifierSchema.parse(options);
  const url = requiredSecret(name, ctx, "url");
  return {
    name,
    type: "slack",
    async notify(event, opts = {}) {
      if (event.kind === "start") return;
      await send({
        notifier: name,
        url: url(),
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ text: slackEscape(oneLine(event)) }),
        timeoutSeconds: o.timeout,
        signal: opts.signal,
      });
    },
  };
}
