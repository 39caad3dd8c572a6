import { spawn } from "node:child_process";
import { cpSync, existsSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, tempDir } from "../helpers/env.js";
import { checkOf, dataPath, editManifest, flipByte, parseReport, rewriteDump } from "../helpers/verify.js";

const FIX = "dbkeep_it_verify_fixture";
const SMALL = "dbkeep_it_verify_small";
const BIG = "dbkeep_it_verify_big";
const ON = pgUrl("postgres");
const available = await pgAvailable();

async function scratchDbs(): Promise<string[]> {
  // Only this file's runs: their scratch names carry the job name "" (one-off) or "pgverify".
  const rows = await pgQuery<{ datname: string }>("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'dbkeep\\_verify\\_%' ORDER BY 1");
  return rows.map((r) => r.datname).filter((n) => /^dbkeep_verify_(pgverify)?_/.test(n));
}

function backup(db: string, store: string): void {
  const r = dbkeep(["backup", pgUrl(db, "compression=none"), "--to", store]);
  expect(r.code, r.stderr).toBe(0);
}

function verify(store: string, ...extra: string[]) {
  const r = dbkeep(["verify", store, "latest", "--on", ON, "--json", ...extra]);
  expect(r.stdout, r.stderr).not.toBe("");
  return { code: r.code, report: parseReport(r.stdout), stderr: r.stderr };
}

const SMALL_SQL = `
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id), m mood);
CREATE INDEX child_parent_idx ON child (parent_id);
CREATE VIEW sad_children AS SELECT id FROM child WHERE m = 'sad';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER child_touch BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
INSERT INTO schema_migrations VALUES (20260101120000, false);
INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 50) g;
INSERT INTO child SELECT g, 1 + g % 50, CASE WHEN g % 3 = 0 THEN 'sad'::mood ELSE 'ok' END FROM generate_series(1, 200) g;
`;

describe.skipIf(!available)("dbkeep verify: PostgreSQL", () => {
  const dir = tempDir("dbkeep-it-verify-pg-");
  const fixtureStore = join(dir, "fixture");
  const smallStore = join(dir, "small");

  beforeAll(async () => {
    await createDb(FIX);
    const { execFileSync } = await import("node:child_process");
    execFileSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-d", FIX, "-f", join(import.meta.dirname, "../fixtures/postgres-fixture.sql")], { stdio: ["ignore", "ignore", "inherit"] });
    await createDb(SMALL);
    await pgQuery(SMALL, SMALL_SQL);
    backup(FIX, fixtureStore);
    backup(SMALL, smallStore);
  });

  afterAll(async () => {
    for (const db of [FIX, SMALL, BIG]) await dropDb(db);
  });

  it("a good backup passes every check, with exact row counts from the dump's snapshot, and its scratch database is gone", async () => {
    const { code, report } = verify(fixtureStore);
    expect(code).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.checks.filter((c) => c.status !== "PASS")).toEqual([]);
    for (const name of ["checksum", "restore", "tables", "row_counts", "indexes", "foreign_keys", "views", "functions", "triggers", "sequences", "types", "orphans", "integrity"]) {
      expect(checkOf(report, name).status).toBe("PASS");
    }
    expect(checkOf(report, "integrity").detail).toMatch(/amcheck/);
    expect(report.target.kind).toBe("database");
    expect(report.target.name).toMatch(/^dbkeep_verify__[0-9a-f]{4}_\d+_[0-9a-f]{4}$/);
    expect(report.restore?.seconds).toBeGreaterThan(0);
    expect(report.restore?.raw_bytes_per_second).toBeGreaterThan(0);
    expect(await scratchDbs()).toEqual([]);
    // The report is stored beside the backup, and list does not count it as a leftover.
    expect(readdirSync(join(fixtureStore, FIX)).some((f) => f.endsWith(".verify.json"))).toBe(true);
    expect(dbkeep(["list", fixtureStore, "--all"]).stdout).toContain("no leftovers");
  });

  it("a manifest that claims a table, rows and an index the backup lacks fails tables, row_counts and indexes", async () => {
    const store = join(dir, "claims");
    cpSync(smallStore, store, { recursive: true });
    editManifest(store, (m) => {
      const tables = m.tables as { name: string; rows?: number; rows_estimate?: number }[];
      tables.find((t) => t.name === "public.parent")!.rows = 51;
      tables.push({ name: "public.ghost", rows_estimate: 10 });
      (m.objects as Record<string, string[]>).indexes!.push("public.ghost_idx");
    });
    const { code, report } = verify(store);
    expect(code).toBe(1);
    expect(report.ok).toBe(false);
    expect(checkOf(report, "tables")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("missing 1 of 4: public.ghost") });
    expect(checkOf(report, "row_counts")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("public.parent: 50 rows, expected 51") });
    expect(checkOf(report, "indexes")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("public.ghost_idx") });
    expect(checkOf(report, "views").status).toBe("PASS");
    expect(await scratchDbs()).toEqual([]);
  });

  it("a plain dump edited before it was stored (an index and a row taken out) fails indexes and row_counts", async () => {
    const store = join(dir, "edited");
    cpSync(smallStore, store, { recursive: true });
    rewriteDump(store, (sql) => sql.replace(/CREATE INDEX child_parent_idx ON public\.child USING btree \(parent_id\);\n/, "").replace(/\n200\t1\tok\n/, "\n"));
    const { code, report } = verify(store);
    expect(code).toBe(1);
    expect(checkOf(report, "checksum").status).toBe("PASS");
    expect(checkOf(report, "restore").status).toBe("PASS");
    expect(checkOf(report, "tables").status).toBe("PASS");
    expect(checkOf(report, "indexes")).toMatchObject({ status: "FAIL", detail: "missing 1 of 4: public.child_parent_idx" });
    expect(checkOf(report, "row_counts")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("public.child: 199 rows, expected 200") });
  });

  it("a corrupted object fails at the checksum, and nothing is restored", async () => {
    const store = join(dir, "corrupt");
    cpSync(smallStore, store, { recursive: true });
    flipByte(dataPath(store), 500);
    const { code, report } = verify(store);
    expect(code).toBe(1);
    expect(checkOf(report, "checksum")).toMatchObject({ status: "FAIL", detail: expect.stringMatching(/SHA-256|checksum/i) });
    expect(checkOf(report, "restore")).toMatchObject({ status: "SKIP", detail: "not run: the backup failed its checksum" });
    expect(report.restore).toBeNull();
    expect(report.target.name).toBe("");
    expect(await scratchDbs()).toEqual([]);
    // The human table says the same.
    const human = dbkeep(["verify", store, "--on", ON]);
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/checksum\s+FAIL\s+\S/);
    expect(human.stdout).toMatch(/restore\s+SKIP\s+not run: the backup failed its checksum/);
    expect(human.stdout).toMatch(/FAILED: 0 passed, 1 failed, 4 skipped/);
  });

  it("a job's migration table, SQL assertions and health check run against the scratch copy", async () => {
    const port = 20000 + (process.pid % 20000);
    const app = `node -e "require('http').createServer((q,s)=>{s.statusCode=(process.env.PGDATABASE||'').startsWith('dbkeep_verify_pgverify_')?200:503;s.end()}).listen(${port},'127.0.0.1')"`;
    const cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  small: { engine: postgres, host: 127.0.0.1, port: 5432, user: postgres, database: ${SMALL}, compression: none }
stores:
  local: { type: local, path: ${join(dir, "job-store")} }
jobs:
  pgverify:
    datasource: small
    store: local
    verification:
      migrations: { table: schema_migrations, expect_version: 20260101120000 }
      assertions:
        - { name: parents, query: "SELECT count(*) FROM parent", expect: 50 }
        - { name: no-orphans, query: "SELECT count(*) = 0 FROM child WHERE parent_id IS NULL", expect: true }
        - { name: wrong, query: "SELECT max(id) FROM child", expect: 201 }
      health_check: { url: "http://127.0.0.1:${port}/health", command: ${JSON.stringify(app)}, timeout: 20 }
`,
    );
    expect(dbkeep(["-c", cfg, "backup", "pgverify"]).code).toBe(0);
    const r = dbkeep(["-c", cfg, "verify", "pgverify", "--json"]);
    const report = parseReport(r.stdout);
    expect(r.code).toBe(1);
    expect(report.job).toBe("pgverify");
    expect(checkOf(report, "migrations")).toMatchObject({ status: "PASS", detail: "version 20260101120000, clean" });
    expect(checkOf(report, "assertion:parents")).toMatchObject({ status: "PASS", detail: "= 50" });
    expect(checkOf(report, "assertion:no-orphans").status).toBe("PASS");
    expect(checkOf(report, "assertion:wrong")).toMatchObject({ status: "FAIL", detail: "got 200, expected 201" });
    expect(checkOf(report, "health_check")).toMatchObject({ status: "PASS", detail: expect.stringContaining("answered 200") });
    expect(report.checks.filter((c) => c.status === "FAIL").map((c) => c.name)).toEqual(["assertion:wrong"]);
    expect(await scratchDbs()).toEqual([]);
  });

  it("in a scratch cluster started from the local binaries, removed afterwards", () => {
    const before = readdirSync(tmpdir()).filter((n) => n.startsWith("dbkeep-verify-pg-"));
    const r = dbkeep(["verify", smallStore, "latest", "--scratch-cluster", "--json"]);
    const report = parseReport(r.stdout);
    expect(r.code, r.stderr).toBe(0);
    expect(report.target.kind).toBe("cluster");
    expect(report.target.where).toMatch(/^scratch cluster 127\.0\.0\.1:\d+/);
    expect(report.checks.filter((c) => c.status === "FAIL")).toEqual([]);
    expect(checkOf(report, "row_counts").status).toBe("PASS");
    expect(existsSync(report.target.name)).toBe(false);
    expect(readdirSync(tmpdir()).filter((n) => n.startsWith("dbkeep-verify-pg-"))).toEqual(before);
  });

  it("--keep leaves the scratch database, marked so that later runs do not drop it", async () => {
    const kept = verify(smallStore, "--keep").report;
    expect(kept.target.kept).toBe(true);
    try {
      expect(await scratchDbs()).toEqual([kept.target.name]);
      const next = verify(smallStore).report;
      expect(next.leftovers_removed).toEqual([]);
      expect(await scratchDbs()).toEqual([kept.target.name]);
      expect((await pgQuery<{ n: string }>(kept.target.name, "SELECT count(*) AS n FROM parent"))[0]?.n).toBe("50");
    } finally {
      await dropDb(kept.target.name);
    }
  });

  it("a verify killed mid-restore leaves its scratch database, and the next run drops it", async () => {
    await createDb(BIG);
    await pgQuery(BIG, "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat(' payload ', 8) AS v FROM generate_series(1, 250000) g");
    const store = join(dir, "big");
    backup(BIG, store);
    const child = spawn(process.execPath, [CLI, "verify", store, "latest", "--on", ON, "--json"], { env: { ...process.env, ...CLI_ENV }, stdio: "ignore" });
    const exited = new Promise((r) => child.once("exit", r));
    let seen: string[] = [];
    for (let i = 0; i < 400 && seen.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
      seen = await scratchDbs();
    }
    expect(seen.length).toBeGreaterThan(0);
    child.kill("SIGKILL");
    await exited;
    expect((await scratchDbs()).length).toBeGreaterThan(0);
    const { code, report } = verify(store);
    expect(code).toBe(0);
    expect(report.leftovers_removed.length).toBeGreaterThan(0);
    for (const name of report.leftovers_removed) expect(name).toContain(`_${child.pid}_`);
    expect(checkOf(report, "row_counts")).toMatchObject({ status: "PASS", detail: expect.stringContaining("250000 row(s)") });
    expect(await scratchDbs()).toEqual([]);
  });
});
