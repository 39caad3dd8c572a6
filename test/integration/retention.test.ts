import { copyFileSync, existsSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfigFile } from "../../src/config/load.js";
import { createLogger } from "../../src/core/log.js";
import { planJob, runJob } from "../../src/core/jobs.js";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";

const quiet = createLogger({ level: "silent" });

function setup(retention: string, dbPath?: string): { dir: string; cfg: string; backupsDir: string } {
  const dir = tempDir();
  copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
  const cfg = join(dir, "dbkeep.yaml");
  writeFileSync(
    cfg,
    `datasources:
  app: { engine: sqlite, path: ${dbPath ?? join(dir, "app.db")}, compression: zstd }
stores:
  local: { type: local, path: ${join(dir, "backups")} }
jobs:
  app:
    datasource: app
    store: local
    retention:
${retention}
`,
    { mode: 0o600 },
  );
  return { dir, cfg, backupsDir: join(dir, "backups/app") };
}

/** Real backups through the whole pipeline, each at a chosen time (an injectable clock, no sleeping). */
async function backupAt(cfg: string, times: string[]): Promise<string[]> {
  const plan = planJob(loadConfigFile(cfg), "app");
  const ids: string[] = [];
  for (const t of times) {
    const r = await runJob(plan, { log: quiet, signal: new AbortController().signal, now: () => new Date(t) });
    if (!r.ok) throw r.error;
    ids.push(r.manifest!.id);
  }
  return ids;
}

function filesOf(id: string): string[] {
  return [`${id}.manifest.json`, `${id}.db.zst`, `${id}.db.zst.sha256`];
}

describe("prune on a real store", () => {
  it("keeps exactly what the policy says, with sidecars and manifests, and previews a future date", async () => {
    const { cfg, backupsDir } = setup("      keep_last: 1\n      keep_daily: 3\n      keep_weekly: 2");
    const times = ["2026-01-01T10:00:00Z", "2026-01-05T10:00:00Z", "2026-01-08T09:00:00Z", "2026-01-08T21:00:00Z", "2026-01-12T10:00:00Z", "2026-01-13T10:00:00Z", "2026-01-14T08:00:00Z", "2026-01-14T18:00:00Z"];
    const ids = await backupAt(cfg, times);
    const byTime = Object.fromEntries(times.map((t, i) => [t, ids[i]!]));

    const preview = dbkeep(["-c", cfg, "prune", "app", "--dry-run", "--json"]);
    expect(preview.code).toBe(0);
    const doc = JSON.parse(preview.stdout) as { backups: { id: string; action: string; reasons: string[] }[] };
    const decisions = Object.fromEntries(doc.backups.map((b) => [b.id, `${b.action}: ${b.reasons.join(", ")}`]));
    expect(decisions).toEqual({
      [byTime["2026-01-14T18:00:00Z"]!]: "keep: last 1, daily 2026-01-14, weekly 2026-W03",
      [byTime["2026-01-14T08:00:00Z"]!]: "delete: ",
      [byTime["2026-01-13T10:00:00Z"]!]: "keep: daily 2026-01-13",
      [byTime["2026-01-12T10:00:00Z"]!]: "keep: daily 2026-01-12",
      [byTime["2026-01-08T21:00:00Z"]!]: "keep: weekly 2026-W02",
      [byTime["2026-01-08T09:00:00Z"]!]: "delete: ",
      [byTime["2026-01-05T10:00:00Z"]!]: "delete: ",
      [byTime["2026-01-01T10:00:00Z"]!]: "delete: ",
    });
    expect(readdirSync(backupsDir).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(8);

    const text = dbkeep(["-c", cfg, "prune", "app", "--dry-run"]);
    expect(text.stdout).toMatch(/KEEP\s+app-20260114-180000\s+2026-01-14 18:00:00\s+last 1, daily 2026-01-14, weekly 2026-W03/);
    expect(text.stdout).toContain("4 kept, 4 to delete (dry run)");

    const real = dbkeep(["-c", cfg, "prune", "app"]);
    expect(real.code).toBe(0);
    const left = readdirSync(backupsDir).filter((f) => !f.startsWith(".dbkeep-last-run")).sort();
    const keptIds = ["2026-01-14T18:00:00Z", "2026-01-13T10:00:00Z", "2026-01-12T10:00:00Z", "2026-01-08T21:00:00Z"].map((t) => byTime[t]!);
    expect(left).toEqual(keptIds.flatMap(filesOf).sort());
    // Everything kept still restores.
    expect(dbkeep(["-c", cfg, "restore", "app", byTime["2026-01-08T21:00:00Z"]!, "--to", `sqlite:${join(backupsDir, "..", "r.db")}`]).code).toBe(0);
  });

  it("when the job's last backup failed, prune deletes nothing and says why, unless --force", async () => {
    const { dir, cfg, backupsDir } = setup("      keep_last: 1");
    await backupAt(cfg, ["2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z"]);
    const broken = cfg.replace("dbkeep.yaml", "broken.yaml");
    writeFileSync(broken, `datasources:\n  app: { engine: sqlite, path: ${join(dir, "gone.db")}, database: app, compression: zstd }\nstores:\n  local: { type: local, path: ${join(dir, "backups")} }\njobs:\n  app: { datasource: app, store: local, retention: { keep_last: 1 } }\n`);
    const failed = dbkeep(["-c", broken, "backup", "app"]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain("error: SQLite database");
    const blocked = dbkeep(["-c", cfg, "prune", "app"]);
    expect(blocked.code).toBe(0);
    expect(blocked.stdout).toMatch(/nothing deleted: the last backup of this job failed .*not found.*--force/);
    expect(readdirSync(backupsDir).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(3);
    const forced = dbkeep(["-c", cfg, "prune", "app", "--force"]);
    expect(forced.stdout).toContain("1 kept, 2 deleted");
    expect(readdirSync(backupsDir).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(1);
    // A later successful backup lifts the block.
    expect(dbkeep(["-c", cfg, "backup", "app"]).code).toBe(0);
    expect(dbkeep(["-c", cfg, "prune", "app"]).stdout).toContain("1 kept, 1 deleted");
  });

  it("removes leftovers older than the grace period and reports them apart; a young one may be a backup in progress", async () => {
    const { cfg, backupsDir } = setup("      keep_last: 5\n      orphan_grace: 2h");
    await backupAt(cfg, ["2026-03-01T00:00:00Z"]);
    const old = join(backupsDir, ".app-20260301-010000.db.zst.dbkeep-partial-abc123");
    const young = join(backupsDir, ".app-20260301-020000.db.zst.dbkeep-partial-def456");
    // A run that never committed: its pending marker and its data, no manifest.
    const uncommitted = join(backupsDir, "app-20260301-030000.db.zst");
    const marker = join(backupsDir, "app-20260301-030000.pending-0123456789abcdef.json");
    // Data with neither a manifest nor a marker is a backup whose manifest was lost: damaged, never a leftover.
    const lost = join(backupsDir, "app-20260301-040000.db.zst");
    for (const f of [old, young, uncommitted, lost]) writeFileSync(f, "partial");
    writeFileSync(marker, JSON.stringify({ id: "app-20260301-030000", purpose: "backup", host: "elsewhere", pid: 1, started_at: "2026-03-01T03:00:00Z", token: "0123456789abcdef" }));
    const hoursAgo = (h: number) => new Date(Date.now() - h * 3600e3);
    for (const f of [old, uncommitted, marker, lost]) utimesSync(f, hoursAgo(5), hoursAgo(5));
    const r = dbkeep(["-c", cfg, "prune", "app"]);
    expect(r.stdout).toContain("(leftover of a failed or killed run)");
    expect(r.stdout).toContain("3 leftover(s) removed");
    expect(r.stdout).toMatch(/KEEP\s+app-20260301-040000\s+\(damaged: its manifest .* is missing, and so is its sidecar; --force deletes it\)/);
    expect(existsSync(old)).toBe(false);
    expect(existsSync(uncommitted)).toBe(false);
    expect(existsSync(marker)).toBe(false);
    expect(existsSync(young)).toBe(true);
    expect(existsSync(lost)).toBe(true);
  });

  it("a store may have its own policy", async () => {
    const { cfg, backupsDir } = setup("      keep_last: 5\n      stores:\n        local: { keep_last: 2 }");
    await backupAt(cfg, ["2026-04-01T00:00:00Z", "2026-04-02T00:00:00Z", "2026-04-03T00:00:00Z"]);
    expect(dbkeep(["-c", cfg, "prune", "app"]).stdout).toContain("2 kept, 1 deleted");
    expect(readdirSync(backupsDir).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(2);
  });

  it("refuses a per-store policy for a store the job does not use", () => {
    const { cfg } = setup("      keep_last: 5\n      stores:\n        cloud: { keep_last: 2 }");
    const r = dbkeep(["-c", cfg, "config", "check"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('jobs.app.retention.stores.cloud: the job does not write to store "cloud" (its stores: local)');
  });
});

describe("manual backups", () => {
  it("are kept by prune whatever the policy says, and labelled in their manifest", async () => {
    const { cfg, backupsDir } = setup("      keep_last: 1");
    await backupAt(cfg, ["2026-05-01T00:00:00Z"]);
    const manual = dbkeep(["-c", cfg, "backup", "app", "--type", "manual", "--json"]);
    expect(manual.code).toBe(0);
    const manualId = (JSON.parse(manual.stdout) as { jobs: { backup: string }[] }).jobs[0]!.backup;
    await backupAt(cfg, ["2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"]);
    const r = dbkeep(["-c", cfg, "prune", "app", "--dry-run", "--json"]);
    const doc = JSON.parse(r.stdout) as { backups: { id: string; action: string; reasons: string[] }[] };
    expect(doc.backups.find((b) => b.id === manualId)).toMatchObject({ action: "keep", reasons: ["manual"] });
    expect(doc.backups.filter((b) => b.action === "delete")).toHaveLength(2);
    const listed = JSON.parse(dbkeep(["-c", cfg, "list", "app", "--json"]).stdout) as { backups: { id: string; type?: string }[] };
    expect(listed.backups.find((b) => b.id === manualId)?.type).toBe("manual");
    expect(backupsDir).toBeTruthy();
  });
});
