import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { access, mkdir, open, readdir } from "node:fs/promises";
import { userInfo } from "node:os";
import { basename, join } from "node:path";
import { PassThrough, pipeline as streamPipeline, type Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DbkeepError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { Secret } from "../../core/redact.js";
import { endAfter } from "../../core/streams.js";
import { feedWhileReading, minimalEnv, resolveTool, runTool, type SpawnedTool, spawnTool } from "../../core/subprocess.js";
import type { DoctorFinding, Dump, DumpOptions, DumpResult, Engine, RestoreOptions, SchemaObjects, TableInfo, TargetState } from "../engine.js";
import type { MysqlDatasource } from "./schema.js";
import { privateDir } from "../../core/private-dir.js";
import { selectionOf } from "../../core/selection.js";
import { createMysqlDifferential, mysqlSequenceDependencies, resolveMysqlSelection } from "./partial.js";
import { countSql, mysqlObjectQueries } from "./verify.js";
import { setSequencesAside, UnqualifySequences, unqualifyMydumperSchemas } from "./sequences.js";
import { effectiveSslMode, mysqlTlsOf, optionFileTls } from "./tls.js";

export type MysqlEngineOptions = Omit<MysqlDatasource, "engine" | "password" | "password_env" | "password_file" | "compression" | "compression_level"> & {
  /** The password, resolved when a connection is first made (an unset *_env variable fails there, not earlier). */
  password?: () => Secret | undefined;
  /** One-off (URL) mode: MYSQL_PWD from dbkeep's own environment counts as the password. */
  oneOff?: boolean;
};

/**
 * plain: mysqldump of one database, without CREATE DATABASE / USE, so it restores under any name.
 * plain-databases: mysqldump --databases / --all-databases, which recreates its databases under their own names.
 * mydumper: mydumper's output directory carried as a tar stream.
 */
const EXT: Record<string, string> = { plain: ".sql", "plain-databases": ".sql", mydumper: ".mydumper.tar" };

/** Preferred first: MariaDB 11 ships only the mariadb-* names unless its compatibility package is installed. */
const DUMP_TOOLS = ["mariadb-dump", "mysqldump"] as const;
const CLIENT_TOOLS = ["mariadb", "mysql"] as const;

/** Never offered by all_databases' target inspection; mysqldump skips the first two on its own. */
const SYSTEM_SCHEMAS = ["information_schema", "performance_schema", "mysql", "sys"];

interface Session {
  dir: string;
  /** The private option file with the credentials: the only way the password reaches a tool. */
  cnf: string;
  close(): Promise<void>;
}

export function createMysqlEngine(opts: MysqlEngineOptions): Engine {
  const binDir = opts.bin_dir;
  const useMydumper = (opts.tool ?? (opts.format === "mydumper" ? "mydumper" : "mysqldump")) === "mydumper";
  const single = opts.database;
  const list = opts.databases;
  const format = useMydumper ? "mydumper" : single ? "plain" : "plain-databases";
  const layoutName = single ?? (list ? list.join("+") : "all-databases");
  const server = opts.socket ? `socket ${opts.socket}` : `host ${opts.host}, port ${opts.port}`;
  const where = `${server}, database ${layoutName}`;
  const timeoutMs = opts.timeout ? opts.timeout * 1000 : undefined;
  let resolved: { value: Secret | undefined } | undefined;
  const password = (): Secret | undefined =>
    (resolved ??= { value: opts.password?.() ?? (opts.oneOff && process.env.MYSQL_PWD ? new Secret(process.env.MYSQL_PWD) : undefined) }).value;
  const explain = (stderr: string) => explainMysqlError(stderr);
  const selection = selectionOf(opts as Record<string, unknown>);
  const tls = mysqlTlsOf(opts as Record<string, unknown>);
  const sslMode = effectiveSslMode(tls);

  async function firstTool(names: readonly string[]): Promise<string> {
    let last: unknown;
    for (const n of names) {
      try {
        return await resolveTool(n, binDir);
      } catch (err) {
        last = err;
      }
    }
    // The last name is the classic one (mysqldump, mysql), which is what users search for.
    throw last;
  }
  const dumpTool = () => firstTool(DUMP_TOOLS);
  const clientTool = () => firstTool(CLIENT_TOOLS);

  let family: Promise<"mariadb" | "mysql"> | undefined;
  /** Which client family reads the option file: the SSL options are spelt differently. */
  function clientFamily(): Promise<"mariadb" | "mysql"> {
    family ??= (async () => {
      const client = await clientTool();
      if (basename(client).startsWith("mariadb")) return "mariadb";
      return /MariaDB/i.test(await runTool(client, ["--version"])) ? "mariadb" : "mysql";
    })();
    return family;
  }

  async function optionFile(): Promise<string> {
    const lines = ["[client]"];
    if (opts.user) lines.push(`user=${quoteOption(opts.user)}`);
    const pw = password();
    if (pw) lines.push(`password=${quoteOption(pw.reveal())}`);
    lines.push(`host=${quoteOption(opts.host)}`, `port=${opts.port}`);
    // Without it the client waits forever for a server that accepts and never answers (no retry, no error).
    // loose-: the dump tools do not know the option and ignore it; the client's queries run first.
    lines.push("loose-connect-timeout=15");
    if (opts.socket) lines.push(`socket=${quoteOption(opts.socket)}`);
    lines.push(...optionFileTls(tls, await clientFamily(), quoteOption));
    return lines.join("\n") + "\n";
  }

  /** A private directory (0700) with the option file (0600); close() removes both, and anything put beside them. */
  async function openSession(): Promise<Session> {
    const priv = await privateDir("dbkeep-mysql-", { "client.cnf": await optionFile() });
    return { ...priv, cnf: join(priv.dir, "client.cnf") };
  }

  async function withSession<T>(fn: (s: Session) => Promise<T>): Promise<T> {
    const s = await openSession();
    try {
      return await fn(s);
    } finally {
      await s.close();
    }
  }

  /** Runs SQL with the client in batch mode; rows of tab-separated, unescaped fields. */
  async function query(s: Session, sql: string, signal?: AbortSignal): Promise<string[][]> {
    const client = await clientTool();
    let out: string;
    try {
      out = await runTool(client, [`--defaults-extra-file=${s.cnf}`, "--batch", "--skip-column-names", "--default-character-set=utf8mb4", "-e", sql], {
        env: minimalEnv(), context: server, explain, timeoutMs, ...(signal ? { signal } : {}),
      });
    } catch (err) {
      if (err instanceof DbkeepError && err.code === "CONNECTION_FAILED" && !/Unknown database/i.test(err.details ?? "")) {
        throw new DbkeepError("CONNECTION_FAILED", `cannot connect to the MySQL/MariaDB server (${server}, user ${opts.user ?? userInfo().username})`, {
          details: err.details, hint: err.hint, retryable: err.retryable, cause: err,
        });
      }
      throw err;
    }
    return out.split("\n").filter((l) => l !== "").map((l) => l.split("\t").map(unescapeBatch));
  }

  /**
   * MariaDB's clients take `ssl` as "try TLS" and fall back to plain text when the server offers none; only a
   * certificate check makes them insist. ssl_mode: required (and stricter) is therefore checked on the connection itself.
   */
  async function requireTls(s: Session): Promise<void> {
    if (sslMode === "disabled" || sslMode === "preferred" || (await clientFamily()) !== "mariadb") return;
    const cipher = (await query(s, "SHOW SESSION STATUS LIKE 'Ssl_cipher'"))[0]?.[1] ?? "";
    if (!cipher) {
      throw new DbkeepError("CONNECTION_FAILED", `ssl_mode is ${sslMode}, but the connection to the server (${server}) is not encrypted: the server offers no TLS`, {
        hint: "enable TLS on the server, or set ssl_mode: preferred",
      });
    }
  }

  async function existingSchemas(s: Session, names: string[]): Promise<string[]> {
    if (names.length === 0) return [];
    const rows = await query(s, `SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (${names.map(lit).join(", ")})`);
    return rows.map((r) => r[0] ?? "");
  }

  /** The schemas this datasource covers, as they exist on the server now. */
  async function coveredSchemas(s: Session): Promise<string[]> {
    if (single) return [single];
    if (list) return list;
    const rows = await query(s, `SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN (${SYSTEM_SCHEMAS.map(lit).join(", ")}) ORDER BY 1`);
    return rows.map((r) => r[0] ?? "");
  }

  async function toolVersion(path: string): Promise<string> {
    return parseVersion(await runTool(path, ["--version"], { env: minimalEnv() }));
  }

  /**
   * Several statements in one client call (one process, one connection, one round trip): the rows of each, in
   * order. A marker row the caller cannot produce separates the results (the client prints them back to back).
   */
  async function queryMany(s: Session, sqls: string[], signal?: AbortSignal): Promise<string[][][]> {
    const mark = `dbkeep-next-${randomBytes(8).toString("hex")}`;
    const rows = await query(s, sqls.map((q) => q.replace(/;\s*$/, "")).join(`; SELECT '${mark}'; `), signal);
    const out: string[][][] = [[]];
    for (const r of rows) {
      if (r.length === 1 && r[0] === mark) out.push([]);
      else out[out.length - 1]!.push(r);
    }
    if (out.length !== sqls.length) throw new DbkeepError("ENGINE_FAILED", `the catalog queries gave ${out.length} results for ${sqls.length} statements (${server})`);
    return out;
  }

  /**
   * Server version, the tables (with estimates) and, with `objects`, the schema objects of the single database:
   * one client call. The uuid/inet check of mydumper 0.10 is a second one, made only for it.
   */
  async function metadata(
    s: Session,
    log: Logger,
    o: { mydumperVersion?: string | undefined; objects?: boolean; signal?: AbortSignal } = {},
  ): Promise<{ serverVersion: string; tables: TableInfo[]; objects?: SchemaObjects }> {
    const named = single ? [single] : (list ?? []);
    const where = opts.all_databases ? "NOT IN ('information_schema', 'performance_schema')" : named.length ? `IN (${named.map(lit).join(", ")})` : "IN (NULL)";
    const objectQueries = o.objects && single ? mysqlObjectQueries(single) : [];
    const [version = [], schemaRows = [], rows = [], ...objectRows] = await queryMany(s, [
      "SELECT VERSION()",
      `SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME ${where} ORDER BY 1`,
      `SELECT t.TABLE_SCHEMA, t.TABLE_NAME, IFNULL(t.TABLE_ROWS, 0), IFNULL(t.ENGINE, ''), IFNULL(e.TRANSACTIONS, '')
         FROM information_schema.TABLES t LEFT JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE
        WHERE t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') AND t.TABLE_SCHEMA ${where}
        ORDER BY 1, 2`,
      ...objectQueries.map(([, sql]) => sql),
    ], o.signal);
    const serverVersion = version[0]?.[0] ?? "";
    let schemas: string[];
    if (opts.all_databases) {
      schemas = schemaRows.map((r) => r[0] ?? "");
    } else {
      schemas = named;
      const found = new Set(schemaRows.map((r) => r[0] ?? ""));
      const missing = schemas.filter((d) => !found.has(d));
      if (missing.length) {
        throw new DbkeepError("CONNECTION_FAILED", `database ${missing.join(", ")} does not exist (${server})`, {
          hint: "check the datasource's database name (or the user's privileges: a database without any is invisible)",
        });
      }
    }
    const name = (schema: string, table: string) => (single ? table : `${schema}.${table}`);
    const mydumperVersion = o.mydumperVersion;
    if (mydumperVersion && schemas.length && olderThan(mydumperVersion, [0, 11])) {
      // mydumper 0.10 writes these columns as text under SET NAMES binary; myloader then stores NULL or a wrong
      // address without an error. Refusing is the only way to not produce a backup that restores wrong.
      const cols = await query(
        s,
        `SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS
          WHERE DATA_TYPE IN ('uuid', 'inet6', 'inet4') AND TABLE_SCHEMA IN (${schemas.map(lit).join(", ")}) ORDER BY 1, 2, ORDINAL_POSITION`,
      );
      if (cols.length) {
        throw new DbkeepError("ENGINE_FAILED", `mydumper ${mydumperVersion} cannot back up UUID, INET4 and INET6 columns correctly: ${cols.map((c) => `${name(c[0] ?? "", c[1] ?? "")}.${c[2]} (${c[3]})`).join(", ")}`, {
          hint: "use tool: mysqldump for this datasource (or a mydumper newer than 0.10)",
        });
      }
    }
    const tables = rows.map((r): TableInfo => ({ name: name(r[0] ?? "", r[1] ?? ""), rows_estimate: Number(r[2] ?? 0) }));
    // mydumper without --trx-consistency-only holds its global read lock until these are dumped, so they are
    // consistent there; a transaction alone (mysqldump --single-transaction) cannot cover them.
    if (opts.single_transaction) {
      const loose = rows.filter((r) => r[4] !== "YES" && r[0] !== "mysql").map((r) => `${name(r[0] ?? "", r[1] ?? "")} (${r[3]})`);
      if (loose.length) {
        log.warn(
          { tables: loose.length },
          `not transactional, so not consistent with the rest of the dump under single_transaction: ${loose.join(", ")}; convert them to InnoDB, or set single_transaction: false to lock the tables while dumping`,
        );
      }
    }
    if (!objectQueries.length) return { serverVersion, tables };
    const objects: SchemaObjects = {};
    objectQueries.forEach(([kind], i) => (objects[kind] = (objectRows[i] ?? []).map((r) => r[0] ?? "")));
    return { serverVersion, tables, objects };
  }

  function dump(dopts: DumpOptions): Dump {
    const out = new PassThrough();
    let finish!: (r: DumpResult) => void;
    let fail!: (e: unknown) => void;
    const done = new Promise<DumpResult>((res, rej) => {
      finish = res;
      fail = rej;
    });
    done.catch(() => undefined);

    (async () => {
      // The dump tool first: a machine without client tools is told about the one it needs most.
      const tool = useMydumper ? await resolveTool("mydumper", binDir) : await dumpTool();
      await clientTool();
      // The tool's version is asked while the session is made and the catalog read.
      const versionOfTool = toolVersion(tool);
      versionOfTool.catch(() => undefined);
      await withSession(async (s) => {
        await requireTls(s);
        // mydumper needs its version for the catalog (a check of 0.10); mysqldump's catalog does not wait for it.
        const mydumperVersion = useMydumper ? await versionOfTool : undefined;
        const run = (sql: string) => query(s, sql, dopts.signal);
        // Stops the dump tool when the catalog fails (or when the backup is cancelled).
        const stop = new AbortController();
        const onAbort = () => stop.abort(dopts.signal.reason);
        if (dopts.signal.aborted) onAbort();
        else dopts.signal.addEventListener("abort", onAbort, { once: true });
        try {
          // One client call: server version, tables with estimates, and the schema objects verify expects back.
          const catalog = metadata(s, dopts.log, { mydumperVersion, objects: !!single, signal: dopts.signal });
          catalog.catch(() => stop.abort());
          // What the dump's arguments depend on: a partial backup's tables (and the sequences they draw from).
          // Without a selection, mysqldump starts at once and the catalog is read beside it.
          const selectionOfDump = async () => {
            const { tables: allTables } = await catalog;
            // A partial backup: the globs resolved against the database's tables, passed to mysqldump by name.
            const sel = selection && single ? resolveMysqlSelection(selection, single, allTables.map((t) => t.name)) : undefined;
            for (const w of sel?.warnings ?? []) dopts.log.warn(w);
            // Sequences the selected tables draw from go into a partial dump beside them (only exclusions: they are in).
            const sequences = sel && single && selection?.tables?.length ? await mysqlSequenceDependencies(run, single, sel.names) : [];
            if (sequences.length) dopts.log.info({ sequences }, `the backup also carries the sequence(s) its tables draw from: ${sequences.join(", ")}`);
            return { sel, sequences };
          };
          const selected = selectionOfDump();
          selected.catch(() => undefined);
          // The counts start as soon as the tables are known, in their own session beside the dump.
          const counting = (async () => {
            const { sel } = await selected;
            const { tables: allTables } = await catalog;
            const tables = sel ? allTables.filter((t) => sel.names.includes(t.name)) : allTables;
            if (!single || opts.row_counts === "estimate") return { tables, counts: undefined };
            // Stopped with the dump: a failed dump leaves no count query behind (nor one to start after the session's end).
            const counts = query(s, countSql(single, tables.map((t) => t.name)), stop.signal);
            counts.catch(() => undefined);
            return { tables, counts };
          })();
          counting.catch(() => undefined);
          const resultOf = async (): Promise<DumpResult> => {
            const { serverVersion, objects } = await catalog;
            const { sel } = await selected;
            const { tables, counts } = await counting;
            const result: DumpResult = {
              tool: { name: basename(tool), version: await versionOfTool }, serverVersion, tables,
              ...(objects ? { objects } : {}),
              ...(sel && selection ? { selection: { patterns: selection, tables: sel.names } } : {}),
            };
            if (counts) {
              try {
                const n = new Map((await counts).map((r) => [r[0] ?? "", Number(r[1] ?? 0)]));
                result.tables = tables.map((t) => (n.has(t.name) ? { name: t.name, rows: n.get(t.name)! } : t));
              } catch (err) {
                dopts.log.warn({ err: (err as Error).message }, "row counts could not be taken; the manifest keeps estimates");
              }
            }
            return result;
          };
          const spawnOpts = { env: minimalEnv(), signal: stop.signal, timeoutMs, context: where, explain };

          if (!useMydumper) {
            const { sel, sequences } = selection ? await selected : { sel: undefined, sequences: [] as string[] };
            const args = [
              `--defaults-extra-file=${s.cnf}`,
              ...(opts.single_transaction ? ["--single-transaction"] : []),
              // Routines and events belong to the database, not to a table: a partial backup leaves them out.
              opts.routines && !sel ? "--routines" : "--skip-routines",
              opts.triggers ? "--triggers" : "--skip-triggers",
              opts.events && !sel ? "--events" : "--skip-events",
              "--hex-blob",
              "--quick",
              // LOCK TABLES around each table's rows is only a load-speed hint, and with it MariaDB refuses the rows of
              // a table whose default draws from a sequence (DEFAULT NEXTVAL(seq)): "was not locked with LOCK TABLES".
              "--skip-add-locks",
              "--default-character-set=utf8mb4",
              "--no-tablespaces",
              ...(opts.all_databases ? ["--all-databases", "--flush-privileges"] : list ? ["--databases", ...list] : sel ? [...sel.args, ...sequences] : [single ?? ""]),
            ];
            // With a pipe (zstd, lz4), the tool writes into it and the compressor reads it: the dump's bytes never
            // pass through node. The catalog's outcome decides whether the dump counts, as with the stream.
            const output = await dopts.output;
            const { child, done: exited } = spawnTool(tool, args, { ...spawnOpts, stdio: ["ignore", output ? output.fd : "pipe", "pipe"] });
            // The catalog's error is the one to report when both fail (a wrong password, a missing database), not
            // the dump tool's own report of it or its being stopped for it.
            const outcome = Promise.allSettled([catalog, exited]).then(([c, e]) => {
              if (c.status === "rejected") throw c.reason;
              if (e.status === "rejected") throw e.reason;
            });
            outcome.catch(() => undefined);
            if (output) output.started();
            else {
              // The stream ends only once the catalog is taken too: a failed catalog fails the backup.
              const gated = endAfter(child.stdout as Readable, outcome);
              gated.on("error", (e) => out.destroy(e));
              gated.pipe(out);
            }
            await outcome;
            finish(await resultOf());
            return;
          }
          await catalog;
          await selected;
          // mydumper writes a directory of files (one or more per table, from several threads), so it dumps into the
          // private session directory and the result travels through the pipe as a tar stream.
          const dir = join(s.dir, "dump");
          const args = [
            // mydumper 0.10 (Debian 12) knows --defaults-file only; it reads the [client] group of it.
            `--defaults-file=${s.cnf}`,
            `--outputdir=${dir}`,
            `--threads=${opts.threads ?? 4}`,
            ...(opts.routines ? ["--routines"] : []),
            ...(opts.triggers ? ["--triggers"] : []),
            ...(opts.events ? ["--events"] : []),
            ...(opts.single_transaction ? ["--trx-consistency-only"] : []),
            ...(single ? [`--database=${single}`] : list ? [`--regex=^(${list.map(escapeRegex).join("|")})\\.`] : []),
          ];
          await spawnTool(tool, args, { ...spawnOpts, stdio: ["ignore", "ignore", "pipe"] }).done;
          const tar = await resolveTool("tar");
          const t = spawnTool(tar, ["-C", dir, "-cf", "-", "."], { signal: dopts.signal, stdio: ["ignore", "pipe", "pipe"] });
          const gated = endAfter(t.child.stdout as Readable, t.done);
          gated.on("error", (e) => out.destroy(e));
          gated.pipe(out);
          await t.done;
          finish(await resultOf());
        } finally {
          dopts.signal.removeEventListener("abort", onAbort);
          // Whatever is still running for this dump (a count query after a failed dump) ends with it.
          stop.abort();
        }
      });
    })().catch((err: unknown) => {
      out.destroy(err as Error);
      fail(err);
    });

    return { stream: out, done };
  }

  async function inspectTarget(o?: { tables?: string[] }): Promise<TargetState> {
    return withSession(async (s) => {
      const schemas = await coveredSchemas(s);
      const existing = await existingSchemas(s, schemas);
      if (existing.length === 0) return { exists: false, objects: [] };
      const rows = await query(s, `SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (${existing.map(lit).join(", ")}) ORDER BY 1, 2`);
      const objects = rows.map((r) => (single ? (r[1] ?? "") : `${r[0]}.${r[1]}`));
      return { exists: true, objects: o?.tables ? objects.filter((x) => o.tables!.includes(x)) : objects };
    });
  }

  async function charsetOf(s: Session, db: string): Promise<{ charset: string; collation: string } | undefined> {
    const r = (await query(s, `SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ${lit(db)}`))[0];
    return r ? { charset: r[0] ?? "", collation: r[1] ?? "" } : undefined;
  }

  function createSql(db: string, cs: { charset: string; collation: string } | undefined): string {
    return `CREATE DATABASE ${ident(db)}${cs ? ` CHARACTER SET ${lit(cs.charset)} COLLATE ${lit(cs.collation)}` : ""}`;
  }

  async function createStaging(s: Session, staging: string, cs: { charset: string; collation: string } | undefined): Promise<void> {
    await query(s, createSql(staging, cs)).catch((err: unknown) => {
      throw new DbkeepError("ENGINE_FAILED", `could not create the staging database for the restore (${where}): ${(err as DbkeepError).details ?? (err as Error).message}`, {
        hint: "the restoring user needs the CREATE and DROP privileges on *.* (dbkeep restores beside the target first)",
        cause: err,
      });
    });
  }

  async function dropQuietly(s: Session, db: string, log: Logger): Promise<void> {
    await query(s, `DROP DATABASE IF EXISTS ${ident(db)}`).catch((e: unknown) =>
      log.warn({ database: db, err: (e as Error).message }, "could not drop the staging database; drop it by hand"),
    );
  }

  /** Empties the target: what the backup does not hold must not survive its restore. */
  async function recreateTarget(s: Session, target: string, cs: { charset: string; collation: string } | undefined): Promise<void> {
    // An application holding a lock on the target would otherwise make DROP DATABASE wait for a day.
    await query(s, `SET SESSION lock_wait_timeout = 60; DROP DATABASE IF EXISTS ${ident(target)}; ${createSql(target, cs)}`).catch((err: unknown) => {
      throw new DbkeepError("ENGINE_FAILED", `could not replace database ${target} (${server}): ${(err as DbkeepError).details ?? (err as Error).message}`, {
        hint: "the backup itself is fine; stop the applications holding locks on the target and run the restore again",
        cause: err,
      });
    });
  }

  function clientArgs(s: Session, database?: string): string[] {
    return [`--defaults-extra-file=${s.cnf}`, "--default-character-set=utf8mb4", ...(database ? [`--database=${database}`] : [])];
  }

  async function applyFile(path: string, tool: string, args: string[], context: string, signal: AbortSignal): Promise<void> {
    const fh = await open(path, "r");
    try {
      await spawnTool(tool, args, { env: minimalEnv(), signal, timeoutMs, context, explain, stdio: [fh.fd, "ignore", "pipe"] }).done;
    } finally {
      await fh.close();
    }
  }

  function singleTarget(what: string): string {
    if (!single) {
      throw new DbkeepError("USAGE", `${what} restores into one database, and this datasource names ${list ? "a list of databases" : "all databases"}`, {
        hint: "restore with --to a datasource that has database: NAME, or a URL such as mysql://user@host:3306/NAME",
      });
    }
    return single;
  }

  function partialFailed(target: string, err: unknown): DbkeepError {
    const e = err instanceof DbkeepError ? err : undefined;
    return new DbkeepError("ENGINE_FAILED", `applying the verified partial backup to ${target} failed (${server}): ${e?.message ?? (err as Error).message}`, {
      details: e?.details,
      hint: "it restored cleanly into an empty staging database just before: what differs is the target (its other tables, locks, privileges)",
      cause: err,
    });
  }

  function failedOnTarget(target: string, err: unknown): DbkeepError {
    const e = err instanceof DbkeepError ? err : undefined;
    return new DbkeepError("ENGINE_FAILED", `applying the verified backup to ${target} failed after it was emptied (${server}): ${e?.message ?? (err as Error).message}`, {
      details: e?.details,
      hint: "the backup restored cleanly into a staging database just before, so the cause is on the server (disk, connection, locks); run the restore again",
      cause: err,
    });
  }

  /**
   * Restores a dump of one database. MariaDB has no RENAME DATABASE, and views, triggers, routines and events are
   * bound to their schema, so a staging database cannot be renamed into place the way PostgreSQL's is; moving
   * tables one by one with RENAME TABLE would leave the schema-bound objects to be rewritten by hand. Instead the
   * stream is restored into a staging database and, in the same pass, copied to a private temp file. Only when the
   * stream ended cleanly (checksum verified) and the client succeeded is the staging database dropped, the target
   * emptied, and the same verified file applied to it. A damaged or truncated backup therefore stops in staging
   * and never reaches the target; the cost is applying the dump twice and a temp file of its size.
   */
  async function restorePlain(input: Readable, ropts: RestoreOptions, s: Session): Promise<void> {
    const target = singleTarget("a dump of one database");
    const client = await clientTool();
    const cs = await charsetOf(s, target);
    const staging = stagingName(target);
    await createStaging(s, staging, cs);
    ropts.log.debug({ staging }, "restoring into staging database");
    const copy = join(s.dir, "dump.sql");
    try {
      const t = spawnTool(client, clientArgs(s, staging), {
        env: minimalEnv(), signal: ropts.signal, timeoutMs, context: `${server}, staging ${staging}`, explain, stdio: ["pipe", "ignore", "pipe"],
      });
      // The source database's name is dropped from sequence defaults, so they resolve to the restored database.
      await teeIntoTool(ropts.sourceDatabase ? unqualified(input, ropts.sourceDatabase) : input, t, copy);
    } finally {
      await dropQuietly(s, staging, ropts.log);
    }
    // A partial backup replaces only its own tables (its DROP TABLE IF EXISTS / CREATE TABLE); the rest of the target
    // stays. A missing target is created for it, and dropped again if the backup does not apply to it.
    const created = Boolean(ropts.tables) && !cs;
    if (created) await query(s, createSql(target, undefined));
    if (ropts.tables) ropts.log.info({ tables: ropts.tables.length }, created ? `restoring ${ropts.tables.length} table(s) into the new database ${target}` : `restoring ${ropts.tables.length} table(s) into ${target}; its other tables stay as they are`);
    else await recreateTarget(s, target, cs);
    try {
      await applyFile(copy, client, clientArgs(s, target), `${server}, database ${target}`, ropts.signal);
    } catch (err) {
      if (created) {
        await query(s, `DROP DATABASE IF EXISTS ${ident(target)}`).catch((e: unknown) =>
          ropts.log.warn({ database: target, err: (e as Error).message }, "could not drop the database created for the failed restore; drop it by hand"),
        );
      }
      throw ropts.tables ? partialFailed(target, err) : failedOnTarget(target, err);
    }
  }

  /**
   * mysqldump --databases / --all-databases: the dump names its databases and recreates them itself, so it is
   * kept in a private temp file until the stream ended cleanly (checksum verified) and only then applied.
   */
  async function restoreDatabases(input: Readable, ropts: RestoreOptions, s: Session): Promise<void> {
    const client = await clientTool();
    const copy = join(s.dir, "dump.sql");
    await pipeline(input, createWriteStream(copy, { mode: 0o600, flags: "wx" }), { signal: ropts.signal });
    if (single) ropts.log.warn({ target: single }, "the backup holds whole databases; they are restored under their own names");
    await applyFile(copy, client, clientArgs(s), server, ropts.signal);
  }

  /**
   * mydumper's directory is unpacked into the private session directory; myloader runs only once the stream ended
   * cleanly. A dump of one database restored into a datasource with `database:` goes through a staging database
   * first, as plain dumps do (see restorePlain); other dumps are loaded under their own names.
   */
  async function restoreMydumper(input: Readable, ropts: RestoreOptions, s: Session): Promise<void> {
    const myloader = await resolveTool("myloader", binDir);
    const dir = join(s.dir, "dump");
    await mkdir(dir, { mode: 0o700 });
    const tar = await resolveTool("tar");
    const t = spawnTool(tar, ["-C", dir, "-xf", "-"], { signal: ropts.signal, stdio: ["pipe", "ignore", "pipe"], errorCode: "CORRUPT_BACKUP" });
    await feedWhileReading(input, t);
    await t.done;
    if (!(await exists(join(dir, "metadata")))) throw new DbkeepError("CORRUPT_BACKUP", "the mydumper backup holds no metadata file");
    const databases = (await readdir(dir)).filter((f) => f.endsWith("-schema-create.sql")).map((f) => f.slice(0, -"-schema-create.sql".length));
    // A dump of one database restored under a name of its own: sequence defaults name the restored database, and
    // the sequences are created before the tables that draw from them.
    const sequences = single && databases.length === 1 ? await unqualifyMydumperSchemas(dir, databases[0]!).then(() => setSequencesAside(dir, join(s.dir, "sequences"))) : [];
    const run = async (args: string[], context: string, db?: string) => {
      if (db && sequences.length) {
        const client = await clientTool();
        for (const f of sequences) await applyFile(f, client, clientArgs(s, db), context, ropts.signal);
      }
      await loader(args, context);
    };
    const threads = ropts.jobs ?? opts.threads;
    const base = [
      `--defaults-file=${s.cnf}`,
      `--directory=${dir}`,
      ...(threads ? [`--threads=${threads}`] : []),
      // myloader turns the binary log off by default, which needs SUPER and leaves replicas behind; the client does not.
      "--enable-binlog",
    ];
    const loader = (args: string[], context: string) =>
      spawnTool(myloader, [...base, ...args], { env: minimalEnv(), signal: ropts.signal, timeoutMs, context, explain, stdio: ["ignore", "ignore", "pipe"] }).done;

    if (!single || databases.length !== 1) {
      if (single) ropts.log.warn({ target: single, databases: databases.length }, "the backup holds several databases; they are restored under their own names");
      await loader(["--overwrite-tables"], server);
      return;
    }
    const target = single;
    const cs = await charsetOf(s, target);
    const staging = stagingName(target);
    await createStaging(s, staging, cs);
    try {
      await run([`--database=${staging}`], `${server}, staging ${staging}`, staging);
    } finally {
      await dropQuietly(s, staging, ropts.log);
    }
    await recreateTarget(s, target, cs);
    try {
      await run([`--database=${target}`], `${server}, database ${target}`, target);
    } catch (err) {
      throw failedOnTarget(target, err);
    }
  }

  async function restore(input: Readable, ropts: RestoreOptions): Promise<void> {
    if (!(ropts.format in EXT)) throw new DbkeepError("USAGE", `the mysql engine cannot restore a ${ropts.format} backup`);
    await withSession(async (s) => {
      await requireTls(s);
      if (ropts.format === "plain") await restorePlain(input, ropts, s);
      else if (ropts.format === "plain-databases") await restoreDatabases(input, ropts, s);
      else await restoreMydumper(input, ropts, s);
    });
  }

  /** verify: true's structural check of a dump read back from the store. */
  async function checkDump(input: Readable, o: { format: string; signal: AbortSignal }): Promise<string> {
    if (o.format !== "mydumper") {
      let tail = "";
      for await (const chunk of input) tail = (tail + (chunk as Buffer).toString("latin1")).slice(-4096);
      if (!/-- Dump completed on [^\n]*\n?$/.test(tail.trimEnd() + "\n")) {
        throw new DbkeepError("CORRUPT_BACKUP", "the dump does not end with mysqldump's completion line: it is truncated");
      }
      return "dump is complete";
    }
    const tar = await resolveTool("tar");
    const t = spawnTool(tar, ["-t", "-f", "-"], { signal: o.signal, stdio: ["pipe", "pipe", "pipe"], errorCode: "CORRUPT_BACKUP", context: "verify" });
    let listing = "";
    t.child.stdout?.setEncoding("utf8");
    t.child.stdout?.on("data", (c: string) => (listing = (listing + c).slice(-1_000_000)));
    await feedWhileReading(input, t);
    await t.done;
    if (!/(^|\n)(\.\/)?metadata(\n|$)/.test(listing)) throw new DbkeepError("CORRUPT_BACKUP", "the mydumper backup's tar holds no metadata file");
    const files = listing.split("\n").filter((l) => l.endsWith(".sql")).length;
    return `mydumper tar holds metadata and ${files} SQL files`;
  }

  /** Tools, server version and the grants a dump needs (SHOW GRANTS of the connected user). */
  async function doctor(): Promise<DoctorFinding[]> {
    const out: DoctorFinding[] = [];
    const finders: [string, () => Promise<string>][] = useMydumper
      ? [["mydumper", () => resolveTool("mydumper", binDir)], ["myloader", () => resolveTool("myloader", binDir)], ["mysql", clientTool]]
      : [["mysqldump", dumpTool], ["mysql", clientTool]];
    let haveClient = false;
    for (const [name, find] of finders) {
      try {
        const p = await find();
        out.push({ level: "ok", message: `${basename(p)} ${await toolVersion(p)} (${p})` });
        if (name === "mysql") haveClient = true;
      } catch (err) {
        const e = err as DbkeepError;
        out.push({ level: "error", message: e.message, ...(e.hint ? { hint: e.hint } : {}) });
      }
    }
    if (!haveClient) return out;
    let server: string;
    let grants: string[];
    try {
      ({ server, grants } = await withSession(async (s) => ({
        server: (await query(s, "SELECT CONCAT(VERSION(), ' (', @@version_comment, ')')"))[0]?.[0] ?? "",
        grants: (await query(s, "SHOW GRANTS")).map((r) => r[0] ?? ""),
      })));
    } catch (err) {
      const e = err as DbkeepError;
      out.push({ level: "error", message: `${e.message}${e.details ? `: ${e.details}` : ""}`, ...(e.hint ? { hint: e.hint } : {}) });
      return out;
    }
    out.push({ level: "ok", message: `server ${server}` });
    const have = effectivePrivileges(grants, single ? [single] : (list ?? []));
    const needs: [string, DoctorFinding["level"], string][] = [
      ["SELECT", "error", "nothing can be dumped without it"],
      ["LOCK TABLES", "warn", "needed to lock non-InnoDB tables during the dump"],
      ["SHOW VIEW", "warn", "views cannot be dumped without it"],
      ["TRIGGER", "warn", "triggers are silently left out without it"],
      ["EVENT", opts.events ? "warn" : "ok", "events cannot be dumped without it"],
      ["RELOAD", useMydumper ? "warn" : "ok", "mydumper and --flush-logs need it (FLUSH TABLES WITH READ LOCK, FLUSH LOGS)"],
      ["PROCESS", "warn", "MySQL 8's mysqldump needs it for tablespace information (else --no-tablespaces)"],
    ];
    const target = single ?? (list ? list.join(", ") : "every database");
    for (const [priv, level, why] of needs) {
      if (have.has(priv)) out.push({ level: "ok", message: `${priv} granted` });
      else if (level === "ok") out.push({ level: "ok", message: `${priv} not granted (not needed by this datasource)` });
      else out.push({ level, message: `${priv} is missing on ${target}: ${why}`, hint: `GRANT ${priv} ON ${single && priv !== "RELOAD" && priv !== "PROCESS" ? `\`${single}\`.*` : "*.*"} TO the backup user` });
    }
    return out;
  }

  return {
    name: "mysql",
    tools: useMydumper ? ["mydumper", "myloader", "mysql"] : ["mysqldump", "mysql"],
    format,
    extension: EXT[format] ?? ".sql",
    // mysqldump of one database writes its dump to stdout: a compressor process can read it from a kernel pipe.
    dumpsToPipe: format === "plain",
    database: layoutName,
    source: () => ({
      engine: "mysql",
      database: layoutName,
      ...(opts.socket ? { path: opts.socket } : { host: opts.host, port: opts.port }),
      ...(opts.user ? { user: opts.user } : {}),
    }),
    doctor,
    async check() {
      const tools: Record<string, string> = {};
      const paths = useMydumper ? [await resolveTool("mydumper", binDir), await resolveTool("myloader", binDir)] : [await dumpTool()];
      for (const p of [...paths, await clientTool()]) tools[basename(p)] = await toolVersion(p);
      const server = await withSession(async (s) => {
        await requireTls(s);
        return (await query(s, "SELECT CONCAT(VERSION(), ' (', @@version_comment, ')')"))[0]?.[0];
      });
      return { tools, ...(server ? { server } : {}) };
    },
    dump,
    inspectTarget,
    restore,
    canRestore: (f) => f in EXT,
    checkDump,
    ...(single && !useMydumper
      ? {
          differential: createMysqlDifferential({
            database: single,
            where,
            ...(selection ? { selection } : {}),
            connection: () => ({
              host: opts.host,
              port: opts.port,
              ...(opts.socket ? { socket: opts.socket } : {}),
              user: opts.user ?? userInfo().username,
              ...(password() ? { password: password()!.reveal() } : {}),
              database: single,
              tls,
            }),
            applyScript: (input, ropts) =>
              withSession(async (s) => {
                const t = spawnTool(await clientTool(), clientArgs(s, single), {
                  env: minimalEnv(), signal: ropts.signal, timeoutMs, context: `${server}, database ${single}`, explain, stdio: ["pipe", "ignore", "pipe"],
                });
                await teeIntoTool(input, t);
              }),
          }),
        }
      : {}),
  };
}

/**
 * Writes `input` into a tool's stdin and, when `copy` is given, into a private file at the same time. If the input
 * errors (checksum mismatch, corrupt frame), the tool is killed rather than given an end of input, on which the
 * client would run what it has read so far.
 */
/**
 * `input` through UnqualifySequences, joined both ways: an error of the input (a damaged backup) errors the output,
 * and the output closed early (the client failed) destroys the input, as reading the input directly would.
 */
function unqualified(input: Readable, db: string): Readable {
  return streamPipeline(input, new UnqualifySequences(db), () => undefined);
}

async function teeIntoTool(input: Readable, tool: SpawnedTool, copy?: string): Promise<void> {
  const stdin = tool.child.stdin;
  if (!stdin) throw new DbkeepError("INTERNAL", "tool has no stdin");
  stdin.on("error", () => undefined);
  const file = copy ? createWriteStream(copy, { mode: 0o600, flags: "wx" }) : undefined;
  file?.on("error", () => undefined);
  const feeding = (async () => {
    try {
      for await (const chunk of input) await Promise.all([write(stdin, chunk as Buffer), file && write(file, chunk as Buffer)]);
      await Promise.all([finish(stdin), file && finish(file)]);
    } catch (err) {
      tool.child.kill("SIGKILL");
      file?.destroy();
      throw err;
    }
  })();
  const [fed, exited] = await Promise.allSettled([feeding, tool.done]);
  // The input's own error explains more than the tool's reaction to it, and the tool's error explains more than
  // the EPIPE we got when it stopped reading.
  if (input.errored) throw input.errored;
  if (exited.status === "rejected") throw exited.reason;
  if (fed.status === "rejected") throw fed.reason;
}

function write(w: Writable, chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (w.destroyed) return reject(new Error("stream closed"));
    w.write(chunk, (err) => (err ? reject(err) : resolve()));
  });
}

function finish(w: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    w.once("error", reject);
    w.once("close", () => resolve());
    w.end();
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether a version such as "0.10.0" is older than major.minor. */
function olderThan(version: string, [major, minor]: [number, number]): boolean {
  const [a = 0, b = 0] = version.split(".").map((x) => Number.parseInt(x, 10) || 0);
  return a < major || (a === major && b < minor);
}

function stagingName(target: string): string {
  // 40 + 16 + 8 characters: within MySQL's 64-character limit for database names.
  return `${target.slice(0, 40)}_dbkeep_restore_${randomBytes(4).toString("hex")}`;
}

/** A value in an option file: double-quoted, with the escapes the option file parser undoes. */
/**
 * The privileges SHOW GRANTS gives on every one of `databases` (global ones always count; database-level grants
 * only when `databases` are named, as all-databases dumps need them everywhere).
 */
export function effectivePrivileges(grants: string[], databases: string[]): Set<string> {
  const global = new Set<string>();
  const perDb = databases.map(() => new Set<string>());
  for (const g of grants) {
    const m = /^GRANT (.+?) ON (\S+) TO /i.exec(g);
    if (!m) continue;
    const privs = m[1]!.split(",").map((p) => p.trim().toUpperCase().replace(/\s*\(.*\)$/, ""));
    const expanded = privs.includes("ALL PRIVILEGES") || privs.includes("ALL") ? ALL_PRIVILEGES : privs;
    const on = m[2]!;
    if (on === "*.*") for (const p of expanded) global.add(p);
    const db = /^`((?:[^`]|``)+)`\.\*$/.exec(on)?.[1]?.replace(/``/g, "`");
    if (db === undefined) continue;
    const re = new RegExp(`^${db.replace(/\\([_%])|([_%])|([^_%\\])/g, (_m, esc?: string, wild?: string, ch?: string) =>
      esc ? escapeRe(esc) : wild === "%" ? ".*" : wild === "_" ? "." : escapeRe(ch ?? ""))}$`);
    databases.forEach((name, i) => {
      // RELOAD and PROCESS exist only globally: ALL PRIVILEGES on a database does not give them.
      if (re.test(name)) for (const p of expanded) if (p !== "RELOAD" && p !== "PROCESS") perDb[i]!.add(p);
    });
  }
  const all = new Set(global);
  if (databases.length) for (const p of ALL_PRIVILEGES) if (perDb.every((s) => s.has(p))) all.add(p);
  return all;
}

const ALL_PRIVILEGES = ["SELECT", "LOCK TABLES", "SHOW VIEW", "TRIGGER", "EVENT", "RELOAD", "PROCESS"];

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export function quoteOption(value: string): string {
  return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n").replace(/\r/g, "\\r").replace(/\t/g, "\\t")}"`;
}

/** Undoes the escaping of the client's --batch output. */
function unescapeBatch(field: string): string {
  return field.replace(/\\([\\ntr0])/g, (_m, c: string) => ({ n: "\n", t: "\t", r: "\r", "0": "\0" })[c] ?? c);
}

function ident(name: string): string {
  return `\`${name.replace(/`/g, "``")}\``;
}

function lit(value: string): string {
  return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "''")}'`;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** "10.11.19-MariaDB" from `mariadb-dump Ver 10.19 Distrib 10.11.19-MariaDB, ...`; "8.0.36" from MySQL's; "0.10.0" from mydumper's. */
export function parseVersion(out: string): string {
  const m = /Distrib ([^\s,]+)/.exec(out) ?? /\bfrom ([0-9][^\s,]*)/.exec(out) ?? /\bVer ([0-9][^\s,]*)/.exec(out) ?? /^\S+ v?([0-9][^\s,]*)/.exec(out.trim());
  return m?.[1] ?? out.trim().split("\n")[0] ?? "";
}

export function explainMysqlError(stderr: string): { hint?: string; retryable?: boolean; code?: "CONNECTION_FAILED" } | undefined {
  if (/Access denied for user [^\n]* to database/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "the user has no privileges on that database: GRANT them, or use another user" };
  }
  if (/Access denied for user/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "check the datasource's user and password (password_env / password_file)" };
  }
  if (/SSL is required, but the server does not support it/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "the server offers no TLS: enable it on the server, or lower ssl_mode (preferred)" };
  }
  if (/TLS\/SSL error|SSL connection error|certificate verify failed|self[- ]signed certificate|unable to get (local )?issuer certificate|hostname|ERROR 2026/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "set ssl_ca to the CA that signed the server's certificate; verify_identity also needs the certificate to name the host" };
  }
  if (/Can't connect|Connection refused|Unknown (MySQL )?server host|Name or service not known|at 'handshake: reading initial communication packet'/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "is the server running and reachable at that host and port (or socket)?", retryable: true };
  }
  if (/Lost connection to|server has gone away/i.test(stderr)) {
    return { hint: "the server closed the connection (restart, KILL, wait_timeout or max_allowed_packet); run it again", retryable: true };
  }
  if (/Unknown database/i.test(stderr)) return { code: "CONNECTION_FAILED", hint: "check the datasource's database name" };
  if (/queries in PROCESSLIST running longer than/i.test(stderr)) {
    // Waiting for its global read lock behind a long query would stall every writer on the server meanwhile.
    return { hint: "mydumper does not start while a query has been running longer than 60 s; run the backup when it has finished", retryable: true };
  }
  if (/RELOAD privilege/i.test(stderr)) {
    return { hint: "mydumper takes a global read lock to start its snapshots: grant RELOAD to the user, or use tool: mysqldump" };
  }
  if (/command denied|privilege/i.test(stderr)) {
    return { hint: "the user lacks a privilege the dump needs (SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, EXECUTE for views that call functions); grant it or switch routines/triggers/events off" };
  }
  return undefined;
}

export default createMysqlEngine;
