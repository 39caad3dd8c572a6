import { userInfo } from "node:os";
import type { Connection, ConnectionOptions, FieldPacket, QueryError, ResultSetHeader, TypeCast } from "mysql2";
import { DbkeepError } from "../core/errors.js";
import { mysql2Failure, mysqlTlsOf, withTlsAttempts } from "../engines/mysql/tls.js";
import { Num, RawJson, type Cell } from "./cells.js";
import { DEFAULT_BATCH_ROWS, onAbort, queryFailed, type CatalogTable, type OpenOptions, type QueryConnection, type StatementResult } from "./connection.js";

const NUMERIC = new Set(["TINY", "SHORT", "LONG", "LONGLONG", "INT24", "YEAR", "FLOAT", "DOUBLE", "DECIMAL", "NEWDECIMAL"]);
const TEMPORAL = new Set(["DATE", "NEWDATE", "TIME", "TIME2", "DATETIME", "DATETIME2", "TIMESTAMP", "TIMESTAMP2"]);

/**
 * Numbers keep the server's exact text, dates and times too (no time zone conversion), JSON stays text, BIT and
 * GEOMETRY are bytes; strings in a binary character set (BINARY, VARBINARY, BLOB) come as bytes from the driver.
 */
const typeCast: TypeCast = (field, next) => {
  if (field.extendedFormat === "json" || field.type === "JSON") {
    const s = field.string("utf8");
    return s === null ? null : new RawJson(s);
  }
  if (NUMERIC.has(field.type)) {
    const s = field.string("ascii");
    return s === null ? null : new Num(s);
  }
  if (TEMPORAL.has(field.type)) return field.string("ascii");
  if (field.type === "BIT" || field.type === "GEOMETRY") return field.buffer();
  return next();
};

async function loadDriver(): Promise<typeof import("mysql2")> {
  try {
    return (await import("mysql2")).default;
  } catch (err) {
    throw new DbkeepError("TOOL_NOT_FOUND", "the mysql2 package is not installed: MySQL/MariaDB queries need it", {
      cause: err,
      hint: "npm install mysql2 in dbkeep's directory",
    });
  }
}

export async function openMysql(options: Record<string, unknown>, o: OpenOptions): Promise<QueryConnection> {
  const mysql = await loadDriver();
  const host = (options.host as string | undefined) ?? "localhost";
  const port = (options.port as number | undefined) ?? 3306;
  const socket = options.socket as string | undefined;
  const user = (options.user as string | undefined) ?? userInfo().username;
  const database = options.database as string | undefined;
  const schemas = database ? [database] : ((options.databases as string[] | undefined) ?? []);
  const where = `${options.engine === "mariadb" ? "mariadb" : "mysql"} ${user}@${socket ?? `${host}:${port}`}${database ? `/${database}` : ""}`;
  const config: ConnectionOptions = {
    ...(socket ? { socketPath: socket } : { host, port }),
    user,
    password: o.secret("password")?.reveal() ?? (o.oneOff ? process.env.MYSQL_PWD : undefined),
    ...(database ? { database } : {}),
    charset: "utf8mb4",
    connectTimeout: 15000,
    supportBigNumbers: true,
    bigNumberStrings: true,
    dateStrings: true,
    multipleStatements: false,
  };
  let conn: Connection;
  try {
    conn = await withTlsAttempts(mysqlTlsOf(options), (ssl) =>
      new Promise<Connection>((resolve, reject) => {
        const c = mysql.createConnection({ ...config, ...(ssl ? { ssl } : {}) });
        c.on("error", () => undefined);
        c.connect((err) => {
          if (!err) return resolve(c);
          c.destroy();
          reject(err);
        });
      }));
  } catch (err) {
    if (err instanceof DbkeepError) throw err;
    const f = mysql2Failure(err);
    throw new DbkeepError("CONNECTION_FAILED", `cannot connect to ${where}: ${(err as Error).message}`, {
      cause: err,
      retryable: f.retryable,
      hint: f.hint ?? "check host, port, user and database; the password comes from the datasource (password_env, password_file) or MYSQL_PWD",
    });
  }
  let broken: Error | undefined;
  conn.on("error", (err: Error) => (broken = err));
  let busy = false;

  const simple = (sql: string) =>
    new Promise<void>((resolve, reject) => conn.query(sql, (err) => (err ? reject(err) : resolve())));

  async function execute(sql: string, eo: { write: boolean; signal?: AbortSignal; batchRows?: number }): Promise<StatementResult> {
    if (broken) throw queryFailed(broken, where);
    if (busy) throw new DbkeepError("INTERNAL", "a query is still running on this connection");
    busy = true;
    const high = eo.batchRows ?? DEFAULT_BATCH_ROWS;
    const aborted = () => (eo.signal?.aborted ? new DbkeepError("ABORTED", "query cancelled") : undefined);
    // Cancelling closes the connection: the server ends the statement and rolls the transaction back.
    const stopWatching = onAbort(eo.signal, () => conn.destroy());
    let inTransaction = false;
    const finish = async (ok: boolean) => {
      if (inTransaction && !broken && !eo.signal?.aborted) await simple(ok ? "COMMIT" : "ROLLBACK").catch(() => undefined);
      inTransaction = false;
      busy = false;
      stopWatching();
    };
    try {
      if (!eo.write) {
        await simple("START TRANSACTION READ ONLY");
        inTransaction = true;
      }
    } catch (err) {
      await finish(false);
      throw aborted() ?? queryFailed(err, where);
    }

    // Rows are queued as the driver parses them; past `high` rows the socket is paused until the reader catches up.
    const queue: Cell[][] = [];
    let ended = false;
    let failure: unknown;
    let wake: (() => void) | undefined;
    let paused = false;
    const poke = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    let columns: string[] | undefined;
    let header: ResultSetHeader | undefined;
    let settled = false;
    let announce!: (v: void) => void;
    let announceFail!: (e: unknown) => void;
    const announced = new Promise<void>((res, rej) => {
      announce = res;
      announceFail = rej;
    });
    const q = conn.query({ sql, rowsAsArray: true, typeCast });
    q.on("fields", (fields: FieldPacket[] | undefined) => {
      // mysql2 emits "fields" with nothing for a statement without a result set (UPDATE, INSERT): not a result set.
      if (!fields) return;
      columns = fields.map((f) => f.name);
      if (!settled) {
        settled = true;
        announce();
      }
    });
    q.on("result", (row: unknown) => {
      if (!columns) {
        header = row as ResultSetHeader;
        return;
      }
      queue.push(row as Cell[]);
      if (queue.length >= high && !paused) {
        paused = true;
        conn.pause();
      }
      poke();
    });
    q.on("error", (err: QueryError) => {
      failure = err;
      if (!settled) {
        settled = true;
        announceFail(err);
      }
      poke();
    });
    q.on("end", () => {
      ended = true;
      if (!settled) {
        settled = true;
        announce();
      }
      poke();
    });
    try {
      await announced;
    } catch (err) {
      await finish(false);
      throw aborted() ?? queryFailed(err, where);
    }
    if (!columns) {
      // No result set: a write, or a read that returned nothing such as SET.
      await new Promise<void>((res) => (ended || failure ? res() : (wake = res)));
      if (failure) {
        await finish(false);
        throw aborted() ?? queryFailed(failure, where);
      }
      await finish(true);
      return { kind: "done", command: sql.trim().split(/\s+/, 1)[0]!.toUpperCase(), rowCount: header?.affectedRows ?? null };
    }
    const rows = (async function* () {
      let ok = false;
      try {
        for (;;) {
          if (queue.length > 0) {
            // Hand out the queue in one go; the batch is the unit of memory.
            const batch = queue.splice(0, queue.length);
            if (paused) {
              paused = false;
              conn.resume();
            }
            yield* batch;
            continue;
          }
          if (failure) throw failure;
          if (ended) break;
          await new Promise<void>((res) => (wake = res));
        }
        ok = true;
      } catch (err) {
        throw aborted() ?? queryFailed(err, where);
      } finally {
        if (!ok && !ended && !failure) {
          // Stopped early: the rest of the result still has to be read off the wire before the next statement.
          if (paused) conn.resume();
          await new Promise<void>((res) => {
            if (ended || failure) return res();
            q.on("end", () => res());
            q.on("error", () => res());
          });
        }
        await finish(ok);
      }
    })();
    return { kind: "rows", columns, rows };
  }

  async function catalog(): Promise<CatalogTable[]> {
    const filter = schemas.length
      ? `c.TABLE_SCHEMA IN (${schemas.map((s) => conn.escape(s)).join(", ")})`
      : "c.TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'mysql', 'sys')";
    const rows = await new Promise<string[][]>((resolve, reject) =>
      conn.query(
        { sql: `SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c WHERE ${filter} ORDER BY 1, 2, c.ORDINAL_POSITION`, rowsAsArray: true },
        (err, r) => (err ? reject(err) : resolve(r as unknown as string[][])),
      ),
    );
    const byName = new Map<string, CatalogTable>();
    for (const [schema, table, column] of rows) {
      const name = database ? String(table) : `${String(schema)}.${String(table)}`;
      let t = byName.get(name);
      if (!t) byName.set(name, (t = { name, columns: [] }));
      t.columns.push(String(column));
    }
    return [...byName.values()];
  }

  return {
    dialect: "mysql",
    label: where,
    execute,
    catalog,
    close: async () => {
      await new Promise<void>((res) => conn.end(() => res()));
    },
  };
}
