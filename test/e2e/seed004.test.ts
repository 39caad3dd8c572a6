import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseCsv } from "../helpers/csv.js";
import { createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, ROOT, tempDir } from "../helpers/env.js";
import { contentOf } from "../helpers/pgcompare.js";
import { contentOf as myContentOf, myAvailable, myQuery } from "../helpers/mysql.js";

/**
 * A user of the DB Backup Utility (seed 004) opens dbkeep's console and types that tool's commands as its README
 * shows them; then checks what such a user checks: the backups restore to the database as it was, the table backup
 * holds only its tables, the differential restores the changes, the extract holds the query's rows, and the
 * backup_catalog.json their scripts read has that tool's shape.
 */

const pgUp = await pgAvailable();
const myUp = await myAvailable();
const SRC = "s4_src";
const FULL = "s4_full";
const DIFF = "s4_diff";
const PART = "s4_part";

// PostgreSQL's JIT compiles the catalog queries of a differential job for seconds on a busy machine; what this file
// checks is the vocabulary, not the planner.
const ENV = { PGOPTIONS: "-c jit=off" };

interface Manifest {
  id: string;
  started_at: string;
  duration_seconds: number;
  key: string;
  sha256: string;
  stored_bytes: number;
  compression: string;
  selection?: { tables: string[] };
  tables?: { name: string; rows?: number }[];
  differential?: { kind: string; base?: { id: string } };
}

function manifests(dir: string): Manifest[] {
  const out: Manifest[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith(".manifest.json")) out.push(JSON.parse(readFileSync(join(d, e.name), "utf8")) as Manifest);
    }
  };
  walk(dir);
  return out.sort((a, b) => (a.started_at < b.started_at ? -1 : 1));
}

const SEED_KEYS = ["id", "type", "status", "timestamp_start", "duration_seconds", "compress", "backup_location", "statistics"];
const SEED_STATS = ["total_tables", "total_rows_processed", "total_size_bytes"];

describe.skipIf(!pgUp)("seed 004's console commands and backup_catalog.json", () => {
  let dir: string;
  let before: Record<string, string>;
  let after: Record<string, string>;
  let session: { code: number; stdout: string; stderr: string };

  beforeAll(async () => {
    dir = tempDir("dbkeep-s4-");
    for (const d of [SRC, FULL, DIFF, PART]) await dropDb(d);
    await createDb(SRC);
    await pgQuery(
      SRC,
      `CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, is_active boolean NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
       CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users(id), total numeric(10,2), updated_at timestamptz NOT NULL DEFAULT now());
       CREATE TABLE audit (id serial PRIMARY KEY, what text, updated_at timestamptz NOT NULL DEFAULT now());
       INSERT INTO users SELECT g, 'user' || g || '@example.com', g % 3 <> 0 FROM generate_series(1, 150) g;
       INSERT INTO orders SELECT g, g % 150 + 1, g * 2.5 FROM generate_series(1, 400) g;
       INSERT INTO audit (what) SELECT 'event ' || g FROM generate_series(1, 20) g;`,
    );
    before = await contentOf(SRC);
    // The session as a user of seed 004 types it: the README's commands, in its order, answering the question
    // the console asks before a statement that changes data.
    const lines = [
      "help",
      `full database -path ${dir}/backups`,
      `full tables -tablename users -tablename orders -path ${dir}/tables`,
      "SQL SELECT * FROM users WHERE id < 4",
      `SQL SELECT id, email FROM users WHERE is_active = true -extract -path ${dir}/exports`,
      "SQL UPDATE users SET email = 'changed@example.com', updated_at = now() WHERE id = 7",
      "y",
      "SQL INSERT INTO users (id, email, is_active) VALUES (1001, 'late@example.com', true)",
      "y",
      "SQL INSERT INTO audit (what) VALUES ('after the full backup')",
      "y",
      "differential backup",
      "exit",
    ];
    session = dbkeep(["console", pgUrl(SRC)], { input: lines.join("\n") + "\n", env: ENV });
    after = await contentOf(SRC);
  }, 120_000);

  afterAll(async () => {
    for (const d of [SRC, FULL, DIFF, PART]) await dropDb(d);
  });

  it("runs every command of the session; help names the seed's commands", () => {
    expect(session.code, session.stderr).toBe(0);
    expect(session.stdout).not.toMatch(/^error:/m);
    expect(session.stdout).toContain("full tables -tablename A -tablename B -path P");
    expect(session.stdout).toMatch(/full backup s4_src-\d{8}-\d{6}(?:-\d+)?: .* s4_src\/s4_src-\d{8}-\d{6}(?:-\d+)?\.sql\.zst/);
    expect(session.stdout).toMatch(/partial backup s4_src-\d{8}-\d{6}(?:-\d+)?: .*\.sql\.zst/);
    expect(session.stdout).toMatch(/differential backup s4_src-\d{8}-\d{6}(?:-\d+)?: .*\.diff\.sql\.zst/);
    // SQL without -extract shows the rows.
    expect(session.stdout).toMatch(/ 3 \| user3@example\.com\s+\| false/);
    expect(before).not.toEqual(after);
  });

  it("full database wrote a zstd backup to -path that restores to the database as it was", async () => {
    const [full, diff] = manifests(join(dir, "backups"));
    expect(full?.differential?.kind).toBe("full");
    expect(full?.compression).toBe("zstd");
    await createDb(FULL);
    const r = dbkeep(["restore", join(dir, "backups"), full!.id, "--to", pgUrl(FULL), "--auto-confirm"], { env: ENV });
    expect(r.code, r.stderr).toBe(0);
    expect(await contentOf(FULL)).toEqual(before);
    // The differential went where the full backup went, and builds on it.
    expect(diff?.differential).toMatchObject({ kind: "differential", base: { id: full!.id } });
  });

  it("differential backup restores the changes made after the full backup", async () => {
    const [, diff] = manifests(join(dir, "backups"));
    const r = dbkeep(["restore", join(dir, "backups"), diff!.id, "--to", pgUrl(DIFF)], { env: ENV });
    expect(r.code, r.stderr).toBe(0);
    expect(await contentOf(DIFF)).toEqual(after);
    expect((await pgQuery<{ email: string }>(DIFF, "SELECT email FROM users WHERE id = 7"))[0]?.email).toBe("changed@example.com");
  });

  it("full tables holds only the tables named by -tablename, and restores them", async () => {
    const [m, ...more] = manifests(join(dir, "tables"));
    expect(more).toHaveLength(0);
    expect(m?.selection?.tables).toEqual(["public.orders", "public.users"]);
    expect(m?.tables?.map((t) => t.name).sort()).toEqual(["public.orders", "public.users"]);
    const r = dbkeep(["restore", join(dir, "tables"), "latest", "--to", pgUrl(PART)], { env: ENV });
    expect(r.code, r.stderr).toBe(0);
    const restored = await contentOf(PART);
    expect(Object.keys(restored).filter((k) => !k.startsWith("sequence") && k !== "large objects").sort()).toEqual(["public.orders", "public.users"]);
    expect(restored["public.users"]).toBe(before["public.users"]);
    expect(restored["public.orders"]).toBe(before["public.orders"]);
  });

  it("SQL ... -extract -path writes the query's rows as CSV into the directory", async () => {
    const files = readdirSync(join(dir, "exports"));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^s4_src_query_\d{8}_\d{6}\.csv$/);
    const [header, ...rows] = parseCsv(readFileSync(join(dir, "exports", files[0]!), "utf8"));
    expect(header).toEqual(["id", "email"]);
    const want = await pgQuery<{ id: number; email: string }>(FULL, "SELECT id, email FROM users WHERE is_active = true");
    expect(rows.map((r) => r.join(",")).sort()).toEqual(want.map((w) => `${w.id},${w.email}`).sort());
    expect(rows).toHaveLength(100);
  });

  it("a new session started as the seed tool was (--config file with .env): differential backup without a store says what to give; unknown seed commands say what to use", () => {
    const cwd = join(dir, "project");
    mkdirSync(cwd);
    writeFileSync(join(cwd, ".env"), "# PostgreSQL example\nDB_HOST=127.0.0.1\nDB_PORT=5432\nDB_USER=postgres\nDB_PASSWORD=changeme\nDB_NAME=s4_src\n");
    const r = dbkeep(["console", "--db", "postgres", "--database", SRC, "--storage", "local", "--config", "file"], {
      cwd,
      input: "differential backup\nfull\nfull tables -path /tmp/x\nincremental backup\nfull database -compress\nSQL SELECT count(*) AS n FROM users\n",
      env: ENV,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/connected to postgres postgres@127\.0\.0\.1:5432\/s4_src/);
    expect(r.stdout).toMatch(/\n151\n\(1 row\)/);
    expect(r.stdout + r.stderr).not.toContain("changeme");
    expect(r.stdout).toMatch(/error: differential backup needs -path DIR: this console has no store\nhint: give the directory of the full backup: differential backup -path DIR/);
    expect(r.stdout).toMatch(/error: full needs what to back up\nhint: full database -path P, or full tables -tablename T/);
    expect(r.stdout).toMatch(/error: full tables needs at least one -tablename/);
    expect(r.stdout).toMatch(/error: incremental backups do not exist.*\nhint: differential backup keeps the changes/);
    expect(r.stdout).toMatch(/error: full database: unknown option -compress/);
    expect(existsSync("/tmp/x")).toBe(false);

    // --config manual: the flags alone; --password is accepted with a warning that names the safer ways.
    const m = dbkeep(["console", "--db", "postgres", "--database", SRC, "--storage", "local", "--config", "manual", "--host", "127.0.0.1", "--port", "5432", "--user", "postgres", "--password", "changeme"], {
      input: "SQL SELECT email FROM users WHERE id = 7\n",
      env: ENV,
    });
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toContain("changed@example.com");
    expect(m.stderr).toMatch(/--password is visible to other users in the process list: put DB_PASSWORD in \.env \(--config file\) or set PGPASSWORD/);
  });

  it("catalog export writes backup_catalog.json in seed 004's shape, field by field", () => {
    const out = join(dir, "backup_catalog.json");
    const r = dbkeep(["catalog", "export", join(dir, "backups"), "-o", out]);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(readFileSync(out, "utf8")) as { backups: Record<string, unknown>[] };
    expect(Object.keys(doc)).toEqual(["backups"]);
    const ms = manifests(join(dir, "backups"));
    expect(doc.backups).toHaveLength(2);
    doc.backups.forEach((b, i) => {
      const m = ms[i]!;
      const type = i === 0 ? "full" : "differential";
      expect(Object.keys(b)).toEqual(SEED_KEYS);
      expect(b.id).toMatch(new RegExp(`^${type}_s4_src_\\d{8}_\\d{6}_[0-9a-f]{4}$`));
      const t = m.started_at;
      expect(b.id).toBe(`${type}_s4_src_${t.slice(0, 4)}${t.slice(5, 7)}${t.slice(8, 10)}_${t.slice(11, 13)}${t.slice(14, 16)}${t.slice(17, 19)}_${m.sha256.slice(0, 4)}`);
      expect(b.type).toBe(type);
      expect(b.status).toBe("completed");
      expect(b.timestamp_start).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$/);
      expect(Date.parse(b.timestamp_start as string)).toBe(Math.floor(Date.parse(m.started_at) / 1000) * 1000);
      expect(typeof b.duration_seconds).toBe("number");
      expect(b.duration_seconds).toBeCloseTo(m.duration_seconds, 1);
      expect(b.compress).toBe(true);
      expect(b.backup_location).toBe(join(dir, "backups", m.key));
      const stats = b.statistics as Record<string, number>;
      expect(Object.keys(stats)).toEqual(SEED_STATS);
      expect(stats.total_size_bytes).toBe(statSync(b.backup_location as string).size);
      for (const k of SEED_STATS) expect(Number.isInteger(stats[k])).toBe(true);
    });
    const full = doc.backups[0]!.statistics as Record<string, number>;
    expect(full.total_tables).toBe(3);
    expect(full.total_rows_processed).toBe(150 + 400 + 20);

    // A table backup is "partial", with its two tables; without -o the catalog goes to stdout.
    const p = dbkeep(["catalog", "export", join(dir, "tables")]);
    expect(p.code, p.stderr).toBe(0);
    const partial = (JSON.parse(p.stdout) as { backups: Record<string, unknown>[] }).backups;
    expect(partial).toHaveLength(1);
    expect(partial[0]).toMatchObject({ type: "partial", statistics: { total_tables: 2, total_rows_processed: 550 } });
    expect(partial[0]!.id).toMatch(/^partial_s4_src_\d{8}_\d{6}_[0-9a-f]{4}$/);
  });
});

describe.skipIf(!myUp)("seed 004's console commands on MySQL/MariaDB", () => {
  const DB = "s4_my_src";
  const COPY = "s4_my_copy";
  afterAll(async () => {
    for (const d of [DB, COPY]) await myQuery(`DROP DATABASE IF EXISTS ${d}`);
  });

  it("full database, an UPDATE typed as SQL, differential backup: the chain restores the change", async () => {
    const dir = tempDir("dbkeep-s4my-");
    for (const d of [DB, COPY]) await myQuery(`DROP DATABASE IF EXISTS ${d}`);
    await myQuery(`CREATE DATABASE ${DB}`);
    await myQuery(
      `CREATE TABLE users (id int PRIMARY KEY, email varchar(80), updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6));
       INSERT INTO users (id, email) VALUES (1, 'a@example.com'), (2, 'b@example.com'), (3, 'c@example.com');`,
      DB,
    );
    const lines = [`full database -path ${dir}/backups`, "SQL UPDATE users SET email = 'changed@example.com' WHERE id = 2", "y", "differential backup", "exit"];
    const r = dbkeep(["console", "--db", "mysql", "--database", DB, "--host", "127.0.0.1", "--port", "3306", "--user", "root", "--storage", "local", "--config", "manual"], { input: lines.join("\n") + "\n" });
    expect(r.code, r.stderr).toBe(0);
    // A write on MySQL says what it did (it once ended the console without a word).
    expect(r.stdout).toMatch(/UPDATE: 1 row affected/);
    expect(r.stdout).toMatch(/differential backup s4_my_src-\d{8}-\d{6}(?:-\d+)?: .*\.diff\.sql\.zst/);
    const [, diff] = manifests(join(dir, "backups"));
    expect(diff?.differential?.kind).toBe("differential");
    const restore = dbkeep(["restore", join(dir, "backups"), diff!.id, "--to", `mysql://root@127.0.0.1:3306/${COPY}`]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(await myContentOf(COPY)).toEqual(await myContentOf(DB));
    expect(await myQuery("SELECT email FROM users WHERE id = 2", COPY)).toEqual([["changed@example.com"]]);
  }, 60_000);
});

describe("seed 004's console commands on an engine without differentials", () => {
  it("full database backs SQLite up; differential backup says what to do instead", () => {
    const dir = tempDir("dbkeep-s4lite-");
    const r = dbkeep(["console", `sqlite:${join(ROOT, "examples/app.db")}`], { input: `full database -path ${dir}/b\ndifferential backup\n` });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/full backup app-\d{8}-\d{6}(?:-\d+)?: .*app\/app-\d{8}-\d{6}(?:-\d+)?\.db\.zst/);
    expect(r.stdout).toMatch(/error: differential backups need PostgreSQL, or MySQL\/MariaDB .*this is sqlite\nhint: make a full backup instead/);
    expect(manifests(join(dir, "b"))).toHaveLength(1);
  });
});
