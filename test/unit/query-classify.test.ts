import { describe, expect, it } from "vitest";
import { classify, type Dialect } from "../../src/query/classify.js";
import { checkStatement } from "../../src/query/run.js";

const reads = (sql: string, d?: Dialect) => expect(classify(sql, d).write, sql).toBe(false);
const writes = (sql: string, d?: Dialect) => expect(classify(sql, d).write, sql).toBe(true);

describe("statement classifier", () => {
  it("lets plain reads through on every dialect", () => {
    for (const d of ["postgres", "mysql", "sqlite", undefined] as const) {
      reads("SELECT * FROM orders WHERE id < 100", d);
      reads("  select count(*) from t;  ", d);
      reads("WITH x AS (SELECT 1 AS a) SELECT a FROM x", d);
      reads("VALUES (1), (2)", d);
      reads("(SELECT 1) UNION (SELECT 2)", d);
      reads("EXPLAIN SELECT * FROM t", d);
    }
    reads("SHOW server_version", "postgres");
    reads("TABLE orders", "postgres");
    reads("SHOW TABLES", "mysql");
    reads("DESCRIBE orders", "mysql");
    reads("PRAGMA table_info(orders)", "sqlite");
    reads("PRAGMA user_version", "sqlite");
  });

  it("refuses every statement that changes data, schema or settings", () => {
    for (const sql of [
      "DROP TABLE t", "DELETE FROM t", "UPDATE t SET a = 1", "INSERT INTO t VALUES (1)", "TRUNCATE t", "ALTER TABLE t ADD c int",
      "CREATE TABLE x (a int)", "GRANT SELECT ON t TO bob", "REVOKE ALL ON t FROM bob", "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
      "REPLACE INTO t VALUES (1)", "COPY t FROM '/tmp/x.csv'", "COPY t TO '/tmp/x'", "SET search_path = evil", "CALL proc()", "DO $$ BEGIN END $$",
      "BEGIN", "COMMIT", "VACUUM", "LOCK TABLE t", "LOAD DATA INFILE 'x' INTO TABLE t", "ATTACH DATABASE 'x.db' AS x", "REFRESH MATERIALIZED VIEW v",
      "CLUSTER t", "REINDEX TABLE t", "COMMENT ON TABLE t IS 'x'", "SECURITY LABEL ON TABLE t IS 'x'", "frobnicate",
    ]) {
      writes(sql);
      writes(sql.toLowerCase());
    }
  });

  it("finds writes hidden inside reads: CTEs with DML, SELECT INTO, EXPLAIN ANALYZE, FOR UPDATE, side-effect functions", () => {
    writes("WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone", "postgres");
    writes("WITH x AS (UPDATE t SET a = 1 RETURNING a) SELECT 1", "postgres");
    writes("with x as (insert into t values (1) returning *) select * from x", "postgres");
    writes("SELECT * INTO new_table FROM t", "postgres");
    writes("SELECT * FROM t INTO OUTFILE '/tmp/x'", "mysql");
    writes("SELECT a INTO @v FROM t", "mysql");
    writes("EXPLAIN ANALYZE DELETE FROM t", "postgres");
    writes("SELECT * FROM t FOR UPDATE", "postgres");
    writes("SELECT nextval('s')", "postgres");
    writes("SELECT pg_terminate_backend(123)", "postgres");
    writes("SELECT lo_unlink(1)", "postgres");
    writes("SELECT set_config('x', 'y', false)", "postgres");
    writes("PRAGMA journal_mode = WAL", "sqlite");
    writes("PRAGMA writable_schema(1)", "sqlite");
  });

  it("ignores keywords inside comments, string literals and quoted identifiers", () => {
    reads("SELECT 'DROP TABLE t; DELETE FROM x' AS s", "postgres");
    reads("SELECT $$ DROP TABLE t $$, $tag$ DELETE $tag$", "postgres");
    reads("SELECT 1 -- DROP TABLE t", "postgres");
    reads("SELECT /* DELETE FROM t; */ 1", "postgres");
    reads("SELECT /* outer /* nested DROP */ still comment; DELETE */ 1", "postgres");
    reads(`SELECT "delete", "drop" FROM "update"`, "postgres");
    reads("SELECT `delete` FROM `drop`", "mysql");
    reads("SELECT 1 # DROP TABLE t", "mysql");
    reads("SELECT 'it''s; DROP TABLE t'", "sqlite");
    reads("SELECT [delete] FROM [drop]", "sqlite");
    reads("SELECT E'don\\'t; delete'", "postgres");
    reads("SELECT updated_at, created_by, deleted FROM t", "postgres");
    reads("SELECT REPLACE(name, 'a', 'b') FROM t", "mysql");
  });

  it("does not let a comment or a string hide a second statement", () => {
    writes("SELECT 1; DROP TABLE t");
    writes("SELECT 1 /* x */; DELETE FROM t -- y");
    expect(classify("SELECT 1; DROP TABLE t").multiple).toBe(true);
    // PostgreSQL: a backslash does not escape a quote in a standard string, so the DROP is real.
    writes("SELECT 'abc\\'; DROP TABLE t; --'", "postgres");
    // MySQL: executable comments run.
    writes("SELECT 1 /*!50000 , (SELECT 1) ; DROP TABLE t */", "mysql");
    writes("/*! DROP TABLE t */", "mysql");
    // MySQL with NO_BACKSLASH_ESCAPES: the string ends at the second quote and the DELETE is real.
    writes("SELECT 'a\\'; DELETE FROM t; -- '", "mysql");
    // "--" without a space is not a comment in MySQL.
    writes("SELECT 1 --1\nDELETE FROM t", "mysql");
  });

  it("splits statements and keeps their text", () => {
    const c = classify("SELECT 1; ; -- only a comment\nSELECT 'a;b';", "postgres");
    expect(c.statements.map((s) => s.text)).toEqual(["SELECT 1", "-- only a comment\nSELECT 'a;b'"]);
    expect(c.statements.map((s) => s.verb)).toEqual(["SELECT", "SELECT"]);
    expect(classify("  -- nothing\n", "postgres").statements).toEqual([]);
  });

  it("checkStatement refuses writes, several statements and empty input with usage errors (exit 2)", () => {
    expect(() => checkStatement("DROP TABLE t", "postgres", false)).toThrow(/refused: .*DROP TABLE/);
    try {
      checkStatement("DELETE FROM t", "mysql", false);
    } catch (e) {
      expect((e as { exitCode: number; hint: string }).exitCode).toBe(2);
      expect((e as { hint: string }).hint).toMatch(/--allow-write/);
    }
    expect(() => checkStatement("SELECT 1; SELECT 2", "sqlite", false)).toThrow(/one statement at a time/);
    expect(() => checkStatement("-- nothing", "sqlite", false)).toThrow(/no SQL statement/);
    expect(checkStatement("DELETE FROM t;", "postgres", true).text).toBe("DELETE FROM t");
    expect(checkStatement("SELECT 1 ;\n", "postgres", false).text).toBe("SELECT 1");
  });
});
