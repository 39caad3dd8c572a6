import { createHmac } from "node:crypto";
import * as z from "zod";
import { registerSecret } from "../../core/redact.js";
import { send } from "../http.js";
import type { Notifier, RunEvent } from "../notifier.js";
import { lazySecret, secretKeys, timeoutKey, type NotifierContext } from "../options.js";

/** seed 003's `WEBHOOK_EXTRA_HEADERS` form, `Key=Value,Key2=Value2`, is accepted beside a map. */
const headersKey = z.union([
  z.record(z.string().min(1), z.string()),
  z.string().transform((s, ctx) => {
    const out: Record<string, string> = {};
    for (const pair of s.split(",").map((p) => p.trim()).filter(Boolean)) {
      const i = pair.indexOf("=");
      if (i <= 0) {
        ctx.addIssue({ code: "custom", message: `expected Key=Value pairs separated by commas, got "${pair}"` });
        return z.NEVER;
      }
      out[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
    }
    return out;
  }),
]);

export const webhookNotifierSchema = z.strictObject({
  type: z.literal("webhook"),
  url: z.string().min(1),
  method: z.string().transform((m) => m.toUpperCase()).pipe(z.enum(["POST", "PUT", "PATCH"])).default("POST"),
  headers: headersKey.optional(),
  /** A whole header line, `Authorization: Bearer <token>` (seed 003's WEBHOOK_AUTH_HEADER). */
  ...secretKeys("auth_header"),
  ...secretKeys("hmac_secret"),
  timeout: timeoutKey,
  on_start: z.boolean().default(false),
  /** Payload fields given fixed values, replacing dbkeep's (seed 003's sidecar mode: `dbType` as DB_TYPE, `tags` as RESTIC_TAGS). */
  fields: z.record(z.string().min(1), z.union([z.string(), z.number(), z.boolean(), z.array(z.string())])).optional(),
});
export type WebhookNotifierOptions = z.infer<typeof webhookNotifierSchema>;

/** `Name: value`; a bare value is taken as the Authorization header's. */
export function splitAuthHeader(line: string): [string, string] {
  const i = line.indexOf(":");
  if (i <= 0 || /\s/.test(line.slice(0, i).trim())) return ["authorization", line.trim()];
  return [line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()];
}

/**
 * The RunEvent as JSON with every field of seed 003's payload, so that a receiver written for that tool keeps
 * working: `snapshotId` (restic's snapshot id in a restic store; null when the run made none), and restic's summary
 * numbers (0 when the run made no backup, as seed 003 sent them). `fields` replace values of the payload.
 */
export function webhookBody(e: RunEvent, fields: Record<string, unknown> = {}): string {
  if (e.kind === "start") return JSON.stringify({ ...e, ...fields });
  return JSON.stringify({
    ...e,
    snapshotId: e.snapshot ?? null,
    dataAddedBytes: e.dataAddedBytes ?? e.bytes ?? 0,
    totalBytesProcessed: e.totalBytesProcessed ?? 0,
    totalDurationSeconds: e.totalDurationSeconds ?? 0,
    filesNew: e.filesNew ?? 0,
    filesChanged: e.filesChanged ?? 0,
    filesUnmodified: e.filesUnmodified ?? 0,
    ...fields,
  });
}

export function createWebhookNotifier(name: string, options: Record<string, unknown>, ctx: NotifierContext): Notifier {
  const o = webhookNotifierSchema.parse(options);
  const authHeader = lazySecret(name, ctx, "auth_header");
  const hmacSecret = lazySecret(name, ctx, "hmac_secret");
  return {
    name,
    type: "webhook",
    async notify(event, opts = {}) {
      if (event.kind === "start" && !o.on_start) return;
      const body = webhookBody(event, o.fields);
      // Lower-cased so that a configured Content-Type replaces ours instead of being joined to it.
      const headers: Record<string, string> = { "content-type": "application/json" };
      for (const [k, v] of Object.entries(o.headers ?? {})) headers[k.toLowerCase()] = v;
      const auth = authHeader();
      if (auth) {
        const [key, value] = splitAuthHeader(auth);
        // The value alone (`Bearer x`) must be masked too, not only the whole line the Secret registered.
        registerSecret(value);
        headers[key] = value;
      }
      const key = hmacSecret();
      if (key) {
        headers["x-dbkeep-timestamp"] = String(Math.floor(Date.now() / 1000));
        headers["x-dbkeep-signature"] = `sha256=${createHmac("sha256", key).update(body, "utf8").digest("hex")}`;
      }
      await send({ notifier: name, url: o.url, method: o.method, headers, body, timeoutSeconds: o.timeout, signal: opts.signal });
    },
  };
}
