import { DbkeepError } from "../core/errors.js";
import { maskValues, redact, registerSecret } from "../core/redact.js";
import { VERSION } from "../core/version.js";

export interface HttpRequest {
  /** The notifier's name, for messages. */
  notifier: string;
  url: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutSeconds: number;
  signal?: AbortSignal;
}

export interface HttpAnswer {
  status: number;
  body: string;
}

/**
 * The part of a URL that may be shown: scheme, host and port. Webhook URLs carry their token in the path (Slack,
 * Discord, Teams, Telegram's /bot<token>/) or the query, so neither ever reaches a message.
 */
export function shownUrl(url: URL): string {
  return url.origin;
}

/**
 * The parts of a URL that may hold its credential, for masking in what a service answers: a receiver that echoes the
 * request ("Cannot POST /services/T0/B0/XXXX", "unknown topic mytopic-secret") must not carry them into a message.
 * The path and the query, whole and piece by piece, as sent, decoded and fully encoded.
 */
export function secretPartsOf(url: URL): string[] {
  const parts = new Set<string>();
  const add = (v: string) => {
    if (!v) return;
    parts.add(v);
    try {
      const plain = decodeURIComponent(v);
      parts.add(plain);
      parts.add(encodeURIComponent(plain));
    } catch {
      // Not valid percent-encoding: the raw text is masked.
    }
  };
  if (url.pathname !== "/") add(url.pathname + url.search);
  add(url.pathname.replace(/^\/+|\/+$/g, ""));
  add(url.search.slice(1));
  for (const segment of url.pathname.split("/")) add(segment);
  for (const [, value] of url.searchParams) add(value);
  if (url.username) add(url.username);
  if (url.password) add(url.password);
  return [...parts].filter((p) => p !== "/" && p.length > 1);
}

export function parseUrl(notifier: string, raw: string, field = "url"): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // The text is left out on purpose: it may be a secret URL with a typo in it.
    throw new DbkeepError("NOTIFY_FAILED", `[notifier:${notifier}] ${field} is not a valid URL`, { hint: `check ${field} of notifications.${notifier}` });
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new DbkeepError("NOTIFY_FAILED", `[notifier:${notifier}] ${field} must be an http:// or https:// URL, not ${url.protocol}`);
  }
  return url;
}

const HINTS: Record<number, string> = {
  400: "the service rejected the message; check the notifier's options (chat_id, topic, ...)",
  401: "check the notifier's token or auth header",
  403: "check the notifier's token or auth header, and that it may post here",
  404: "check the notifier's URL (a deleted webhook answers 404)",
  413: "the service found the message too large",
  429: "the service is rate limiting; dbkeep retries later",
};

/**
 * One HTTP request with a deadline. Resolves only for a 2xx answer; rejects with NOTIFY_FAILED, retryable for
 * network errors, timeouts, 5xx and 429 (a service that is down or busy may take it later) and not for other 4xx
 * (the same request would be refused again). Messages name the method and origin only, never the path or query.
 */
export async function send(req: HttpRequest): Promise<HttpAnswer> {
  const url = parseUrl(req.notifier, req.url);
  const hidden = secretPartsOf(url);
  const clean = (text: string) => redact(maskValues(text, hidden));
  const method = (req.method ?? "POST").toUpperCase();
  const headers: Record<string, string> = { "user-agent": `dbkeep/${VERSION}`, ...req.headers };
  // fetch refuses URLs with credentials; user:password@ in a URL (ntfy, a proxy) becomes Basic auth.
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    registerSecret(pass);
    headers.authorization ??= `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;
    url.username = "";
    url.password = "";
  }
  const where = `${method} ${shownUrl(url)}`;
  const prefix = `[notifier:${req.notifier}]`;
  const timeout = AbortSignal.timeout(Math.round(req.timeoutSeconds * 1000));
  const signal = req.signal ? AbortSignal.any([timeout, req.signal]) : timeout;

  const failed = (err: unknown): DbkeepError => {
    if (req.signal?.aborted) return new DbkeepError("ABORTED", `${prefix} cancelled while sending to ${shownUrl(url)}`, { cause: err });
    if (timeout.aborted) {
      return new DbkeepError("NOTIFY_FAILED", `${prefix} ${where}: no answer within ${req.timeoutSeconds}s`, {
        hint: "the service is slow or unreachable; raise timeout if it is just slow",
        retryable: true,
        cause: err,
      });
    }
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const reason = cause?.code ?? cause?.message ?? (err as Error).message;
    return new DbkeepError("NOTIFY_FAILED", redact(`${prefix} ${where}: cannot connect (${clean(String(reason))})`), {
      hint: "check the host name and port, and that this machine may reach it",
      retryable: true,
      cause: err,
    });
  };

  let res: Response;
  let body: string;
  try {
    res = await fetch(url, { method, headers, ...(req.body !== undefined ? { body: req.body } : {}), signal, redirect: "follow" });
    body = await res.text();
  } catch (err) {
    throw failed(err);
  }
  if (res.status >= 200 && res.status < 300) return { status: res.status, body };
  // Masked before it is cut short: a secret cut in half would no longer be recognised.
  const said = clean(body.slice(0, 8192).replace(/\s+/g, " ").trim()).slice(0, 200);
  const retryable = res.status >= 500 || res.status === 429;
  throw new DbkeepError("NOTIFY_FAILED", redact(`${prefix} ${where} answered HTTP ${res.status}${said ? `: ${said}` : ""}`), {
    hint: HINTS[res.status] ?? (retryable ? "the service failed; dbkeep retries later" : "the service refused the message"),
    retryable,
  });
}
