import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contentOf as pgContent, schemaOf as pgSchema } from "../helpers/pgcompare.js";
import { dbkeep, dropDb, createDb, IN_CI, PG, pgAvailable, pgQuery, ROOT, tempDir, type CliResult } from "../helpers/env.js";
import { contentOf as myContent, dropDatabasesLike, myAvailable, myQuery, mySource, MY } from "../helpers/mysql.js";
import { sqliteContent } from "../helpers/sqlite.js";
import { loadFixture, redisAvailable, snapshotRedis, startRedis, type TestRedis } from "../helpers/redis.js";
import { fernetEncrypt, fernetGenerateKey } from "../../src/crypto/fernet.js";

/**
 * dbkeep import and dbkeep restore FILE with dumps made by the real tools: pg_dump (plain, custom, directory as a
 * directory and as a tar), mariadb-dump, sqlite3 .backup and redis-cli --rdb, raw and compressed with gzip, zstd and
 * lz4 (a spread, not every combination). Each adopted dump is listed, restored into a fresh target and compared with
 * its source; verify and prune treat it like any other backup; truncated files are refused with nothing left.
 * Seed 002's `.enc` files (Fernet around a gzip dump) are made by dbkeep's Fernet code and by Python's
 * cryptography.fernet, an independent implementation, when this machine has it.
 */

const TAG = `${process.pid}`;
const PG_SRC = `imp_src_${TAG}`;
const MY_SRC = `imp_src_${TAG}`;
const PG_TARGETS: string[] = [];

const dir = tempDir("dbkeep-it-import-");
const files = join(dir, "files");
const backups = join(dir, "backups");
const cfg = join(dir, "dbkeep.yaml");
let havePg = false;
let haveMy = false;
let haveRedis = false;
let redis: TestRedis | undefined;

function sh(cmd: string, args: string[], o: { input?: Buffer; out?: string } = {}): Buffer {
  const out = execFileSync(cmd, args, { input: o.input, maxBuffer: 512 * 1024 * 1024, stdio: ["pipe", "pipe", "pipe"] });
  if (o.out) writeFileSync(o.out, out);
  return out;
}

function ok(r: CliResult): CliResult {
  expect(r.stderr).not.toMatch(/^error:/m);
  expect(r.code, r.stderr).toBe(0);
  return r;
}

interface Listed {
  id: string;
  key: string;
  format: string;
  compression: string;
  engine: string;
  started_at: string;
  encryption: unknown;
  imported?: { file: string; sha256: string; bytes: number; layers: string[]; taken_from: string };
}

function list(job: string): Listed[] {
  return (JSON.parse(ok(dbkeep(["-c", cfg, "list", job, "--json"])).stdout) as { backups: Listed[] }).backups;
}

/** Every file under the store, relative: what a failed import must not have added to. */
function storeFiles(): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else out.push(join(d, e.name).slice(backups.length + 1));
    }
  };
  walk(backups);
  return out.sort();
}

const compress: Record<string, (src: string, dst: string) => void> = {
  gzip: (s, d) => sh("gzip", ["-c", s], { out: d }),
  zstd: (s, d) => sh("zstd", ["-q", "-c", s], { out: d }),
  lz4: (s, d) => sh("lz4", ["-q", "-c", s], { out: d }),
};

async function freshPg(): Promise<string> {
  const name = `imp_tgt_${TAG}_${PG_TARGETS.length}`;
  PG_TARGETS.push(name);
  await dropDb(name);
  return name;
}

beforeAll(async () => {
  mkdirSync(files, { recursive: true });
  havePg = await pgAvailable();
  haveMy = await myAvailable();
  haveRedis = redisAvailable();
  const pgArgs = ["-h", PG.host, "-U", PG.user];
  if (havePg) {
    await createDb(PG_SRC);
    sh("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", ...pgArgs, "-d", PG_SRC, "-f", join(ROOT, "test/fixtures/postgres-fixture.sql")]);
    // The files a user of pg_dump has: each format, named as their cron job named them (or not at all).
    sh("pg_dump", [...pgArgs, "-Fp", PG_SRC], { out: join(files, "plain.sql") });
    sh("pg_dump", [...pgArgs, "-Fc", PG_SRC], { out: join(files, "custom.dump") });
    sh("pg_dump", [...pgArgs, "-Fd", "-f", join(files, "pgdir"), PG_SRC]);
    sh("tar", ["-C", files, "-cf", join(files, "pgdir.tar"), "pgdir"]);
    compress.gzip!(join(files, "plain.sql"), join(files, "app_20250101_010000.sql.gz"));
    copyFileSync(join(files, "custom.dump"), join(files, "app-20250102-010000.dump"));
    // zstd inside, .gz outside: the content decides.
    compress.zstd!(join(files, "custom.dump"), join(files, "app-20250103-010000.sql.gz"));
    compress.lz4!(join(files, "pgdir.tar"), join(files, "app-20250104-010000.tar.lz4"));
    compress.lz4!(join(files, "plain.sql"), join(files, "app-20250105-010000.sql.lz4"));
  }
  if (haveMy) {
    await dropDatabasesLike(`imp_`);
    await myQuery(`CREATE DATABASE ${MY_SRC}`);
    mySource(MY_SRC, join(ROOT, "test/fixtures/mariadb-fixture.sql"));
    sh("mariadb-dump", ["-h", MY.host, "-P", String(MY.port), "-u", MY.user, "--single-transaction", "--routines", "--triggers", "--events", MY_SRC], { out: join(files, "my.sql") });
    compress.gzip!(join(files, "my.sql"), join(files, "shop-20250201-000000.dump"));
    compress.zstd!(join(files, "my.sql"), join(files, "shop-20250202-000000.sql.zst"));
  }
  const lite = new Database(join(files, "src.db"));
  lite.exec(`CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT, at REAL); CREATE INDEX notes_at ON notes(at);
             CREATE VIEW recent AS SELECT * FROM notes WHERE at > 10;`);
  const ins = lite.prepare("INSERT INTO notes(body, at) VALUES (?, ?)");
  for (let i = 0; i < 500; i++) ins.run(`note ${i} ${"x".repeat(i % 50)}`, i / 3);
  lite.close();
  sh("sqlite3", [join(files, "src.db"), `.backup ${join(files, "lite.db")}`]);
  compress.zstd!(join(files, "lite.db"), join(files, "lite-20250301-000000.db.zst"));
  if (haveRedis) {
    redis = await startRedis();
    await loadFixture(redis);
    sh("redis-cli", ["-p", String(redis.port), "--rdb", join(files, "dump.rdb")]);
    compress.gzip!(join(files, "dump.rdb"), join(files, "cache-20250401-000000.rdb.gz"));
  }
  const key = ok(dbkeep(["keygen", "-o", join(dir, "key.txt")])).stdout.trim().split("\n").pop()!;
  writeFileSync(
    cfg,
    `datasources:
  pg: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${PG_SRC}, format: custom }
  my: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MY_SRC} }
  lite: { engine: sqlite, path: ${join(dir, "lite-live.db")}, database: lite }
  cache: { engine: redis, host: 127.0.0.1, port: ${redis?.port ?? 6379}, name: cache, rdb_path: ${join(dir, "redis-target", "dump.rdb")} }
stores:
  local: { type: local, path: ${backups} }
jobs:
  pg-backup: { datasource: pg, store: local, compression: zstd, retention: { keep_last: 2 } }
  my-backup: { datasource: my, store: local, compression: gzip }
  lite-backup:
    datasource: lite
    store: local
    compression: lz4
    encryption: { recipients: [${key}], identity_file: ${join(dir, "key.txt")} }
  cache-backup: { datasource: cache, store: local }
`,
    { mode: 0o600 },
  );
}, 120_000);

afterAll(async () => {
  await redis?.stop();
  if (havePg) for (const db of [PG_SRC, ...PG_TARGETS]) await dropDb(db);
  if (haveMy) await dropDatabasesLike(`imp_`);
});

describe("dbkeep import: PostgreSQL", () => {
  const pgFiles = ["app_20250101_010000.sql.gz", "app-20250102-010000.dump", "app-20250103-010000.sql.gz", "app-20250104-010000.tar.lz4", "app-20250105-010000.sql.lz4"];

  it("adopts plain, custom and directory dumps in any compression, detected by content, as backups of the job", async (t) => {
    if (!havePg) return t.skip();
    const before = { schema: pgSchema(PG_SRC), content: await pgContent(PG_SRC) };
    const r = ok(dbkeep(["-c", cfg, "import", ...pgFiles.map((f) => join(files, f)), "--job", "pg-backup", "--json"]));
    const doc = JSON.parse(r.stdout) as { ok: boolean; files: { file: string; detected: string; format: string; backup: string; taken_from: string }[] };
    expect(doc.ok).toBe(true);
    expect(doc.files.map((f) => f.format)).toEqual(["plain", "custom", "custom", "directory", "plain"]);
    expect(doc.files[2]!.detected).toBe("pg_dump custom archive (zstd)");
    expect(r.stderr).toContain("the name says gzip, the content is zstd");
    expect(doc.files.every((f) => f.taken_from === "file name")).toBe(true);

    const listed = list("pg-backup");
    expect(listed.map((b) => b.id)).toEqual([5, 4, 3, 2, 1].map((d) => `${PG_SRC}-2025010${d}-010000`));
    for (const b of listed) {
      // Stored in the job's own compression, marked imported with the file it came from.
      expect(b.compression).toBe("zstd");
      expect(b.key.endsWith(".zst")).toBe(true);
      expect(b.imported?.taken_from).toBe("file name");
      expect(b.started_at).toMatch(/^2025-01-0\dT01:00:00/);
    }
    const byFile = new Map(listed.map((b) => [b.imported!.file, b]));
    expect(byFile.get("app-20250104-010000.tar.lz4")!.imported!.layers).toEqual(["lz4", "tar"]);
    expect(byFile.get("app-20250102-010000.dump")!.imported!.sha256).toBe(sh("sha256sum", [join(files, "app-20250102-010000.dump")]).toString().split(" ")[0]);

    // Each restores into a fresh database with the source's schema and content.
    for (const b of listed) {
      const target = await freshPg();
      ok(dbkeep(["-c", cfg, "restore", "pg-backup", b.id, "--to", `postgres://postgres@127.0.0.1/${target}`]));
      expect(pgSchema(target), b.imported!.file).toBe(before.schema);
      expect(await pgContent(target), b.imported!.file).toEqual(before.content);
    }
  }, 180_000);

  it("verify passes on an imported backup, and importing the same file again is a no-op", async (t) => {
    if (!havePg) return t.skip();
    const r = dbkeep(["-c", cfg, "verify", "pg-backup", `${PG_SRC}-20250102-010000`, "--json"]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const report = JSON.parse(r.stdout) as { checks: { name: string; status: string }[] };
    expect(report.checks.find((c) => c.name === "restore")?.status).toBe("PASS");
    expect(report.checks.filter((c) => c.status === "FAIL")).toEqual([]);
    const again = ok(dbkeep(["-c", cfg, "import", join(files, "app-20250102-010000.dump"), "--job", "pg-backup"]));
    expect(again.stdout).toContain(`already imported as ${PG_SRC}-20250102-010000`);
    expect(list("pg-backup")).toHaveLength(5);
  }, 120_000);

  it("a pg_dump directory given as a directory, with --taken-at; prune then keeps the newest by that time", async (t) => {
    if (!havePg) return t.skip();
    ok(dbkeep(["-c", cfg, "import", join(files, "pgdir"), "--job", "pg-backup", "--taken-at", "2025-02-01T00:00:00Z"]));
    const b = list("pg-backup")[0]!;
    expect(b.id).toBe(`${PG_SRC}-20250201-000000`);
    expect(b).toMatchObject({ format: "directory", imported: { layers: ["directory"], taken_from: "--taken-at" } });
    const target = await freshPg();
    ok(dbkeep(["-c", cfg, "restore", "pg-backup", "latest", "--to", `postgres://postgres@127.0.0.1/${target}`]));
    expect(await pgContent(target)).toEqual(await pgContent(PG_SRC));
    // keep_last: 2 of the job: the imported backups are its backups.
    ok(dbkeep(["-c", cfg, "prune", "pg-backup"]));
    expect(list("pg-backup").map((x) => x.id)).toEqual([`${PG_SRC}-20250201-000000`, `${PG_SRC}-20250105-010000`]);
  }, 120_000);

  it("restore FILE restores a bare dump straight into a target, for each pg_dump format", async (t) => {
    if (!havePg) return t.skip();
    const want = await pgContent(PG_SRC);
    for (const f of ["custom.dump", "pgdir.tar", "app_20250101_010000.sql.gz"]) {
      const target = await freshPg();
      const r = ok(dbkeep(["restore", join(files, f), "--to", `postgres://postgres@127.0.0.1/${target}`]));
      expect(r.stdout).toContain(`restored ${join(files, f)}`);
      expect(await pgContent(target), f).toEqual(want);
    }
  }, 120_000);
});

describe("dbkeep import: truncated and foreign files", () => {
  it("a truncated file is refused with a clear error and leaves nothing in the store", async (t) => {
    if (!havePg || !haveMy) return t.skip();
    const cut = (src: string, name: string, keep = 0.6) => {
      const b = readFileSync(join(files, src));
      writeFileSync(join(files, name), b.subarray(0, Math.floor(b.length * keep)));
      return join(files, name);
    };
    const cases: [string, string, RegExp][] = [
      [cut("custom.dump", "cut-custom.dump"), "pg-backup", /cannot be read to its end: pg_restore: error: could not read from input file/],
      [cut("plain.sql", "cut-plain.sql"), "pg-backup", /does not end with "-- PostgreSQL database dump complete": it was cut short/],
      [cut("app_20250101_010000.sql.gz", "cut-plain.sql.gz"), "pg-backup", /cannot be read to its end: unexpected end of file/],
      [cut("app-20250103-010000.sql.gz", "cut-custom.zst"), "pg-backup", /cannot be read to its end/],
      [cut("pgdir.tar", "cut-dir.tar", 0.5), "pg-backup", /cannot be read to its end/],
      [cut("my.sql", "cut-my.sql"), "my-backup", /does not end with "-- Dump completed": it was cut short/],
      [cut("lite.db", "cut-lite.db", 0.5), "lite-backup", /cannot be read to its end/],
    ];
    if (haveRedis) cases.push([cut("dump.rdb", "cut-dump.rdb", 0.7), "cache-backup", /cannot be read to its end/]);
    const before = storeFiles();
    for (const [file, job, why] of cases) {
      const r = dbkeep(["-c", cfg, "import", file, "--job", job]);
      expect(r.code, file).toBe(1);
      expect(r.stderr, file).toMatch(why);
      expect(r.stderr, file).toContain("hint: the file is truncated or damaged; nothing was imported or restored from it");
      expect(r.stdout).toBe("");
    }
    expect(storeFiles()).toEqual(before);
    // Nor directly into a database.
    const target = await freshPg();
    const r = dbkeep(["restore", join(files, "cut-custom.dump"), "--to", `postgres://postgres@127.0.0.1/${target}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cut-custom\.dump cannot be read to its end/);
    expect(await pgQuery("postgres", "SELECT 1 FROM pg_database WHERE datname = $1", [target])).toEqual([]);
  }, 120_000);

  it("a file that is no dump, or of another engine than the job's, is refused as a usage error", (t) => {
    if (!havePg) return t.skip();
    writeFileSync(join(files, "notes.sql"), "SELECT 1;\n");
    const a = dbkeep(["-c", cfg, "import", join(files, "notes.sql"), "--job", "pg-backup"]);
    expect(a.code).toBe(2);
    expect(a.stderr).toContain("notes.sql is not a dump dbkeep recognizes");
    const b = dbkeep(["-c", cfg, "import", join(files, "lite.db"), "--job", "pg-backup"]);
    expect(b.code).toBe(2);
    expect(b.stderr).toContain("lite.db is a SQLite database; job pg-backup is a postgres database");
  });
});

describe("dbkeep import: MariaDB, SQLite, Redis", () => {
  it("mariadb-dump SQL, gzip under a .dump name and zstd, imports and restores with the source's content", async (t) => {
    if (!haveMy) return t.skip();
    const want = await myContent(MY_SRC);
    const r = ok(dbkeep(["-c", cfg, "import", join(files, "shop-20250201-000000.dump"), join(files, "shop-20250202-000000.sql.zst"), "--job", "my-backup", "--json"]));
    const doc = JSON.parse(r.stdout) as { files: { detected: string }[] };
    expect(doc.files.map((f) => f.detected)).toEqual(["mariadb-dump SQL dump (gzip)", "mariadb-dump SQL dump (zstd)"]);
    const listed = list("my-backup");
    expect(listed.map((b) => [b.format, b.compression])).toEqual([["plain", "gzip"], ["plain", "gzip"]]);
    const target = `imp_tgt_${TAG}_my`;
    ok(dbkeep(["-c", cfg, "restore", "my-backup", listed[0]!.id, "--to", `mariadb://root@127.0.0.1:3306/${target}`]));
    expect(await myContent(target)).toEqual(want);
    // And straight from the file.
    const direct = `imp_tgt_${TAG}_mydirect`;
    ok(dbkeep(["restore", join(files, "shop-20250201-000000.dump"), "--to", `mariadb://root@127.0.0.1:3306/${direct}`]));
    expect(await myContent(direct)).toEqual(want);
  }, 120_000);

  it("a SQLite file (zstd) goes into an encrypted job encrypted, and restores with its identity", () => {
    const want = sqliteContent(join(files, "src.db"));
    const r = ok(dbkeep(["-c", cfg, "import", join(files, "lite-20250301-000000.db.zst"), "--job", "lite-backup"]));
    expect(r.stdout).toContain("imported as lite-20250301-000000");
    const [b] = list("lite-backup");
    expect(b).toMatchObject({ format: "file", compression: "lz4", engine: "sqlite" });
    expect(b!.key.endsWith(".db.lz4.age")).toBe(true);
    expect(b!.encryption).toMatchObject({ format: "age" });
    expect(readFileSync(join(backups, b!.key)).includes(Buffer.from("note 42"))).toBe(false);
    const out = join(dir, "lite-restored.db");
    ok(dbkeep(["-c", cfg, "restore", "lite-backup", b!.id, "--to", `sqlite:${out}`]));
    expect(sqliteContent(out)).toEqual(want);
    // The sqlite3 .backup file itself, straight into a new file.
    const direct = join(dir, "lite-direct.db");
    ok(dbkeep(["restore", join(files, "lite.db"), "--to", `sqlite:${direct}`]));
    expect(sqliteContent(direct)).toEqual(want);
  }, 60_000);

  it("a Redis RDB from redis-cli --rdb (gzip) imports, restores to the rdb_path, and a server loads the same data", async (t) => {
    if (!haveRedis || !redis) return t.skip();
    const want = await snapshotRedis(redis);
    ok(dbkeep(["-c", cfg, "import", join(files, "cache-20250401-000000.rdb.gz"), "--job", "cache-backup"]));
    const [b] = list("cache-backup");
    expect(b).toMatchObject({ id: "cache-20250401-000000", format: "rdb", engine: "redis" });
    mkdirSync(join(dir, "redis-target"), { recursive: true });
    ok(dbkeep(["-c", cfg, "restore", "cache-backup", b!.id, "--to", `redis://127.0.0.1:1?rdb_path=${join(dir, "redis-target", "dump.rdb")}`]));
    const loaded = await startRedis({ dir: join(dir, "redis-target") });
    try {
      expect(await snapshotRedis(loaded)).toEqual(want);
    } finally {
      await loaded.stop();
    }
  }, 60_000);
});

describe("dbkeep import: one-off and usage", () => {
  it("--to STORE adopts into a store by URL, named by the dump's database or --database; the file's mtime names it otherwise", () => {
    const store = join(dir, "oneoff");
    const file = join(dir, "plain-copy.db");
    copyFileSync(join(files, "lite.db"), file);
    const when = new Date("2024-05-06T07:08:09Z");
    utimesSync(file, when, when);
    const r = ok(dbkeep(["import", file, "--to", store, "--database", "notes", "--compression", "zstd"]));
    expect(r.stdout).toContain("imported as notes-20240506-070809");
    const l = JSON.parse(ok(dbkeep(["list", store, "--json"])).stdout) as { backups: Listed[] };
    expect(l.backups.map((b) => [b.id, b.compression, b.imported?.taken_from])).toEqual([["notes-20240506-070809", "zstd", "file mtime"]]);
    expect(existsSync(join(store, "notes", "notes-20240506-070809.db.zst"))).toBe(true);
    expect(statSync(file).mtime.getTime()).toBe(when.getTime());
  });

  it("restore FILE without --to goes into the datasource of the config's only job (seed 001's restore FILE)", () => {
    const live = join(dir, "single-live.db");
    const one = join(dir, "single.yaml");
    writeFileSync(one, `datasources:\n  app: { engine: sqlite, path: ${live} }\nstores:\n  local: { type: local, path: ${join(dir, "single-store")} }\njobs:\n  app: { datasource: app, store: local }\n`);
    const r = ok(dbkeep(["-c", one, "restore", join(files, "lite-20250301-000000.db.zst"), "--auto-confirm"]));
    expect(r.stdout).toContain(`into sqlite database`);
    expect(sqliteContent(live)).toEqual(sqliteContent(join(files, "src.db")));
    expect(dbkeep(["-c", cfg, "restore", join(files, "lite.db")]).stderr).toContain("restoring a dump file needs --to (the config has 4 jobs)");
  });

  it("--check-only checks and imports nothing; --taken-at with several files and --job with --to are usage errors", () => {
    const before = storeFiles();
    const r = ok(dbkeep(["-c", cfg, "import", join(files, "lite.db"), "--job", "lite-backup", "--check-only"]));
    expect(r.stdout).toMatch(/lite\.db: SQLite database; SQLite integrity_check ok, 1 tables/);
    expect(storeFiles()).toEqual(before);
    expect(dbkeep(["-c", cfg, "import", join(files, "lite.db"), join(files, "src.db"), "--job", "lite-backup", "--taken-at", "2025-01-01"]).code).toBe(2);
    expect(dbkeep(["-c", cfg, "import", join(files, "lite.db"), "--job", "lite-backup", "--to", dir]).code).toBe(2);
    expect(dbkeep(["-c", cfg, "import", join(files, "lite.db")]).stderr).toContain("dbkeep import needs --job NAME (or --to STORE)");
  });
});

// A renamed file keeps what it is: the extension plays no part (covered above by .dump holding gzip SQL and .sql.gz
// holding a zstd archive); renameSync is used to make sure a name without any extension works too.
describe("dbkeep import: names", () => {
  it("a file with no extension at all is detected", (t) => {
    if (!havePg) return t.skip();
    const bare = join(files, "backupfile");
    copyFileSync(join(files, "app-20250103-010000.sql.gz"), join(files, "tmp-bare"));
    renameSync(join(files, "tmp-bare"), bare);
    const r = ok(dbkeep(["-c", cfg, "import", bare, "--job", "pg-backup", "--check-only", "--json"]));
    expect((JSON.parse(r.stdout) as { files: { detected: string }[] }).files[0]!.detected).toBe("pg_dump custom archive (zstd)");
  });
});

/** Python with the `cryptography` package (an independent Fernet implementation), when this machine has one. */
function pythonFernet(): string | undefined {
  for (const py of ["python3", "python"]) {
    if (spawnSync(py, ["-c", "import cryptography.fernet"]).status === 0) return py;
  }
  return undefined;
}

describe("dbkeep import: seed 002's Fernet .enc files", () => {
  const enc = join(dir, "enc");
  const encStore = join(dir, "enc-backups");
  const encCfg = join(dir, "enc.yaml");
  const keyFile = join(enc, "dbvault.key");
  const KEY = fernetGenerateKey();
  // DBVault names its files backup.sql.gz.enc: no date, so the token's timestamp dates them.
  const PG_AT = new Date("2025-03-10T04:05:06Z");
  const MY_AT = new Date("2025-03-11T05:06:07Z");
  let encTargets = 0;
  const freshEnc = async (): Promise<string> => {
    const name = `imp_enc_${TAG}_${encTargets++}`;
    PG_TARGETS.push(name);
    await dropDb(name);
    return name;
  };
  const encFiles = (): string[] => {
    const out: string[] = [];
    const walk = (d: string) => {
      if (!existsSync(d)) return;
      for (const e of readdirSync(d, { withFileTypes: true })) {
        if (e.isDirectory()) walk(join(d, e.name));
        else out.push(join(d, e.name));
      }
    };
    walk(encStore);
    return out.sort();
  };

  beforeAll(() => {
    mkdirSync(join(enc, "pg"), { recursive: true });
    mkdirSync(join(enc, "my"), { recursive: true });
    writeFileSync(keyFile, KEY + "\n", { mode: 0o600 });
    writeFileSync(
      encCfg,
      `datasources:
  pg: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${PG_SRC} }
  my: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MY_SRC} }
stores:
  local: { type: local, path: ${encStore} }
jobs:
  enc-pg: { datasource: pg, store: local }
  enc-my: { datasource: my, store: local }
`,
    );
    // As DBVault made them: the dump gzipped, then the whole .gz encrypted into one Fernet token.
    if (havePg) writeFileSync(join(enc, "pg", "backup.sql.gz.enc"), fernetEncrypt(readFileSync(join(files, "app_20250101_010000.sql.gz")), KEY, { now: PG_AT }));
  });

  it("a pg_dump plain SQL .enc imports into a job with --key-file, dated by its token, and restores equal; restore FILE.enc too", async (t) => {
    if (!havePg) return t.skip();
    const file = join(enc, "pg", "backup.sql.gz.enc");
    const r = ok(dbkeep(["-c", encCfg, "import", file, "--job", "enc-pg", "--key-file", keyFile, "--json"]));
    const doc = JSON.parse(r.stdout) as { files: { detected: string; format: string; taken_at: string; taken_from: string }[] };
    expect(doc.files[0]).toMatchObject({ detected: "pg_dump plain SQL dump (fernet + gzip)", format: "plain", taken_from: "fernet timestamp", taken_at: PG_AT.toISOString() });
    expect(r.stderr + r.stdout).not.toContain(KEY);
    const [b, ...rest] = (JSON.parse(ok(dbkeep(["-c", encCfg, "list", "enc-pg", "--json"])).stdout) as { backups: Listed[] }).backups;
    expect(rest).toEqual([]);
    expect(b).toMatchObject({ id: `${PG_SRC}-20250310-040506`, format: "plain", imported: { file: "backup.sql.gz.enc", layers: ["fernet", "gzip"], taken_from: "fernet timestamp" } });
    expect(b!.imported!.sha256).toBe(sh("sha256sum", [file]).toString().split(" ")[0]);
    // The decrypted copy lived in a private temporary directory that is gone.
    expect(readdirSync(join(enc, "pg"))).toEqual(["backup.sql.gz.enc"]);

    const want = { schema: pgSchema(PG_SRC), content: await pgContent(PG_SRC) };
    const target = await freshEnc();
    ok(dbkeep(["-c", encCfg, "restore", "enc-pg", b!.id, "--to", `postgres://postgres@127.0.0.1/${target}`]));
    expect(pgSchema(target)).toBe(want.schema);
    expect(await pgContent(target)).toEqual(want.content);

    const direct = await freshEnc();
    ok(dbkeep(["restore", file, "--to", `postgres://postgres@127.0.0.1/${direct}`, "--key-env", "DBVAULT_KEY"], { env: { DBVAULT_KEY: KEY } }));
    expect(await pgContent(direct)).toEqual(want.content);
  }, 120_000);

  it("a mariadb-dump .enc made by Python's cryptography.fernet imports with --key-env and restores equal", async (t) => {
    const py = pythonFernet();
    if (!haveMy) return t.skip();
    if (!py) {
      if (IN_CI) throw new Error("python3 with the cryptography package is required under CI");
      return t.skip();
    }
    const gz = join(enc, "my", "backup.sql.gz");
    compress.gzip!(join(files, "my.sql"), gz);
    const file = join(enc, "my", "backup.sql.gz.enc");
    const script = "import sys; from cryptography.fernet import Fernet; sys.stdout.buffer.write(Fernet(sys.argv[1].encode()).encrypt_at_time(sys.stdin.buffer.read(), int(sys.argv[2])))";
    const made = spawnSync(py, ["-c", script, KEY, String(MY_AT.getTime() / 1000)], { input: readFileSync(gz), maxBuffer: 256 * 1024 * 1024 });
    expect(made.status, made.stderr?.toString()).toBe(0);
    writeFileSync(file, made.stdout);
    const r = ok(dbkeep(["-c", encCfg, "import", file, "--job", "enc-my", "--key-env", "DBVAULT_KEY"], { env: { DBVAULT_KEY: KEY } }));
    expect(r.stdout).toContain(`imported as ${MY_SRC}-20250311-050607  mariadb-dump SQL dump (fernet + gzip), taken 2025-03-11 05:06:07 (fernet timestamp)`);
    const [b] = (JSON.parse(ok(dbkeep(["-c", encCfg, "list", "enc-my", "--json"])).stdout) as { backups: Listed[] }).backups;
    const target = `imp_enc_${TAG}_my`;
    ok(dbkeep(["-c", encCfg, "restore", "enc-my", b!.id, "--to", `mariadb://root@127.0.0.1:3306/${target}`]));
    expect(await myContent(target)).toEqual(await myContent(MY_SRC));
  }, 120_000);

  it("a wrong key, or none, is refused with a clear error and nothing is stored or restored", async (t) => {
    if (!havePg) return t.skip();
    const file = join(enc, "pg", "backup.sql.gz.enc");
    const wrong = join(enc, "wrong.key");
    writeFileSync(wrong, fernetGenerateKey(), { mode: 0o600 });
    const before = encFiles();
    const r = dbkeep(["-c", encCfg, "import", file, "--job", "enc-pg", "--key-file", wrong]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}: the Fernet token's HMAC does not match: wrong key, or the file was changed after it was encrypted`);
    expect(r.stderr).toContain("hint: check --key-env / --key-file");
    expect(r.stderr).not.toContain(readFileSync(wrong, "utf8"));
    expect(r.stdout).toBe("");
    const none = dbkeep(["-c", encCfg, "import", file, "--job", "enc-pg"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("it needs its key");
    expect(encFiles()).toEqual(before);
    const target = `imp_enc_${TAG}_wrong`;
    PG_TARGETS.push(target);
    const direct = dbkeep(["restore", file, "--to", `postgres://postgres@127.0.0.1/${target}`, "--key-file", wrong]);
    expect(direct.code).toBe(1);
    expect(direct.stderr).toContain("HMAC does not match");
    expect(await pgQuery("postgres", "SELECT 1 FROM pg_database WHERE datname = $1", [target])).toEqual([]);
  }, 60_000);
});
