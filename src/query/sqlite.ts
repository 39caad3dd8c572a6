import { existsSync } from "node:fs";
import { resolve } from "node:path";
import Database from "better-sqlite3";
import { DbkeepError } from "../core/errors.js";
import type { Cell } from "./cells.js";
import { queryFailed, type CatalogTable, type QueryConnection, type StatementResult } from "./connection.js";

/**
 * Reads go through a connection opened read-only (SQLite itself refuses any write on it, including PRAGMAs that
 * change the file); a confirmed write opens a read-write connection for that one statement. Integers come as
 * bigint, so that 64-bit values keep every digit.
 */
export function openSqlite(options: Record<string, unknown>): QueryConnection {
  const path = resolve(String(options.path));
  const where = `sqlite ${path}`;
  if (!existsSync(path)) {
    throw new DbkeepError("CONNECTION_FAILED", `SQLite database ${path} not found`, { hint: "check the datasource's path (queries never create a database file)" });
  }
  let reader: Database.Database;
  try {
    reader = new Database(path, { readonly: true, fileMustExist: true });
    reader.pragma("busy_timeout = 5000");
  } catch (err) {
    throw new DbkeepError("CONNECTION_FAILED", `cannot open SQLite database ${path}: ${(err as Error).message}`, { cause: err });
  }

  async function execute(sql: string, eo: { write: boolean; signal?: AbortSignal }): Promise<StatementResult> {
    const db = eo.write ? new Database(path, { fileMustExist: true }) : reader;
    const done = () => {
      if (db !== reader) db.close();
    };
    let stmt: Database.Statement;
    try {
      if (db !== reader) db.pragma("busy_timeout = 5000");
      stmt = db.prepare(sql);
    } catch (err) {
      done();
      throw queryFailed(err, where);
    }
    if (!stmt.reader) {
      try {
        const r = stmt.run();
        return { kind: "done", command: sql.trim().split(/\s+/, 1)[0]!.toUpperCase(), rowCount: r.changes };
      } catch (err) {
        throw queryFailed(err, where);
      } finally {
        done();
      }
    }
    stmt.raw(true).safeIntegers(true);
    const columns = stmt.columns().map((c) => c.name);
    const it = stmt.iterate() as IterableIterator<Cell[]>;
    const rows = (async function* () {
      try {
        // better-sqlite3 reads synchronously; yielding per row lets the writer's backpressure pause the loop.
        for (const row of it) {
          if (eo.signal?.aborted) throw new DbkeepError("ABORTED", "query cancelled");
          yield row;
        }
      } catch (err) {
        throw queryFailed(err, where);
      } finally {
        it.return?.();
        done();
      }
    })();
    return { kind: "rows", columns, rows };
  }

  async function catalog(): Promise<CatalogTable[]> {
    const rows = reader
      .prepare(
        `SELECT m.name AS t, p.name AS c FROM sqlite_schema m JOIN pragma_table_info(m.name) p
          WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid`,
      )
      .all() as { t: string; c: string }[];
    const byName = new Map<string, CatalogTable>();
    for (const r of rows) {
      let t = byName.get(r.t);
      if (!t) byName.set(r.t, (t = { name: r.t, columns: [] }));
      t.columns.push(r.c);
    }
    return [...byName.values()];
  }

  return {
    dialect: "sqlite",
    label: where,
    execute,
    catalog,
    close: async () => {
      reader.close();
    },
  };
}
