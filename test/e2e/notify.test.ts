import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeepAsync, tempDir } from "../helpers/env.js";
import { makeCert, removeCert, startHttpReceiver, startSmtpReceiver, type HttpReceiver, type SmtpReceiver, type TestCert } from "../helpers/receivers.js";

const SMTP_USER = "mailer-e2e";
const SMTP_PASS = "e2e-smtp-pw-31f";
const BEARER = "e2e-bearer-77a";
const HMAC_KEY = "e2e-hmac-key-c4";
const SLACK_TOKEN = "e2e-slack-token-9d";
const SECRETS = [SMTP_PASS, BEARER, HMAC_KEY, SLACK_TOKEN];

const dir = tempDir("dbkeep-notify-e2e-");
let smtp: SmtpReceiver;
let http: HttpReceiver;
let cert: TestCert;
let config: string;
let env: Record<string, string>;

beforeAll(async () => {
  cert = makeCert();
  smtp = await startSmtpReceiver({ cert, credentials: { username: SMTP_USER, password: SMTP_PASS } });
  http = await startHttpReceiver();
  writeFileSync(join(dir, "hmac"), `${HMAC_KEY}\n`, { mode: 0o600 });
  config = join(dir, "dbkeep.yaml");
  writeFileSync(
    config,
    `datasources:
  appdb:
    engine: postgres
    host: db.internal
    user: postgres
    password_env: DBKEEP_E2E_UNUSED_PG_PASSWORD
    database: appdb
  app:
    engine: sqlite
    path: ${join(dir, "app.db")}
stores:
  nightly:
    type: local
    path: ${join(dir, "backups")}
notifications:
  email_ops:
    type: email
    smtp_host: 127.0.0.1
    smtp_port: ${smtp.port}
    username_env: DBKEEP_E2E_SMTP_USER
    password_env: DBKEEP_E2E_SMTP_PASS
    from: backups@example.com
    to:
      - ops@example.com
      - dev-team@example.com
    use_tls: true
  hook:
    type: webhook
    url: ${http.url}/hooks/dbkeep
    auth_header_env: DBKEEP_E2E_AUTH
    hmac_secret_file: ${join(dir, "hmac")}
  chat:
    type: slack
    url_env: DBKEEP_E2E_SLACK_URL
  unset:
    type: gotify
    url: ${http.url}
    token_env: DBKEEP_E2E_NOT_SET
jobs:
  appdb-backup:
    datasource: appdb
    store: nightly
    notify:
      - notifier: email_ops
        on: failure
  app-backup:
    datasource: app
    store: nightly
`,
    { mode: 0o600 },
  );
  env = {
    DBKEEP_E2E_SMTP_USER: SMTP_USER,
    DBKEEP_E2E_SMTP_PASS: SMTP_PASS,
    DBKEEP_E2E_AUTH: `Authorization: Bearer ${BEARER}`,
    DBKEEP_E2E_SLACK_URL: `${http.url}/services/T1/B1/${SLACK_TOKEN}`,
    // How a user makes dbkeep trust a private CA: the test certificate is its own.
    NODE_EXTRA_CA_CERTS: cert.certFile,
  };
});

afterAll(async () => {
  await smtp.close();
  await http.close();
  removeCert(cert);
});

function expectNoSecret(text: string): void {
  for (const s of SECRETS) expect(text).not.toContain(s);
}

describe("dbkeep notify test", () => {
  it("sends a test mail over STARTTLS with the credentials from *_env, filled from the job", async () => {
    const r = await dbkeepAsync(["-c", config, "notify", "test", "email_ops", "--job", "appdb-backup"], env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("sent a test notification to email_ops (email)\n");
    expect(smtp.mails).toHaveLength(1);
    const m = smtp.mails[0]!;
    expect(m.secure).toBe(true);
    expect(m.auth?.username).toBe(SMTP_USER);
    expect(smtp.logins.map((l) => [l.username, l.password])).toEqual([[SMTP_USER, SMTP_PASS]]);
    expect(m.envelopeTo).toEqual(["ops@example.com", "dev-team@example.com"]);
    expect(m.subject).toBe("[dbkeep] TEST appdb-backup");
    for (const part of [m.text, m.html]) {
      expect(part).toContain("dbkeep test notification");
      expect(part).toContain("db.internal");
      expect(part).toContain("local:nightly");
      expect(part).toContain("appdb (postgres)");
    }
    expectNoSecret(m.raw);
  });

  it("sends a signed test event to a webhook, with placeholders without --job and the job's fields with it", async () => {
    http.reset();
    const plain = await dbkeepAsync(["-c", config, "notify", "test", "hook"], env);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toBe("sent a test notification to hook (webhook)\n");
    const withJob = await dbkeepAsync(["-c", config, "notify", "test", "hook", "--job", "app-backup"], env);
    expect(withJob.code).toBe(0);
    expect(http.requests).toHaveLength(2);
    for (const r of http.requests) {
      expect(r.path).toBe("/hooks/dbkeep");
      expect(r.headers.authorization).toBe(`Bearer ${BEARER}`);
      expect(r.headers["x-dbkeep-signature"]).toBe(`sha256=${createHmac("sha256", HMAC_KEY).update(r.raw).digest("hex")}`);
      expectNoSecret(r.body);
    }
    const [a, b] = http.requests.map((r) => JSON.parse(r.body) as Record<string, unknown>);
    expect(a).toMatchObject({ kind: "test", status: "test", job: "test", message: "dbkeep test notification" });
    expect(Date.parse(String(a!.startedAt))).toBeGreaterThan(Date.now() - 60_000);
    expect(b).toMatchObject({ kind: "test", status: "test", job: "app-backup", store: "local:nightly", repository: "local:nightly", dbType: "sqlite", database: "app", tags: ["app-backup", "app"] });
  });

  it("exits 1 with the receiver's answer when sending fails, the webhook's token kept out", async () => {
    http.reset();
    http.answerNext(1, 500, "upstream down");
    const r = await dbkeepAsync(["-c", config, "notify", "test", "chat"], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`error: [notifier:chat] POST ${http.url} answered HTTP 500: upstream down`);
    expect(r.stderr).toContain("hint: ");
    expect(http.requests[0]!.path).toBe(`/services/T1/B1/${SLACK_TOKEN}`);
    expectNoSecret(r.stderr);
  });

  it("exits 1 naming the variable when a secret's variable is unset", async () => {
    const r = await dbkeepAsync(["-c", config, "notify", "test", "unset"], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("DBKEEP_E2E_NOT_SET");
  });

  it("exits 2 for a notifier the config does not define, listing those it does", async () => {
    const r = await dbkeepAsync(["-c", config, "notify", "test", "pager"], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown notifier "pager"');
    expect(r.stderr).toContain("hint: notifiers: email_ops, hook, chat, unset");
    const job = await dbkeepAsync(["-c", config, "notify", "test", "hook", "--job", "nope"], env);
    expect(job.code).toBe(2);
    expect(job.stderr).toContain('unknown job "nope"');
  });

  it("config check no longer calls notifications unsent, and --help has examples", async () => {
    const check = await dbkeepAsync(["-c", config, "config", "check"], env);
    expect(check.code).toBe(0);
    expect(check.stderr).not.toContain("not sent");
    expect(check.stdout).toContain("url_env: DBKEEP_E2E_SLACK_URL (set)");
    const help = await dbkeepAsync(["notify", "test", "--help"], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Examples:\n  dbkeep notify test email_ops");
  });
});
