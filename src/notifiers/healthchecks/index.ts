import * as z from "zod";
import { parseUrl, send } from "../http.js";
import type { Notifier, RunEvent } from "../notifier.js";
import { requiredSecret, requireSecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";
import { fields, oneLine, truncateBytes } from "../text.js";

/**
 * A healthchecks.io-style ping URL (`https://hc-ping.com/<uuid>`, or a self-hosted one). Anyone holding it can
 * report the job as up, hence secret-capable.
 */
export const healthchecksNotifierSchema = z
  .strictObject({
    type: z.literal("healthchecks"),
    ...secretKeys("url"),
    timeout: timeoutKey,
  })
  .superRefine(requireSecret("url"));

/** Healthchecks keeps at most this much of a ping's body. */
const MAX_BODY = 100_000;

/**
 * start -> `/start` (healthchecks then measures the run time and can alert on a run that never finishes),
 * success -> the URL itself, failure -> `/fail`, test -> `/log` (recorded in the check's log without changing
 * its state, so a test cannot hide a real failure).
 */
export function pingUrl(base: URL, kind: RunEvent["kind"]): URL {
  const u = new URL(base);
  const suffix = { start: "/start", success: "", failure: "/fail", test: "/log" }[kind];
  u.pathname = u.pathname.replace(/\/+$/, "") + suffix;
  return u;
}

export function createHealthchecksNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = healthchecksNotifierSchema.parse(options);
  const url = requiredSecret(name, ctx, "url");
  return {
    name,
    type: "healthchecks",
    async notify(event, opts = {}) {
      const body = [oneLine(event), "", ...fields(event).map(([k, v]) => `${k}: ${v}`)].join("\n");
      await send({
        notifier: name,
        url: pingUrl(parseUrl(name, url()), event.kind).href,
        headers: { "content-type": "text/plain; charset=utf-8" },
        body: truncateBytes(body, MAX_BODY),
        timeoutSeconds: o.timeout,
        signal: opts.signal,
      });
    },
  };
}
