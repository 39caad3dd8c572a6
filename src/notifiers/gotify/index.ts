import * as z from "zod";
import { send } from "../http.js";
import type { Notifier } from "../notifier.js";
import { requiredSecret, requireSecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";
import { oneLine, title } from "../text.js";

/** Gotify: `url` is the server (`https://gotify.example.com`), `token` an application token. */
export const gotifyNotifierSchema = z
  .strictObject({
    type: z.literal("gotify"),
    url: z.string().min(1),
    ...secretKeys("token"),
    /** By default failures are 8 (shown as a popup by the Android app) and the rest 4. */
    priority: z.number().int().min(0).max(10).optional(),
    timeout: timeoutKey,
  })
  .superRefine(requireSecret("token"));

export function createGotifyNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = gotifyNotifierSchema.parse(options);
  const token = requiredSecret(name, ctx, "token");
  return {
    name,
    type: "gotify",
    async notify(event, opts = {}) {
      if (event.kind === "start") return;
      await send({
        notifier: name,
        url: `${o.url.replace(/\/+$/, "")}/message`,
        // A header, not ?token=: query strings end up in proxies' access logs.
        headers: { "content-type": "application/json", "x-gotify-key": token() },
        body: JSON.stringify({ title: title(event), message: oneLine(event), priority: o.priority ?? (event.kind === "failure" ? 8 : 4) }),
        timeoutSeconds: o.timeout,
        signal: opts.signal,
      });
    },
  };
}
