import { userInfo } from "node:os";
import { join } from "node:path";
import { DbkeepError } from "../../core/errors.js";
import { privateDir } from "../../core/private-dir.js";
import type { Secret } from "../../core/redact.js";
import { minimalEnv, resolveTool, runTool } from "../../core/subprocess.js";
import type { Catalog, EngineVerifier, ScratchOptions, ScratchTarget } from "../../verify/engine.js";
import type { CheckResult } from "../../verify/report.js";
import { isDeadScratch, KEPT_MARK, SCRATCH_PREFIX, scratchName } from "../../verify/scratch.js";
import type { SchemaObjects, TableInfo } from "../engine.js";
import { quoteOption } from "./index.js";

export type Run = (sql: string) => Promise<string[][]>;

function ident(name: string): string {
  return `\`${name.replace(/`/g, "``")}\``;
}
function lit(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "''")}'`;
}

/** Base tables of one database ("BASE TABLE" and system-versioned), as the manifest names them: without schema. */
export async function mysqlTables(run: Run, db: string): Promise<string[]> {
  const rows = await run(`SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${lit(db)} AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1`);
  return rows.map((r) => r[0] ?? "");
}

/**
 * Exact row counts of `tables`, all in one consistent-snapshot transaction (one client call, so one session).
 * Run beside mysqldump --single-transaction, whose own snapshot cannot be shared: the counts are those of the
 * dump only when nothing writes to these tables meanwhile.
 */
export function countSql(db: string, tables: string[]): string {
  if (tables.length === 0) return "SELECT 1 WHERE 0";
  const union = tables.map((t) => `SELECT ${lit(t)}, COUNT(*) FROM ${ident(db)}.${ident(t)}`).join(" UNION ALL ");
  return `SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY; ${union}; COMMIT`;
}

/** The queries of mysqlObjects, by kind: each gives one sorted column of names. */
export function mysqlObjectQueries(db: string): [keyof SchemaObjects, string][] {
  const s = lit(db);
  return [
    ["indexes", `SELECT DISTINCT CONCAT(TABLE_NAME, '.', INDEX_NAME) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ${s} ORDER BY 1`],
    ["foreign_keys", `SELECT CONCAT(TABLE_NAME, '.', CONSTRAINT_NAME) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ${s} ORDER BY 1`],
    ["views", `SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${s} AND TABLE_TYPE = 'VIEW' ORDER BY 1`],
    ["functions", `SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ${s} ORDER BY 1`],
    ["triggers", `SELECT CONCAT(EVENT_OBJECT_TABLE, '.', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ${s} ORDER BY 1`],
    ["events", `SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ${s} ORDER BY 1`],
    ["sequences", `SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${s} AND TABLE_TYPE = 'SEQUENCE' ORDER BY 1`],
  ];
}

/** Indexes, foreign keys, views, routines, triggers, events and sequences of one database. */
export async function mysqlObjects(run: Run, db: string): Promise<SchemaObjects> {
  const out: SchemaObjects = {};
  for (const [kind, sql] of mysqlObjectQueries(db)) out[kind] = (await run(sql)).map((r) => r[0] ?? "");
  return out;
}

export async function mysqlCatalog(run: Run, db: string): Promise<Catalog> {
  const names = await mysqlTables(run, db);
  const counted = new Map((await run(countSql(db, names))).map((r) => [r[0] ?? "", Number(r[1] ?? 0)]));
  const tables: TableInfo[] = names.map((name) => ({ name, rows: counted.get(name) ?? 0 }));
  return { tables, objects: await mysqlObjects(run, db) };
}

interface Server {
  host: string;
  port: number;
  socket?: string | undefined;
  user?: string | undefined;
  password?: Secret | undefined;
  bin_dir?: string | undefined;
}

async function clientTool(binDir?: string): Promise<string> {
  try {
    return await resolveTool("mariadb", binDir);
  } catch {
    return resolveTool("mysql", binDir);
  }
}

/** Runs SQL with the client in batch mode, the credentials in a private option file (never in argv). */
async function withRun<T>(srv: Server, fn: (run: Run) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const lines = ["[client]", ...(srv.user ? [`user=${quoteOption(srv.user)}`] : []), ...(srv.password ? [`password=${quoteOption(srv.password.reveal())}`] : []), `host=${quoteOption(srv.host)}`, `port=${srv.port}`, ...(srv.socket ? [`socket=${quoteOption(srv.socket)}`] : [])];
  const priv = await privateDir("dbkeep-mysql-verify-", { "client.cnf": lines.join("\n") + "\n" });
  const client = await clientTool(srv.bin_dir);
  const where = srv.socket ? `socket ${srv.socket}` : `host ${srv.host}, port ${srv.port}`;
  try {
    return await fn(async (sql) => {
      const out = await runTool(client, [`--defaults-extra-file=${join(priv.dir, "client.cnf")}`, "--batch", "--skip-column-names", "--default-character-set=utf8mb4", "-e", sql], {
        env: minimalEnv(), context: `${where}, user ${srv.user ?? userInfo().username}`, ...(signal ? { signal } : {}),
      });
      return out.split("\n").filter((l) => l !== "").map((l) => l.split("\t").map((f) => f.replace(/\\([\\ntr0])/g, (_m, c: string) => ({ n: "\n", t: "\t", r: "\r", "0": "\0" })[c] ?? c)));
    });
  } finally {
    await priv.close();
  }
}

function serverOf(o: Record<string, unknown>, password: Secret | undefined): Server {
  return { host: String(o.host ?? "localhost"), port: Number(o.port ?? 3306), socket: o.socket as string | undefined, user: o.user as string | undefined, password, bin_dir: o.bin_dir as string | undefined };
}

export const mysqlVerifier: EngineVerifier = {
  refuse(m) {
    if (m.format === "plain-databases") {
      return "a backup of several databases recreates them under their own names: it cannot be restored into a scratch database";
    }
    if (m.format === "mydumper" && (m.tables ?? []).some((t) => t.name.includes("."))) {
      return "a mydumper backup of several databases restores them under their own names: it cannot be restored into a scratch database";
    }
    return undefined;
  },

  async prepare(o: ScratchOptions): Promise<ScratchTarget> {
    if (o.cluster) throw new DbkeepError("USAGE", "scratch_cluster is for PostgreSQL; MySQL/MariaDB backups are verified in a scratch database on verify_datasource");
    const name = scratchName(o.job);
    const srv = serverOf(o.options, o.password);
    const run = <T>(fn: (r: Run) => Promise<T>) => withRun(srv, fn, o.signal);
    const { database: _d, databases: _ds, all_databases: _a, ...rest } = o.options;
    return {
      kind: "database",
      name,
      where: `database ${name} on ${srv.socket ?? `${srv.host}:${srv.port}`}`,
      datasource: { ...rest, engine: "mysql", database: name },
      catalog: () => run((r) => mysqlCatalog(r, name)),
      integrity: () =>
        run(async (r): Promise<CheckResult> => {
          const tables = await mysqlTables(r, name);
          if (!tables.length) return { name: "integrity", status: "SKIP", detail: "no tables" };
          const rows = await r(`CHECK TABLE ${tables.map((t) => `${ident(name)}.${ident(t)}`).join(", ")} EXTENDED`);
          // One or more rows per table; the last one of each says status / OK, anything else is a problem.
          const bad = rows.filter((x) => x[2] === "error" || (x[2] === "status" && x[3] !== "OK"));
          if (bad.length) return { name: "integrity", status: "FAIL", detail: `CHECK TABLE: ${bad.slice(0, 3).map((x) => `${x[0]}: ${x[3]}`).join("; ")}` };
          return { name: "integrity", status: "PASS", detail: `CHECK TABLE ... EXTENDED ok on ${tables.length} table(s)` };
        }),
      orphans: (limit: number) =>
        run(async (r): Promise<CheckResult> => {
          const fks = await r(
            `SELECT k.TABLE_NAME, k.CONSTRAINT_NAME, k.REFERENCED_TABLE_SCHEMA, k.REFERENCED_TABLE_NAME, GROUP_CONCAT(k.COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR '\\t'), GROUP_CONCAT(k.REFERENCED_COLUMN_NAME ORDER BY k.ORDINAL_POSITION SEPARATOR '\\t')
               FROM information_schema.KEY_COLUMN_USAGE k WHERE k.TABLE_SCHEMA = ${lit(name)} AND k.REFERENCED_TABLE_NAME IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2`,
          );
          if (!fks.length) return { name: "orphans", status: "SKIP", detail: "no foreign keys" };
          const found: string[] = [];
          for (const [table, cons, pschema, ptable, ccols, pcols] of fks) {
            const cc = (ccols ?? "").split("\t");
            const pc = (pcols ?? "").split("\t");
            const schema = pschema === o.manifest.database ? name : (pschema ?? name);
            const sql = `SELECT COUNT(*) FROM (SELECT ${cc.map(ident).join(", ")} FROM ${ident(name)}.${ident(table ?? "")} LIMIT ${limit}) s WHERE ${cc.map((c) => `s.${ident(c)} IS NOT NULL`).join(" AND ")} AND NOT EXISTS (SELECT 1 FROM ${ident(schema)}.${ident(ptable ?? "")} p WHERE ${cc.map((c, i) => `p.${ident(pc[i] ?? "")} = s.${ident(c)}`).join(" AND ")})`;
            const n = Number((await r(sql))[0]?.[0] ?? 0);
            if (n > 0) found.push(`${table}.${cons}: ${n} row(s)`);
          }
          if (found.length) return { name: "orphans", status: "FAIL", detail: `rows pointing nowhere: ${found.slice(0, 5).join("; ")}`, data: { orphans: found } };
          return { name: "orphans", status: "PASS", detail: `${fks.length} foreign key(s), up to ${limit} rows each: no orphan rows` };
        }),
      query: (sql: string) =>
        run(async (r) => {
          const rows = await r(`USE ${ident(name)}; ${sql}`);
          const v = rows[0]?.[0];
          return v === undefined ? undefined : v === "NULL" ? null : v;
        }),
      env: () => ({
        MYSQL_HOST: srv.host,
        MYSQL_TCP_PORT: String(srv.port),
        MYSQL_DATABASE: name,
        ...(srv.user ? { MYSQL_USER: srv.user } : {}),
        ...(srv.password ? { MYSQL_PWD: srv.password.reveal() } : {}),
        DATABASE_URL: `mysql://${encodeURIComponent(srv.user ?? "root")}@${srv.host}:${srv.port}/${name}`,
      }),
      async drop() {
        await run(async (r) => {
          const rows = await r(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ${lit(name)} OR SCHEMA_NAME LIKE ${lit(`${name}\\_dbkeep\\_%`)}`);
          for (const [db] of rows) await r(`DROP DATABASE IF EXISTS ${ident(db ?? "")}`);
        });
      },
      async keep() {
        await run((r) => r(`ALTER DATABASE ${ident(name)} COMMENT = ${lit(KEPT_MARK)}`));
      },
    };
  },

  async cleanupLeftovers(o) {
    const srv = serverOf(o.options, o.password);
    return withRun(srv, async (r) => {
      const rows = await r(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ${lit(SCRATCH_PREFIX.replace(/_/g, "\\_") + "%")} AND IFNULL(SCHEMA_COMMENT, '') <> ${lit(KEPT_MARK)} ORDER BY 1`);
      const removed: string[] = [];
      for (const [db] of rows) {
        if (!db || !isDeadScratch(db)) continue;
        await r(`DROP DATABASE IF EXISTS ${ident(db)}`);
        removed.push(db);
        o.log.info({ database: db }, "dropped the scratch database of a killed verify run");
      }
      return removed;
    }, o.signal);
  },
};
