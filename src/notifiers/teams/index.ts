import * as z from "zod";
import { send } from "../http.js";
import type { Notifier, RunEvent } from "../notifier.js";
import { requiredSecret, requireSecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";
import { fields, oneLine, title } from "../text.js";

/**
 * A Microsoft Teams incoming webhook. `messagecard` is what the classic connector webhooks take; webhooks made
 * with a Teams workflow ("when a webhook request is received") take an Adaptive Card: `format: adaptive`.
 */
export const teamsNotifierSchema = z
  .strictObject({
    type: z.literal("teams"),
    ...secretKeys("url"),
    format: z.enum(["messagecard", "adaptive"]).default("messagecard"),
    timeout: timeoutKey,
  })
  .superRefine(requireSecret("url"));

const COLORS: Record<RunEvent["kind"], string> = { start: "0078D7", success: "2EB886", failure: "D40E0D", test: "0078D7" };

export function teamsBody(e: RunEvent, format: "messagecard" | "adaptive"): unknown {
  if (format === "messagecard") {
    return {
      "@type": "MessageCard",
      "@context": "https://schema.org/extensions",
      summary: title(e),
      themeColor: COLORS[e.kind],
      title: title(e),
      text: oneLine(e),
      sections: [{ facts: fields(e).map(([name, value]) => ({ name, value })) }],
    };
  }
  return {
    type: "message",
    attachments: [
      {
        contentType: "application/vnd.microsoft.card.adaptive",
        content: {
          $schema: "http://adaptivecards.io/schemas/adaptive-card.json",
          type: "AdaptiveCard",
          version: "1.4",
          body: [
            { type: "TextBlock", text: title(e), weight: "Bolder", size: "Medium", wrap: true, color: e.kind === "failure" ? "Attention" : "Default" },
            { type: "TextBlock", text: oneLine(e), wrap: true },
            { type: "FactSet", facts: fields(e).map(([t, value]) => ({ title: t, value })) },
          ],
        },
      },
    ],
  };
}

export function createTeamsNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = teamsNotifierSchema.parse(options);
  const url = requiredSecret(name, ctx, "url");
  return {
    name,
    type: "teams",
    async notify(event, opts = {}) {
      if (event.kind === "start") return;
      await send({
        notifier: name,
        url: url(),
        headers: { "content-type": "application/json" },
        body: JSON.stringify(teamsBody(event, o.format)),
        timeoutSeconds: o.timeout,
        signal: opts.signal,
      });
    },
  };
}
