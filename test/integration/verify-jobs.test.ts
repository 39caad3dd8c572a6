import { spawn } from "node:child_process";
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, dbkeep, dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { startHttpReceiver, type HttpReceiver } from "../helpers/receivers.js";
import { reportSchema } from "../helpers/verify.js";

function reports(dir: string): { file: string; ok: boolean; id: string }[] {
  const out: { file: string; ok: boolean; id: string }[] = [];
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".verify.json"))) {
    const r = reportSchema.parse(JSON.parse(readFileSync(join(dir, f), "utf8")));
    out.push({ file: f, ok: r.ok, id: r.backup.id });
  }
  return out;
}

describe("verify: restore in jobs, keep_verified, history and the daemon's verification schedule", () => {
  const dir = tempDir("dbkeep-it-verify-jobs-");
  const cfg = join(dir, "dbkeep.yaml");
  const env = { DBKEEP_STATE_DIR: join(dir, "state") };
  let http: HttpReceiver;

  beforeAll(async () => {
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    http = await startHttpReceiver();
    writeFileSync(
      cfg,
      `datasources:
  app: { engine: sqlite, path: ${join(dir, "app.db")} }
stores:
  local: { type: local, path: ${join(dir, "backups")} }
notifications:
  hook: { type: webhook, url: "${http.url}/hook" }
jobs:
  good:
    datasource: app
    store: local
    prefix: good
    verify: restore
    verification:
      assertions: [{ name: orders, query: "SELECT count(*) FROM orders", expect: 5000 }]
  bad:
    datasource: app
    store: local
    prefix: bad
    verify: restore
    notify: [{ notifier: hook, on: failure }]
    verification:
      assertions: [{ name: orders, query: "SELECT count(*) FROM orders", expect: 1 }]
  kv:
    datasource: app
    store: local
    prefix: kv
    retention: { keep_last: 1, keep_verified: 1 }
  weekly:
    datasource: app
    store: local
    prefix: weekly
    verification: { schedule: "*/1 * * * * *" }
`,
    );
  });
  afterAll(async () => {
    await http?.close();
  });

  it("a backup that passes verification succeeds, with the report beside it and the restore time in the history", () => {
    const r = dbkeep(["-c", cfg, "backup", "good"], { env });
    expect(r.code, r.stderr).toBe(0);
    const stored = reports(join(dir, "backups/good/app"));
    expect(stored).toHaveLength(1);
    expect(stored[0]!.ok).toBe(true);
    const h = dbkeep(["-c", cfg, "history", "good", "--json"], { env });
    const runs = (JSON.parse(h.stdout) as { runs: { ok: boolean; verified: boolean | null; restore_seconds: number | null }[] }).runs;
    expect(runs[0]).toMatchObject({ ok: true, verified: true });
    expect(runs[0]!.restore_seconds).toBeGreaterThan(0);
    expect(dbkeep(["-c", cfg, "history", "good"], { env }).stdout).toMatch(/VERIFIED[\s\S]*ok \(restore [\d.]+s\)/);
  });

  it("a backup whose verification fails fails the job, with the failed check in the error and the notification", async () => {
    // Asynchronously: the webhook receiver lives in this process and must answer while the CLI runs.
    const r = await dbkeepAsync(["-c", cfg, "backup", "bad"], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/verification of app-\S+ by restore failed: assertion:orders: got 5000, expected 1/);
    const hooks = http.requests.filter((q) => q.path === "/hook").map((q) => JSON.parse(q.body) as { status: string; message: string });
    expect(hooks).toHaveLength(1);
    expect(hooks[0]!.status).toBe("failed");
    expect(hooks[0]!.message).toContain("assertion:orders: got 5000, expected 1");
    expect(reports(join(dir, "backups/bad/app")).map((x) => x.ok)).toEqual([false]);
  });

  it("keep_verified keeps the newest verified backup besides what the other rules keep", () => {
    for (let i = 0; i < 3; i++) {
      const r = dbkeep(["-c", cfg, "backup", "kv", "--json"], { env });
      expect(r.code, r.stderr).toBe(0);
      if (i === 0) expect(dbkeep(["-c", cfg, "verify", "kv"], { env }).code).toBe(0);
    }
    const p = dbkeep(["-c", cfg, "prune", "kv", "--json"], { env });
    expect(p.code, p.stderr).toBe(0);
    const doc = JSON.parse(p.stdout) as { backups: { id: string; action: string; reasons: string[] }[] };
    const byAction = (a: string) => doc.backups.filter((b) => b.action === a);
    expect(byAction("keep")).toHaveLength(2);
    expect(byAction("delete")).toHaveLength(1);
    const oldest = [...doc.backups].sort((a, b) => (a.id < b.id ? -1 : 1))[0]!;
    expect(oldest).toMatchObject({ action: "keep", reasons: ["verified 1"] });
  });

  it("the daemon verifies the latest backup on its verification schedule and feeds the metrics", async () => {
    expect(dbkeep(["-c", cfg, "backup", "weekly"], { env }).code).toBe(0);
    const child = spawn(process.execPath, [CLI, "-c", cfg, "daemon", "--listen", "127.0.0.1:0"], { env: { ...process.env, ...CLI_ENV, ...env }, stdio: ["ignore", "ignore", "pipe"] });
    let log = "";
    child.stderr.on("data", (d: Buffer) => (log += d.toString()));
    const exited = new Promise((r) => child.once("close", r));
    try {
      let text = "";
      for (let i = 0; i < 150; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const port = /"address":"127\.0\.0\.1:(\d+)"/.exec(log)?.[1];
        if (!port) continue;
        text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        if (/dbkeep_restore_seconds\{job="weekly"\} /.test(text)) break;
      }
      const ts = Number(/dbkeep_last_verify_timestamp\{job="weekly"\} (\S+)/.exec(text)?.[1]);
      expect(ts).toBeGreaterThan(Date.now() / 1000 - 60);
      expect(Number(/dbkeep_restore_seconds\{job="weekly"\} (\S+)/.exec(text)?.[1])).toBeGreaterThan(0);
    } finally {
      child.kill("SIGTERM");
      await exited;
    }
    const h = dbkeep(["-c", cfg, "history", "weekly", "--json"], { env });
    const runs = (JSON.parse(h.stdout) as { runs: { trigger: string; verified: boolean | null }[] }).runs;
    expect(runs.some((x) => x.trigger === "verify" && x.verified === true)).toBe(true);
  });
});
