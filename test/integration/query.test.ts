import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, tempDir } from "../helpers/env.js";
import { parseCsv } from "../helpers/csv.js";
import { MY, myAvailable, myQuery } from "../helpers/mysql.js";
import { openQueryConnection } from "../../src/query/connection.js";

const PGDB = "dbkeep_query_test";
const MYDB = "dbkeep_query_test";
const myUrl = `mysql://${MY.user}@${MY.host}:${MY.port}/${MYDB}`;
const dir = tempDir("dbkeep-query-");

/** Runs the CLI and records its peak resident memory (VmHWM) from /proc while it runs. */
async function runMeasured(args: string[]): Promise<{ code: number; stderr: string; peakMb: number }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...CLI_ENV, NODE_OPTIONS: CHILD_NODE_OPTIONS }, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  let peakKb = 0;
  const poll = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"));
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
    } catch {
      // exited
    }
  }, 20);
  const code = await new Promise<number>((r) => child.once("exit", (c) => r(c ?? -1)));
  clearInterval(poll);
  process.stderr.write(`peak RSS of ${args[0]} ${args[1]}: ${(peakKb / 1024).toFixed(1)} MB\n`);
  return { code, stderr, peakMb: peakKb / 1024 };
}

/**
 * Reads a CSV export of `SELECT n, md5(n), CASE WHEN n % 7 = 0 THEN NULL ELSE 'v,"' || n END` line by line and
 * checks every record against the values it must hold. Returns the number of data records.
 */
async function checkMillionCsv(file: string): Promise<number> {
  let n = -1; // the header comes first
  let rest = "";
  const check = (line: string) => {
    // Records are separated by CRLF only: a lone CR or LF would be a broken record.
    if (/[\r\n]/.test(line)) expect(line).not.toMatch(/[\r\n]/);
    const [rec] = parseCsv(line + "\r\n");
    if (n === -1) expect(rec).toEqual(["n", "h", "s"]);
    else {
      const v = n + 1;
      const want = [String(v), createHash("md5").update(String(v)).digest("hex"), v % 7 === 0 ? null : `v,"${v}`];
      if (JSON.stringify(rec) !== JSON.stringify(want)) expect(rec).toEqual(want);
    }
    n++;
  };
  for await (const chunk of createReadStream(file, "utf8")) {
    const text = rest + (chunk as string);
    let from = 0;
    for (let at = text.indexOf("\r\n"); at >= 0; at = text.indexOf("\r\n", from)) {
      check(text.slice(from, at));
      from = at + 2;
    }
    rest = text.slice(from);
  }
  expect(rest).toBe(""); // the last record ends with CRLF too
  return n;
}

/**
 * The CLI runs with V8's old space capped at 64 MB: a result held in memory (a million rows are over 100 MB as JS
 * objects) would crash it, so passing proves the rows stream. RSS, what a user sees, must stay under the bound.
 */
const CHILD_NODE_OPTIONS = "--max-old-space-size=64";
const MEMORY_LIMIT_MB = 150;

describe("dbkeep query against PostgreSQL", () => {
  let up = false;
  beforeAll(async () => {
    up = await pgAvailable();
    if (!up) return;
    await createDb(PGDB);
    await pgQuery(PGDB, `CREATE TABLE tricky (id int PRIMARY KEY, t text, b bytea, j jsonb, n numeric, big bigint, ok boolean)`);
    await pgQuery(PGDB, `INSERT INTO tricky VALUES
      (1, 'comma, "quote" and' || chr(13) || chr(10) || 'CRLF', '\\x00ff0d0a2c22'::bytea, '{"a": [1, "x"]}', 1.50, 9223372036854775807, true),
      (2, '', '\\x'::bytea, 'null', -0.000001, -1, false),
      (3, NULL, NULL, NULL, NULL, NULL, NULL),
      (4, 'ünïcødé ✓ 𝄞 日本', (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex') FROM generate_series(0, 255) g), '"s"', 1e20, 0, true)`);
    // A function that writes, called from a SELECT: only the read-only transaction can stop it.
    await pgQuery(PGDB, `CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS $$ DELETE FROM tricky WHERE id = 4 RETURNING 1 $$`);
  });
  afterAll(async () => {
    if (up) await dropDb(PGDB);
  });

  it("streams 1,000,000 rows to CSV with flat memory, and the file parses back to the same values", async (t) => {
    if (!up) return t.skip();
    const file = join(dir, "pg-million.csv");
    const sql = `SELECT n, md5(n::text) AS h, CASE WHEN n % 7 = 0 THEN NULL ELSE 'v,"' || n END AS s FROM generate_series(1, 1000000) n`;
    const r = await runMeasured(["query", pgUrl(PGDB), sql, "--csv", file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.peakMb).toBeGreaterThan(10); // the measurement itself worked
    expect(r.peakMb).toBeLessThan(MEMORY_LIMIT_MB);
    expect(await checkMillionCsv(file)).toBe(1_000_000);
    expect(statSync(file).mode & 0o777).toBe(0o600);
  }, 120_000);

  it("round-trips NULLs, empty strings, quotes, commas, CRLF, unicode, bytea, json and exact numbers through CSV", async (t) => {
    if (!up) return t.skip();
    const file = join(dir, "pg-tricky.csv");
    const r = dbkeep(["query", pgUrl(PGDB), "SELECT * FROM tricky ORDER BY id", "--csv", file]);
    expect(r.code, r.stderr).toBe(0);
    const rows = parseCsv(readFileSync(file, "utf8"));
    const want = await pgQuery<{ r: (string | null)[] }>(PGDB, `SELECT ARRAY[id::text, t, encode(b, 'hex'), j::text, n::text, big::text, CASE WHEN ok THEN 'true' WHEN NOT ok THEN 'false' END] AS r FROM tricky ORDER BY id`);
    expect(rows).toEqual([["id", "t", "b", "j", "n", "big", "ok"], ...want.map((w) => w.r)]);
    expect(rows[1]![1]).toBe('comma, "quote" and\r\nCRLF');
    expect(rows[2]![1]).toBe(""); // the empty string, written ""
    expect(rows[3]![1]).toBeNull(); // NULL, written as nothing
    // base64, and JSON output with exact big numbers
    const b64 = dbkeep(["query", pgUrl(PGDB), "SELECT b FROM tricky WHERE id = 4", "--csv", "--binary", "base64", "--no-header"]);
    expect(Buffer.from(b64.stdout.trim(), "base64")).toEqual(Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
    const js = dbkeep(["query", pgUrl(PGDB), "SELECT id, big, j, t FROM tricky WHERE id IN (1, 4) ORDER BY id", "--json"]);
    expect(js.code, js.stderr).toBe(0);
    expect(js.stdout, js.stderr).toContain('"big":9223372036854775807');
    expect(JSON.parse(js.stdout)).toEqual([
      { id: 1, big: Number("9223372036854775807"), j: { a: [1, "x"] }, t: 'comma, "quote" and\r\nCRLF' },
      { id: 4, big: 0, j: "s", t: "ünïcødé ✓ 𝄞 日本" },
    ]);
  });

  it("refuses writes (exit 2), and the read-only transaction stops a write the classifier cannot see", async (t) => {
    if (!up) return t.skip();
    const drop = dbkeep(["query", pgUrl(PGDB), "DROP TABLE tricky"]);
    expect(drop.code).toBe(2);
    expect(drop.stderr).toMatch(/refused: .*DROP TABLE[\s\S]*hint: .*--allow-write/);
    const cte = dbkeep(["query", pgUrl(PGDB), "WITH x AS (DELETE FROM tricky RETURNING *) SELECT count(*) FROM x"]);
    expect(cte.code).toBe(2);
    const sneaky = dbkeep(["query", pgUrl(PGDB), "SELECT sneaky()"]);
    expect(sneaky.code).toBe(1);
    expect(sneaky.stderr).toMatch(/read-only transaction/);
    // The classifier bypassed entirely: the connection alone still refuses.
    const conn = await openQueryConnection({ engine: "postgres", options: { host: "127.0.0.1", port: 5432, user: "postgres", database: PGDB }, secretFields: [] }, { secret: () => undefined, oneOff: true });
    try {
      await expect(conn.execute("DELETE FROM tricky", { write: false })).rejects.toThrow(/read-only transaction/);
    } finally {
      await conn.close();
    }
    expect((await pgQuery<{ n: string }>(PGDB, "SELECT count(*) AS n FROM tricky"))[0]!.n).toBe("4");
    // --allow-write without a terminal needs --yes; with it the statement runs.
    const noTty = dbkeep(["query", pgUrl(PGDB), "DELETE FROM tricky WHERE id = 3", "--allow-write"]);
    expect(noTty.code).toBe(2);
    expect(noTty.stderr).toMatch(/--yes/);
    const yes = dbkeep(["query", pgUrl(PGDB), "DELETE FROM tricky WHERE id = 3", "--allow-write", "--yes"]);
    expect(yes.code, yes.stderr).toBe(0);
    expect(yes.stderr).toMatch(/DELETE: 1 row affected/);
    expect((await pgQuery<{ n: string }>(PGDB, "SELECT count(*) AS n FROM tricky"))[0]!.n).toBe("3");
  });

  it("a failed query leaves no output file, and --table shows the first rows with a note", async (t) => {
    if (!up) return t.skip();
    const file = join(dir, "pg-failed.csv");
    const r = dbkeep(["query", pgUrl(PGDB), "SELECT 1 / (n - 5000) FROM generate_series(1, 10000) n", "--csv", file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/division by zero/);
    expect(existsSync(file)).toBe(false);
    const tbl = dbkeep(["query", pgUrl(PGDB), "SELECT n FROM generate_series(1, 5000) n", "--table", "--max-rows", "3"]);
    expect(tbl.code, tbl.stderr).toBe(0);
    expect(tbl.stdout).toBe("n\n-\n1\n2\n3\n(first 3 rows shown; more rows not shown: use --csv or --json for all of them)\n");
  });
});

describe("dbkeep query against MariaDB", () => {
  let up = false;
  beforeAll(async () => {
    up = await myAvailable();
    if (!up) return;
    await myQuery(`DROP DATABASE IF EXISTS ${MYDB}`);
    await myQuery(`CREATE DATABASE ${MYDB} CHARACTER SET utf8mb4`);
    await myQuery(`CREATE TABLE tricky (id INT PRIMARY KEY, t TEXT, b BLOB, d DECIMAL(30,10), u BIGINT UNSIGNED, ts DATETIME(6), j JSON) ENGINE=InnoDB`, MYDB);
    await myQuery(
      `INSERT INTO tricky VALUES
        (1, CONCAT('comma, "quote" and', CHAR(13), CHAR(10), 'CRLF'), X'00FF0D0A2C22', 1.5, 18446744073709551615, '2026-01-02 03:04:05.123456', '{"a": [1, "x"]}'),
        (2, '', X'', -0.0000000001, 0, '1970-01-01 00:00:00', 'null'),
        (3, NULL, NULL, NULL, NULL, NULL, NULL),
        (4, 'ünïcødé ✓ 𝄞 日本', (SELECT UNHEX(GROUP_CONCAT(LPAD(HEX(seq), 2, '0') ORDER BY seq SEPARATOR '')) FROM seq_0_to_255), 0, 1, NULL, '"s"')`,
      MYDB,
    );
  });
  afterAll(async () => {
    if (up) await myQuery(`DROP DATABASE IF EXISTS ${MYDB}`);
  });

  it("streams 1,000,000 rows to CSV with flat memory, and the file parses back to the same values", async (t) => {
    if (!up) return t.skip();
    const file = join(dir, "my-million.csv");
    const sql = `SELECT seq AS n, MD5(seq) AS h, IF(seq % 7 = 0, NULL, CONCAT('v,"', seq)) AS s FROM seq_1_to_1000000`;
    const r = await runMeasured(["query", myUrl, sql, "--csv", file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.peakMb).toBeGreaterThan(10);
    expect(r.peakMb).toBeLessThan(MEMORY_LIMIT_MB);
    expect(await checkMillionCsv(file)).toBe(1_000_000);
  }, 120_000);

  it("round-trips NULLs, quotes, CRLF, unicode, BLOBs, decimals, unsigned bigints, datetimes and JSON through CSV", async (t) => {
    if (!up) return t.skip();
    const file = join(dir, "my-tricky.csv");
    const r = dbkeep(["query", myUrl, "SELECT * FROM tricky ORDER BY id", "--csv", file]);
    expect(r.code, r.stderr).toBe(0);
    const rows = parseCsv(readFileSync(file, "utf8"));
    // The client's HEX() and CAST AS CHAR give the server's own text for every column.
    const want = await myQuery(
      `SELECT id, IFNULL(HEX(t), 'NULL'), IFNULL(LOWER(HEX(b)), 'NULL'), IFNULL(CAST(d AS CHAR), 'NULL'), IFNULL(CAST(u AS CHAR), 'NULL'), IFNULL(CAST(ts AS CHAR), 'NULL'), IFNULL(HEX(j), 'NULL') FROM tricky ORDER BY id`,
      MYDB,
    );
    const unhex = (h: string | undefined) => (h === "NULL" ? null : Buffer.from(h ?? "", "hex").toString("utf8"));
    expect(rows).toEqual([
      ["id", "t", "b", "d", "u", "ts", "j"],
      ...want.map((w) => [w[0]!, unhex(w[1]), w[2] === "NULL" ? null : w[2]!, w[3] === "NULL" ? null : w[3]!, w[4] === "NULL" ? null : w[4]!, w[5] === "NULL" ? null : w[5]!, unhex(w[6])]),
    ]);
    expect(rows[1]![1]).toBe('comma, "quote" and\r\nCRLF');
    expect(rows[2]![1]).toBe("");
    expect(rows[3]![1]).toBeNull();
    expect(rows[4]![2]).toBe(Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString("hex"));
  });

  it("refuses writes, and START TRANSACTION READ ONLY stops a write the classifier cannot see", async (t) => {
    if (!up) return t.skip();
    const del = dbkeep(["query", myUrl, "DELETE FROM tricky"]);
    expect(del.code).toBe(2);
    const conn = await openQueryConnection({ engine: "mysql", options: { host: MY.host, port: MY.port, user: MY.user, database: MYDB }, secretFields: [] }, { secret: () => undefined, oneOff: true });
    try {
      await expect(conn.execute("DELETE FROM tricky", { write: false })).rejects.toThrow(/READ ONLY transaction/i);
      // The connection stays usable afterwards.
      const r = await conn.execute("SELECT COUNT(*) AS n FROM tricky", { write: false });
      const got: unknown[] = [];
      if (r.kind === "rows") for await (const row of r.rows) got.push(row);
      expect(got.map((x) => String((x as { text: string }[])[0]!.text))).toEqual(["4"]);
    } finally {
      await conn.close();
    }
    expect((await myQuery("SELECT COUNT(*) FROM tricky", MYDB))[0]![0]).toBe("4");
  });
});

describe("dbkeep query against SQLite", () => {
  const file = join(dir, "app.db");
  beforeAll(() => {
    const db = new Database(file);
    db.exec("CREATE TABLE tricky (id INTEGER PRIMARY KEY, t TEXT, b BLOB, r REAL, big INTEGER)");
    const ins = db.prepare("INSERT INTO tricky VALUES (?, ?, ?, ?, ?)");
    ins.run(1, 'comma, "quote" and\r\nCRLF', Buffer.from([0, 255, 13, 10]), 1.5, 9223372036854775807n);
    ins.run(2, "", Buffer.alloc(0), -0.25, -1);
    ins.run(3, null, null, null, null);
    ins.run(4, "ünïcødé ✓ 𝄞 日本", Buffer.from(Array.from({ length: 256 }, (_, i) => i)), 1e20, 0);
    db.close();
  });

  it("round-trips every value through CSV and refuses writes on a read-only connection", () => {
    const r = dbkeep(["query", `sqlite:${file}`, "SELECT * FROM tricky ORDER BY id", "--csv"]);
    expect(r.code, r.stderr).toBe(0);
    expect(parseCsv(r.stdout)).toEqual([
      ["id", "t", "b", "r", "big"],
      ["1", 'comma, "quote" and\r\nCRLF', "00ff0d0a", "1.5", "9223372036854775807"],
      ["2", "", "", "-0.25", "-1"],
      ["3", null, null, null, null],
      ["4", "ünïcødé ✓ 𝄞 日本", Buffer.from(Array.from({ length: 256 }, (_, i) => i)).toString("hex"), "100000000000000000000", "0"],
    ]);
    expect(dbkeep(["query", `sqlite:${file}`, "DELETE FROM tricky"]).code).toBe(2);
    const pragma = dbkeep(["query", `sqlite:${file}`, "PRAGMA user_version = 7"]);
    expect(pragma.code).toBe(2);
  });

  it("the read-only connection refuses a write the classifier was bypassed for", async () => {
    const conn = await openQueryConnection({ engine: "sqlite", options: { path: file }, secretFields: [] }, { secret: () => undefined, oneOff: true });
    try {
      await expect(conn.execute("DELETE FROM tricky", { write: false })).rejects.toThrow(/readonly/);
    } finally {
      await conn.close();
    }
    const db = new Database(file, { readonly: true });
    expect((db.prepare("SELECT count(*) AS n FROM tricky").get() as { n: number }).n).toBe(4);
    db.close();
  });
});
