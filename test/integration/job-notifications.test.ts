import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { makeCert, removeCert, startHttpReceiver, startSmtpReceiver, type HttpReceiver, type SmtpReceiver, type TestCert } from "../helpers/receivers.js";

const SMTP_PASS = "jobs-smtp-pw-5521";
const BEARER = "jobs-bearer-8812";

describe("notifications from job runs", () => {
  let smtp: SmtpReceiver;
  let http: HttpReceiver;
  let cert: TestCert;
  let cfg: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    cert = makeCert();
    smtp = await startSmtpReceiver({ cert, credentials: { username: "mailer", password: SMTP_PASS } });
    http = await startHttpReceiver();
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  app: { engine: sqlite, path: ${join(dir, "app.db")} }
  gone: { engine: sqlite, path: ${join(dir, "gone.db")} }
stores:
  local: { type: local, path: ${join(dir, "backups")} }
notifications:
  mail: { type: email, smtp_host: 127.0.0.1, smtp_port: ${smtp.port}, username: mailer, password_env: JOBS_SMTP_PASS, from: dbkeep@example.com, to: "ops@example.com, oncall@example.com", use_tls: true }
  hook: { type: webhook, url: "${http.url}/hook", auth_header_env: JOBS_BEARER }
  down: { type: webhook, url: "http://127.0.0.1:9/never", timeout: 2 }
  ping: { type: healthchecks, url: "${http.url}/ping/abc" }
jobs:
  first:
    datasource: app
    store: local
    prefix: first
    notify: [{ notifier: mail, on: failure }, { notifier: hook, on: always }, { notifier: down, on: always }, { notifier: ping, on: always }]
  second:
    datasource: gone
    store: local
    notify: [{ notifier: mail, on: failure }, { notifier: hook, on: failure }, { notifier: ping, on: always }]
  third:
    datasource: app
    store: local
    prefix: third
    notify: [{ notifier: mail, on: success }, { notifier: hook, on: failure }]
`,
      { mode: 0o600 },
    );
    env = { JOBS_SMTP_PASS: SMTP_PASS, JOBS_BEARER: `Authorization: Bearer ${BEARER}`, NODE_EXTRA_CA_CERTS: cert.certFile, DBKEEP_STATE_DIR: join(dir, "state") };
  });

  afterAll(async () => {
    await smtp?.close();
    await http?.close();
    if (cert) removeCert(cert);
  });

  it("three jobs, --parallel 2, one failing: exit 1, summary of all three, the right mails and webhooks, a dead notifier changes nothing", async () => {
    const r = await dbkeepAsync(["-c", cfg, "backup", "--all", "--parallel", "2"], env);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("2 succeeded, 1 failed");
    expect(r.stdout).toMatch(/first\s+ok/);
    expect(r.stdout).toMatch(/second\s+FAILED/);
    expect(r.stdout).toMatch(/third\s+ok/);

    // Mail: the failure of `second` (on: failure) and the success of `third` (on: success); nothing for `first`.
    const subjects = smtp.mails.map((m) => m.subject).sort();
    expect(subjects).toHaveLength(2);
    expect(subjects[0]).toMatch(/FAIL.*second/);
    expect(subjects[1]).toMatch(/OK.*third/);
    const failure = smtp.mails.find((m) => m.subject.includes("second"))!;
    expect(failure.envelopeTo.sort()).toEqual(["oncall@example.com", "ops@example.com"]);
    expect(failure.text).toContain("gone.db not found");
    expect(failure.secure).toBe(true);

    // Webhook: `first` (always) and `second` (failure), not `third` (failure only, and it succeeded).
    const hooks = http.all.filter((q) => q.path === "/hook").map((q) => JSON.parse(q.body) as Record<string, unknown>);
    expect(hooks.map((h) => `${h.job}:${h.status}`).sort()).toEqual(["first:success", "second:failed"]);
    const failed = hooks.find((h) => h.job === "second")!;
    expect(failed).toMatchObject({ status: "failed", dbType: "sqlite", database: "gone", repository: "local:local" });
    expect(String(failed.error)).toContain("gone.db not found");
    const ok = hooks.find((h) => h.job === "first")!;
    expect(ok).toMatchObject({ status: "success", attempts: 1 });
    expect(typeof ok.bytes).toBe("number");
    expect(String(ok.snapshot)).toMatch(/^first\/app\/app-\d{8}-\d{6}\.db\.gz$/);
    expect(Date.parse(String(ok.finishedAt))).toBeGreaterThanOrEqual(Date.parse(String(ok.startedAt)));
    expect(http.all.find((q) => q.path === "/hook")?.headers.authorization).toBe(`Bearer ${BEARER}`);

    // Healthchecks: start and success for `first`, start and fail for `second`.
    const pings = http.all.filter((q) => q.path.startsWith("/ping/abc")).map((q) => q.path).sort();
    expect(pings).toEqual(["/ping/abc", "/ping/abc/fail", "/ping/abc/start", "/ping/abc/start"]);

    // The dead notifier is logged, and `first` still succeeded.
    expect(r.stderr).toMatch(/notification failed; the backup's result stands/);

    // No secret anywhere a receiver or a log could show it.
    const everything = [r.stdout, r.stderr, ...smtp.mails.map((m) => m.raw), ...http.all.map((q) => q.body)].join("\n");
    expect(everything).not.toContain(SMTP_PASS);
    expect(everything).not.toContain(BEARER);
  });
});
