import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { resolveSecret, validateConfig } from "../../src/config/load.js";
import { DbkeepError } from "../../src/core/errors.js";
import { createEmailNotifier, smtpSecurity } from "../../src/notifiers/email/index.js";
import type { Notifier, RunEvent } from "../../src/notifiers/notifier.js";
import { createNotifier, NOTIFIERS } from "../../src/notifiers/registry.js";
import { tempDir } from "../helpers/env.js";
import { makeCert, removeCert, startHttpReceiver, startSmtpReceiver, type HttpReceiver, type SmtpReceiver, type TestCert } from "../helpers/receivers.js";

// Every secret of this file; none may show up in a received body or an error message.
const SECRETS = {
  smtpUser: "backup-mailer",
  smtpPassword: "smtp-pw-7Qx!9",
  authToken: "tok-5d1f0c2a",
  hmacKey: "hmac-key-91be",
  slackToken: "slack-secret-XyZ123",
  discordToken: "discord-secret-AbC456",
  teamsToken: "teams-secret-DeF789",
  botToken: "123456:telegram-secret-GhI",
  ntfyToken: "tk_ntfysecret42",
  gotifyToken: "gotify-secret-JkL",
  pingUuid: "hc-secret-0f3c2b1a",
  webhookQueryToken: "wh-query-secret-5521",
  ntfyTopic: "alerts-topic-secret-8e",
};
const secretValues = Object.values(SECRETS);

function expectNoSecret(text: string): void {
  for (const s of secretValues) expect(text, `secret ${s} leaked`).not.toContain(s);
}

const started = "2026-03-01T02:00:00.000Z";
const base = {
  job: "appdb-backup",
  startedAt: started,
  store: "local:nightly",
  repository: "local:nightly",
  dbType: "postgres",
  database: "appdb",
  host: "db-host",
  tags: ["appdb-backup", "appdb"],
};
const failure: RunEvent = {
  ...base,
  kind: "failure",
  status: "failed",
  message: "backup of appdb failed: [engine:postgres] pg_dump failed with exit code 1",
  finishedAt: "2026-03-01T02:03:12.000Z",
  durationSeconds: 192,
  attempts: 3,
  error: "[engine:postgres] pg_dump failed with exit code 1 (host db-host, database appdb): relation <audit.log> is locked",
  hint: "check password_env APPDB_PASSWORD",
};
const success: RunEvent = {
  ...base,
  kind: "success",
  status: "success",
  message: "backup appdb-20260301-020000 of appdb complete",
  finishedAt: "2026-03-01T02:03:12.000Z",
  durationSeconds: 192,
  attempts: 1,
  backup: "appdb-20260301-020000",
  key: "prod/appdb/appdb-20260301-020000.sql.gz",
  snapshot: "prod/appdb/appdb-20260301-020000.sql.gz",
  bytes: 1_234_567,
};
const start: RunEvent = { ...base, kind: "start", status: "started", message: "appdb-backup started" };

/** A notifier as a user gets it: from config options, through the registry and resolveSecret. */
async function notifierFor(options: Record<string, unknown>, name = "n"): Promise<Notifier> {
  const config = validateConfig({ notifications: { [name]: options } });
  return createNotifier(config, name);
}

async function rejection(p: Promise<unknown>): Promise<DbkeepError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected notify() to reject").toBeInstanceOf(DbkeepError);
  const e = err as DbkeepError;
  expectNoSecret(`${e.message}\n${e.hint ?? ""}\n${e.details ?? ""}`);
  return e;
}

const dir = tempDir("dbkeep-notify-");
let http: HttpReceiver;
let cert: TestCert;
const smtps: SmtpReceiver[] = [];

beforeAll(async () => {
  http = await startHttpReceiver();
  cert = makeCert();
  process.env.DBKEEP_TEST_SMTP_USER = SECRETS.smtpUser;
  process.env.DBKEEP_TEST_AUTH = `Authorization: Bearer ${SECRETS.authToken}`;
  process.env.DBKEEP_TEST_SLACK_URL = `${http.url}/services/T0001/B0001/${SECRETS.slackToken}`;
});

afterAll(async () => {
  await http.close();
  await Promise.all(smtps.map((s) => s.close()));
  removeCert(cert);
  delete process.env.DBKEEP_TEST_SMTP_USER;
  delete process.env.DBKEEP_TEST_AUTH;
  delete process.env.DBKEEP_TEST_SLACK_URL;
});

async function smtp(opts: Parameters<typeof startSmtpReceiver>[0]): Promise<SmtpReceiver> {
  const s = await startSmtpReceiver(opts);
  smtps.push(s);
  return s;
}

/** An email notifier that trusts the test certificate, as NODE_EXTRA_CA_CERTS does for the CLI. */
function emailNotifier(options: Record<string, unknown>): Notifier {
  const config = validateConfig({ notifications: { mail: { type: "email", ...options } } });
  const section = config.notifications.mail!;
  return createEmailNotifier("mail", section.options, { secret: (f) => resolveSecret(section, f, "notifications.mail"), tls: { ca: cert.cert } });
}

describe("email", () => {
  it("sends over STARTTLS with AUTH PLAIN to every address of a list, with job, error and hint in text and HTML", async () => {
    const server = await smtp({ cert, credentials: { username: SECRETS.smtpUser, password: SECRETS.smtpPassword }, authMethods: ["PLAIN"] });
    const pwFile = join(dir, "smtp-password");
    writeFileSync(pwFile, `${SECRETS.smtpPassword}\n`, { mode: 0o600 });
    const n = emailNotifier({
      smtp_host: server.host,
      smtp_port: server.port,
      username_env: "DBKEEP_TEST_SMTP_USER",
      password_file: pwFile,
      from: "backups@example.com",
      to: ["ops@example.com", "dev-team@example.com"],
      use_tls: true,
    });
    await n.notify(failure);

    expect(server.mails).toHaveLength(1);
    const m = server.mails[0]!;
    expect(m.secure).toBe(true);
    expect(m.auth).toEqual({ method: "PLAIN", username: SECRETS.smtpUser });
    expect(server.logins).toEqual([{ method: "PLAIN", username: SECRETS.smtpUser, password: SECRETS.smtpPassword, accepted: true }]);
    expect(m.envelopeFrom).toBe("backups@example.com");
    expect(m.envelopeTo).toEqual(["ops@example.com", "dev-team@example.com"]);
    expect(m.headers.from).toContain("backups@example.com");
    expect(m.headers.to).toContain("ops@example.com");
    expect(m.headers.to).toContain("dev-team@example.com");
    expect(m.subject).toBe("[dbkeep] FAILED appdb-backup");
    for (const part of [m.text, m.html]) {
      expect(part).toContain("appdb-backup");
      expect(part).toContain("pg_dump failed with exit code 1");
      expect(part).toContain("check password_env APPDB_PASSWORD");
      expect(part).toContain("local:nightly");
      expect(part).toContain("db-host");
    }
    expect(m.text).toContain("relation <audit.log> is locked");
    expect(m.text).toMatch(/Attempts:\s+3/);
    expect(m.text).toMatch(/Duration:\s+3m12s/);
    // The error text is shown as text in HTML, not parsed as a tag.
    expect(m.html).toContain("relation &lt;audit.log&gt; is locked");
    expect(m.html).not.toContain("<audit.log>");
    expectNoSecret(m.raw);
  });

  it("takes a comma-separated `to`, logs in with AUTH LOGIN and reports a success with the backup and its size", async () => {
    const server = await smtp({ cert, credentials: { username: SECRETS.smtpUser, password: SECRETS.smtpPassword }, authMethods: ["LOGIN"] });
    const n = emailNotifier({
      smtp_host: server.host,
      smtp_port: server.port,
      username: SECRETS.smtpUser,
      password: SECRETS.smtpPassword,
      from: "dbkeep <backups@example.com>",
      to: "ops@example.com, dev-team@example.com,oncall@example.com",
    });
    await n.notify(success);
    const m = server.mails[0]!;
    expect(m.auth).toEqual({ method: "LOGIN", username: SECRETS.smtpUser });
    expect(m.secure).toBe(true);
    expect(m.envelopeFrom).toBe("backups@example.com");
    expect(m.envelopeTo).toEqual(["ops@example.com", "dev-team@example.com", "oncall@example.com"]);
    expect(m.subject).toBe("[dbkeep] OK appdb-backup");
    expect(m.text).toContain("appdb-20260301-020000");
    expect(m.text).toContain("1.2 MiB");
    expect(m.html).toContain("prod/appdb/appdb-20260301-020000.sql.gz");
    expectNoSecret(m.raw);
  });

  it("with use_tls: false sends plain SMTP to a single address, even when the server offers STARTTLS; ignores start", async () => {
    const server = await smtp({ cert });
    const n = await notifierFor({ type: "email", smtp_host: server.host, smtp_port: server.port, from: "backups@example.com", to: "ops@example.com", use_tls: false });
    await n.notify(start);
    expect(server.mails).toHaveLength(0);
    await n.notify(failure);
    expect(server.mails).toHaveLength(1);
    expect(server.mails[0]!.secure).toBe(false);
    expect(server.mails[0]!.envelopeTo).toEqual(["ops@example.com"]);
    expect(server.mails[0]!.subject).toBe("[dbkeep] FAILED appdb-backup");
  });

  it("with use_tls refuses a server without STARTTLS before any password is sent", async () => {
    const server = await smtp({ credentials: { username: SECRETS.smtpUser, password: SECRETS.smtpPassword } });
    const n = emailNotifier({ smtp_host: server.host, smtp_port: server.port, username: SECRETS.smtpUser, password: SECRETS.smtpPassword, from: "backups@example.com", to: "ops@example.com" });
    const e = await rejection(n.notify(failure));
    expect(e.code).toBe("NOTIFY_FAILED");
    expect(e.message).toContain("[notifier:mail]");
    expect(e.hint).toContain("STARTTLS");
    expect(e.retryable).toBe(false);
    expect(server.logins).toHaveLength(0);
    expect(server.mails).toHaveLength(0);
  });

  it("reports a refused login without the password, not retryable", async () => {
    const server = await smtp({ cert, credentials: { username: SECRETS.smtpUser, password: "the-right-one" } });
    const n = emailNotifier({ smtp_host: server.host, smtp_port: server.port, username: SECRETS.smtpUser, password: SECRETS.smtpPassword, from: "backups@example.com", to: "ops@example.com" });
    const e = await rejection(n.notify(failure));
    expect(e.code).toBe("NOTIFY_FAILED");
    expect(e.retryable).toBe(false);
    expect(e.hint).toMatch(/username and password/);
    expect(server.logins.map((l) => l.accepted)).toEqual([false]);
    expect(server.mails).toHaveLength(0);
  });

  it("does not trust a self-signed certificate that nobody vouched for", async () => {
    const server = await smtp({ cert });
    const n = await notifierFor({ type: "email", smtp_host: server.host, smtp_port: server.port, from: "backups@example.com", to: "ops@example.com" });
    const e = await rejection(n.notify(failure));
    expect(e.hint).toContain("NODE_EXTRA_CA_CERTS");
    expect(server.mails).toHaveLength(0);
  });

  it("uses implicit TLS on port 465 and STARTTLS elsewhere", () => {
    expect(smtpSecurity({ smtp_port: 465, use_tls: true })).toEqual({ secure: true, requireTLS: false, ignoreTLS: false });
    expect(smtpSecurity({ smtp_port: 587, use_tls: true })).toEqual({ secure: false, requireTLS: true, ignoreTLS: false });
    expect(smtpSecurity({ smtp_port: 25, use_tls: false })).toEqual({ secure: false, requireTLS: false, ignoreTLS: true });
  });

  it("sends over implicit TLS when told to (a server that speaks TLS from the first byte)", async () => {
    const server = await smtp({ cert, implicitTls: true, credentials: { username: SECRETS.smtpUser, password: SECRETS.smtpPassword } });
    const { createTransport } = await import("nodemailer");
    // The notifier picks implicit TLS for port 465 only (checked above); this checks that mode against a real server.
    const t = createTransport({ host: server.host, port: server.port, ...smtpSecurity({ smtp_port: 465, use_tls: true }), auth: { user: SECRETS.smtpUser, pass: SECRETS.smtpPassword }, tls: { ca: cert.cert } });
    await t.sendMail({ from: "backups@example.com", to: "ops@example.com", subject: "x", text: "y" });
    t.close();
    expect(server.mails[0]!.secure).toBe(true);
  });
});

describe("webhook", () => {
  it("sends the run as JSON with method, headers, auth header and an HMAC signature over the exact body", async () => {
    http.reset();
    const n = await notifierFor({
      type: "webhook",
      url: `${http.url}/hooks/dbkeep?source=nightly`,
      method: "put",
      headers: { "X-Env": "prod" },
      auth_header_env: "DBKEEP_TEST_AUTH",
      hmac_secret: SECRETS.hmacKey,
    });
    const before = Math.floor(Date.now() / 1000);
    await n.notify(failure);
    expect(http.requests).toHaveLength(1);
    const r = http.requests[0]!;
    expect(r.method).toBe("PUT");
    expect(r.path).toBe("/hooks/dbkeep?source=nightly");
    expect(r.headers["content-type"]).toBe("application/json");
    expect(r.headers["x-env"]).toBe("prod");
    expect(r.headers.authorization).toBe(`Bearer ${SECRETS.authToken}`);
    const expected = createHmac("sha256", SECRETS.hmacKey).update(r.raw).digest("hex");
    expect(r.headers["x-dbkeep-signature"]).toBe(`sha256=${expected}`);
    const ts = Number(r.headers["x-dbkeep-timestamp"]);
    expect(ts).toBeGreaterThanOrEqual(before);
    expect(ts).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    const body = JSON.parse(r.body) as Record<string, unknown>;
    expect(body).toMatchObject({
      status: "failed",
      message: failure.message,
      startedAt: started,
      finishedAt: "2026-03-01T02:03:12.000Z",
      durationSeconds: 192,
      repository: "local:nightly",
      dbType: "postgres",
      host: "db-host",
      tags: ["appdb-backup", "appdb"],
      job: "appdb-backup",
      error: failure.error,
      hint: failure.hint,
    });
    expectNoSecret(r.body);
  });

  it("carries snapshot and bytes (and seed 003's snapshotId, dataAddedBytes) on success; start only with on_start", async () => {
    http.reset();
    const quiet = await notifierFor({ type: "webhook", url: `${http.url}/a` });
    await quiet.notify(start);
    expect(http.requests).toHaveLength(0);
    await quiet.notify(success);
    const s = JSON.parse(http.requests[0]!.body) as Record<string, unknown>;
    expect(http.requests[0]!.method).toBe("POST");
    expect(http.requests[0]!.headers["x-dbkeep-signature"]).toBeUndefined();
    expect(s).toMatchObject({ status: "success", snapshot: success.key, bytes: 1_234_567, snapshotId: success.key, dataAddedBytes: 1_234_567, backup: success.backup });

    const loud = await notifierFor({ type: "webhook", url: `${http.url}/b`, on_start: true, headers: "X-One=1, X-Two=2" });
    await loud.notify(start);
    expect(http.requests).toHaveLength(2);
    expect(http.requests[1]!.path).toBe("/b");
    expect(http.requests[1]!.headers["x-one"]).toBe("1");
    expect(http.requests[1]!.headers["x-two"]).toBe("2");
    expect(JSON.parse(http.requests[1]!.body)).toMatchObject({ kind: "start", status: "started", job: "appdb-backup" });
  });

  it("rejects on 5xx and 429 as retryable, on 404 as not retryable, and works again when the receiver does", async () => {
    http.reset();
    const n = await notifierFor({ type: "webhook", url: `${http.url}/hook`, auth_header: `Authorization: Bearer ${SECRETS.authToken}` });
    http.answerNext(1, 500, "internal error");
    const e500 = await rejection(n.notify(failure));
    expect(e500.code).toBe("NOTIFY_FAILED");
    expect(e500.retryable).toBe(true);
    expect(e500.message).toContain("HTTP 500");
    expect(e500.message).toContain("[notifier:n]");
    http.answerNext(1, 429);
    expect((await rejection(n.notify(failure))).retryable).toBe(true);
    // A receiver that echoes the request back must not carry the token into the message.
    http.answerNext(1, 404, `no hook here; you sent Bearer ${SECRETS.authToken}`);
    const e404 = await rejection(n.notify(failure));
    expect(e404.retryable).toBe(false);
    expect(e404.message).toContain("HTTP 404");
    await n.notify(failure);
    expect(http.requests).toHaveLength(4);
  });

  it("gives up after its timeout on a receiver that never answers", async () => {
    http.reset();
    http.hangNext(1);
    const n = await notifierFor({ type: "webhook", url: `${http.url}/slow`, timeout: 0.5 });
    const t0 = Date.now();
    const e = await rejection(n.notify(failure));
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(450);
    expect(took).toBeLessThan(20_000); // not a timing test: only that it gives up instead of waiting for ever
    expect(e.retryable).toBe(true);
    expect(e.message).toContain("no answer within 0.5s");
  });

  it("reports a refused connection as retryable", async () => {
    const closed = await startHttpReceiver();
    const url = closed.url;
    await closed.close();
    const n = await notifierFor({ type: "webhook", url: `${url}/x`, timeout: 2 });
    const e = await rejection(n.notify(failure));
    expect(e.retryable).toBe(true);
    expect(e.message).toMatch(/cannot connect \(ECONNREFUSED\)/);
  });
});

describe("chat and push services", () => {
  it("slack: posts {text} with one line about the run to the webhook URL from url_env; ignores start", async () => {
    http.reset();
    const n = await notifierFor({ type: "slack", url_env: "DBKEEP_TEST_SLACK_URL" });
    await n.notify(start);
    await n.notify(failure);
    expect(http.requests).toHaveLength(1);
    const r = http.requests[0]!;
    expect(r.path).toBe(`/services/T0001/B0001/${SECRETS.slackToken}`);
    expect(r.method).toBe("POST");
    const text = (JSON.parse(r.body) as { text: string }).text;
    expect(text).toMatch(/^dbkeep: appdb-backup FAILED on db-host: \[engine:postgres\] pg_dump failed with exit code 1/);
    expect(text).toContain("relation &lt;audit.log&gt; is locked");
    expect(text).toContain("(hint: check password_env APPDB_PASSWORD)");
    expectNoSecret(r.body);
  });

  it("slack: a failure answer names the host only, never the URL's token", async () => {
    http.reset();
    http.answerNext(1, 403, "invalid_token");
    const n = await notifierFor({ type: "slack", url_env: "DBKEEP_TEST_SLACK_URL" });
    const e = await rejection(n.notify(failure));
    expect(e.message).toContain("invalid_token");
    expect(e.message).toContain(http.url);
    expect(e.message).not.toContain("/services/");
    expect(e.retryable).toBe(false);
  });

  it("discord: posts {content} without allowing mentions", async () => {
    http.reset();
    const n = await notifierFor({ type: "discord", url: `${http.url}/api/webhooks/42/${SECRETS.discordToken}` });
    await n.notify(start);
    await n.notify(success);
    expect(http.requests).toHaveLength(1);
    expect(http.requests[0]!.path).toBe(`/api/webhooks/42/${SECRETS.discordToken}`);
    const body = JSON.parse(http.requests[0]!.body) as { content: string; allowed_mentions: unknown };
    expect(body.content).toBe("dbkeep: appdb-backup OK on db-host: appdb-20260301-020000 (1.2 MiB in 3m12s) to local:nightly");
    expect(body.allowed_mentions).toEqual({ parse: [] });
  });

  it("teams: posts a MessageCard by default and an Adaptive Card with format: adaptive", async () => {
    http.reset();
    const url = `${http.url}/webhookb2/${SECRETS.teamsToken}`;
    await (await notifierFor({ type: "teams", url })).notify(failure);
    await (await notifierFor({ type: "teams", url, format: "adaptive" })).notify(failure);
    expect(http.requests.map((r) => r.path)).toEqual([`/webhookb2/${SECRETS.teamsToken}`, `/webhookb2/${SECRETS.teamsToken}`]);
    const card = JSON.parse(http.requests[0]!.body) as { "@type": string; title: string; text: string; sections: { facts: { name: string; value: string }[] }[] };
    expect(card["@type"]).toBe("MessageCard");
    expect(card.title).toBe("dbkeep: appdb-backup FAILED");
    expect(card.text).toContain("pg_dump failed");
    expect(card.sections[0]!.facts).toContainEqual({ name: "Hint", value: "check password_env APPDB_PASSWORD" });
    const adaptive = JSON.parse(http.requests[1]!.body) as { type: string; attachments: { contentType: string; content: { body: { text?: string }[] } }[] };
    expect(adaptive.type).toBe("message");
    expect(adaptive.attachments[0]!.contentType).toBe("application/vnd.microsoft.card.adaptive");
    expect(adaptive.attachments[0]!.content.body.map((b) => b.text).join("\n")).toContain("pg_dump failed");
  });

  it("telegram: sends to /bot<token>/sendMessage with chat_id and text; the token stays out of errors", async () => {
    http.reset();
    const tokenFile = join(dir, "bot-token");
    writeFileSync(tokenFile, SECRETS.botToken, { mode: 0o600 });
    const n = await notifierFor({ type: "telegram", bot_token_file: tokenFile, chat_id: -1001234, api_url: `${http.url}/` });
    await n.notify(start);
    await n.notify(failure);
    expect(http.requests).toHaveLength(1);
    expect(http.requests[0]!.path).toBe(`/bot${SECRETS.botToken}/sendMessage`);
    const body = JSON.parse(http.requests[0]!.body) as { chat_id: number; text: string };
    expect(body.chat_id).toBe(-1001234);
    expect(body.text).toContain("dbkeep: appdb-backup FAILED on db-host");
    expect(body.text).toContain("relation <audit.log> is locked");
    http.answerNext(1, 400, JSON.stringify({ ok: false, error_code: 400, description: "Bad Request: chat not found" }));
    const e = await rejection(n.notify(failure));
    expect(e.message).toContain("chat not found");
    expect(e.retryable).toBe(false);
  });

  it("ntfy: posts the line to the topic with Title, Priority, Tags and the access token", async () => {
    http.reset();
    const n = await notifierFor({ type: "ntfy", url: `${http.url}/dbkeep-alerts`, token: SECRETS.ntfyToken });
    await n.notify(start);
    await n.notify(failure);
    await n.notify({ ...success, job: "βάση-backup" });
    expect(http.requests).toHaveLength(2);
    const [f, s] = http.requests as [(typeof http.requests)[0], (typeof http.requests)[0]];
    expect(f.path).toBe("/dbkeep-alerts");
    expect(f.headers.authorization).toBe(`Bearer ${SECRETS.ntfyToken}`);
    expect(f.headers.title).toBe("dbkeep: appdb-backup FAILED");
    expect(f.headers.priority).toBe("4");
    expect(f.headers.tags).toBe("rotating_light");
    expect(f.body).toContain("dbkeep: appdb-backup FAILED on db-host");
    expect(f.body).toContain("(hint: check password_env APPDB_PASSWORD)");
    expect(s.headers.priority).toBe("3");
    expect(s.headers.tags).toBe("white_check_mark");
    // Non-Latin-1 titles go as an RFC 2047 encoded word, which ntfy decodes.
    const m = /^=\?UTF-8\?B\?(.+)\?=$/.exec(String(s.headers.title));
    expect(Buffer.from(m![1]!, "base64").toString("utf8")).toBe("dbkeep: βάση-backup OK");
    expectNoSecret(f.body);
  });

  it("gotify: posts title, message and priority to /message with the app token in a header", async () => {
    http.reset();
    const n = await notifierFor({ type: "gotify", url: `${http.url}/gotify/`, token: SECRETS.gotifyToken });
    await n.notify(start);
    await n.notify(failure);
    expect(http.requests).toHaveLength(1);
    const r = http.requests[0]!;
    expect(r.path).toBe("/gotify/message");
    expect(r.headers["x-gotify-key"]).toBe(SECRETS.gotifyToken);
    expect(JSON.parse(r.body)).toMatchObject({ title: "dbkeep: appdb-backup FAILED", priority: 8 });
    expect((JSON.parse(r.body) as { message: string }).message).toContain("pg_dump failed");
    expectNoSecret(r.body);
  });
});

describe("services that echo the request back", () => {
  // A proxy or a service answering an error may repeat the path and query it was sent, whole or in parts. The
  // credential in them (the webhook's path, Telegram's /bot<token>/, a ?token=, an ntfy topic) must not get into the
  // message, whether the URL came as a literal, from url_env or from a file.
  const cases: [string, () => Record<string, unknown>, () => string[]][] = [
    ["slack (url_env)", () => ({ type: "slack", url_env: "DBKEEP_TEST_SLACK_URL" }), () => [`/services/T0001/B0001/${SECRETS.slackToken}`, SECRETS.slackToken]],
    ["discord", () => ({ type: "discord", url: `${http.url}/api/webhooks/42/${SECRETS.discordToken}` }), () => [`/api/webhooks/42/${SECRETS.discordToken}`, SECRETS.discordToken]],
    ["teams", () => ({ type: "teams", url: `${http.url}/webhookb2/${SECRETS.teamsToken}` }), () => [`/webhookb2/${SECRETS.teamsToken}`, SECRETS.teamsToken]],
    ["telegram", () => ({ type: "telegram", bot_token: SECRETS.botToken, chat_id: 1, api_url: http.url }), () => [`/bot${SECRETS.botToken}/sendMessage`, `bot${encodeURIComponent(SECRETS.botToken)}`]],
    ["ntfy", () => ({ type: "ntfy", url: `${http.url}/${SECRETS.ntfyTopic}` }), () => [`/${SECRETS.ntfyTopic}`, `topic ${SECRETS.ntfyTopic} is reserved`]],
    ["healthchecks", () => ({ type: "healthchecks", url: `${http.url}/ping/${SECRETS.pingUuid}` }), () => [`/ping/${SECRETS.pingUuid}/fail`, `check ${SECRETS.pingUuid} not found`]],
    ["webhook with ?token=", () => ({ type: "webhook", url: `${http.url}/hook?token=${SECRETS.webhookQueryToken}&x=1` }), () => [`/hook?token=${SECRETS.webhookQueryToken}&x=1`, `token=${SECRETS.webhookQueryToken}`, `"${SECRETS.webhookQueryToken}" has expired`]],
  ];
  for (const [name, options, echoes] of cases) {
    it(`${name}: the echoed path and query stay out of the message`, async () => {
      http.reset();
      const n = await notifierFor(options());
      for (const echo of echoes()) {
        http.answerNext(1, 404, `Cannot POST ${echo}; nothing here`);
        const e = await rejection(n.notify(failure));
        expect(e.message).toMatch(/answered HTTP 404: Cannot POST .*\*\*\*.*; nothing here$/);
        expect(e.message).toContain(http.url);
      }
    });
  }
});

describe("healthchecks", () => {
  it("pings /start, the URL itself on success, /fail with the error as body, /log for a test", async () => {
    http.reset();
    const n = await notifierFor({ type: "healthchecks", url: `${http.url}/ping/${SECRETS.pingUuid}/` });
    await n.notify(start);
    await n.notify(success);
    await n.notify(failure);
    await n.notify({ ...start, kind: "test", status: "test", message: "dbkeep test notification" });
    expect(http.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      `POST /ping/${SECRETS.pingUuid}/start`,
      `POST /ping/${SECRETS.pingUuid}`,
      `POST /ping/${SECRETS.pingUuid}/fail`,
      `POST /ping/${SECRETS.pingUuid}/log`,
    ]);
    const fail = http.requests[2]!.body;
    expect(fail).toContain("pg_dump failed with exit code 1");
    expect(fail).toContain("check password_env APPDB_PASSWORD");
    expect(http.requests[1]!.body).toContain("appdb-20260301-020000");
    for (const r of http.requests) expectNoSecret(r.body);
  });

  it("a 5xx from the ping endpoint is retryable, and the ping URL's UUID stays out of the message", async () => {
    http.reset();
    http.answerNext(1, 503, "maintenance");
    const n = await notifierFor({ type: "healthchecks", url: `${http.url}/ping/${SECRETS.pingUuid}` });
    const e = await rejection(n.notify(failure));
    expect(e.retryable).toBe(true);
    expect(e.message).toContain("HTTP 503");
  });
});

describe("config and secrets", () => {
  it("a secret whose variable is unset fails that notification with the variable's name, not the config load", async () => {
    const n = await notifierFor({ type: "slack", url_env: "DBKEEP_TEST_UNSET_VARIABLE" });
    const e = await rejection(n.notify(failure));
    expect(e.code).toBe("NOTIFY_FAILED");
    expect(e.message).toContain("DBKEEP_TEST_UNSET_VARIABLE");
  });

  it("rejects a config without the secret a notifier needs, or with unknown keys, with the dotted path", () => {
    expect(() => validateConfig({ notifications: { chat: { type: "slack" } } })).toThrow(expect.objectContaining({ details: expect.stringContaining("notifications.chat.url: missing url (give url, url_env or url_file)") }));
    expect(() => validateConfig({ notifications: { hook: { type: "webhook", url: "http://x", methd: "PUT" } } })).toThrow(expect.objectContaining({ details: expect.stringContaining('notifications.hook: unknown key "methd"') }));
    expect(() => validateConfig({ notifications: { t: { type: "telegram", bot_token: "a", bot_token_env: "B", chat_id: 1 } } })).toThrow(expect.objectContaining({ details: expect.stringContaining("give only one of bot_token, bot_token_env") }));
  });

  it("every registered type creates a notifier of its type", async () => {
    const minimal: Record<string, Record<string, unknown>> = {
      email: { smtp_host: "localhost", from: "a@example.com", to: "b@example.com" },
      webhook: { url: "http://127.0.0.1:9" },
      slack: { url: "http://127.0.0.1:9" },
      discord: { url: "http://127.0.0.1:9" },
      teams: { url: "http://127.0.0.1:9" },
      telegram: { bot_token: "x", chat_id: 1 },
      ntfy: { url: "http://127.0.0.1:9/t" },
      gotify: { url: "http://127.0.0.1:9", token: "x" },
      healthchecks: { url: "http://127.0.0.1:9/ping/x" },
    };
    expect(Object.keys(NOTIFIERS).sort()).toEqual(Object.keys(minimal).sort());
    for (const [type, o] of Object.entries(minimal)) {
      const n = await notifierFor({ type, ...o }, `my-${type}`);
      expect([n.name, n.type]).toEqual([`my-${type}`, type]);
    }
  });

  it("no secret reached any HTTP receiver's body", () => {
    expect(http.all.length).toBeGreaterThan(20);
    for (const r of http.all) expectNoSecret(r.body);
  });
});
