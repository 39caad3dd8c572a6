import { execFile, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { IN_CI } from "./env.js";

/** The local MariaDB the mysql engine's tests run against (root with an empty password). */
export const MY = { host: "127.0.0.1", port: 3306, user: "root" };

const run = promisify(execFile);

function clientArgs(db?: string): string[] {
  return ["-h", MY.host, "-P", String(MY.port), "-u", MY.user, "--batch", "--skip-column-names", "--default-character-set=utf8mb4", ...(db ? [`--database=${db}`] : [])];
}

/** Rows of a query as the client prints them in batch mode (fields still escaped: one row per line). */
export async function myQuery(sql: string, db?: string): Promise<string[][]> {
  const { stdout } = await run("mariadb", [...clientArgs(db), "-e", sql], { maxBuffer: 256 * 1024 * 1024 });
  return stdout.split("\n").filter((l) => l !== "").map((l) => l.split("\t"));
}

/** Runs a SQL file (DELIMITER and all) with the client. */
export function mySource(db: string, file: string): void {
  execFileSync("mariadb", clientArgs(db), { input: readFileSync(file), stdio: ["pipe", "ignore", "inherit"] });
}

export function quoteId(name: string): string {
  return `\`${name.replace(/`/g, "``")}\``;
}

/** Whether the local MariaDB answers; under CI a missing server is a failure, not a skip. */
export async function myAvailable(): Promise<boolean> {
  try {
    await myQuery("SELECT 1");
    return true;
  } catch (err) {
    if (IN_CI) throw new Error(`MariaDB is not reachable at ${MY.host}:${MY.port} under CI: ${(err as Error).message}`, { cause: err });
    return false;
  }
}

export async function dropDatabasesLike(prefix: string): Promise<void> {
  const rows = await myQuery("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA");
  for (const [name] of rows) if (name?.startsWith(prefix)) await myQuery(`DROP DATABASE IF EXISTS ${quoteId(name)}`);
}

/**
 * Every object's definition as SHOW CREATE prints it, in a stable order. What legitimately differs between a
 * database and its restored copy is normalised: the database's own name, DEFINER clauses, AUTO_INCREMENT=n (the
 * counters are compared on their own in contentOf) and mydumper's spaces in bodies.
 */
export async function schemaOf(db: string): Promise<string> {
  const lit = `'${db}'`;
  const q = quoteId(db);
  const norm = (s: string) =>
    s
      .split(quoteId(db))
      .join("`DB`")
      .replace(/ AUTO_INCREMENT=\d+/g, "")
      .replace(/DEFINER=`[^`]*`@`[^`]*`/g, "DEFINER=?")
      // mydumper 0.10 writes "; " before each line break inside routine and trigger bodies (so that myloader, which
      // splits statements at ";\n", keeps them whole); the bodies are otherwise byte for byte the same.
      .replace(/; (?=\\n)/g, ";");
  const out: string[] = [];
  const first = async (sql: string, cols: number[]) => {
    const row = (await myQuery(sql, db))[0] ?? [];
    return cols.map((c) => row[c] ?? "").join(" | ");
  };
  for (const [name, type] of await myQuery(`SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${lit} ORDER BY 1`)) {
    const id = `${q}.${quoteId(name ?? "")}`;
    out.push(`${type} ${name}: ${type === "VIEW" ? await first(`SHOW CREATE VIEW ${id}`, [1, 2, 3]) : await first(`SHOW CREATE TABLE ${id}`, [1])}`);
  }
  for (const [name] of await myQuery(`SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ${lit} ORDER BY 1`)) {
    out.push(`TRIGGER ${name}: ${await first(`SHOW CREATE TRIGGER ${q}.${quoteId(name ?? "")}`, [1, 2, 3, 4, 5])}`);
  }
  for (const [type, name] of await myQuery(`SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ${lit} ORDER BY 1, 2`)) {
    out.push(`${type} ${name}: ${await first(`SHOW CREATE ${type} ${q}.${quoteId(name ?? "")}`, [1, 2, 3, 4, 5])}`);
  }
  for (const [name] of await myQuery(`SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ${lit} ORDER BY 1`)) {
    out.push(`EVENT ${name}: ${await first(`SHOW CREATE EVENT ${q}.${quoteId(name ?? "")}`, [1, 2, 3, 4, 5, 6])}`);
  }
  return norm(out.join("\n"));
}

/** Per table: the row count and a hash of every row's bytes (order-independent), and the AUTO_INCREMENT counters. */
export async function contentOf(db: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const tables = await myQuery(
    `SELECT TABLE_NAME, IFNULL(AUTO_INCREMENT, '-') FROM information_schema.TABLES
      WHERE TABLE_SCHEMA = '${db}' AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED', 'SEQUENCE') ORDER BY 1`,
  );
  for (const [table = "", autoIncrement] of tables) {
    const cols = await myQuery(`SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '${db}' AND TABLE_NAME = '${table}' ORDER BY ORDINAL_POSITION`);
    const row = cols.map(([c = ""]) => `IFNULL(HEX(CAST(${quoteId(c)} AS BINARY)), 'N')`).join(", ");
    const [r] = await myQuery(
      `SET SESSION group_concat_max_len = 1073741824;
       SELECT COUNT(*), IFNULL(MD5(GROUP_CONCAT(h ORDER BY h SEPARATOR ',')), '-') FROM (SELECT MD5(CONCAT_WS('|', ${row})) AS h FROM ${quoteId(db)}.${quoteId(table)}) x`,
    );
    out[`table ${table}`] = `${r?.[0]}:${r?.[1]}`;
    out[`auto_increment ${table}`] = autoIncrement ?? "-";
  }
  return out;
}
