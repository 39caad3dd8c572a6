import pg from "pg";
import { DbkeepError } from "../core/errors.js";
import { connectPg, pgConnectionError } from "../engines/postgres/connection.js";
import { mergePgTls, pgTlsFromEnv, pgTlsOf, resolvePgTls } from "../engines/postgres/tls.js";
import { Num, RawJson, type Cell } from "./cells.js";
import { DEFAULT_BATCH_ROWS, onAbort, queryFailed, type CatalogTable, type OpenOptions, type QueryConnection, type StatementResult } from "./connection.js";

const byteaParser = pg.types.getTypeParser(17, "text") as (v: string) => Buffer;
const NUMERIC_OIDS = new Set([20, 21, 23, 26, 700, 701, 1700]);

/** Values stay the server's text, except bool, numbers (exact text), json and bytea. */
function parserFor(oid: number): (v: string) => Cell {
  if (oid === 16) return (v) => v === "t";
  if (oid === 17) return byteaParser;
  if (oid === 114 || oid === 3802) return (v) => new RawJson(v);
  if (NUMERIC_OIDS.has(oid)) return (v) => new Num(v);
  return (v) => v;
}
const types = { getTypeParser: ((oid: number) => parserFor(oid)) as unknown as typeof pg.types.getTypeParser };

/** Statements a cursor can run: DECLARE ... CURSOR FOR takes a SELECT or VALUES (and TABLE, WITH). */
const CURSOR_VERBS = /^\s*(\(\s*)*(select|with|values|table)\b/i;

export async function openPostgres(options: Record<string, unknown>, o: OpenOptions): Promise<QueryConnection> {
  const host = (options.host as string | undefined) ?? "localhost";
  const port = (options.port as number | undefined) ?? 5432;
  const database = (options.database as string | undefined) ?? "postgres";
  const user = (options.user as string | undefined) ?? (o.oneOff ? process.env.PGUSER : undefined) ?? process.env.USER ?? "postgres";
  const where = `postgres ${user}@${host}:${port}/${database}`;
  let client: pg.Client;
  try {
    // URL mode takes libpq's PGSSL* variables too, as psql would.
    const tls = resolvePgTls(mergePgTls(o.oneOff ? pgTlsFromEnv(process.env) : {}, pgTlsOf(options)), host);
    client = await connectPg({
      host,
      port,
      user,
      password: o.secret("password")?.reveal() ?? (o.oneOff ? process.env.PGPASSWORD : undefined),
      database,
      connectionTimeoutMillis: 15000,
      application_name: "dbkeep query",
    }, tls);
  } catch (err) {
    const e = pgConnectionError(err, { host, port, database }, "check host, port, user and database; the password comes from the datasource, PGPASSWORD or ~/.pgpass");
    if (e.code !== "CONNECTION_FAILED") throw e;
    throw new DbkeepError("CONNECTION_FAILED", `cannot connect to ${where}: ${e.details ?? e.message}`, { cause: err, retryable: e.retryable, ...(e.hint ? { hint: e.hint } : {}) });
  }
  let broken: Error | undefined;
  client.on("error", (err) => (broken = err));
  let busy = false;

  // The extended protocol runs exactly one statement: `SELECT 1; COMMIT; DELETE ...` cannot slip through.
  const run = (text: string, rowMode?: "array") =>
    client.query({ text, queryMode: "extended", types, ...(rowMode ? { rowMode } : {}) } as pg.QueryConfig);

  async function execute(sql: string, eo: { write: boolean; signal?: AbortSignal; batchRows?: number }): Promise<StatementResult> {
    if (broken) throw queryFailed(broken, where);
    if (busy) throw new DbkeepError("INTERNAL", "a query is still running on this connection");
    busy = true;
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        busy = false;
        stopWatching();
      }
    };
    // Cancelling closes the connection: the server rolls the transaction back.
    const stopWatching = onAbort(eo.signal, () => void client.end().catch(() => undefined));
    const aborted = () => (eo.signal?.aborted ? new DbkeepError("ABORTED", "query cancelled") : undefined);
    try {
      if (eo.write) {
        const r = await run(sql, "array");
        if (r.fields.length === 0) {
          release();
          return { kind: "done", command: r.command ?? "", rowCount: r.rowCount };
        }
        const rows = r.rows as Cell[][];
        return {
          kind: "rows",
          columns: r.fields.map((f) => f.name),
          rows: (async function* () {
            try {
              yield* rows;
            } finally {
              release();
            }
          })(),
        };
      }
      await client.query("BEGIN TRANSACTION READ ONLY");
      await client.query("SET LOCAL bytea_output = 'hex'");
      if (!CURSOR_VERBS.test(sql.replace(/^(\s|--[^\n]*\n|\/\*[\s\S]*?\*\/)*/, ""))) {
        // SHOW, EXPLAIN: small results, no cursor possible.
        const r = await run(sql, "array");
        await client.query("COMMIT");
        const rows = r.rows as Cell[][];
        return { kind: "rows", columns: r.fields.map((f) => f.name), rows: (async function* () { try { yield* rows; } finally { release(); } })() };
      }
      await run(`DECLARE dbkeep_query NO SCROLL CURSOR FOR ${sql}`);
      const batch = eo.batchRows ?? DEFAULT_BATCH_ROWS;
      const first = await run(`FETCH ${batch} FROM dbkeep_query`, "array");
      const columns = first.fields.map((f) => f.name);
      const rows = (async function* () {
        let ok = false;
        try {
          let r = first;
          for (;;) {
            for (const row of r.rows as Cell[][]) yield row;
            if (r.rows.length < batch) break;
            r = await run(`FETCH ${batch} FROM dbkeep_query`, "array");
          }
          ok = true;
        } catch (err) {
          throw aborted() ?? queryFailed(err, where);
        } finally {
          // Stopped early (break) or done: the transaction only read, so ending it either way is the same.
          if (!broken && !eo.signal?.aborted) await client.query(ok ? "COMMIT" : "ROLLBACK").catch(() => undefined);
          release();
        }
      })();
      return { kind: "rows", columns, rows };
    } catch (err) {
      if (!broken && !eo.signal?.aborted && !eo.write) await client.query("ROLLBACK").catch(() => undefined);
      release();
      throw aborted() ?? queryFailed(err, where);
    }
  }

  async function catalog(): Promise<CatalogTable[]> {
    const r = await client.query<{ schema: string; name: string; column: string }>(
      `SELECT c.table_schema AS schema, c.table_name AS name, c.column_name AS column
         FROM information_schema.columns c
        WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') AND c.table_schema NOT LIKE 'pg_toast%'
        ORDER BY 1, 2, c.ordinal_position`,
    );
    const byName = new Map<string, CatalogTable>();
    for (const row of r.rows) {
      const name = row.schema === "public" ? row.name : `${row.schema}.${row.name}`;
      let t = byName.get(name);
      if (!t) byName.set(name, (t = { name, columns: [] }));
      t.columns.push(row.column);
    }
    return [...byName.values()];
  }

  return {
    dialect: "postgres",
    label: where,
    execute,
    catalog,
    close: async () => {
      await client.end().catch(() => undefined);
    },
  };
}
