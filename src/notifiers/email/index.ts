import type { ConnectionOptions } from "node:tls";
import * as z from "zod";
import { DbkeepError } from "../../core/errors.js";
import { redact } from "../../core/redact.js";
import { VERSION } from "../../core/version.js";
import type { Notifier, RunEvent } from "../notifier.js";
import { lazySecret, secretKeys, type NotifierContext } from "../options.js";
import { fields, oneLine, statusWord } from "../text.js";

/** Seed 000's email notifier, with its keys as they are. */
export const emailNotifierSchema = z.strictObject({
  type: z.literal("email"),
  smtp_host: z.string().min(1),
  smtp_port: z.coerce.number().int().min(1).max(65535).default(587),
  ...secretKeys("username"),
  ...secretKeys("password"),
  from: z.string().min(1),
  /** One address, a comma-separated string, or a list. */
  to: z.union([z.string(), z.array(z.string())]),
  use_tls: z.boolean().default(true),
});
export type EmailNotifierOptions = z.infer<typeof emailNotifierSchema>;

export interface EmailContext extends NotifierContext {
  /**
   * TLS settings for the SMTP connection beyond Node's defaults, such as a private CA. Users get the same with
   * NODE_EXTRA_CA_CERTS; this is for callers in the same process (tests) that cannot set it before start.
   */
  tls?: ConnectionOptions;
}

export function recipients(to: string | string[]): string[] {
  return (Array.isArray(to) ? to : [to]).flatMap((t) => t.split(",")).map((t) => t.trim()).filter(Boolean);
}

/**
 * use_tls on port 465 is implicit TLS (SMTPS); on any other port STARTTLS is required, so that a server (or a
 * man in the middle) that does not offer it cannot make the password go out in clear. use_tls: false is plain SMTP.
 */
export function smtpSecurity(o: Pick<EmailNotifierOptions, "smtp_port" | "use_tls">): { secure: boolean; requireTLS: boolean; ignoreTLS: boolean } {
  if (!o.use_tls) return { secure: false, requireTLS: false, ignoreTLS: true };
  return o.smtp_port === 465 ? { secure: true, requireTLS: false, ignoreTLS: false } : { secure: false, requireTLS: true, ignoreTLS: false };
}

export function emailSubject(e: RunEvent): string {
  return redact(`[dbkeep] ${statusWord(e)} ${e.job}`);
}

export function emailText(e: RunEvent): string {
  const rows = fields(e);
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return [oneLine(e), "", ...rows.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}`), "", "-- ", `dbkeep ${VERSION}`, ""].join("\n");
}

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export function emailHtml(e: RunEvent): string {
  const color = e.kind === "failure" ? "#b00020" : e.kind === "success" ? "#1b7f3b" : "#1f5fa8";
  const rows = fields(e)
    .map(([k, v]) => {
      const strong = k === "Error" || k === "Hint";
      return `<tr><th style="text-align:left;vertical-align:top;padding:2px 12px 2px 0;color:#555">${escapeHtml(k)}</th><td style="padding:2px 0${strong ? `;color:${k === "Error" ? color : "inherit"}` : ""}">${escapeHtml(v).replace(/\n/g, "<br>")}</td></tr>`;
    })
    .join("\n");
  return `<!doctype html>
<html><body style="font-family:sans-serif;font-size:14px">
<h2 style="color:${color};margin:0 0 8px">${escapeHtml(statusWord(e))} ${escapeHtml(e.job)}</h2>
<p>${escapeHtml(oneLine(e))}</p>
<table style="border-collapse:collapse">
${rows}
</table>
<p style="color:#888;font-size:12px">dbkeep ${escapeHtml(VERSION)}</p>
</body></html>
`;
}

interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
}

function smtpFailure(name: string, where: string, err: SmtpError): DbkeepError {
  const code = err.code ?? "";
  const reply = err.responseCode;
  const certificate = /certificate|self[- ]signed|CERT_|unable to verify/i.test(err.message);
  let hint: string;
  let retryable = false;
  if (code === "EAUTH") hint = `the server refused the login; check username and password (or their _env / _file) of notifications.${name}`;
  else if (certificate) hint = "the server's certificate is not trusted; for a private CA start dbkeep with NODE_EXTRA_CA_CERTS=/path/to/ca.pem";
  else if (code === "ETLS" || /STARTTLS/i.test(err.message)) hint = "the server does not offer STARTTLS; use port 465 for implicit TLS, or use_tls: false only on a network you trust";
  else if (reply !== undefined && reply >= 400 && reply < 500) {
    hint = "the server refused for now; dbkeep retries later";
    retryable = true;
  } else if (reply !== undefined && reply >= 500) hint = "the server refused the message; check from and to";
  else {
    hint = "check smtp_host and smtp_port, and that this machine may reach the server";
    retryable = ["ECONNECTION", "ETIMEDOUT", "ESOCKET", "EDNS", "ECONNRESET", "ECONNREFUSED"].includes(code);
  }
  return new DbkeepError("NOTIFY_FAILED", redact(`[notifier:${name}] SMTP ${where}: ${err.message}`), { hint, retryable, cause: err });
}

export function createEmailNotifier(name: string, options: Record<string, unknown>, ctx: EmailContext): Notifier {
  const o = emailNotifierSchema.parse(options);
  const to = recipients(o.to);
  const username = lazySecret(name, ctx, "username");
  const password = lazySecret(name, ctx, "password");
  const where = `${o.smtp_host}:${o.smtp_port}`;
  return {
    name,
    type: "email",
    async notify(event, opts = {}) {
      if (event.kind === "start") return;
      if (to.length === 0) throw new DbkeepError("NOTIFY_FAILED", `[notifier:${name}] no recipient in to`);
      const user = username();
      const pass = password();
      // Loaded on first mail so that commands that never notify do not pay for nodemailer.
      const { createTransport } = await import("nodemailer");
      const transport = createTransport({
        host: o.smtp_host,
        port: o.smtp_port,
        ...smtpSecurity(o),
        ...(user ? { auth: { user, pass: pass ?? "" } } : {}),
        connectionTimeout: 15_000,
        greetingTimeout: 15_000,
        socketTimeout: 60_000,
        ...(ctx.tls ? { tls: ctx.tls } : {}),
      });
      const cancel = () => transport.close();
      opts.signal?.addEventListener("abort", cancel, { once: true });
      try {
        await transport.sendMail({
          from: o.from,
          to,
          subject: emailSubject(event),
          text: emailText(event),
          html: emailHtml(event),
          headers: { "X-Dbkeep-Job": event.job, "X-Dbkeep-Status": event.status },
        });
      } catch (err) {
        if (opts.signal?.aborted) throw new DbkeepError("ABORTED", `[notifier:${name}] cancelled while sending mail`, { cause: err });
        throw smtpFailure(name, where, err as SmtpError);
      } finally {
        opts.signal?.removeEventListener("abort", cancel);
        transport.close();
      }
    },
  };
}
