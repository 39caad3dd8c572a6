import { spawn } from "node:child_process";
import { chmodSync, existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, dbkeep, tempDir } from "../helpers/env.js";
import { contentOf, myAvailable, myQuery, schemaOf } from "../helpers/mysql.js";
import { resolveTool } from "../../src/core/subprocess.js";

// mysqldump of one database goes straight into the compressor's kernel pipe (zstd, lz4) or through node (gzip,
// none): each way, what is restored must equal the source, and a dump tool that fails must leave nothing.
const SRC = "mysql_pipe_src";
const DST = "mysql_pipe_dst";
const url = (db: string, q = "") => `mysql://root@127.0.0.1:3306/${db}${q}`;
const available = await myAvailable();

function backupsIn(store: string): { id: string; raw_bytes?: number }[] {
  const r = dbkeep(["list", store, "--json"]);
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { backups: { id: string }[] }).backups;
}

describe.skipIf(!available)("MySQL/MariaDB plain dump into the compressor's pipe", () => {
  let want: Record<string, string>;
  let wantSchema: string;

  beforeAll(async () => {
    await myQuery(`DROP DATABASE IF EXISTS ${SRC}; DROP DATABASE IF EXISTS ${DST}; CREATE DATABASE ${SRC}`);
    await myQuery(
      `CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(200), b BLOB, d DECIMAL(12,3), t DATETIME(6));
       INSERT INTO big SELECT seq, CONCAT(MD5(seq), ' \\t é ', seq), UNHEX(SHA1(seq)), seq / 7, '2024-01-01' + INTERVAL seq SECOND FROM seq_1_to_20000;
       CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, big_id INT, n INT, FOREIGN KEY (big_id) REFERENCES big (id), KEY (n));
       INSERT INTO child (big_id, n) SELECT seq, seq % 13 FROM seq_1_to_500;
       CREATE VIEW v_child AS SELECT big_id, n FROM child WHERE n > 3;
       CREATE TRIGGER child_bi BEFORE INSERT ON child FOR EACH ROW SET NEW.n = IFNULL(NEW.n, 0);`,
      SRC,
    );
    want = await contentOf(SRC);
    wantSchema = await schemaOf(SRC);
  });

  afterAll(async () => {
    await myQuery(`DROP DATABASE IF EXISTS ${SRC}; DROP DATABASE IF EXISTS ${DST}`);
  });

  for (const compression of ["zstd", "lz4", "gzip", "none"]) {
    it(`${compression}: the restored database equals the source; the manifest's checksum, size and catalog are right`, async () => {
      const store = tempDir();
      const b = dbkeep(["backup", url(SRC), "--to", store, "--compression", compression, "--verify", "--json"]);
      expect(b.code, b.stderr).toBe(0);
      const dir = join(store, SRC);
      const manifestFile = readdirSync(dir).find((f) => f.endsWith(".manifest.json"))!;
      const m = JSON.parse(readFileSync(join(dir, manifestFile), "utf8")) as {
        raw_bytes: number; stored_bytes: number; tables: { name: string; rows?: number }[]; objects?: Record<string, string[]>; tool?: { name: string };
      };
      expect(m.raw_bytes).toBeGreaterThan(1_000_000);
      expect(m.tables).toEqual([{ name: "big", rows: 20000 }, { name: "child", rows: 500 }]);
      expect(m.objects?.views).toEqual(["v_child"]);
      expect(m.objects?.triggers).toEqual(["child.child_bi"]);
      expect(m.objects?.foreign_keys).toHaveLength(1);
      expect(m.tool?.name).toMatch(/dump/);
      // sha256 and sizes are checked by restore itself (a mismatch fails it before anything is applied).
      const r = dbkeep(["restore", store, "latest", "--to", url(DST), "--auto-confirm"]);
      expect(r.code, r.stderr).toBe(0);
      expect(await contentOf(DST)).toEqual(want);
      expect(await schemaOf(DST)).toEqual(wantSchema);
      await myQuery(`DROP DATABASE IF EXISTS ${DST}`);
    });
  }

  for (const compression of ["zstd", "gzip"]) {
    it(`${compression}: a dump tool that fails after writing part of the dump leaves nothing in the store`, async () => {
      const store = tempDir();
      const ok = dbkeep(["backup", url(SRC), "--to", store, "--compression", compression]);
      expect(ok.code, ok.stderr).toBe(0);
      const before = backupsIn(store);
      // A mariadb-dump that writes the start of a real dump, then dies as a lost connection would.
      const bin = tempDir();
      const real = await resolveTool("mariadb-dump");
      writeFileSync(join(bin, "mariadb-dump"), `#!/bin/sh\nif [ "$1" = "--version" ]; then exec ${real} --version; fi\n${real} "$@" | head -c 300000\necho "mariadb-dump: Error 2013: Lost connection to server during query" >&2\nexit 2\n`);
      chmodSync(join(bin, "mariadb-dump"), 0o755);
      symlinkSync(await resolveTool("mariadb"), join(bin, "mariadb"));
      const r = dbkeep(["backup", url(SRC, `?bin_dir=${encodeURIComponent(bin)}`), "--to", store, "--compression", compression]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/Lost connection/);
      expect(backupsIn(store)).toEqual(before);
      expect(readdirSync(join(store, SRC)).filter((f) => f.includes(".dbkeep-partial-"))).toEqual([]);
    });
  }

  it("zstd: SIGTERM while mariadb-dump writes into the pipe stops the dump tool; nothing is stored", async () => {
    const store = tempDir();
    const bin = tempDir();
    const pidFile = join(bin, "dump.pid");
    const real = await resolveTool("mariadb-dump");
    // Writes the real dump, then keeps the pipe open as a dump of a big table would.
    writeFileSync(join(bin, "mariadb-dump"), `#!/bin/sh\nif [ "$1" = "--version" ]; then exec ${real} --version; fi\necho $$ > ${pidFile}\n${real} "$@"\nexec sleep 30\n`);
    chmodSync(join(bin, "mariadb-dump"), 0o755);
    symlinkSync(await resolveTool("mariadb"), join(bin, "mariadb"));
    const child = spawn(process.execPath, [CLI, "backup", url(SRC, `?bin_dir=${encodeURIComponent(bin)}`), "--to", store, "--compression", "zstd"], { stdio: "ignore", env: { ...process.env, ...CLI_ENV } });
    const deadline = Date.now() + 30_000;
    while (!existsSync(pidFile) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 500));
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    child.kill("SIGTERM");
    const code = await new Promise((r) => child.once("exit", (c) => r(c)));
    expect(code).not.toBe(0);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(readdirSync(store, { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && !e.name.startsWith(".dbkeep"))).toEqual([]);
  });

  it("a database that does not exist: one clear line, nothing stored", () => {
    const store = tempDir();
    const r = dbkeep(["backup", url("mysql_pipe_no_such_db"), "--to", store, "--compression", "zstd"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/database mysql_pipe_no_such_db does not exist/);
    expect(readdirSync(store, { recursive: true, withFileTypes: true }).filter((e) => e.isFile() && !e.name.startsWith(".dbkeep"))).toEqual([]);
  });
});
