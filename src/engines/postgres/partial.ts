import { createHash } from "node:crypto";
import { once } from "node:events";
import type { PassThrough, Readable } from "node:stream";
import type pg from "pg";
import { DbkeepError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { pgExactPattern, resolveSelection, type ResolvedSelection, type SelectionPatterns } from "../../core/selection.js";
import { differentialRecord, startDump } from "../dump.js";
import type { DifferentialDumpSettings, DifferentialSupport, Dump, DumpOptions, RestoreOptions } from "../engine.js";

/** A connected client; the caller ends it. */
export type Connect = () => Promise<pg.Client>;

interface PgTable {
  schema: string;
  table: string;
  kind: string;
  /** Partitions of a partitioned table, at every level: pg_dump -t does not take them along by itself. */
  parts: { schema: string; table: string }[];
}

const SYSTEM_FILTER = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'`;

async function listTables(c: pg.Client): Promise<PgTable[]> {
  const r = await c.query<PgTable>(
    `SELECT n.nspname AS schema, c.relname AS table, c.relkind::text AS kind,
            COALESCE((SELECT json_agg(json_build_object('schema', pn.nspname, 'table', pc.relname))
                        FROM pg_partition_tree(c.oid) pt JOIN pg_class pc ON pc.oid = pt.relid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                       WHERE pt.relid <> c.oid), '[]'::json) AS parts
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND ${SYSTEM_FILTER}
      ORDER BY 1, 2`,
  );
  return r.rows;
}

export interface PgSelection extends ResolvedSelection {
  /** pg_dump arguments that select exactly these tables. */
  args: string[];
  names: string[];
}

/** Resolves the globs against the catalog and turns the result into exact, quoted pg_dump patterns. */
export async function resolvePgSelection(c: pg.Client, sel: SelectionPatterns, database: string): Promise<PgSelection> {
  const all = await listTables(c);
  const schemas = (await c.query<{ nspname: string }>("SELECT nspname FROM pg_namespace ORDER BY 1")).rows.map((r) => r.nspname);
  const resolved = resolveSelection(sel, all, schemas, { fold: true, what: `database ${database}`, withSchemas: true });
  const byName = new Map(all.map((t) => [`${t.schema}.${t.table}`, t]));
  const withParts = (t: { schema: string; table: string }) => [t, ...(byName.get(`${t.schema}.${t.table}`)?.parts ?? [])];
  const args: string[] = [];
  if (sel.tables?.length) {
    for (const t of resolved.tables.flatMap(withParts)) args.push(`--table=${pgExactPattern(t.schema, t.table)}`);
  } else {
    for (const s of resolved.schemas) args.push(`--schema=${pgExactPattern(s)}`);
    for (const s of resolved.excludedSchemas) args.push(`--exclude-schema=${pgExactPattern(s)}`);
    for (const t of resolved.excludedTables.flatMap(withParts)) args.push(`--exclude-table=${pgExactPattern(t.schema, t.table)}`);
  }
  return { ...resolved, args, names: resolved.tables.map((t) => `${t.schema}.${t.table}`) };
}

interface Column {
  name: string;
  type: string;
  /** The type under any domain, e.g. "timestamp with time zone". */
  base: string;
  generated: boolean;
}

interface TableMeta {
  schema: string;
  table: string;
  kind: string;
  oid: number;
  cols: Column[];
  pk: string[];
  /** Sequences the table owns (serial, identity) or that its column defaults call, whether owned or not. */
  seqs: string[];
  /**
   * What else an applied differential depends on: NOT NULL, the labels of enum types and the definitions of domains
   * used by the columns, constraints and unique indexes. A change makes the next run a full backup.
   */
  shape: unknown;
}

async function tableMeta(c: pg.Client, names: { schema: string; table: string }[]): Promise<TableMeta[]> {
  const r = await c.query<TableMeta>(
    `WITH RECURSIVE types AS (
       -- The types a column's type is made of: an array's element, a domain's base, down to the last level.
       SELECT a.attrelid AS rel, a.attnum, a.atttypid AS typ, 0 AS depth FROM pg_attribute a
        WHERE a.attrelid IN (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                              WHERE (n.nspname, c.relname) IN (SELECT x->>0, x->>1 FROM json_array_elements($1::json) x))
          AND a.attnum > 0 AND NOT a.attisdropped
       UNION ALL
       SELECT t.rel, t.attnum, CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.typelem END, t.depth + 1
         FROM types t JOIN pg_type ty ON ty.oid = t.typ
        WHERE t.depth < 8 AND (ty.typtype = 'd' OR (ty.typcategory = 'A' AND ty.typelem <> 0))
     ), typedefs AS (
       SELECT t.rel, t.attnum, string_agg(CASE ty.typtype
                 WHEN 'e' THEN format_type(ty.oid, NULL) || ' enum ' || (SELECT string_agg(quote_literal(e.enumlabel), ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = ty.oid)
                 WHEN 'd' THEN format_type(ty.oid, NULL) || ' domain ' || format_type(ty.typbasetype, ty.typtypmod) || CASE WHEN ty.typnotnull THEN ' not null' ELSE '' END
                               || COALESCE(' ' || (SELECT string_agg(pg_get_constraintdef(k.oid), ' ' ORDER BY k.conname) FROM pg_constraint k WHERE k.contypid = ty.oid), '')
               END, '; ' ORDER BY t.depth) AS def
         FROM types t JOIN pg_type ty ON ty.oid = t.typ GROUP BY t.rel, t.attnum
     )
     SELECT n.nspname AS schema, c.relname AS table, c.relkind::text AS kind, c.oid::int AS oid,
            (SELECT json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                    'base', format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END, NULL), 'generated', a.attgenerated <> '')
                    ORDER BY a.attnum)
               FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS cols,
            json_build_array(
              (SELECT json_agg(json_build_array(a.attname, a.attnotnull, d.def) ORDER BY a.attnum)
                 FROM pg_attribute a LEFT JOIN typedefs d ON d.rel = a.attrelid AND d.attnum = a.attnum
                WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
              (SELECT json_agg(k.contype::text || ' ' || pg_get_constraintdef(k.oid) ORDER BY 1) FROM pg_constraint k WHERE k.conrelid = c.oid),
              (SELECT json_agg(regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', '') ORDER BY 1) FROM pg_index i
                WHERE i.indrelid = c.oid AND i.indisunique AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)),
              -- A row for a partition the full backup lacks would find no partition to go to.
              (SELECT json_agg(format('%s %s', pc.oid::regclass, pg_get_expr(pc.relpartbound, pc.oid)) ORDER BY 1)
                 FROM pg_partition_tree(c.oid) pt JOIN pg_class pc ON pc.oid = pt.relid WHERE pt.relid <> c.oid)
            ) AS shape,
            COALESCE((SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index i
                        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                       WHERE i.indrelid = c.oid AND i.indisprimary), '{}') AS pk,
            COALESCE((SELECT array_agg(DISTINCT format('%I.%I', sn.nspname, s.relname)) FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
                       WHERE s.relkind = 'S' AND (
                             EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = s.oid AND d.classid = 'pg_class'::regclass
                                        AND d.refobjid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
                          -- nextval() in a column default: the sequence need not be OWNED BY the column (hand-written schemas, pagila)
                          OR EXISTS (SELECT 1 FROM pg_attrdef ad JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                                      WHERE ad.adrelid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid = s.oid))), '{}') AS seqs
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE (n.nspname, c.relname) IN (SELECT x->>0, x->>1 FROM json_array_elements($1::json) x)
      ORDER BY 1, 2`,
    [JSON.stringify(names.map((t) => [t.schema, t.table]))],
  );
  return r.rows;
}

/** Parents before children (foreign keys among the dumped tables), so that upserts never miss a referenced row. */
async function fkOrder(c: pg.Client, tables: TableMeta[]): Promise<TableMeta[]> {
  const oids = new Set(tables.map((t) => t.oid));
  // A foreign key of (or to) a partition counts for its partitioned table, the one the differential writes through.
  const r = await c.query<{ child: number; parent: number }>(
    `SELECT COALESCE(pg_partition_root(conrelid), conrelid)::int AS child, COALESCE(pg_partition_root(confrelid), confrelid)::int AS parent
       FROM pg_constraint WHERE contype = 'f'`,
  );
  const deps = new Map<number, number[]>();
  for (const e of r.rows) if (oids.has(e.child) && oids.has(e.parent) && e.child !== e.parent) deps.set(e.child, [...(deps.get(e.child) ?? []), e.parent]);
  const out: TableMeta[] = [];
  const state = new Map<number, "visiting" | "done">();
  const byOid = new Map(tables.map((t) => [t.oid, t]));
  const visit = (t: TableMeta) => {
    if (state.get(t.oid)) return; // a cycle is left to SET CONSTRAINTS ALL DEFERRED (deferrable keys only)
    state.set(t.oid, "visiting");
    for (const p of deps.get(t.oid) ?? []) visit(byOid.get(p)!);
    state.set(t.oid, "done");
    out.push(t);
  };
  for (const t of tables) visit(t);
  return out;
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
function lit(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
const qname = (t: { schema: string; table: string }) => `${ident(t.schema)}.${ident(t.table)}`;
const only = (t: TableMeta) => (t.kind === "p" ? "" : "ONLY ");

const TIMESTAMP_TYPES = ["timestamp with time zone", "timestamp without time zone"];

/** Session settings under which values are rendered and digests taken, on dump and on restore alike. */
const SESSION = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

function digestSql(t: TableMeta): string {
  const row = t.pk.map(ident).join(", ");
  return `SELECT count(*)::text || ':' || COALESCE(sum(('x' || substr(md5(ROW(${row}, NULL)::text), 1, 15))::bit(60)::bigint), 0)::text AS d FROM ${only(t)}${qname(t)}`;
}

function schemaDigestOf(tables: TableMeta[]): string {
  const shape = tables.map((t) => [`${t.schema}.${t.table}`, t.kind, t.cols.map((c) => `${c.name}:${c.type}${c.generated ? ":generated" : ""}`), t.pk, t.shape]);
  return createHash("sha256").update(JSON.stringify(shape)).digest("hex");
}

async function write(out: PassThrough, text: string, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw new DbkeepError("ABORTED", "differential dump cancelled");
  if (!out.write(text)) await once(out, "drain", { signal });
}

/**
 * The start of a differential's apply: nothing of the target's own acts on the rows being put back, as in pg_restore,
 * which loads the data before it creates triggers and rules. The rows are the source's, with whatever its triggers
 * and rules did to them already; firing the target's again would rewrite them (an updated_at trigger), add rows (an
 * audit trigger), or send them elsewhere (a rule that routes inserts to a child table, which also makes PostgreSQL
 * refuse INSERT ... ON CONFLICT).
 *
 * `session_replication_role = replica` (what logical replication applies rows under) switches off, for this
 * transaction only, every ordinary trigger and rule of every table, the partitions and the triggers of foreign keys
 * included. It needs a superuser (or, PostgreSQL 15+, GRANT SET ON PARAMETER). Otherwise the triggers and rules of
 * the tables written to (and of their partitions) are disabled with ALTER TABLE, which needs their owner, and
 * foreign keys stay checked: parents are applied before children and deferrable keys are deferred. Triggers and
 * rules that fire even then (ENABLE ALWAYS, or ENABLE REPLICA in replica mode) are disabled with ALTER TABLE in
 * either case. Each one switched off is recorded with its state and switched back to exactly that state at the end,
 * in the same transaction, so a failed apply leaves them as they were.
 */
function switchOff(tables: TableMeta[]): string {
  // pg_partition_tree() lists nothing for a table that is neither partitioned nor a partition: the tables themselves too.
  const dumped = `unnest(ARRAY[${tables.map((t) => `${lit(qname(t))}::regclass`).join(", ")}]) AS dumped(rel)`;
  const rels = `(SELECT dumped.rel FROM ${dumped} UNION SELECT p.relid FROM ${dumped}, pg_partition_tree(dumped.rel) AS p)`;
  return (
    `CREATE TEMP TABLE dbkeep_switched (rel regclass, kind text, name name, state "char") ON COMMIT DROP;\n` +
    `DO $dbkeep$DECLARE replica boolean := true; fires "char"; r record;\nBEGIN\n` +
    `  BEGIN SET LOCAL session_replication_role = replica; EXCEPTION WHEN insufficient_privilege THEN replica := false; END;\n` +
    `  fires := CASE WHEN replica THEN 'R' ELSE 'O' END;\n` +
    `  INSERT INTO dbkeep_switched SELECT t.tgrelid, 'TRIGGER', t.tgname, t.tgenabled FROM pg_trigger t\n` +
    `   WHERE NOT t.tgisinternal AND t.tgenabled IN ('A', fires) AND t.tgrelid IN ${rels};\n` +
    `  INSERT INTO dbkeep_switched SELECT w.ev_class, 'RULE', w.rulename, w.ev_enabled FROM pg_rewrite w\n` +
    `   WHERE w.ev_type <> '1' AND w.ev_enabled IN ('A', fires) AND w.ev_class IN ${rels};\n` +
    `  FOR r IN SELECT * FROM dbkeep_switched LOOP EXECUTE format('ALTER TABLE ONLY %s DISABLE %s %I', r.rel, r.kind, r.name); END LOOP;\n` +
    `END$dbkeep$;\n`
  );
}

const switchOn =
  "DO $dbkeep$DECLARE r record; BEGIN FOR r IN SELECT * FROM dbkeep_switched LOOP\n" +
  "  EXECUTE format('ALTER TABLE ONLY %s ENABLE %s %s %I', r.rel, CASE r.state WHEN 'A' THEN 'ALWAYS' WHEN 'R' THEN 'REPLICA' ELSE '' END, r.kind, r.name);\n" +
  "END LOOP; END$dbkeep$;\n";

/** Materialized views that read the tables, directly or through views and other materialized views, in refresh order. */
async function dependentMatviews(c: pg.Client, tables: TableMeta[]): Promise<string[]> {
  const r = await c.query<{ mv: string }>(
    `WITH RECURSIVE uses(rel, depth) AS (
       SELECT unnest($1::oid[]), 0
       UNION
       SELECT w.ev_class, u.depth + 1 FROM uses u
         JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = u.rel AND d.classid = 'pg_rewrite'::regclass
         JOIN pg_rewrite w ON w.oid = d.objid
        WHERE w.ev_class <> u.rel AND u.depth < 32
     )
     SELECT format('%I.%I', n.nspname, c.relname) AS mv FROM uses u JOIN pg_class c ON c.oid = u.rel JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'm' GROUP BY 1 ORDER BY max(u.depth), 1`,
    [tables.map((t) => t.oid)],
  );
  return r.rows.map((x) => x.mv);
}

export interface PgDifferentialDeps {
  database: string;
  connect: Connect;
  selection?: SelectionPatterns;
  /** Runs a SQL script from `input` with psql in one transaction on the target, stopping at the first error. */
  applyScript(input: Readable, ropts: RestoreOptions): Promise<void>;
}

export function createPgDifferential(deps: PgDifferentialDeps): DifferentialSupport {
  const { database } = deps;

  async function withClient<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = await deps.connect();
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  async function selected(c: pg.Client): Promise<TableMeta[]> {
    const names = deps.selection ? (await resolvePgSelection(c, deps.selection, database)).tables : (await listTables(c));
    return tableMeta(c, names);
  }

  async function safePoint(o: { marginSeconds: number; log: Logger }): Promise<string> {
    return withClient(async (c) => {
      const r = await c.query<{ now: Date; oldest: Date | null; hidden: string }>(
        `SELECT statement_timestamp() AS now,
                min(xact_start) FILTER (WHERE pid <> pg_backend_pid()) AS oldest,
                count(*) FILTER (WHERE backend_type = 'client backend' AND query = '<insufficient privilege>') AS hidden
           FROM pg_stat_activity WHERE datname = current_database()`,
      );
      const row = r.rows[0]!;
      if (Number(row.hidden) > 0) {
        o.log.warn(
          { sessions: Number(row.hidden) },
          "the start of other users' open transactions is hidden from this user (grant pg_read_all_stats): the safe point relies on cutoff_margin for them",
        );
      }
      const base = row.oldest && row.oldest < row.now ? row.oldest : row.now;
      return new Date(base.getTime() - o.marginSeconds * 1000).toISOString();
    });
  }

  function dump(dopts: DumpOptions, d: DifferentialDumpSettings): Dump {
    return startDump(async (out) => {
      const c = await deps.connect();
      try {
        const tz = (await c.query<{ tz: string }>("SELECT reset_val AS tz FROM pg_settings WHERE name = 'TimeZone'")).rows[0]?.tz ?? "UTC";
        await c.query(SESSION);
        await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        // The first statement takes the snapshot: its start time is the database's clock inside it.
        const snap = (await c.query<{ at: Date; v: string }>("SELECT statement_timestamp() AS at, current_setting('server_version') AS v")).rows[0]!;
        const tables = await fkOrder(c, await selected(c));
        if (schemaDigestOf(tables) !== d.base.schema_digest) {
          throw new DbkeepError("ENGINE_FAILED", `the tables of ${database} changed since full backup ${d.base.id} was planned on`, {
            hint: "run the job again: a change of tables or columns makes the next run a full backup",
            retryable: true,
          });
        }
        const cutoff = new Date(d.base.safe_point).toISOString();
        const { basis, fullTables, columns } = classify(tables, d);
        const predicate = new Map<TableMeta, string>();
        for (const t of tables) {
          const c0 = columns.get(t);
          if (!c0) continue;
          predicate.set(t, c0.base === "timestamp with time zone" ? `${ident(c0.name)} >= ${lit(cutoff)}::timestamptz` : `${ident(c0.name)} >= (${lit(cutoff)}::timestamptz AT TIME ZONE ${lit(tz)})`);
        }
        for (const f of fullTables) dopts.log.info({ table: f.name, reason: f.reason }, "dumped whole in this differential");
        const full = new Set(fullTables.map((f) => f.name));
        const snapshotAt = snap.at.toISOString();
        const w = (text: string) => write(out, text, dopts.signal);

        await w(
          `-- dbkeep differential of database ${database.replace(/\n/g, " ")}\n-- base ${d.base.id}, rows changed at or after ${cutoff}, snapshot ${snapshotAt}\n` +
            `${SESSION};\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nSET check_function_bodies = false;\nSET CONSTRAINTS ALL DEFERRED;\n` +
            switchOff(tables),
        );
        let cursor = 0;
        /** Streams `SELECT <rendered row>` through a cursor, calling `emit` with batches of rendered rows. */
        const eachBatch = async (sql: string, emit: (rows: string[]) => Promise<void>) => {
          const name = `dbkeep_c${cursor++}`;
          await c.query(`DECLARE ${name} NO SCROLL CURSOR FOR ${sql}`);
          for (;;) {
            const r = await c.query<{ v: string }>(`FETCH 500 FROM ${name}`);
            if (r.rows.length === 0) break;
            await emit(r.rows.map((x) => x.v));
          }
          await c.query(`CLOSE ${name}`);
        };
        const rowExpr = (cols: string[]) => `'(' || concat_ws(', ', ${cols.map((x) => `quote_nullable(${ident(x)})`).join(", ")}) || ')'`;

        for (const t of tables) {
          const name = `${t.schema}.${t.table}`;
          const cols = t.cols.filter((x) => !x.generated).map((x) => x.name);
          const insert = `INSERT INTO ${qname(t)} (${cols.map(ident).join(", ")}) OVERRIDING SYSTEM VALUE VALUES\n`;
          if (t.pk.length === 0) {
            await w(`\n-- ${name}: whole (no primary key)\nDELETE FROM ${only(t)}${qname(t)};\n`);
            await eachBatch(`SELECT ${rowExpr(cols)} AS v FROM ${only(t)}${qname(t)}`, (rows) => w(`${insert}${rows.join(",\n")};\n`));
            continue;
          }
          const rest = cols.filter((x) => !t.pk.includes(x));
          const conflict = `ON CONFLICT (${t.pk.map(ident).join(", ")}) ${rest.length ? `DO UPDATE SET ${rest.map((x) => `${ident(x)} = EXCLUDED.${ident(x)}`).join(", ")}` : "DO NOTHING"}`;
          const where = full.has(name) ? "" : ` WHERE ${predicate.get(t)}`;
          await w(`\n-- ${name}: ${full.has(name) ? "whole" : `rows with ${basis[name]} >= ${cutoff}`}\n`);
          await eachBatch(`SELECT ${rowExpr(cols)} AS v FROM ${only(t)}${qname(t)}${where}`, (rows) => w(`${insert}${rows.join(",\n")}\n${conflict};\n`));
        }

        // Deletes after every upsert, children first: the keys present now, and every other row goes.
        const keyDigests: Record<string, string> = {};
        let k = 0;
        for (const t of [...tables].reverse()) {
          const name = `${t.schema}.${t.table}`;
          if (t.pk.length === 0) continue;
          if (!d.trackDeletes && !full.has(name)) {
            keyDigests[name] = (await c.query<{ d: string }>(digestSql(t))).rows[0]?.d ?? "";
            continue;
          }
          const keys = `dbkeep_keys_${k++}`;
          await w(`\n-- ${name}: primary keys present at dump time\nCREATE TEMP TABLE ${keys} ON COMMIT DROP AS SELECT ${t.pk.map(ident).join(", ")} FROM ${only(t)}${qname(t)} WITH NO DATA;\n`);
          await eachBatch(`SELECT ${rowExpr(t.pk)} AS v FROM ${only(t)}${qname(t)}`, (rows) => w(`INSERT INTO ${keys} VALUES\n${rows.join(",\n")};\n`));
          await w(`DELETE FROM ${only(t)}${qname(t)} x WHERE NOT EXISTS (SELECT 1 FROM ${keys} k WHERE ${t.pk.map((p) => `k.${ident(p)} = x.${ident(p)}`).join(" AND ")});\n`);
        }
        for (const seq of [...new Set(tables.flatMap((t) => t.seqs))].sort()) {
          const s = (await c.query<{ v: string }>(`SELECT format('SELECT pg_catalog.setval(%L, %s, %s);', ${lit(seq)}, last_value, CASE WHEN is_called THEN 'true' ELSE 'false' END) AS v FROM ${seq}`)).rows[0];
          if (s) await w(`${s.v}\n`);
        }
        // pg_restore fills materialized views from the restored tables; so does a differential, from the applied rows.
        const mvs = await dependentMatviews(c, tables);
        if (mvs.length) await w(`\n-- materialized views over these tables, refreshed from the applied rows as pg_restore fills them\n`);
        for (const mv of mvs) {
          await w(`DO $dbkeep$BEGIN IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass(${lit(mv)}) AND relkind = 'm' AND relispopulated) THEN EXECUTE ${lit(`REFRESH MATERIALIZED VIEW ${mv}`)}; END IF; END$dbkeep$;\n`);
        }
        await w(switchOn);
        await w("\n-- dbkeep differential complete\n");
        await c.query("COMMIT");
        out.end();
        return {
          serverVersion: snap.v.split(" ")[0] ?? "",
          tables: tables.map((t) => ({ name: `${t.schema}.${t.table}` })),
          differential: differentialRecord(d, { cutoff, snapshotAt, basis, fullTables, keyDigests }),
        };
      } finally {
        await c.end().catch(() => undefined);
      }
    });
  }

  async function keyDigests(names: string[]): Promise<Record<string, string>> {
    return withClient(async (c) => {
      await c.query(SESSION);
      const meta = await tableMeta(c, names.map(splitName));
      const out: Record<string, string> = {};
      for (const t of meta) if (t.pk.length) out[`${t.schema}.${t.table}`] = (await c.query<{ d: string }>(digestSql(t))).rows[0]?.d ?? "";
      return out;
    });
  }

  return {
    schemaDigest: (d) =>
      withClient(async (c) => {
        const tables = await fkOrder(c, await selected(c));
        classify(tables, d);
        return schemaDigestOf(tables);
      }),
    safePoint,
    dump,
    apply: (input, ropts) => deps.applyScript(input, ropts),
    keyDigests,
  };
}

/** "schema.table" as recorded in manifests: the schema is everything before the first dot. */
export function splitName(name: string): { schema: string; table: string } {
  const i = name.indexOf(".");
  return { schema: name.slice(0, i), table: name.slice(i + 1) };
}

/**
 * Which tables are dumped by changes (with their basis column) and which whole, and why. A basis column that is not
 * a timestamp is refused: it cannot tell which rows changed, and dumping the table whole instead would hide that.
 */
function classify(tables: TableMeta[], d: Pick<DifferentialDumpSettings, "basisColumn" | "basisColumns">) {
  const basis: Record<string, string> = {};
  const fullTables: { name: string; reason: string }[] = [];
  const columns = new Map<TableMeta, Column>();
  for (const t of tables) {
    const name = `${t.schema}.${t.table}`;
    const col = basisFor(name, t.table, d);
    if (t.pk.length === 0) {
      fullTables.push({ name, reason: "no primary key" });
      continue;
    }
    if (col === null) {
      fullTables.push({ name, reason: "basis column switched off (basis_columns: null)" });
      continue;
    }
    const c0 = t.cols.find((x) => x.name === col);
    if (!c0) {
      fullTables.push({ name, reason: `no column ${col}` });
      continue;
    }
    if (!TIMESTAMP_TYPES.includes(c0.base)) {
      throw new DbkeepError("USAGE", `basis column ${name}.${col} is ${c0.type}, not a timestamp: a differential cannot tell which rows changed`, {
        hint: `name a timestamp or timestamptz column in basis_columns: { ${name}: COLUMN }, or basis_columns: { ${name}: null } to dump the table whole`,
      });
    }
    basis[name] = col;
    columns.set(t, c0);
  }
  return { basis, fullTables, columns };
}

function basisFor(name: string, table: string, d: Pick<DifferentialDumpSettings, "basisColumn" | "basisColumns">): string | null {
  if (name in d.basisColumns) return d.basisColumns[name] ?? null;
  if (table in d.basisColumns) return d.basisColumns[table] ?? null;
  return d.basisColumn;
}

/**
 * What the tables of a partial backup need beyond themselves. pg_dump --table dumps the tables, their indexes,
 * constraints, triggers and owned sequences, nothing they depend on: a sequence their defaults call that no selected
 * table owns, the types, domains and functions their columns, defaults, constraints, indexes and triggers use, the
 * extensions those come from, their schemas, and the tables their foreign keys reference. Restored into a database
 * that lacks them, such a backup fails.
 */
export interface PartialDependencies {
  /** Sequences outside the selection that the defaults call: dumped with the tables (more --table arguments). */
  sequences: { schema: string; name: string }[];
  /**
   * Statements that create each other dependency where the target lacks it, in dependency order, written before
   * pg_dump's output in a plain dump (other formats cannot carry them: they go to `requires` instead).
   */
  ddl: { what: string; sql: string }[];
  /**
   * What the target must already have, as `kind name` ("type public.mood", "table public.language"): recorded in
   * the manifest (selection.requires) and checked before a restore changes anything.
   */
  requires: string[];
}

interface TypeRow {
  oid: number;
  schema: string;
  name: string;
  /** Qualified and quoted as format('%I.%I') does. */
  q: string;
  typtype: string;
  /** An array type: it comes with its element type. */
  array: boolean;
  ext: string | null;
  extschema: string | null;
  /** Types this one is made of (element, base, attributes, subtype, the range of a multirange). */
  deps: number[];
  /** Functions its definition calls (domain CHECKs, a range's canonical and subtype_diff). */
  funcs: number[];
  def: string | null;
  relkind: string | null;
}

interface FuncRow {
  oid: number;
  schema: string;
  sig: string;
  prokind: string;
  ext: string | null;
  extschema: string | null;
  types: number[];
  def: string | null;
}

const BUILTIN_SCHEMAS = ["pg_catalog", "information_schema"];

/**
 * The dependencies of `sel` that pg_dump does not carry for it. `carry`: the dump is plain SQL and can carry the
 * statements that create them.
 */
export async function partialDependencies(c: pg.Client, sel: PgSelection, patterns: SelectionPatterns, o: { carry: boolean }): Promise<PartialDependencies> {
  const tableMode = Boolean(patterns.tables?.length);
  const rels = (
    await c.query<{ oid: number }>(
      `WITH sel AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE (n.nspname, c.relname) IN (SELECT x->>0, x->>1 FROM json_array_elements($1::json) x))
       SELECT oid::int FROM sel UNION SELECT p.relid::oid::int FROM sel, pg_partition_tree(sel.oid) p`,
      [JSON.stringify(sel.tables.map((t) => [t.schema, t.table]))],
    )
  ).rows.map((r) => r.oid);
  // What pg_dump dumps besides the tables: in schema mode every object of the dumped schemas, with only exclusions
  // every object but those of the excluded schemas; with tables: nothing else.
  const dumpedSchema = (schema: string) =>
    !tableMode && (sel.schemas.length ? sel.schemas.includes(schema) : true) && !sel.excludedSchemas.includes(schema);
  const excluded = new Set(sel.excludedTables.map((t) => `${t.schema}.${t.table}`));

  const requires: string[] = [];
  const ddl: { what: string; sql: string }[] = [];
  const schemas = new Set<string>(sel.tables.map((t) => t.schema));

  // Tables referenced by foreign keys, and inheritance parents, that the backup does not hold.
  const referenced = await c.query<{ schema: string; name: string; q: string }>(
    `SELECT n.nspname AS schema, c.relname AS name, format('%I.%I', n.nspname, c.relname) AS q FROM pg_constraint k
       JOIN pg_class c ON c.oid = COALESCE(pg_partition_root(k.confrelid), k.confrelid) JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE k.contype = 'f' AND k.conrelid = ANY($1::oid[]) AND NOT k.confrelid = ANY($1::oid[])
     UNION
     SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE i.inhrelid = ANY($1::oid[]) AND NOT i.inhparent = ANY($1::oid[]) AND c.relkind <> 'p'
     ORDER BY 1, 2`,
    [rels],
  );
  for (const t of referenced.rows) {
    if (dumpedSchema(t.schema) && !excluded.has(`${t.schema}.${t.name}`)) continue;
    requires.push(`table ${t.q}`);
  }

  // Sequences the defaults call that no dumped table owns.
  const seqRows = await c.query<{ schema: string; name: string; q: string; owner: number | null; ownerName: string | null }>(
    `SELECT DISTINCT sn.nspname AS schema, s.relname AS name, format('%I.%I', sn.nspname, s.relname) AS q, o.refobjid::int AS owner, format('%s.%s', on_.nspname, oc.relname) AS "ownerName"
       FROM pg_attrdef ad
       JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
       JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
       LEFT JOIN pg_depend o ON o.classid = 'pg_class'::regclass AND o.objid = s.oid AND o.refclassid = 'pg_class'::regclass AND o.deptype IN ('a', 'i')
       LEFT JOIN pg_class oc ON oc.oid = o.refobjid LEFT JOIN pg_namespace on_ ON on_.oid = oc.relnamespace
      WHERE ad.adrelid = ANY($1::oid[]) ORDER BY 1, 2`,
    [rels],
  );
  const sequences: { schema: string; name: string }[] = [];
  for (const s of seqRows.rows) {
    if (s.owner !== null && rels.includes(s.owner)) continue;
    if (dumpedSchema(s.schema) && !(s.ownerName && excluded.has(s.ownerName))) continue;
    // pg_dump --table takes a sequence too, but not beside --schema: only a table selection can add it.
    if (tableMode) sequences.push({ schema: s.schema, name: s.name });
    else requires.push(`sequence ${s.q}`);
    schemas.add(s.schema);
  }

  // Functions called by defaults and generated columns, constraints, indexes, triggers and rules.
  const funcOids = new Set(
    (
      await c.query<{ oid: number }>(
        `SELECT DISTINCT d.refobjid::int AS oid FROM pg_depend d
          WHERE d.refclassid = 'pg_proc'::regclass AND (
                (d.classid = 'pg_attrdef'::regclass AND d.objid IN (SELECT oid FROM pg_attrdef WHERE adrelid = ANY($1::oid[])))
             OR (d.classid = 'pg_constraint'::regclass AND d.objid IN (SELECT oid FROM pg_constraint WHERE conrelid = ANY($1::oid[])))
             OR (d.classid = 'pg_trigger'::regclass AND d.objid IN (SELECT oid FROM pg_trigger WHERE tgrelid = ANY($1::oid[]) AND NOT tgisinternal))
             OR (d.classid = 'pg_class'::regclass AND d.objid IN (SELECT indexrelid FROM pg_index WHERE indrelid = ANY($1::oid[])))
             OR (d.classid = 'pg_rewrite'::regclass AND d.objid IN (SELECT oid FROM pg_rewrite WHERE ev_class = ANY($1::oid[]))))`,
        [rels],
      )
    ).rows.map((r) => r.oid),
  );
  const typeOids = new Set(
    (await c.query<{ oid: number }>("SELECT DISTINCT atttypid::int AS oid FROM pg_attribute WHERE attrelid = ANY($1::oid[]) AND attnum > 0 AND NOT attisdropped", [rels])).rows.map(
      (r) => r.oid,
    ),
  );

  // The closure of types and functions: a function's argument and result types, a type's parts and the functions
  // of its constraints.
  const types = new Map<number, TypeRow>();
  const funcs = new Map<number, FuncRow>();
  for (;;) {
    const newTypes = [...typeOids].filter((t) => !types.has(t));
    const newFuncs = [...funcOids].filter((f) => !funcs.has(f));
    if (newTypes.length === 0 && newFuncs.length === 0) break;
    for (const t of await typeRows(c, newTypes)) {
      types.set(t.oid, t);
      if (BUILTIN_SCHEMAS.includes(t.schema) || t.ext) continue;
      for (const d of t.deps) typeOids.add(d);
      for (const f of t.funcs) funcOids.add(f);
    }
    for (const f of await funcRows(c, newFuncs)) {
      funcs.set(f.oid, f);
      if (BUILTIN_SCHEMAS.includes(f.schema) || f.ext) continue;
      for (const t of f.types) typeOids.add(t);
    }
  }

  const extensions = new Map<string, string>();
  const need = (what: string, schema: string, sql: string | null) => {
    if (dumpedSchema(schema)) return;
    schemas.add(schema);
    if (o.carry && sql) ddl.push({ what, sql });
    else requires.push(what);
  };
  // Types in dependency order: parts before the types made of them.
  const done = new Set<number>();
  const visit = (oid: number) => {
    const t = types.get(oid);
    if (!t || done.has(oid)) return;
    done.add(oid);
    if (BUILTIN_SCHEMAS.includes(t.schema)) return;
    if (t.ext) {
      extensions.set(t.ext, t.extschema ?? "public");
      return;
    }
    for (const d of t.deps) visit(d);
    const name = t.q;
    // An array type comes with its element type, a multirange with its range, a table's row type with the table.
    if (t.array || t.typtype === "m") return;
    if (t.typtype === "c" && t.relkind !== "c") {
      if (!dumpedSchema(t.schema)) requires.push(`table ${name}`);
      return;
    }
    need(`type ${name}`, t.schema, t.def ? `DO $dbkeep$BEGIN IF to_regtype(${lit(name)}) IS NULL THEN ${t.def}; END IF; END$dbkeep$;` : null);
  };
  for (const oid of [...types.keys()].sort((a, b) => a - b)) visit(oid);
  for (const f of [...funcs.values()].sort((a, b) => a.sig.localeCompare(b.sig))) {
    if (BUILTIN_SCHEMAS.includes(f.schema)) continue;
    if (f.ext) {
      extensions.set(f.ext, f.extschema ?? "public");
      continue;
    }
    const tag = dollarTag(f.def ?? "");
    need(`function ${f.sig}`, f.schema, f.def ? `DO $dbkeep$BEGIN IF to_regprocedure(${lit(f.sig)}) IS NULL THEN EXECUTE ${tag}${f.def}${tag}; END IF; END$dbkeep$;` : null);
  }
  const head: { what: string; sql: string }[] = [];
  const extRequires: string[] = [];
  const quoted = new Map(
    (await c.query<{ raw: string; q: string }>("SELECT x AS raw, quote_ident(x) AS q FROM unnest($1::text[]) x", [[...new Set([...schemas, ...extensions.keys(), ...extensions.values()])]])).rows.map((r) => [r.raw, r.q]),
  );
  const qi = (x: string) => quoted.get(x) ?? ident(x);
  // pg_dump dumps extensions only when it selects neither tables nor schemas.
  const extensionsDumped = !tableMode && sel.schemas.length === 0;
  for (const [ext, schema] of [...extensions].sort()) {
    if (extensionsDumped && !sel.excludedSchemas.includes(schema)) continue;
    schemas.add(schema);
    if (o.carry) head.push({ what: `extension ${qi(ext)}`, sql: `CREATE EXTENSION IF NOT EXISTS ${qi(ext)} WITH SCHEMA ${qi(schema)};` });
    else extRequires.push(`extension ${qi(ext)}`);
  }
  // pg_dump --table creates no schema; with schemas: it creates the dumped ones itself.
  const schemaStatements = [...schemas].filter((s) => !dumpedSchema(s)).sort();
  // Every new database has public (from its template): requiring it would only refuse restores into a new one.
  const schemaRequires = o.carry ? [] : schemaStatements.filter((s) => s !== "public").map((s) => `schema ${qi(s)}`);
  return {
    sequences,
    ddl: o.carry ? [...schemaStatements.map((s) => ({ what: `schema ${qi(s)}`, sql: `CREATE SCHEMA IF NOT EXISTS ${qi(s)};` })), ...head, ...ddl] : [],
    requires: [...new Set([...schemaRequires, ...extRequires, ...requires])],
  };
}

/** A dollar-quote tag that does not occur in `text`. */
function dollarTag(text: string): string {
  for (let i = 0; ; i++) {
    const tag = `$dbkeep_${i}$`;
    if (!text.includes(tag)) return tag;
  }
}

async function typeRows(c: pg.Client, oids: number[]): Promise<TypeRow[]> {
  if (oids.length === 0) return [];
  const r = await c.query<TypeRow>(
    `SELECT t.oid::int, n.nspname AS schema, t.typname AS name, format('%I.%I', n.nspname, t.typname) AS q, t.typtype::text AS typtype, t.typcategory = 'A' AND t.typelem <> 0 AS array,
            e.extname AS ext, en.nspname AS extschema, rc.relkind::text AS relkind,
            ARRAY(SELECT x::int FROM unnest(ARRAY[NULLIF(t.typelem, 0), NULLIF(t.typbasetype, 0), rg.rngsubtype,
                    (SELECT r2.rngtypid FROM pg_range r2 WHERE r2.rngmultitypid = t.oid)]
                    || ARRAY(SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = t.typrelid AND rc.relkind = 'c' AND a.attnum > 0 AND NOT a.attisdropped)) x
                  WHERE x IS NOT NULL) AS deps,
            ARRAY(SELECT d.refobjid::int FROM pg_constraint k JOIN pg_depend d ON d.classid = 'pg_constraint'::regclass AND d.objid = k.oid AND d.refclassid = 'pg_proc'::regclass
                   WHERE k.contypid = t.oid
                  UNION SELECT x::int FROM unnest(ARRAY[NULLIF(rg.rngcanonical, 0), NULLIF(rg.rngsubdiff, 0)]::oid[]) x WHERE x IS NOT NULL) AS funcs,
            CASE
              WHEN t.typtype = 'e' THEN format('CREATE TYPE %I.%I AS ENUM (%s)', n.nspname, t.typname,
                     (SELECT string_agg(quote_literal(l.enumlabel), ', ' ORDER BY l.enumsortorder) FROM pg_enum l WHERE l.enumtypid = t.oid))
              WHEN t.typtype = 'd' THEN format('CREATE DOMAIN %I.%I AS %s', n.nspname, t.typname, format_type(t.typbasetype, t.typtypmod))
                     || CASE WHEN t.typcollation <> 0 AND t.typcollation <> (SELECT bt.typcollation FROM pg_type bt WHERE bt.oid = t.typbasetype)
                             THEN ' COLLATE ' || t.typcollation::regcollation::text ELSE '' END
                     || COALESCE(' DEFAULT ' || t.typdefault, '')
                     || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
                     || COALESCE((SELECT string_agg(format(' CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)), '' ORDER BY k.conname)
                                    FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c'), '')
              WHEN t.typtype = 'c' AND rc.relkind = 'c' THEN format('CREATE TYPE %I.%I AS (%s)', n.nspname, t.typname,
                     (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
                               || CASE WHEN a.attcollation <> 0 AND a.attcollation <> (SELECT at.typcollation FROM pg_type at WHERE at.oid = a.atttypid)
                                       THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END, ', ' ORDER BY a.attnum)
                        FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
              WHEN t.typtype = 'r' THEN format('CREATE TYPE %I.%I AS RANGE (SUBTYPE = %s', n.nspname, t.typname, format_type(rg.rngsubtype, NULL))
                     || CASE WHEN NOT oc.opcdefault THEN ', SUBTYPE_OPCLASS = ' || format('%I.%I', ocn.nspname, oc.opcname) ELSE '' END
                     || CASE WHEN rg.rngcollation <> 0 AND rg.rngcollation <> (SELECT st.typcollation FROM pg_type st WHERE st.oid = rg.rngsubtype)
                             THEN ', COLLATION = ' || rg.rngcollation::regcollation::text ELSE '' END
                     || CASE WHEN rg.rngcanonical <> 0 THEN ', CANONICAL = ' || rg.rngcanonical::regproc::text ELSE '' END
                     || CASE WHEN rg.rngsubdiff <> 0 THEN ', SUBTYPE_DIFF = ' || rg.rngsubdiff::regproc::text ELSE '' END
                     || COALESCE((SELECT format(', MULTIRANGE_TYPE_NAME = %I.%I', mn.nspname, mt.typname) FROM pg_type mt JOIN pg_namespace mn ON mn.oid = mt.typnamespace
                                   WHERE mt.oid = rg.rngmultitypid), '') || ')'
            END AS def
       FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
       LEFT JOIN pg_depend ed ON ed.classid = 'pg_type'::regclass AND ed.objid = t.oid AND ed.refclassid = 'pg_extension'::regclass AND ed.deptype = 'e'
       LEFT JOIN pg_extension e ON e.oid = ed.refobjid LEFT JOIN pg_namespace en ON en.oid = e.extnamespace
       LEFT JOIN pg_class rc ON rc.oid = t.typrelid
       LEFT JOIN pg_range rg ON rg.rngtypid = t.oid
       LEFT JOIN pg_opclass oc ON oc.oid = rg.rngsubopc LEFT JOIN pg_namespace ocn ON ocn.oid = oc.opcnamespace
      WHERE t.oid = ANY($1::oid[])`,
    [oids],
  );
  return r.rows;
}

async function funcRows(c: pg.Client, oids: number[]): Promise<FuncRow[]> {
  if (oids.length === 0) return [];
  const r = await c.query<FuncRow>(
    `SELECT p.oid::int, n.nspname AS schema, format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS sig,
            p.prokind::text AS prokind, e.extname AS ext, en.nspname AS extschema,
            ARRAY(SELECT DISTINCT x::int FROM unnest(array_append(COALESCE(p.proallargtypes, p.proargtypes::oid[]), p.prorettype)) x) AS types,
            CASE WHEN p.prokind IN ('f', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND e.oid IS NULL THEN pg_get_functiondef(p.oid) END AS def
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       LEFT JOIN pg_depend ed ON ed.classid = 'pg_proc'::regclass AND ed.objid = p.oid AND ed.refclassid = 'pg_extension'::regclass AND ed.deptype = 'e'
       LEFT JOIN pg_extension e ON e.oid = ed.refobjid LEFT JOIN pg_namespace en ON en.oid = e.extnamespace
      WHERE p.oid = ANY($1::oid[])`,
    [oids],
  );
  return r.rows;
}
