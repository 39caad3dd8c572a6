import { copyFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { rcloneAvailable } from "../helpers/rclone-remotes.js";
import { sqliteContent, sqliteJobConfig } from "../helpers/sqlite.js";

const available = rcloneAvailable();

function files(dir: string, base = ""): string[] {
  return readdirSync(join(dir, base), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(dir, join(base, e.name)) : [join(base, e.name)]));
}

function config(dir: string, remote: string): string {
  return sqliteJobConfig(dir, {
    store: "offsite",
    stores: `  offsite:
    type: rclone
    remote: ${remote}
    env:
      RCLONE_CONFIG_LOC_TYPE: { env: TEST_RCLONE_TYPE }
    flags: [--retries=1]`,
  });
}

describe.skipIf(!available)("dbkeep with an rclone store (local remote)", () => {
  it("backs up a SQLite database through rclone, lists it and restores it identical", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const remoteDir = join(dir, "remote");
    const cfg = config(dir, `loc:${remoteDir}`);
    const env = { TEST_RCLONE_TYPE: "local" };
    const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"], env);
    expect(b.stderr).not.toMatch(/error|warn/i);
    expect(b.code).toBe(0);
    const list = await dbkeepAsync(["-c", cfg, "list", "app-backup", "--json"], env);
    expect(list.code, list.stderr).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string }[] }).backups;
    expect(backups).toHaveLength(1);
    const stored = files(remoteDir);
    expect(stored).toContain(backups[0]!.key);
    expect(stored.some((f) => f.endsWith(".manifest.json"))).toBe(true);
    expect(stored.some((f) => f.includes(".dbkeep-partial-"))).toBe(false);

    const r = await dbkeepAsync(["-c", cfg, "restore", "app-backup", "--to", "copy", "--auto-confirm"], env);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
  });

  it("an undefined remote fails with one line and a hint how to define it", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const cfg = config(dir, "missing:backups");
    const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"], { TEST_RCLONE_TYPE: "local" });
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/^error: \[store:rclone:offsite\] rclone [a-z -]+ \S+ failed \(exit code \d\): Failed to create file system for "missing:backups\/\S+": didn't find section in config file\n/m);
    expect(b.stderr).toContain("hint: define remote \"missing\" with `rclone config`, give config_file, or set RCLONE_CONFIG_MISSING_TYPE etc. in the store's env:");
  });
});
