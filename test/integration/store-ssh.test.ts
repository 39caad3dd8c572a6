import { copyFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeep, dbkeepAsync, ROOT, tempDir } from "../helpers/env.js";
import { sshdAvailable, startSshd, type TestSshd } from "../helpers/sshd-server.js";
import { sqliteContent, sqliteJobConfig } from "../helpers/sqlite.js";

/** Every file below `dir`, relative to it. */
function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else out.push(`${rel}${e.name}`);
    }
  };
  walk(dir, "");
  return out;
}

const available = sshdAvailable();

describe.skipIf(!available)("dbkeep with an ssh store (OpenSSH sshd on loopback)", () => {
  let sshd: TestSshd;
  beforeAll(async () => {
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
  });

  function config(dir: string, db: string, path: string): string {
    return sqliteJobConfig(dir, {
      db,
      compression: "none",
      store: "remote",
      stores: `  remote:
    type: ssh
    host: 127.0.0.1
    port: ${sshd.port}
    user: ${sshd.user}
    path: ${path}
    key_file: ${sshd.userKey.path}
    known_hosts: ${sshd.knownHosts}
    timeout: 10`,
    });
  }

  it("backs up a SQLite database over SFTP, lists it, restores it identical", () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const path = join(sshd.data, "roundtrip");
    const cfg = config(dir, join(dir, "app.db"), path);

    const check = dbkeep(["-c", cfg, "config", "check"]);
    expect(check.code).toBe(0);
    expect(check.stderr).not.toMatch(/not available/);

    const b = dbkeep(["-c", cfg, "backup", "app-backup"]);
    expect(b.stderr).not.toMatch(/error/);
    expect(b.code).toBe(0);

    const list = dbkeep(["-c", cfg, "list", "app-backup", "--json"]);
    expect(list.code).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string }[] }).backups;
    expect(backups).toHaveLength(1);
    expect(backups[0]!.key).toMatch(/^app\/(app\/)?app-\d{8}-\d{6}\.db$/);
    // The files are where the config says, complete, with no partial left over.
    const stored = files(path);
    expect(stored).toContain(backups[0]!.key);
    expect(stored.some((f) => f.endsWith(".manifest.json"))).toBe(true);
    expect(stored.filter((f) => f.includes("dbkeep-partial"))).toEqual([]);

    const r = dbkeep(["-c", cfg, "restore", "app-backup", "--to", "copy"]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(sqliteContent(join(dir, "copy.db"))).toEqual(sqliteContent(join(dir, "app.db")));
  });

  it("a backup whose sshd dies mid-way fails with a clear message, and list shows nothing new", async () => {
    const dir = tempDir();
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const path = join(sshd.data, "killed");
    const cfg = config(dir, join(dir, "app.db"), path);
    // One complete backup first, so that "nothing new" is checked against something.
    const first = dbkeep(["-c", cfg, "backup", "app-backup"]);
    expect(first.code).toBe(0);

    // The database grows (64 MiB of random bytes, stored uncompressed): the upload is still running when sshd dies.
    const db = new Database(join(dir, "app.db"));
    db.exec("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 65536) INSERT INTO blobs SELECT i, randomblob(1024) FROM n;");
    db.close();

    const run = dbkeepAsync(["-c", cfg, "backup", "app-backup"], {}, 60_000);
    let killed = false;
    const deadline = Date.now() + 60_000;
    while (!killed && Date.now() < deadline) {
      // Mid-way: once the partial upload holds a few MiB.
      const partial = files(path).find((f) => f.includes(".dbkeep-partial-"));
      if (partial && (statSync(join(path, partial), { throwIfNoEntry: false })?.size ?? 0) >= 4 * 1024 * 1024) {
        await sshd.kill();
        killed = true;
      } else {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const res = await run;
    expect(killed).toBe(true);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/^error: \[store:ssh:remote\] connection to 127\.0\.0\.1:\d+ lost while uploading app\/app\/app-\d{8}-\d{6}(-\d+)?\.db after \d+ bytes/m);
    expect(res.stderr).toMatch(/^hint: check the network and the SSH server/m);

    await sshd.restart();
    const list = dbkeep(["-c", cfg, "list", "app-backup", "--json"]);
    expect(list.code).toBe(0);
    const backups = (JSON.parse(list.stdout) as { backups: { key: string }[] }).backups;
    expect(backups).toHaveLength(1);
    expect(backups[0]!.key).toMatch(/app-\d{8}-\d{6}\.db$/);
    // The killed upload is reported as a run that never committed: its temporary file and its pending marker (the
    // run could not remove it with the connection gone), and only those.
    const all = dbkeep(["-c", cfg, "list", "app-backup", "--all", "--json"]);
    expect(all.code).toBe(0);
    const incomplete = (JSON.parse(all.stdout) as { incomplete: { key: string; partial: boolean; why: string }[] }).incomplete;
    expect(incomplete.some((o) => o.partial)).toBe(true);
    for (const o of incomplete) {
      if (o.partial) expect(o).toMatchObject({ key: expect.stringMatching(/\/\.app-\d{8}-\d{6}(-\d+)?\.db\.dbkeep-partial-[0-9a-f-]+$/), why: "uncommitted" });
      else expect(o).toMatchObject({ key: expect.stringMatching(/\/app-\d{8}-\d{6}(-\d+)?\.pending-[0-9a-f]+\.json$/), why: "uncommitted" });
    }
    // What the killed run left is only ever a partial, never a file under a final name.
    const names = files(path).filter((f) => !f.includes(".dbkeep-partial-"));
    expect(names.filter((f) => f.endsWith(".manifest.json"))).toHaveLength(1);
  });
});
