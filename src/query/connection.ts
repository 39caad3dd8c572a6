import type { Section } from "../config/load.js";
import { DbkeepError } from "../core/errors.js";
import type { Secret } from "../core/redact.js";
import type { Cell } from "./cells.js";
import type { Dialect } from "./classify.js";

export type StatementResult =
  | {
      kind: "rows";
      columns: string[];
      /**
       * The rows, fetched in batches as they are read. Read them to the end or stop early with `break` (or call
       * return()): either way the cursor and its transaction are closed.
       */
      rows: AsyncGenerator<Cell[], void, undefined>;
    }
  | { kind: "done"; command: string; rowCount: number | null };

export interface CatalogTable {
  /** As it is written in SQL: `orders`, or `audit.events` outside the default schema. */
  name: string;
  columns: string[];
}

/** One open connection to a datasource, for queries and the console. */
export interface QueryConnection {
  readonly dialect: Dialect;
  /** e.g. "postgres app@127.0.0.1:5432/shop", never a password. */
  readonly label: string;
  /**
   * Runs one statement. `write: false` runs it in a read-only transaction (a read-only connection for SQLite), so a
   * statement that tries to write fails even if the classifier missed it; `write: true` runs it as it is (autocommit).
   */
  execute(sql: string, o: { write: boolean; signal?: AbortSignal; batchRows?: number }): Promise<StatementResult>;
  /** Tables and views with their columns, for completion. */
  catalog(): Promise<CatalogTable[]>;
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Resolves `<field>`, `<field>_env` or `<field>_file` of the datasource. */
  secret: (field: string) => Secret | undefined;
  /** URL mode: the client's usual environment variables (PGPASSWORD, MYSQL_PWD) may supply the password. */
  oneOff: boolean;
}

/** Rows are fetched from the server in batches of this many (PostgreSQL cursor, MariaDB backpressure). */
export const DEFAULT_BATCH_ROWS = 1000;

export async function openQueryConnection(section: Section & { engine: string }, o: OpenOptions): Promise<QueryConnection> {
  switch (section.engine) {
    case "postgres":
    case "postgresql": {
      const { openPostgres } = await import("./postgres.js");
      return openPostgres(section.options, o);
    }
    case "mysql":
    case "mariadb": {
      const { openMysql } = await import("./mysql.js");
      return openMysql(section.options, o);
    }
    case "sqlite": {
      const { openSqlite } = await import("./sqlite.js");
      return openSqlite(section.options);
    }
    default:
      throw new DbkeepError("USAGE", `queries are not available for ${section.engine} datasources`, { hint: "query and console work with PostgreSQL, MySQL/MariaDB and SQLite" });
  }
}

/** Turns an abort into one error and removes the listener when the work ends. */
export function onAbort(signal: AbortSignal | undefined, fn: () => void): () => void {
  if (!signal) return () => undefined;
  if (signal.aborted) {
    queueMicrotask(fn);
    return () => undefined;
  }
  signal.addEventListener("abort", fn, { once: true });
  return () => signal.removeEventListener("abort", fn);
}

export function queryFailed(err: unknown, where: string): DbkeepError {
  if (err instanceof DbkeepError) return err;
  const e = err as Error & { code?: string; position?: string; hint?: string };
  const readOnly = /read-only transaction|readonly database|READ ONLY transaction|read only/i.test(e.message);
  return new DbkeepError("ENGINE_FAILED", `query failed (${where}): ${e.message}`, {
    cause: err,
    ...(readOnly
      ? { hint: "the statement tried to write inside a read-only query; if that is intended, run it with --allow-write" }
      : e.hint ? { hint: e.hint } : {}),
  });
}
