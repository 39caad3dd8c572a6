import { copyFileSync, existsSync, readFileSync, statSync, writeFileSync, chmodSync, openSync, readSync, writeSync, closeSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";
import { sqliteContent } from "../helpers/sqlite.js";

function sqliteConfig(dir: string, extra = ""): string {
  const file = join(dir, "dbkeep.yaml");
  writeFileSync(
    file,
    `datasources:
  app:
    engine: sqlite
    path: ${join(dir, "app.db")}
    compression: zstd
  copy:
    engine: sqlite
    path: ${join(dir, "copy.db")}
stores:
  local:
    type: local
    path: ${join(dir, "backups")}
jobs:
  app-backup:
    datasource: app
    store: local
    prefix: prod
    verify: true
    retention:
      keep_last: 2
  app-gzip:
    datasource: app
    store: local
    prefix: gz
    compression: gzip
${extra}`,
    { mode: 0o600 },
  );
  return file;
}

describe("CLI: the README's first command", () => {
  it("backs up the SQLite sample into ./backups, lists it, and restores it identical", () => {
    const cwd = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(cwd, "app.db"));
    const b = dbkeep(["backup", "sqlite:app.db", "--to", "./backups"], { cwd });
    expect(b.stderr).not.toContain("error:");
    expect(b.code).toBe(0);
    expect(b.stdout).toMatch(/^app-\d{8}-\d{6}\s/);
    const l = dbkeep(["list", "./backups"], { cwd });
    expect(l.stdout).toMatch(/app-\d{8}-\d{6}\s+.*file\/gzip\s+app\/app-\d{8}-\d{6}\.db\.gz/);
    const r = dbkeep(["restore", "./backups", "latest", "--to", "sqlite:./restored.db"], { cwd });
    expect(r.code).toBe(0);
    expect(sqliteContent(join(cwd, "restored.db"))).toEqual(sqliteContent(join(cwd, "app.db")));
    expect(sqliteContent(join(cwd, "restored.db")).orders).toContain("note 1");
  });
});

describe("CLI: config mode", () => {
  it("runs several jobs with a summary, lists with --json, prunes with a preview, restores into another datasource", () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = sqliteConfig(dir);
    const all = dbkeep(["-c", cfg, "backup", "--all"]);
    expect(all.code).toBe(0);
    expect(all.stdout).toMatch(/JOB\s+RESULT\s+DURATION\s+SIZE\s+STORE\s+ATTEMPTS/);
    expect(all.stdout).toContain("2 succeeded, 0 failed");
    for (let i = 0; i < 2; i++) {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1100);
      expect(dbkeep(["backup", "app-backup"], { env: { DBKEEP_CONFIG: cfg } }).code).toBe(0);
    }
    const list = JSON.parse(dbkeep(["-c", cfg, "list", "app-backup", "--json"]).stdout) as { backups: { id: string; key: string; compression: string; job: string }[] };
    expect(list.backups).toHaveLength(3);
    expect(list.backups[0]).toMatchObject({ job: "app-backup", compression: "zstd" });
    expect(list.backups[0]!.key).toMatch(/^prod\/app\/app-\d{8}-\d{6}\.db\.zst$/);

    const preview = dbkeep(["-c", cfg, "prune", "app-backup", "--dry-run"]);
    expect(preview.code).toBe(0);
    expect(preview.stdout).toMatch(/KEEP\s+\S+.*last 1/);
    expect(preview.stdout).toMatch(/DELETE\s+\S+/);
    expect(preview.stdout).toContain("2 kept, 1 to delete (dry run)");
    expect(JSON.parse(dbkeep(["-c", cfg, "list", "app-backup", "--json"]).stdout).backups).toHaveLength(3);
    const pruned = dbkeep(["-c", cfg, "prune", "app-backup", "--json"]);
    const doc = JSON.parse(pruned.stdout) as { deleted: string[] };
    expect(doc.deleted).toHaveLength(3); // manifest, data, sidecar of one backup
    expect(doc.deleted.every((k) => existsSync(join(dir, "backups", k)) === false)).toBe(true);
    expect(JSON.parse(dbkeep(["-c", cfg, "list", "app-backup", "--json"]).stdout).backups).toHaveLength(2);

    const r = dbkeep(["-c", cfg, "restore", "app-backup", "--to", "copy"]);
    expect(r.code).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
    // The target exists now: without a TTY the restore refuses, with --auto-confirm it replaces.
    const again = dbkeep(["-c", cfg, "restore", "app-backup", "--to", "copy"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("restore refused");
    expect(dbkeep(["-c", cfg, "restore", "app-backup", "--to", "copy", "--auto-confirm"]).code).toBe(0);
  });

  it("a flipped byte makes restore refuse and leaves the SQLite target untouched", () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = sqliteConfig(dir);
    const b = JSON.parse(dbkeep(["-c", cfg, "backup", "app-gzip", "--json"]).stdout) as { jobs: { key: string }[] };
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "copy.db"));
    const db = new Database(join(dir, "copy.db"));
    db.exec("DELETE FROM orders WHERE id > 10");
    db.close();
    const before = readFileSync(join(dir, "copy.db"));
    const file = join(dir, "backups", b.jobs[0]!.key);
    const fd = openSync(file, "r+");
    const byte = Buffer.alloc(1);
    const at = Math.floor(statSync(file).size / 3);
    readSync(fd, byte, 0, 1, at);
    byte[0] = byte[0]! ^ 0x10;
    writeSync(fd, byte, 0, 1, at);
    closeSync(fd);
    const r = dbkeep(["-c", cfg, "restore", "app-gzip", "--to", "copy", "--auto-confirm"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SHA-256 of gz\/app\/app-\d{8}-\d{6}\.db\.gz does not match its manifest/);
    expect(readFileSync(join(dir, "copy.db")).equals(before)).toBe(true);
  });
});

describe("CLI: sidecar mode (configuration from the environment alone)", () => {
  it("dbkeep backup without a job name runs the one job, as a CronJob's command; a config file still needs names", () => {
    const cwd = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(cwd, "app.db"));
    const env = { DBKEEP_SOURCE: `sqlite:${join(cwd, "app.db")}`, DBKEEP_STORE: join(cwd, "backups"), DBKEEP_JOB: "app-sidecar" };
    const r = dbkeep(["backup"], { cwd, env });
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^app-\d{8}-\d{6}\s.*local:store\s+app\/app-\d{8}-\d{6}\.db\.gz\n$/);
    const listed = JSON.parse(dbkeep(["list", "./backups", "--json"], { cwd }).stdout) as { backups: { job: string }[] };
    expect(listed.backups.map((b) => b.job)).toEqual(["app-sidecar"]);
    const restored = dbkeep(["restore", "./backups", "latest", "--to", "sqlite:./restored.db"], { cwd });
    expect(restored.code, restored.stderr).toBe(0);
    expect(sqliteContent(join(cwd, "restored.db"))).toEqual(sqliteContent(join(cwd, "app.db")));
    // With a config file, naming the jobs (or --all) stays required.
    const cfg = sqliteConfig(cwd);
    const named = dbkeep(["-c", cfg, "backup"], { cwd, env });
    expect(named.stderr).toContain("error: name the jobs to run, or --all");
    expect(named.code).toBe(2);
  });
});

describe("CLI: errors and help", () => {
  it("every command has --help with examples", () => {
    for (const cmd of [[], ["backup"], ["list"], ["restore"], ["prune"], ["config", "check"]]) {
      const r = dbkeep([...cmd, "--help"]);
      expect(r.code, cmd.join(" ")).toBe(0);
      expect(r.stdout, cmd.join(" ")).toContain("Examples:");
    }
    expect(dbkeep(["--version"]).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("usage errors exit 2 with a one-line error and a hint", () => {
    const noConfig = dbkeep(["backup", "appdb"], { cwd: tempDir() });
    expect(noConfig.code).toBe(2);
    expect(noConfig.stderr).toContain("error: no config file");
    expect(noConfig.stderr).toContain("hint: ");
    expect(dbkeep(["backup", "--bogus"]).code).toBe(2);
    expect(dbkeep(["backup", "sqlite:x.db"]).stderr).toContain("one-off backups need --to STORE");
    expect(dbkeep(["backup", "sqlite:x.db"]).code).toBe(2);
    const dir = tempDir();
    const cfg = sqliteConfig(dir);
    const unknown = dbkeep(["-c", cfg, "backup", "nope"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown job "nope"');
    expect(unknown.stderr).toContain("hint: jobs: app-backup, app-gzip");
  });

  it("an invalid config lists every problem with its dotted path, exit 2, no stack trace", () => {
    const dir = tempDir();
    const file = join(dir, "bad.yaml");
    writeFileSync(file, "datasources:\n  appdb: { engine: postgres, database: app }\nstores:\n  local: { type: local, path: /tmp }\n  r2: { type: local, path: /tmp }\njobs:\n  appdb-backup: { datasource: appdb, store: r3 }\n  other: { datasource: appdb, store: local, verify: maybe }\n");
    const r = dbkeep(["-c", file, "config", "check"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('jobs.appdb-backup.store: unknown store "r3" (defined: local, r2)');
    expect(r.stderr).toContain("jobs.other.verify:");
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("config check prints the config with secrets redacted and says which variables are set", () => {
    const dir = tempDir();
    const file = join(dir, "dbkeep.yaml");
    writeFileSync(file, "datasources:\n  a: { engine: postgres, database: app, password: hunter2-literal }\n  b: { engine: postgres, database: app, password_env: DBKEEP_E2E_PW }\nstores:\n  s: { type: local, path: /tmp/x }\njobs:\n  j: { datasource: a, store: s }\n");
    chmodSync(file, 0o644);
    const r = dbkeep(["-c", file, "config", "check"], { env: { DBKEEP_E2E_PW: "from-env-secret" } });
    expect(r.code).toBe(0);
    expect(r.stdout + r.stderr).not.toContain("hunter2-literal");
    expect(r.stdout + r.stderr).not.toContain("from-env-secret");
    expect(r.stdout).toContain('password: "***"');
    expect(r.stdout).toContain("DBKEEP_E2E_PW (set)");
    expect(r.stderr).toContain("readable by others (mode 644) and holds a literal secret at datasources.a.password");
  });

  it("config check masks credentials in a restic or rclone store's env: map, and warns when others can read them", () => {
    const dir = tempDir();
    const file = join(dir, "dbkeep.yaml");
    writeFileSync(file, [
      "datasources:\n  a: { engine: sqlite, path: ./app.db }",
      "stores:",
      "  r: { type: restic, repository: /tmp/repo, password_env: DBKEEP_E2E_RESTIC, env: { AWS_ACCESS_KEY_ID: AKIAEXAMPLEID, AWS_SECRET_ACCESS_KEY: aws-secret-literal-1 } }",
      "  c: { type: rclone, remote: 'x:bucket', env: { RCLONE_CONFIG_X_TYPE: s3, RCLONE_CONFIG_X_SECRET_ACCESS_KEY: rclone-secret-literal-2 } }",
      "jobs:\n  j: { datasource: a, stores: [r, c] }\n",
    ].join("\n"));
    chmodSync(file, 0o644);
    const r = dbkeep(["-c", file, "config", "check"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).not.toContain("aws-secret-literal-1");
    expect(r.stdout + r.stderr).not.toContain("rclone-secret-literal-2");
    expect(r.stdout).toContain("AWS_ACCESS_KEY_ID: AKIAEXAMPLEID");
    expect(r.stdout).toContain("RCLONE_CONFIG_X_TYPE: s3");
    expect(r.stderr).toContain("holds a literal secret at stores.r.env.AWS_SECRET_ACCESS_KEY");
    expect(r.stderr).toContain("holds a literal secret at stores.c.env.RCLONE_CONFIG_X_SECRET_ACCESS_KEY");
    expect(r.stderr).not.toContain("stores.r.env.AWS_ACCESS_KEY_ID");
  });

  it("config check shows a notifier's URL as scheme and host only: its path and query hold the credential", () => {
    const dir = tempDir();
    const file = join(dir, "dbkeep.yaml");
    writeFileSync(file, [
      "datasources:\n  a: { engine: sqlite, path: ./app.db }",
      "stores:\n  s: { type: s3, bucket: b, endpoint: 'https://s3.example.com/base' }",
      "notifications:",
      "  hook: { type: webhook, url: 'https://hooks.example.com/dbkeep/in?token=wh-token-in-query-1', headers: { X-Api-Key: header-key-2, X-Team: ops } }",
      "  chat: { type: slack, url: 'https://hooks.slack.com/services/T0/B0/slack-path-token-3' }",
      "  tg: { type: telegram, bot_token: '123:tg-token-4', chat_id: 1, api_url: 'https://tg.example.com/custom/bot-api' }",
      "  push: { type: ntfy, url_env: DBKEEP_E2E_NTFY }",
      "jobs:\n  j: { datasource: a, store: s }\n",
    ].join("\n"), { mode: 0o600 });
    const r = dbkeep(["-c", file, "config", "check", "--json"], { env: { DBKEEP_E2E_NTFY: "https://ntfy.example.com/topic-secret-5" } });
    expect(r.code, r.stderr).toBe(0);
    for (const secret of ["wh-token-in-query-1", "header-key-2", "slack-path-token-3", "tg-token-4", "topic-secret-5", "/dbkeep/in", "/services/"]) {
      expect(r.stdout + r.stderr, secret).not.toContain(secret);
    }
    const doc = JSON.parse(r.stdout) as { notifications: Record<string, Record<string, unknown>>; stores: Record<string, Record<string, unknown>> };
    expect(doc.notifications.hook).toMatchObject({ url: "https://hooks.example.com/***", headers: { "X-Api-Key": "***", "X-Team": "ops" } });
    expect(doc.notifications.chat!.url).toBe("***");
    expect(doc.notifications.tg).toMatchObject({ bot_token: "***", api_url: "https://tg.example.com/***" });
    expect(doc.notifications.push!.url_env).toBe("DBKEEP_E2E_NTFY (set)");
    // A store's endpoint is no notifier URL: it is shown as it is.
    expect(doc.stores.s!.endpoint).toBe("https://s3.example.com/base");
  });

  it("without a TTY, logs are JSON lines; --log-format text makes them readable", () => {
    const cwd = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(cwd, "app.db"));
    const json = dbkeep(["backup", "sqlite:app.db", "--to", "b"], { cwd });
    const first = JSON.parse(json.stderr.split("\n")[0]!) as { level: number; msg: string };
    expect(first.msg).toBe("backing up sqlite database app");
    const text = dbkeep(["--log-format", "text", "list", "b", "--all"], { cwd });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("no leftovers of failed or killed runs");
  });
});
