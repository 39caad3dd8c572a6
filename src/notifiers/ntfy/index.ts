import * as z from "zod";
import { send } from "../http.js";
import type { Notifier, RunEvent } from "../notifier.js";
import { lazySecret, requiredSecret, requireSecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";
import { oneLine, title } from "../text.js";

/**
 * ntfy: `url` is the server and the topic (`https://ntfy.sh/mytopic`). On a public server the topic name is all
 * it takes to read and post, so the URL is secret-capable; `token` is an access token of a protected server.
 */
export const ntfyNotifierSchema = z
  .strictObject({
    type: z.literal("ntfy"),
    ...secretKeys("url"),
    ...secretKeys("token"),
    /** 1 (min) to 5 (max); by default failures are 4 (high) and the rest 3 (default). */
    priority: z.number().int().min(1).max(5).optional(),
    tags: z.array(z.string().min(1)).optional(),
    timeout: timeoutKey,
  })
  .superRefine(requireSecret("url"));

const TAGS: Record<RunEvent["kind"], string> = { start: "hourglass_flowing_sand", success: "white_check_mark", failure: "rotating_light", test: "test_tube" };

/** HTTP header values are Latin-1; ntfy decodes RFC 2047 encoded words, so a job named in Greek still reads right. */
export function headerText(text: string): string {
  return /^[\x20-\x7e]*$/.test(text) ? text : `=?UTF-8?B?${Buffer.from(text, "utf8").toString("base64")}?=`;
}

export function createNtfyNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = ntfyNotifierSchema.parse(options);
  const url = requiredSecret(name, ctx, "url");
  const token = lazySecret(name, ctx, "token");
  return {
    name,
    type: "ntfy",
    async notify(event, opts = {}) {
      if (event.kind === "start") return;
      const headers: Record<string, string> = {
        "content-type": "text/plain; charset=utf-8",
        title: headerText(title(event)),
        priority: String(o.priority ?? (event.kind === "failure" ? 4 : 3)),
        tags: headerText([TAGS[event.kind], ...(o.tags ?? [])].join(",")),
      };
      const t = token();
      if (t) headers.authorization = `Bearer ${t}`;
      await send({ notifier: name, url: url(), headers, body: oneLine(event), timeoutSeconds: o.timeout, signal: opts.signal });
    },
  };
}
