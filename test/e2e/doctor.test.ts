import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeep, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";
import { myAvailable, myQuery } from "../helpers/mysql.js";

const hex = randomBytes(4).toString("hex");
const ROLE = `dbkeep_doc_${hex}`;
const PGDB = `dbkeep_doc_${hex}`;
const MYUSER = `dbkeep_doc_${hex}`;
const MYDB = `dbkeep_doc_${hex}`;
const pgUp = await pgAvailable();
const myUp = await myAvailable();

function config(dir: string, datasources: string): string {
  const file = join(dir, `dbkeep-${randomBytes(3).toString("hex")}.yaml`);
  writeFileSync(file, `datasources:\n${datasources}\nstores:\n  local:\n    type: local\n    path: ${join(dir, "backups")}\njobs: {}\n`);
  return file;
}

describe.skipIf(!pgUp)("dbkeep doctor: PostgreSQL", () => {
  let dir: string;

  beforeAll(async () => {
    dir = tempDir();
    await pgQuery("postgres", `CREATE DATABASE ${PGDB}`);
    await pgQuery(PGDB, `CREATE TABLE open_t (id int); CREATE TABLE secret_t (id int); CREATE ROLE ${ROLE} LOGIN; GRANT SELECT ON open_t TO ${ROLE}`);
  });

  afterAll(async () => {
    await pgQuery("postgres", `DROP DATABASE IF EXISTS ${PGDB} WITH (FORCE)`);
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
  });

  it("reports pg_dump and server versions of a healthy datasource, exit 0", () => {
    const cfg = config(dir, `  pg:\n    engine: postgres\n    host: 127.0.0.1\n    user: postgres\n    database: ${PGDB}`);
    const r = dbkeep(["-c", cfg, "doctor"]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/✓ pg_dump \d+\.\d+/);
    expect(r.stdout).toMatch(/✓ server PostgreSQL \d+\.\d+/);
    const j = dbkeep(["-c", cfg, "doctor", "pg", "--json"]);
    expect(j.code).toBe(0);
    const doc = JSON.parse(j.stdout) as { ok: boolean; datasources: { datasource: string; findings: { level: string }[] }[] };
    expect(doc.ok).toBe(true);
    expect(doc.datasources[0]!.datasource).toBe("pg");
    expect(doc.datasources[0]!.findings.every((f) => f.level !== "error")).toBe(true);
  });

  it("says an old pg_dump cannot dump the newer server, with the hint, exit 1", () => {
    const bin = join(dir, "oldbin");
    // A directory with only a fake pg_dump 9.6 in it.
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(bin, "pg_dump"), "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n");
    chmodSync(join(bin, "pg_dump"), 0o755);
    const cfg = config(dir, `  old:\n    engine: postgres\n    host: 127.0.0.1\n    user: postgres\n    database: ${PGDB}\n    bin_dir: ${bin}`);
    const r = dbkeep(["-c", cfg, "doctor", "old"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/✗ pg_dump 9\.6\.24 cannot dump server \d+/);
    expect(r.stdout).toMatch(/hint: .*pg_version: \d+ \(or bin_dir/);
  });

  it("names the table the user cannot read", () => {
    const r = dbkeep(["doctor", `postgres://${ROLE}@127.0.0.1:5432/${PGDB}`]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`✗ ${ROLE} cannot read 1 table\\(s\\) of ${PGDB}: public\\.secret_t`));
    expect(r.stdout).toContain("hint: GRANT SELECT");
    expect(r.stdout).not.toContain("open_t");
  });

  it("reports a missing tool: pg_dump not found, exit 1", () => {
    const cfg = config(dir, `  gone:\n    engine: postgres\n    host: 127.0.0.1\n    user: postgres\n    database: ${PGDB}\n    bin_dir: /nonexistent`);
    const r = dbkeep(["-c", cfg, "doctor"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain("✗ pg_dump not found");
  });

  it("has --help with examples", () => {
    const r = dbkeep(["doctor", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Examples:");
  });
});

describe.skipIf(!myUp)("dbkeep doctor: MariaDB", () => {
  let dir: string;

  beforeAll(async () => {
    dir = tempDir();
    await myQuery(`CREATE DATABASE ${MYDB}`);
    await myQuery(`CREATE USER '${MYUSER}'@'%' IDENTIFIED BY 'pw'`);
    await myQuery(`GRANT SELECT ON ${MYDB}.* TO '${MYUSER}'@'%'`);
  });

  afterAll(async () => {
    await myQuery(`DROP USER IF EXISTS '${MYUSER}'@'%'`);
    await myQuery(`DROP DATABASE IF EXISTS ${MYDB}`);
  });

  it("tells a SELECT-only user which grants are missing", () => {
    const cfg = config(dir, `  my:\n    engine: mariadb\n    host: 127.0.0.1\n    user: ${MYUSER}\n    password_env: DBKEEP_DOC_PW\n    database: ${MYDB}`);
    const r = dbkeep(["-c", cfg, "doctor", "my"], { env: { DBKEEP_DOC_PW: "pw" } });
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("✓ SELECT granted");
    for (const p of ["LOCK TABLES", "SHOW VIEW", "TRIGGER", "EVENT"]) expect(r.stdout).toContain(`! ${p} is missing on ${MYDB}`);
    expect(r.stdout).toMatch(/✓ server \d+\.\d+/);
  });
});

describe("dbkeep doctor: Redis", () => {
  it("reports the server version", () => {
    const r = dbkeep(["doctor", "redis://127.0.0.1:6379"]);
    if (/cannot connect/.test(r.stdout) && process.env.CI !== "true") return;
    expect(r.stdout).toMatch(/✓ server Redis \d+\.\d+/);
  });
});
