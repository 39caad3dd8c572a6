import { chown, mkdir, readdir } from "node:fs/promises";
import { execFileSync } from "node:child_process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import pg from "pg";
import { DbkeepError } from "../../core/errors.js";
import type { Secret } from "../../core/redact.js";
import { minimalEnv, resolveTool, runTool } from "../../core/subprocess.js";
import type { Catalog, EngineVerifier, ScratchOptions, ScratchTarget } from "../../verify/engine.js";
import type { CheckResult } from "../../verify/report.js";
import { isDeadScratch, KEPT_MARK, killLeftoverServer, markDirKept, removeDeadScratchDirs, SCRATCH_PREFIX, scratchDirName, scratchName } from "../../verify/scratch.js";
import type { SchemaObjects, TableInfo } from "../engine.js";
import { connectPg, pgConnectionError } from "./connection.js";
import { pgTlsOf, resolvePgTls, type PgTlsSettings } from "./tls.js";

interface Conn {
  host: string;
  port: number;
  user?: string | undefined;
  password?: Secret | undefined;
  tls: PgTlsSettings;
}

function connOf(o: Record<string, unknown>, password: Secret | undefined): Conn {
  return { host: String(o.host ?? "localhost"), port: Number(o.port ?? 5432), user: o.user as string | undefined, password, tls: pgTlsOf(o) };
}

/** The TLS keys of a datasource, which a scratch cluster on this machine does not use. */
const TLS_KEYS = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

async function withClient<T>(conn: Conn, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  let c: pg.Client;
  try {
    c = await connectPg({
      host: conn.host,
      port: conn.port,
      user: conn.user ?? process.env.USER ?? "postgres",
      password: conn.password?.reveal(),
      database,
      connectionTimeoutMillis: 15000,
      application_name: "dbkeep-verify",
    }, resolvePgTls(conn.tls, conn.host));
  } catch (err) {
    throw pgConnectionError(err, { host: conn.host, port: conn.port, database }, "check the verify datasource's host, port, user and password");
  }
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

const USER_SCHEMA = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'`;
const NOT_EXTENSION = (oid: string, classid: string) =>
  `NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '${classid}'::regclass AND d.objid = ${oid} AND d.deptype = 'e')`;

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Tables (with exact row counts when `counts`) and schema objects of the database `c` is connected to. Run by
 * the backup in the dump's own snapshot, and by verify on the restored copy: the same queries on both sides.
 */
export async function pgCatalog(c: pg.Client, o: { counts: boolean }): Promise<Catalog> {
  const t = await c.query<{ name: string; schema: string; rel: string; kind: string; est: string }>(
    `SELECT n.nspname || '.' || c.relname AS name, n.nspname AS schema, c.relname AS rel, c.relkind AS kind, greatest(c.reltuples, 0)::bigint AS est
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p') AND ${USER_SCHEMA} AND ${NOT_EXTENSION("c.oid", "pg_class")}
      ORDER BY 1`,
  );
  const tables: TableInfo[] = [];
  for (const r of t.rows) {
    if (!o.counts) {
      tables.push({ name: r.name, rows_estimate: Number(r.est) });
      continue;
    }
    // A partitioned table counts its partitions' rows; a plain table only its own (not inheritance children).
    const from = `${r.kind === "p" ? "" : "ONLY "}${ident(r.schema)}.${ident(r.rel)}`;
    const n = await c.query<{ n: string }>(`SELECT count(*) AS n FROM ${from}`);
    tables.push({ name: r.name, rows: Number(n.rows[0]?.n ?? 0) });
  }
  const names = async (sql: string) => (await c.query<{ name: string }>(sql)).rows.map((r) => r.name);
  const objects: SchemaObjects = {
    indexes: await names(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE ${USER_SCHEMA} AND ${NOT_EXTENSION("c.oid", "pg_class")} AND ${NOT_EXTENSION("i.indrelid", "pg_class")} ORDER BY 1`,
    ),
    foreign_keys: await names(
      `SELECT n.nspname || '.' || c.relname || '.' || co.conname AS name FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE co.contype = 'f' AND ${USER_SCHEMA} AND ${NOT_EXTENSION("c.oid", "pg_class")} ORDER BY 1`,
    ),
    views: await names(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('v', 'm') AND ${USER_SCHEMA} AND ${NOT_EXTENSION("c.oid", "pg_class")} ORDER BY 1`,
    ),
    functions: await names(
      `SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name FROM pg_proc p
         JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ${USER_SCHEMA} AND ${NOT_EXTENSION("p.oid", "pg_proc")} ORDER BY 1`,
    ),
    triggers: await names(
      `SELECT n.nspname || '.' || c.relname || '.' || t.tgname AS name FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND ${USER_SCHEMA} AND ${NOT_EXTENSION("c.oid", "pg_class")} ORDER BY 1`,
    ),
    sequences: await names(
      `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'S' AND ${USER_SCHEMA} AND ${NOT_EXTENSION("c.oid", "pg_class")} ORDER BY 1`,
    ),
    types: await names(
      `SELECT n.nspname || '.' || t.typname AS name FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
          AND ${USER_SCHEMA} AND ${NOT_EXTENSION("t.oid", "pg_type")} ORDER BY 1`,
    ),
  };
  return { tables, objects };
}

export interface DumpSnapshot {
  /** Pass to pg_dump --snapshot. */
  id: string;
  serverVersion: string;
  /** Counts and objects, taken in the snapshot while pg_dump runs. */
  catalog: Promise<Catalog>;
  /** Ends the transaction (and any count still running); call after pg_dump exited (it imports the snapshot when it starts). */
  close(): Promise<void>;
}

/**
 * Opens a REPEATABLE READ transaction, exports its snapshot for pg_dump, and takes the catalog in that same
 * transaction, concurrently with the dump: row counts exact for the very data the dump holds.
 */
export async function openDumpSnapshot(connect: () => Promise<pg.Client>, o: { counts: boolean }): Promise<DumpSnapshot> {
  const client = await connect();
  try {
    // One round trip before pg_dump can start: the transaction, its snapshot and the server's version. The counts
    // run beside pg_dump on the same server: one process each (no parallel workers), so that they take as little
    // CPU from the dump as they can.
    const opened = (await client.query(
      "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL max_parallel_workers_per_gather = 0; " +
        "SELECT pg_export_snapshot() AS id, current_setting('server_version') AS v, current_setting('server_version_num') AS num",
    )) as unknown as pg.QueryResult<{ id: string; v: string; num: string }>[];
    const info = opened.at(-1)?.rows[0];
    const id = info?.id ?? "";
    const v = info?.v ?? "";
    // Nor JIT compilation, which a count(*) of a large table would trigger and never repay. Sent without waiting:
    // the session runs its queries in order, so the catalog's come after it (and fail with it, if it fails).
    const jitOff = Number(info?.num ?? 0) >= 110000 ? client.query("SET LOCAL jit = off") : undefined;
    const catalog = (async () => {
      await jitOff;
      return pgCatalog(client, o);
    })();
    catalog.catch(() => undefined);
    return {
      id,
      serverVersion: v.split(" ")[0] ?? "",
      catalog,
      async close() {
        // Ending the session ends the read-only transaction, and stops counts still running when pg_dump failed.
        await client.end().catch(() => undefined);
      },
    };
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
}

async function amcheck(conn: Conn, db: string): Promise<CheckResult> {
  return withClient(conn, db, async (c) => {
    const avail = await c.query("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'");
    if (!avail.rowCount) return { name: "integrity", status: "SKIP", detail: "the amcheck extension is not installed on this server" } as CheckResult;
    try {
      await c.query("CREATE EXTENSION IF NOT EXISTS amcheck");
    } catch (err) {
      return { name: "integrity", status: "SKIP", detail: `amcheck could not be enabled in the scratch database: ${(err as Error).message}` } as CheckResult;
    }
    const idx = await c.query<{ oid: number; name: string }>(
      `SELECT c.oid, n.nspname || '.' || c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am am ON am.oid = c.relam
        WHERE am.amname = 'btree' AND c.relkind = 'i' AND ${USER_SCHEMA} AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready ORDER BY 2`,
    );
    const bad: string[] = [];
    for (const r of idx.rows) {
      try {
        await c.query("SELECT bt_index_check($1::regclass, true)", [r.oid]);
      } catch (err) {
        bad.push(`${r.name}: ${(err as Error).message}`);
      }
    }
    if (bad.length) return { name: "integrity", status: "FAIL", detail: `amcheck: ${bad.length} B-tree index(es) corrupt: ${bad.slice(0, 3).join("; ")}`, data: { corrupt: bad } } as CheckResult;
    return { name: "integrity", status: "PASS", detail: `amcheck bt_index_check (with heap check) on ${idx.rowCount ?? 0} B-tree index(es)` } as CheckResult;
  });
}

async function orphans(conn: Conn, db: string, limit: number): Promise<CheckResult> {
  return withClient(conn, db, async (c) => {
    const fks = await c.query<{ name: string; child: string; parent: string; ccols: string[]; pcols: string[] }>(
      `SELECT n.nspname || '.' || cl.relname || '.' || co.conname AS name,
              quote_ident(n.nspname) || '.' || quote_ident(cl.relname) AS child,
              quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) AS parent,
              ARRAY(SELECT quote_ident(a.attname) FROM unnest(co.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.n ORDER BY k.o) AS ccols,
              ARRAY(SELECT quote_ident(a.attname) FROM unnest(co.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.n ORDER BY k.o) AS pcols
         FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
         JOIN pg_class pc ON pc.oid = co.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE co.contype = 'f' AND co.conparentid = 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
    );
    if (!fks.rowCount) return { name: "orphans", status: "SKIP", detail: "no foreign keys" } as CheckResult;
    const found: string[] = [];
    for (const fk of fks.rows) {
      const notNull = fk.ccols.map((col) => `s.${col} IS NOT NULL`).join(" AND ");
      const join = fk.ccols.map((col, i) => `p.${fk.pcols[i]} = s.${col}`).join(" AND ");
      const r = await c.query<{ n: string }>(
        `SELECT count(*) AS n FROM (SELECT ${fk.ccols.join(", ")} FROM ${fk.child} LIMIT ${limit}) s WHERE ${notNull} AND NOT EXISTS (SELECT 1 FROM ${fk.parent} p WHERE ${join})`,
      );
      const n = Number(r.rows[0]?.n ?? 0);
      if (n > 0) found.push(`${fk.name}: ${n} row(s)`);
    }
    if (found.length) return { name: "orphans", status: "FAIL", detail: `rows pointing nowhere: ${found.slice(0, 5).join("; ")}`, data: { orphans: found } } as CheckResult;
    return { name: "orphans", status: "PASS", detail: `${fks.rowCount} foreign key(s), up to ${limit} rows each: no orphan rows` } as CheckResult;
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** The newest local PostgreSQL server binaries (initdb, pg_ctl), or the datasource's bin_dir / pg_version. */
async function serverBinDir(o: Record<string, unknown>): Promise<string> {
  if (o.bin_dir) return String(o.bin_dir);
  if (o.pg_version) return `/usr/lib/postgresql/${String(o.pg_version)}/bin`;
  const versions = (await readdir("/usr/lib/postgresql").catch(() => [] as string[])).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const dir = `/usr/lib/postgresql/${v}/bin`;
    if (await resolveTool("initdb", dir).then(() => true, () => false)) return dir;
  }
  throw new DbkeepError("TOOL_NOT_FOUND", "no PostgreSQL server binaries (initdb) found under /usr/lib/postgresql", {
    hint: "install the postgresql package, or set bin_dir on the verify datasource",
  });
}

/** initdb and postgres refuse to run as root: as root, they run as the system user postgres. */
async function asServerUser(tool: string): Promise<{ cmd: string; pre: string[]; uid?: number; gid?: number }> {
  if (process.getuid?.() !== 0) return { cmd: tool, pre: [] };
  const runuser = await resolveTool("runuser");
  const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
  return { cmd: runuser, pre: ["-u", "postgres", "--", tool], uid, gid };
}

/**
 * A temporary cluster: initdb in a private temp dir, started on a free loopback port, trust authentication for
 * its own superuser only over the Unix socket in that dir and 127.0.0.1. Stopped and removed by drop(); a killed
 * run's cluster is stopped and removed by the next run (its directory names the dead pid).
 */
async function startCluster(o: ScratchOptions): Promise<{ dir: string; port: number; bin: string; stop: () => Promise<void> }> {
  const bin = await serverBinDir(o.options);
  const dir = join(tmpdir(), scratchDirName("pg"));
  await mkdir(dir, { mode: 0o700 });
  const data = join(dir, "data");
  const initdb = await asServerUser(join(bin, "initdb"));
  if (initdb.uid !== undefined) await chown(dir, initdb.uid, initdb.gid!);
  await runTool(initdb.cmd, [...initdb.pre, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], { env: minimalEnv(), signal: o.signal, context: "initdb of the scratch cluster" });
  const port = await freePort();
  const ctl = await asServerUser(join(bin, "pg_ctl"));
  const serverOpts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`;
  await runTool(ctl.cmd, [...ctl.pre, "-D", data, "-o", serverOpts, "-l", join(dir, "server.log"), "-w", "-t", "60", "start"], { env: minimalEnv(), signal: o.signal, context: "start of the scratch cluster" });
  o.log.info({ dir, port }, "started a scratch PostgreSQL cluster");
  return {
    dir,
    port,
    bin,
    async stop() {
      await runTool(ctl.cmd, [...ctl.pre, "-D", data, "-m", "immediate", "-w", "stop"], { env: minimalEnv() }).catch(() => undefined);
      const { rm } = await import("node:fs/promises");
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const postgresVerifier: EngineVerifier = {
  refuse(m, cluster) {
    if (m.format === "dumpall" && !cluster) {
      return "a pg_dumpall backup recreates every database under its own name: verify it only in a scratch cluster (verification.scratch_cluster: true)";
    }
    return undefined;
  },

  async prepare(o: ScratchOptions): Promise<ScratchTarget> {
    const name = scratchName(o.job);
    let conn = connOf(o.options, o.password);
    let cluster: Awaited<ReturnType<typeof startCluster>> | undefined;
    let datasource: Record<string, unknown> = { ...o.options, engine: "postgres", database: name, all_databases: false, globals: false };
    if (o.cluster) {
      cluster = await startCluster(o);
      conn = { host: "127.0.0.1", port: cluster.port, user: "postgres", tls: { sslmode: "disable" } };
      const { password: _p, password_env: _pe, password_file: _pf, ...rest } = o.options;
      for (const k of TLS_KEYS) delete rest[k];
      datasource = { ...rest, sslmode: "disable", engine: "postgres", host: "127.0.0.1", port: cluster.port, user: "postgres", bin_dir: cluster.bin, database: m(o) === "dumpall" ? "postgres" : name, all_databases: m(o) === "dumpall", globals: false };
    }
    const db = m(o) === "dumpall" ? "postgres" : name;
    const admin = String(o.options.maintenance_db ?? "postgres");
    const where = cluster ? `scratch cluster 127.0.0.1:${cluster.port} (${cluster.dir}), database ${db}` : `database ${name} on ${conn.host}:${conn.port}`;
    return {
      kind: cluster ? "cluster" : "database",
      name: cluster ? cluster.dir : name,
      where,
      datasource,
      catalog: () => withClient(conn, db, (c) => pgCatalog(c, { counts: true })),
      integrity: () => amcheck(conn, db),
      orphans: (limit) => orphans(conn, db, limit),
      query: (sql) =>
        withClient(conn, db, async (c) => {
          const r = await c.query({ text: sql, rowMode: "array" });
          const row = (r.rows as unknown[][])[0];
          if (!row) return undefined;
          const v = row[0];
          return v === null || v === undefined ? null : v instanceof Date ? v.toISOString() : String(v);
        }),
      env: () => ({
        PGHOST: conn.host,
        PGPORT: String(conn.port),
        PGDATABASE: db,
        ...(conn.user ? { PGUSER: conn.user } : {}),
        // The application's own connection needs it; it goes to that process's environment only, never a URL.
        ...(conn.password ? { PGPASSWORD: conn.password.reveal() } : {}),
        // The same TLS settings as dbkeep's own connections, as libpq's variables.
        ...resolvePgTls(conn.tls, conn.host).env,
        DATABASE_URL: `postgres://${encodeURIComponent(conn.user ?? "postgres")}@${conn.host}:${conn.port}/${encodeURIComponent(db)}`,
      }),
      async drop() {
        if (cluster) return cluster.stop();
        await withClient(conn, admin, async (c) => {
          const r = await c.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2", [name, `${name}\\_dbkeep\\_%`]);
          for (const x of r.rows) await c.query(`DROP DATABASE IF EXISTS ${ident(x.datname)} WITH (FORCE)`);
        });
      },
      async keep() {
        if (cluster) return markDirKept(cluster.dir);
        await withClient(conn, admin, (c) => c.query(`COMMENT ON DATABASE ${ident(name)} IS '${KEPT_MARK}'`));
      },
    };
  },

  async cleanupLeftovers(o) {
    const removed = await removeDeadScratchDirs("pg", async (dir) => killLeftoverServer(join(dir, "data", "postmaster.pid"), /postgres|postmaster/));
    if (o.cluster) return removed;
    const conn = connOf(o.options, o.password);
    const admin = String(o.options.maintenance_db ?? "postgres");
    await withClient(conn, admin, async (c) => {
      const r = await c.query<{ datname: string }>(
        "SELECT datname FROM pg_database WHERE datname LIKE $1 AND shobj_description(oid, 'pg_database') IS DISTINCT FROM $2 ORDER BY 1",
        [`${SCRATCH_PREFIX.replace(/_/g, "\\_")}%`, KEPT_MARK],
      );
      for (const x of r.rows) {
        if (!isDeadScratch(x.datname)) continue;
        await c.query(`DROP DATABASE IF EXISTS ${ident(x.datname)} WITH (FORCE)`);
        removed.push(x.datname);
        o.log.info({ database: x.datname }, "dropped the scratch database of a killed verify run");
      }
    });
    return removed;
  },
};

function m(o: ScratchOptions): string {
  return o.manifest.format;
}
