import { createHash } from "node:crypto";
import { once } from "node:events";
import type { PassThrough, Readable } from "node:stream";
import mysql from "mysql2";
import { DbkeepError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { resolveSelection, type ResolvedSelection, type SelectionPatterns } from "../../core/selection.js";
import { differentialRecord, startDump } from "../dump.js";
import { mysql2Failure, withTlsAttempts, type MysqlTlsSettings } from "./tls.js";
import type { DifferentialDumpSettings, DifferentialSupport, Dump, DumpOptions, RestoreOptions } from "../engine.js";

/**
 * Resolves the globs against the base tables of `database` (mysqldump has no globs): the table list to pass, or
 * --ignore-table options when only exclusions are given (views, routines and the rest then stay in the dump).
 */
export function resolveMysqlSelection(sel: SelectionPatterns, database: string, tables: string[]): ResolvedSelection & { args: string[]; names: string[] } {
  const r = resolveSelection(sel, tables.map((t) => ({ schema: database, table: t })), [database], { fold: false, what: `database ${database}`, withSchemas: false });
  const names = r.tables.map((t) => t.table);
  const args = sel.tables?.length ? ["--", database, ...names] : [...r.excludedTables.map((t) => `--ignore-table=${database}.${t.table}`), "--", database];
  return { ...r, args, names };
}

/**
 * MariaDB sequences that the selected tables' defaults draw from (DEFAULT NEXTVAL(seq)) and that are not selected
 * themselves: a partial dump holds them too (mysqldump takes a sequence by name), or it would not restore into a
 * database without them.
 */
export async function mysqlSequenceDependencies(run: (sql: string) => Promise<string[][]>, database: string, tables: string[]): Promise<string[]> {
  if (tables.length === 0) return [];
  const rows = await run(
    `SELECT DISTINCT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ${lit(database)} AND TABLE_NAME IN (${tables.map(lit).join(", ")})
        AND COLUMN_DEFAULT LIKE 'nextval(%'`,
  );
  const seqs = rows.map((r) => sequenceOf(r[0] ?? null, database)).filter((x): x is string => x !== undefined && !tables.includes(x));
  return [...new Set(seqs)].sort();
}

export interface MysqlConnectionOptions {
  host: string;
  port: number;
  socket?: string;
  user?: string;
  password?: string;
  database: string;
  /** TLS as the datasource says (see tls.ts). */
  tls: MysqlTlsSettings;
}

type Conn = mysql.Connection;

interface Column {
  name: string;
  dataType: string;
  columnType: string;
  generated: boolean;
}

interface TableMeta {
  table: string;
  cols: Column[];
  pk: string[];
  /** MariaDB sequences its column defaults draw from (DEFAULT NEXTVAL(seq)), as `seq` names in this database. */
  seqs: string[];
  /**
   * What else an applied differential depends on: NULL or NOT NULL, unique keys, CHECK constraints and partitions.
   * A change makes the next run a full backup.
   */
  shape: unknown;
}

const BINARY_TYPES = ["binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"];
const TIMESTAMP_TYPES = ["timestamp", "datetime"];

function ident(name: string): string {
  return `\`${name.replace(/`/g, "``")}\``;
}
function lit(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "''")}'`;
}

/** The server renders each value as an SQL literal: hex for bytes, QUOTE() for the rest, always as utf8mb4 text. */
function literalExpr(c: Column): string {
  const id = ident(c.name);
  if (BINARY_TYPES.includes(c.dataType)) return `IF(${id} IS NULL, 'NULL', CONCAT('X''', HEX(${id}), ''''))`;
  if (c.dataType === "bit") return `IF(${id} IS NULL, 'NULL', CONCAT('b''', BIN(${id} + 0), ''''))`;
  return `CONVERT(QUOTE(${id}) USING utf8mb4)`;
}
const rowExpr = (cols: Column[]) => `CONCAT('(', CONCAT_WS(',', ${cols.map(literalExpr).join(", ")}), ')')`;

function digestSql(t: TableMeta): string {
  return `SELECT CONCAT(COUNT(*), ':', IFNULL(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS(0x1f, ${t.pk.map(ident).join(", ")})), 1, 15), 16, 10) AS UNSIGNED)), 0)) AS d FROM ${ident(t.table)}`;
}

function schemaDigestOf(tables: TableMeta[]): string {
  return createHash("sha256").update(JSON.stringify(tables.map((t) => [t.table, t.cols.map((c) => `${c.name}:${c.columnType}${c.generated ? ":generated" : ""}`), t.pk, t.shape]))).digest("hex");
}

/** `nextval(`db`.`seq`)`, as information_schema shows a MariaDB sequence default: the sequence's name, in `database` only. */
function sequenceOf(columnDefault: string | null, database: string): string | undefined {
  const m = /^nextval\(`((?:[^`]|``)+)`\.`((?:[^`]|``)+)`\)$/i.exec(columnDefault ?? "");
  return m && m[1]!.replace(/``/g, "`") === database ? m[2]!.replace(/``/g, "`") : undefined;
}

async function write(out: PassThrough, chunk: string | Buffer, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw new DbkeepError("ABORTED", "differential dump cancelled");
  if (!out.write(chunk)) await once(out, "drain", { signal });
}

/** Tables dumped by changes (with their basis column) and tables dumped whole; a basis column of another type is refused. */
function classify(tables: TableMeta[], d: Pick<DifferentialDumpSettings, "basisColumn" | "basisColumns">) {
  const basis: Record<string, string> = {};
  const fullTables: { name: string; reason: string }[] = [];
  const columns = new Map<string, Column>();
  for (const t of tables) {
    const col = t.table in d.basisColumns ? (d.basisColumns[t.table] ?? null) : d.basisColumn;
    if (t.pk.length === 0) {
      fullTables.push({ name: t.table, reason: "no primary key" });
      continue;
    }
    if (col === null) {
      fullTables.push({ name: t.table, reason: "basis column switched off (basis_columns: null)" });
      continue;
    }
    const c0 = t.cols.find((x) => x.name === col);
    if (!c0) {
      fullTables.push({ name: t.table, reason: `no column ${col}` });
      continue;
    }
    if (!TIMESTAMP_TYPES.includes(c0.dataType)) {
      throw new DbkeepError("USAGE", `basis column ${t.table}.${col} is ${c0.columnType}, not a TIMESTAMP or DATETIME: a differential cannot tell which rows changed`, {
        hint: `name a TIMESTAMP or DATETIME column in basis_columns: { ${t.table}: COLUMN }, or basis_columns: { ${t.table}: null } to dump the table whole`,
      });
    }
    basis[t.table] = col;
    columns.set(t.table, c0);
  }
  return { basis, fullTables, columns };
}

interface TriggerDef {
  name: string;
  table: string;
  statement: string;
  sqlMode: string;
  charset: string;
  collation: string;
}

export interface MysqlDifferentialDeps {
  connection(): MysqlConnectionOptions;
  database: string;
  selection?: SelectionPatterns;
  where: string;
  /** Runs a SQL script from `input` with the client on the target; an input error kills the client (rollback). */
  applyScript(input: Readable, ropts: RestoreOptions): Promise<void>;
}

export function createMysqlDifferential(deps: MysqlDifferentialDeps): DifferentialSupport {
  const { database } = deps;

  async function connect(): Promise<Conn> {
    const o = deps.connection();
    try {
      return await withTlsAttempts(o.tls, async (ssl) => {
        const conn = mysql.createConnection({
          ...(o.socket ? { socketPath: o.socket } : { host: o.host, port: o.port }),
          ...(o.user ? { user: o.user } : {}),
          ...(o.password ? { password: o.password } : {}),
          database: o.database,
          charset: "UTF8MB4_GENERAL_CI",
          dateStrings: true,
          supportBigNumbers: true,
          bigNumberStrings: true,
          connectTimeout: 15000,
          ...(ssl ? { ssl } : {}),
        });
        conn.on("error", () => undefined);
        try {
          await conn.promise().connect();
        } catch (err) {
          conn.destroy();
          throw err;
        }
        return conn;
      });
    } catch (err) {
      if (err instanceof DbkeepError) throw err;
      const f = mysql2Failure(err);
      throw new DbkeepError("CONNECTION_FAILED", `cannot connect to the MySQL/MariaDB server (${deps.where})`, {
        details: (err as Error).message,
        hint: f.hint ?? "check host, port, user and password of the datasource",
        retryable: f.retryable,
        cause: err,
      });
    }
  }

  async function q<T = Record<string, unknown>>(conn: Conn, sql: string, params: unknown[] = []): Promise<T[]> {
    const [rows] = await conn.promise().query(sql, params);
    return rows as T[];
  }

  async function withConn<T>(fn: (c: Conn) => Promise<T>): Promise<T> {
    const c = await connect();
    try {
      return await fn(c);
    } finally {
      await c.promise().end().catch(() => c.destroy());
    }
  }

  async function selected(c: Conn): Promise<TableMeta[]> {
    const all = (await q<{ t: string }>(c, "SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY 1", [database])).map((r) => r.t);
    const names = deps.selection ? resolveMysqlSelection(deps.selection, database, all).names : all;
    return tableMeta(c, names);
  }

  async function tableMeta(c: Conn, names: string[]): Promise<TableMeta[]> {
    if (names.length === 0) return [];
    const cols = await q<{ t: string; name: string; dt: string; ct: string; gen: string; nullable: string; def: string | null }>(
      c,
      `SELECT TABLE_NAME AS t, COLUMN_NAME AS name, DATA_TYPE AS dt, COLUMN_TYPE AS ct, IS_GENERATED AS gen, IS_NULLABLE AS nullable, COLUMN_DEFAULT AS def
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?) ORDER BY TABLE_NAME, ORDINAL_POSITION`,
      [database, names],
    );
    const uniques = await q<{ t: string; k: string }>(
      c,
      `SELECT TABLE_NAME AS t, CONCAT(INDEX_NAME, '(', GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX), ')') AS k FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?) AND NON_UNIQUE = 0 GROUP BY TABLE_NAME, INDEX_NAME ORDER BY 1, 2`,
      [database, names],
    );
    const parts = await q<{ t: string; p: string }>(
      c,
      `SELECT TABLE_NAME AS t, CONCAT_WS(' ', PARTITION_NAME, PARTITION_METHOD, PARTITION_EXPRESSION, PARTITION_DESCRIPTION, SUBPARTITION_NAME) AS p
         FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?) AND PARTITION_NAME IS NOT NULL ORDER BY 1, 2`,
      [database, names],
    );
    // CHECK constraints: information_schema.CHECK_CONSTRAINTS (MariaDB 10.2, MySQL 8.0.16 and later).
    const checks = await q<{ t: string; k: string }>(
      c,
      "SELECT TABLE_NAME AS t, CONCAT(CONSTRAINT_NAME, ' ', CHECK_CLAUSE) AS k FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME IN (?) ORDER BY 1, 2",
      [database, names],
    ).catch(() => [] as { t: string; k: string }[]);
    const pks = await q<{ t: string; name: string }>(
      c,
      `SELECT TABLE_NAME AS t, COLUMN_NAME AS name FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?) AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX`,
      [database, names],
    );
    return [...names].sort().map((table) => ({
      table,
      cols: cols.filter((x) => x.t === table).map((x) => ({ name: x.name, dataType: x.dt.toLowerCase(), columnType: x.ct, generated: x.gen === "ALWAYS" })),
      pk: pks.filter((x) => x.t === table).map((x) => x.name),
      seqs: [...new Set(cols.filter((x) => x.t === table).map((x) => sequenceOf(x.def, database)).filter((x): x is string => x !== undefined))],
      shape: [
        cols.filter((x) => x.t === table).map((x) => `${x.name}:${x.nullable}`),
        uniques.filter((x) => x.t === table).map((x) => x.k),
        checks.filter((x) => x.t === table).map((x) => x.k),
        parts.filter((x) => x.t === table).map((x) => x.p),
      ],
    }));
  }

  async function safePoint(o: { marginSeconds: number; log: Logger }): Promise<string> {
    return withConn(async (c) => {
      const now = Number((await q<{ v: string }>(c, "SELECT UNIX_TIMESTAMP(NOW(6)) AS v"))[0]?.v);
      let oldest = now;
      try {
        const r = (await q<{ v: string | null }>(c, "SELECT UNIX_TIMESTAMP(MIN(trx_started)) AS v FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID()"))[0]?.v;
        if (r !== null && r !== undefined && Number(r) < now) oldest = Number(r);
      } catch (err) {
        o.log.warn({ err: (err as Error).message }, "open transactions cannot be listed (information_schema.INNODB_TRX needs PROCESS): the safe point relies on cutoff_margin");
      }
      return new Date(Math.floor((oldest - o.marginSeconds) * 1000)).toISOString();
    });
  }

  function dump(dopts: DumpOptions, d: DifferentialDumpSettings): Dump {
    return startDump(async (out) => {
      const c = await connect();
      try {
        const cutoff = new Date(d.base.safe_point).toISOString();
        const epoch = (Date.parse(cutoff) / 1000).toFixed(3);
        // DATETIME columns hold wall-clock times of the server's zone: their cutoff is taken before switching to UTC.
        const localCutoff = (await q<{ v: string }>(c, `SELECT CAST(FROM_UNIXTIME(${epoch}) AS CHAR) AS v`))[0]?.v ?? "";
        await q(c, "SET time_zone = '+00:00'");
        await q(c, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ");
        await q(c, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY");
        const snap = (await q<{ at: string; v: string }>(c, "SELECT UNIX_TIMESTAMP(NOW(6)) AS at, VERSION() AS v"))[0]!;
        const tables = await selected(c);
        if (schemaDigestOf(tables) !== d.base.schema_digest) {
          throw new DbkeepError("ENGINE_FAILED", `the tables of ${database} changed since full backup ${d.base.id} was planned on`, {
            hint: "run the job again: a change of tables or columns makes the next run a full backup",
            retryable: true,
          });
        }
        const { basis, fullTables, columns } = classify(tables, d);
        const predicate = new Map<string, string>();
        for (const [table, c0] of columns) {
          predicate.set(table, c0.dataType === "timestamp" ? `${ident(c0.name)} >= FROM_UNIXTIME(${epoch})` : `${ident(c0.name)} >= ${lit(localCutoff)}`);
        }
        for (const f of fullTables) dopts.log.info({ table: f.name, reason: f.reason }, "dumped whole in this differential");
        const full = new Set(fullTables.map((f) => f.name));
        const snapshotAt = new Date(Math.floor(Number(snap.at) * 1000)).toISOString();
        const w = (chunk: string | Buffer) => write(out, chunk, dopts.signal);

        const eachBatch = async (sql: string, emit: (rows: Buffer[]) => Promise<void>) => {
          const stream = c.query({ sql, rowsAsArray: true, typeCast: (field) => field.buffer() }).stream({ highWaterMark: 200 });
          let batch: Buffer[] = [];
          let size = 0;
          for await (const row of stream as AsyncIterable<Buffer[]>) {
            const b = row[0]!;
            batch.push(b);
            size += b.length;
            if (batch.length >= 500 || size > 1 << 20) {
              await emit(batch);
              batch = [];
              size = 0;
            }
          }
          if (batch.length) await emit(batch);
        };
        const rows = (b: Buffer[]) => Buffer.concat(b.flatMap((x, i) => (i ? [Buffer.from(",\n"), x] : [x])));

        await w(
          `-- dbkeep differential of database ${database.replace(/\n/g, " ")}\n-- base ${d.base.id}, rows changed at or after ${cutoff}, snapshot ${snapshotAt}\n` +
            "SET NAMES utf8mb4;\nSET time_zone = '+00:00';\nSET FOREIGN_KEY_CHECKS = 0;\nSET SQL_MODE = 'NO_AUTO_VALUE_ON_ZERO';\nSTART TRANSACTION;\n",
        );
        for (const t of tables) {
          const cols = t.cols.filter((x) => !x.generated);
          const insert = `INSERT INTO ${ident(t.table)} (${cols.map((x) => ident(x.name)).join(", ")}) VALUES\n`;
          if (t.pk.length === 0) {
            await w(`\n-- ${t.table}: whole (no primary key)\nDELETE FROM ${ident(t.table)};\n`);
            await eachBatch(`SELECT ${rowExpr(cols)} FROM ${ident(t.table)}`, async (b) => w(Buffer.concat([Buffer.from(insert), rows(b), Buffer.from(";\n")])));
            continue;
          }
          const rest = cols.filter((x) => !t.pk.includes(x.name)).map((x) => x.name);
          const update = `ON DUPLICATE KEY UPDATE ${(rest.length ? rest : [t.pk[0]!]).map((x) => `${ident(x)} = VALUES(${ident(x)})`).join(", ")}`;
          const where = full.has(t.table) ? "" : ` WHERE ${predicate.get(t.table)}`;
          await w(`\n-- ${t.table}: ${full.has(t.table) ? "whole" : `rows with ${basis[t.table]} >= ${cutoff}`}\n`);
          await eachBatch(`SELECT ${rowExpr(cols)} FROM ${ident(t.table)}${where}`, async (b) => w(Buffer.concat([Buffer.from(insert), rows(b), Buffer.from(`\n${update};\n`)])));
        }
        const keyDigests: Record<string, string> = {};
        let k = 0;
        for (const t of tables) {
          if (t.pk.length === 0) continue;
          if (!d.trackDeletes && !full.has(t.table)) {
            keyDigests[t.table] = String((await q<{ d: string }>(c, digestSql(t)))[0]?.d ?? "");
            continue;
          }
          const keys = ident(`dbkeep_keys_${k++}`);
          const pkCols = t.cols.filter((x) => t.pk.includes(x.name));
          const pkList = t.pk.map(ident).join(", ");
          await w(`\n-- ${t.table}: primary keys present at dump time\nCREATE TEMPORARY TABLE ${keys} (PRIMARY KEY (${pkList})) SELECT ${pkList} FROM ${ident(t.table)} LIMIT 0;\n`);
          const ordered = t.pk.map((p) => pkCols.find((x) => x.name === p)!);
          await eachBatch(`SELECT ${rowExpr(ordered)} FROM ${ident(t.table)}`, async (b) => w(Buffer.concat([Buffer.from(`INSERT INTO ${keys} (${pkList}) VALUES\n`), rows(b), Buffer.from(";\n")])));
          await w(`DELETE x FROM ${ident(t.table)} x LEFT JOIN ${keys} k ON ${t.pk.map((p) => `k.${ident(p)} = x.${ident(p)}`).join(" AND ")} WHERE k.${ident(t.pk[0]!)} IS NULL;\nDROP TEMPORARY TABLE ${keys};\n`);
        }
        const counters = await q<{ t: string; n: string | null }>(c, "SELECT TABLE_NAME AS t, AUTO_INCREMENT AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND AUTO_INCREMENT IS NOT NULL", [database]);
        // MariaDB sequences: those the tables' defaults draw from, and with no selection every one of the database
        // (an application may call NEXTVAL itself).
        const sequences = deps.selection
          ? [...new Set(tables.flatMap((t) => t.seqs))].sort()
          : (await q<{ t: string }>(c, "SELECT TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'SEQUENCE' ORDER BY 1", [database])).map((r) => r.t);
        const sequenceValues: [string, string][] = [];
        for (const seq of sequences) {
          const v = (await q<{ v: string }>(c, `SELECT next_not_cached_value AS v FROM ${ident(seq)}`))[0]?.v;
          if (v !== undefined) sequenceValues.push([seq, String(v)]);
        }
        await w("COMMIT;\nSET FOREIGN_KEY_CHECKS = 1;\n");
        // ALTER TABLE commits on its own: the counters come after the data's transaction, and only ever raise.
        for (const t of tables) {
          const n = counters.find((x) => x.t === t.table)?.n;
          if (n) await w(`ALTER TABLE ${ident(t.table)} AUTO_INCREMENT = ${Number(n)};\n`);
        }
        // As mysqldump restores a sequence; SETVAL never moves one back.
        for (const [seq, v] of sequenceValues) await w(`SELECT SETVAL(${ident(seq)}, ${BigInt(v).toString()}, 0);\n`);
        await w("\n-- dbkeep differential complete\n");
        await q(c, "COMMIT");
        out.end();
        return {
          serverVersion: snap.v,
          tables: tables.map((t) => ({ name: t.table })),
          differential: differentialRecord(d, { cutoff, snapshotAt, basis, fullTables, keyDigests }),
        };
      } finally {
        await c.promise().end().catch(() => c.destroy());
      }
    });
  }

  async function keyDigests(names: string[]): Promise<Record<string, string>> {
    return withConn(async (c) => {
      await q(c, "SET time_zone = '+00:00'");
      const out: Record<string, string> = {};
      for (const t of await tableMeta(c, names)) if (t.pk.length && t.cols.length) out[t.table] = String((await q<{ d: string }>(c, digestSql(t)))[0]?.d ?? "");
      return out;
    });
  }

  /**
   * Applies a differential with the target's triggers out of the way. The rows are the source's, with whatever its
   * triggers did to them already (Sakila's customer_create_date sets create_date, its ins_film fills film_text); the
   * target's triggers must not act on them again, as they do not when mysqldump's output is loaded (it creates the
   * triggers after the data). MySQL and MariaDB cannot switch triggers off for a session, so the triggers of the
   * tables written to are dropped, the differential applied, and every trigger created again from its own SHOW
   * CREATE TRIGGER (with its sql_mode, character set and definer), whether the apply succeeded or not. DDL commits
   * on its own: a restore killed in between leaves the target without these triggers, like the half-applied restore
   * it is, until it is run again.
   */
  async function apply(input: Readable, ropts: RestoreOptions): Promise<void> {
    const triggers = await withConn(async (c) => {
      const rows = await q<{ name: string; t: string }>(
        c,
        `SELECT TRIGGER_NAME AS name, EVENT_OBJECT_TABLE AS t FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?
          ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER`,
        [database],
      );
      const defs: TriggerDef[] = [];
      for (const r of rows.filter((x) => !ropts.tables || ropts.tables.includes(x.t))) {
        const row = (await q<Record<string, string>>(c, `SHOW CREATE TRIGGER ${ident(r.name)}`))[0];
        if (!row?.["SQL Original Statement"]) throw new DbkeepError("ENGINE_FAILED", `cannot read the definition of trigger ${r.name} on ${r.t} (SHOW CREATE TRIGGER)`);
        defs.push({ name: r.name, table: r.t, statement: row["SQL Original Statement"], sqlMode: row.sql_mode ?? "", charset: row.character_set_client ?? "", collation: row.collation_connection ?? "" });
      }
      for (const d of defs) await q(c, `DROP TRIGGER ${ident(d.name)}`);
      return defs;
    });
    if (triggers.length) ropts.log.info({ triggers: triggers.length }, `the target's triggers are off while the differential is applied (${triggers.map((t) => t.name).join(", ")})`);
    let failure: unknown;
    try {
      await deps.applyScript(input, ropts);
    } catch (err) {
      failure = err;
    }
    const lost = await recreateTriggers(triggers, ropts.log);
    if (failure) throw failure;
    if (lost.length) {
      throw new DbkeepError("ENGINE_FAILED", `the differential was applied, but trigger(s) ${lost.join(", ")} of ${database} could not be created again`, {
        hint: "the log holds each trigger's CREATE statement: run them as a user who may create triggers with that definer",
      });
    }
  }

  /** Creates the triggers again in their order; returns the names of those that failed (each logged with its statement). */
  async function recreateTriggers(defs: TriggerDef[], log: Logger): Promise<string[]> {
    if (defs.length === 0) return [];
    const lost: string[] = [];
    let c: Conn | undefined;
    try {
      c = await connect();
    } catch (err) {
      for (const d of defs) log.error({ trigger: d.name, statement: d.statement, err: (err as Error).message }, `trigger ${d.name} was not created again`);
      return defs.map((d) => d.name);
    }
    try {
      for (const d of defs) {
        try {
          await q(c, "SET SESSION sql_mode = ?", [d.sqlMode]);
          // Its character set as recorded, where the text allows: this connection sends UTF-8.
          const ascii = !/[^\t\n\r\x20-\x7e]/.test(d.statement);
          const names = ascii && /^\w+$/.test(d.charset) && /^\w+$/.test(d.collation) ? `SET NAMES ${d.charset} COLLATE ${d.collation}` : "SET NAMES utf8mb4";
          await q(c, names);
          await q(c, d.statement);
        } catch (err) {
          lost.push(d.name);
          log.error({ trigger: d.name, table: d.table, statement: d.statement, err: (err as Error).message }, `trigger ${d.name} was not created again`);
        }
      }
    } finally {
      await c.promise().end().catch(() => c!.destroy());
    }
    return lost;
  }

  return {
    schemaDigest: (d) =>
      withConn(async (c) => {
        const tables = await selected(c);
        classify(tables, d);
        return schemaDigestOf(tables);
      }),
    safePoint,
    dump,
    apply,
    keyDigests,
  };
}
