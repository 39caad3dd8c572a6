import { spawnSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { decodeKeyTag } from "../../src/stores/restic/index.js";
import { dbkeepAsync, IN_CI, ROOT, tempDir } from "../helpers/env.js";
import { runWatchingChildren } from "../helpers/proc.js";
import { resticRepos } from "../helpers/restic-repo.js";
import { sqliteContent, sqliteJobConfig } from "../helpers/sqlite.js";

const PASSWORD = "restic-it-pw-71c0";
const available = spawnSync("restic", ["version"]).status === 0;
if (!available && IN_CI) throw new Error("restic is not installed under CI (scripts/test-env.sh installs it)");

function config(dir: string, repo: string): string {
  return sqliteJobConfig(dir, {
    store: "vault",
    stores: `  vault:
    type: restic
    repository: ${repo}
    password_env: TEST_RESTIC_PASSWORD
    init: true
    tags: [prod]
    env:
      RESTIC_CACHE_DIR: ${repo}.cache`,
  });
}

describe.skipIf(!available)("dbkeep with a restic store", () => {
  const root = tempDir("dbkeep-restic-it-");
  const freshRepo = resticRepos(join(root, "repos"), PASSWORD);

  it("backs up a SQLite database into a restic repository, lists it and restores it identical; restic sees one snapshot per object", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const repo = freshRepo();
    const cfg = config(dir, repo);
    const env = { TEST_RESTIC_PASSWORD: PASSWORD };
    // Every process the backup starts is watched: the password is in restic's environment, never in an argument list.
    const b = await runWatchingChildren(["-c", cfg, "backup", "app-backup"], env);
    expect(b.output).not.toMatch(/error|warn/i);
    expect(b.code).toBe(0);
    const restics = b.procs.filter((p) => p.cmdline.startsWith("restic ") || p.cmdline.includes("/restic "));
    expect(restics.length).toBeGreaterThan(0);
    expect(restics.some((p) => p.environ.split("\0").includes(`RESTIC_PASSWORD=${PASSWORD}`))).toBe(true);
    for (const p of b.procs) expect(p.cmdline).not.toContain(PASSWORD);
    const list = await dbkeepAsync(["-c", cfg, "list", "app-backup", "--json"], env);
    expect(list.code, list.stderr).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string }[] }).backups;
    expect(backups).toHaveLength(1);

    const snaps = spawnSync("restic", ["snapshots", "--json"], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, RESTIC_REPOSITORY: repo, RESTIC_PASSWORD: PASSWORD, RESTIC_CACHE_DIR: `${repo}.cache` },
      encoding: "utf8",
    });
    const keys = (JSON.parse(snaps.stdout) as { tags: string[]; hostname: string }[]).map((s) => {
      expect(s.hostname).toBe("dbkeep");
      expect(s.tags).toEqual(expect.arrayContaining(["dbkeep", "prod"]));
      return s.tags.map(decodeKeyTag).find((k) => k !== undefined);
    });
    expect(keys).toContain(backups[0]!.key);
    expect(keys.some((k) => k?.endsWith(".manifest.json"))).toBe(true);
    expect(keys.every((k) => k?.startsWith("app/"))).toBe(true);

    const r = await dbkeepAsync(["-c", cfg, "restore", "app-backup", "--to", "copy", "--auto-confirm"], env);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
  });

  it("a wrong password fails with one line and a hint, without the password", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const repo = freshRepo();
    const cfg = config(dir, repo);
    const wrong = "Wrong-Restic-Password-5521";
    const b = await dbkeepAsync(["-c", cfg, "backup", "app-backup"], { TEST_RESTIC_PASSWORD: wrong });
    expect(b.code).toBe(1);
    const errors = b.stderr.split("\n").filter((l) => /error/i.test(l));
    expect(errors.some((l) => l.includes(`[store:restic:vault] wrong password for restic repository ${repo}`))).toBe(true);
    expect(b.stderr).toContain("hint: check password_env TEST_RESTIC_PASSWORD");
    expect(b.stdout + b.stderr).not.toContain(wrong);
  });
});
