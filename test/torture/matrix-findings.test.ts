import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { dropDb, pgAvailable, pgQuery } from "../helpers/env.js";
import { dropDatabasesLike, myAvailable, myQuery } from "../helpers/mysql.js";
import { describeRun, runCli, type CliRun } from "./harness.js";

/**
 * Failures the roundtrip matrix ran into beyond the defects of issue 17, each reduced to its smallest
 * reproduction. The matrix's fixtures step around them so that its cells keep testing the pipe; these tests keep
 * them visible. Each is `it.fails` while the failure stands: the fix turns it red, and flips it back to `it`.
 */

const pgUp = await pgAvailable();
const myUp = await myAvailable();
const DB = "dbkeep_mxf_";
const TIMEOUT = 60_000;

let root: string;

/** One scenario's config (a local store), and its CLI with a state directory of its own. */
function scenario(name: string, datasources: Record<string, Record<string, unknown>>, job: Record<string, unknown>) {
  const dir = join(root, name);
  mkdirSync(dir);
  const cfg = join(dir, "dbkeep.yaml");
  writeFileSync(cfg, stringify({ datasources, stores: { local: { type: "local", path: join(dir, "store") } }, jobs: { [name]: { datasource: "src", store: "local", ...job } } }), { mode: 0o600 });
  const cli = (...args: string[]) => runCli(["-c", cfg, ...args], { DBKEEP_STATE_DIR: join(dir, "state") }, 45_000);
  const ok = (r: CliRun) => expect(r.code, describeRun(r)).toBe(0);
  return {
    backup: async () => ok(await cli("backup", name)),
    restore: async () => ok(await cli("restore", name, "--to", "dst", "--auto-confirm")),
    cli,
  };
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "dbkeep-matrix-findings-"));
  if (pgUp) for (const { d } of await pgQuery<{ d: string }>("postgres", `SELECT datname AS d FROM pg_database WHERE datname LIKE '${DB}%'`)) await dropDb(d);
  if (myUp) await dropDatabasesLike(DB);
});

afterAll(async () => {
  if (root) rmSync(root, { recursive: true, force: true });
  if (pgUp) for (const { d } of await pgQuery<{ d: string }>("postgres", `SELECT datname AS d FROM pg_database WHERE datname LIKE '${DB}%'`)) await dropDb(d);
  if (myUp) await dropDatabasesLike(DB);
});

describe.skipIf(!pgUp)("found by the roundtrip matrix: PostgreSQL", () => {
  const pg = { engine: "postgres", host: "127.0.0.1", user: "postgres" };

  // Finding: a differential carries setval() only for sequences its tables own (pg_depend 'a'/'i'), not for a
  // sequence a column takes its default from with nextval(). After restoring full + differential the sequence is
  // where the full backup left it, and the restored database hands out numbers that are already taken.
  it("a differential chain restores a sequence that no column owns, so new rows do not collide", async () => {
    const [src, dst] = [`${DB}pg_seq_src`, `${DB}pg_seq_dst`];
    await pgQuery("postgres", `CREATE DATABASE ${src}`);
    await pgQuery(
      src,
      `CREATE SEQUENCE ticket_no START 1000;
       CREATE TABLE tickets (no int PRIMARY KEY DEFAULT nextval('ticket_no'), subject text, updated_at timestamptz NOT NULL DEFAULT now());
       INSERT INTO tickets (subject) VALUES ('a'), ('b'), ('c');`,
    );
    const s = scenario("pg-seq", { src: { ...pg, database: src }, dst: { ...pg, database: dst } }, { mode: "differential", cutoff_margin: 0, track_deletes: true });
    await s.backup();
    await pgQuery(src, "INSERT INTO tickets (subject) VALUES ('after the full backup')");
    await s.backup();
    await s.restore();
    expect(await pgQuery(dst, "SELECT no, subject FROM tickets ORDER BY no")).toEqual(await pgQuery(src, "SELECT no, subject FROM tickets ORDER BY no"));
    expect(await pgQuery(dst, "SELECT last_value FROM ticket_no")).toEqual(await pgQuery(src, "SELECT last_value FROM ticket_no"));
    await pgQuery(dst, "INSERT INTO tickets (subject) VALUES ('the first new row after the restore')");
  }, TIMEOUT);
});

describe.skipIf(!myUp)("found by the roundtrip matrix: MariaDB", () => {
  const my = { engine: "mariadb", host: "127.0.0.1", port: 3306, user: "root" };

  // Finding: the same for MariaDB: a differential does not carry a SEQUENCE object, so after full + differential
  // NEXT VALUE FOR hands out a number a restored row already has.
  it("a differential chain restores a SEQUENCE, so new rows do not collide", async () => {
    const [src, dst] = [`${DB}my_seq_src`, `${DB}my_seq_dst`];
    await myQuery(
      `CREATE DATABASE ${src}; USE ${src};
       CREATE SEQUENCE ticket_no START WITH 1000 NOCACHE;
       CREATE TABLE tickets (no INT PRIMARY KEY, subject TEXT, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6));
       INSERT INTO tickets (no, subject) VALUES (NEXT VALUE FOR ticket_no, 'a'), (NEXT VALUE FOR ticket_no, 'b');`,
    );
    const s = scenario("my-seq", { src: { ...my, database: src }, dst: { ...my, database: dst } }, { mode: "differential", cutoff_margin: 0, track_deletes: true });
    await s.backup();
    await myQuery("INSERT INTO tickets (no, subject) VALUES (NEXT VALUE FOR ticket_no, 'after the full backup')", src);
    await s.backup();
    await s.restore();
    expect(await myQuery("SELECT no, subject FROM tickets ORDER BY no", dst)).toEqual(await myQuery("SELECT no, subject FROM tickets ORDER BY no", src));
    await myQuery("INSERT INTO tickets (no, subject) VALUES (NEXT VALUE FOR ticket_no, 'the first new row after the restore')", dst);
  }, TIMEOUT);

  // Finding, still open: a table whose column default is NEXT VALUE FOR a sequence. The restore works now (the dump
  // no longer wraps the INSERTs in LOCK TABLES without the sequence), but mysqldump and mydumper write the default
  // as nextval(`<source database>`.`ticket_no`), so a copy restored under another name takes its numbers from the
  // source's sequence (or fails on a server without it).
  it("a table with a sequence default backs up and restores with mysqldump", async () => {
    const [src, dst] = [`${DB}my_def_src`, `${DB}my_def_dst`];
    await myQuery(
      `CREATE DATABASE ${src}; USE ${src};
       CREATE SEQUENCE ticket_no START WITH 1000;
       CREATE TABLE tickets (no INT PRIMARY KEY DEFAULT NEXT VALUE FOR ticket_no, subject TEXT);
       INSERT INTO tickets (subject) VALUES ('a'), ('b');`,
    );
    const s = scenario("my-default", { src: { ...my, database: src }, dst: { ...my, database: dst } }, {});
    await s.backup();
    await s.restore();
    expect(await myQuery("SELECT no, subject FROM tickets ORDER BY no", dst)).toEqual(await myQuery("SELECT no, subject FROM tickets ORDER BY no", src));
    expect((await myQuery("SHOW CREATE TABLE tickets", dst))[0]?.[1]).not.toContain(src);
    // New rows draw from the restored sequence, past the numbers already used.
    await myQuery("INSERT INTO tickets (subject) VALUES ('c')", dst);
    expect(Number((await myQuery("SELECT MAX(no) FROM tickets", dst))[0]?.[0])).toBeGreaterThan(1001);
  }, TIMEOUT);

  it("a table with a sequence default restored from mydumper takes its numbers from the restored database's sequence", async () => {
    const [src, dst] = [`${DB}my_mydef_src`, `${DB}my_mydef_dst`];
    await myQuery(
      `CREATE DATABASE ${src}; USE ${src};
       CREATE SEQUENCE ticket_no START WITH 1000;
       CREATE TABLE tickets (no INT PRIMARY KEY DEFAULT NEXT VALUE FOR ticket_no, subject TEXT);
       INSERT INTO tickets (subject) VALUES ('a'), ('b');`,
    );
    const s = scenario("my-mydumper-default", { src: { ...my, database: src, format: "mydumper" }, dst: { ...my, database: dst } }, {});
    await s.backup();
    await s.restore();
    expect(await myQuery("SELECT no, subject FROM tickets ORDER BY no", dst)).toEqual(await myQuery("SELECT no, subject FROM tickets ORDER BY no", src));
    expect((await myQuery("SHOW CREATE TABLE tickets", dst))[0]?.[1]).not.toContain(src);
    // New rows draw from the restored sequence, past the numbers already used.
    await myQuery("INSERT INTO tickets (subject) VALUES ('c')", dst);
    expect(Number((await myQuery("SELECT MAX(no) FROM tickets", dst))[0]?.[0])).toBeGreaterThan(1001);
  }, TIMEOUT);

  // Finding: docs/partial-and-differential.md says "A missing target database is created", but a MariaDB partial
  // restore skips the target's (re)creation and applies the dump to a database that does not exist. It fails with
  // "applying the verified backup to X failed after it was emptied ... Unknown database" and a hint blaming the server,
  // although nothing was emptied.
  it("a partial backup restores into a database that does not exist yet", async () => {
    const [src, dst] = [`${DB}my_part_src`, `${DB}my_part_dst`];
    await myQuery(`CREATE DATABASE ${src}; USE ${src}; CREATE TABLE a (id INT PRIMARY KEY, v TEXT); CREATE TABLE b (id INT); INSERT INTO a VALUES (1, 'x'), (2, NULL);`);
    const s = scenario("my-partial", { src: { ...my, database: src }, dst: { ...my, database: dst } }, { tables: ["a"] });
    await s.backup();
    await s.restore();
    expect(await myQuery("SELECT id, IFNULL(v, 'NULL') FROM a ORDER BY id", dst)).toEqual([["1", "x"], ["2", "NULL"]]);
  }, TIMEOUT);
});
