import { createWriteStream, write as fsWrite } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { makeTempDir } from "../../core/tempdir.js";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { DbkeepError } from "../../core/errors.js";
import type { Secret } from "../../core/redact.js";
import { endAfter } from "../../core/streams.js";
import { feedWhileReading, minimalEnv, resolveTool, runTool, spawnTool } from "../../core/subprocess.js";
import type { DoctorFinding, Dump, DumpOptions, DumpResult, Engine, RestoreOptions, TargetState } from "../engine.js";
import { pgExactPattern } from "../../core/selection.js";
import type { PostgresDatasource } from "./schema.js";
import { startDump } from "../dump.js";
import { openDumpSnapshot } from "./verify.js";
import { pgTool } from "./tools.js";
import { restoreDatabase, restoreLeftoverFindings, sweepBeforeRestore, type RestoreContext } from "./restore.js";
import { makeScratchDir } from "./scratch.js";
import { createPgDifferential, partialDependencies, resolvePgSelection, type PartialDependencies, type PgSelection } from "./partial.js";
import { connectPg, explainPgError, pgConnectionError } from "./connection.js";
import { mergePgTls, pgTlsFromEnv, pgTlsOf, resolvePgTls, type PgTls } from "./tls.js";
import { selectionOf } from "../../core/selection.js";
import type { Logger } from "../../core/log.js";

export type PostgresEngineOptions = Omit<PostgresDatasource, "password" | "password_env" | "password_file" | "compression" | "compression_level" | "engine"> & {
  /** The password, resolved when a connection is first made (an unset *_env variable fails there, not earlier). */
  password?: () => Secret | undefined;
  /** One-off mode: let libpq use PGPASSWORD / PGPASSFILE / ~/.pgpass and PGSSL* from dbkeep's own environment. */
  inheritAuthEnv?: boolean;
};

const EXT: Record<string, string> = { plain: ".sql", custom: ".dump", directory: ".tar", dumpall: ".sql" };

export function createPostgresEngine(opts: PostgresEngineOptions): Engine {
  const dumpAll = opts.all_databases ?? false;
  const format = dumpAll ? "dumpall" : (opts.format ?? "plain");
  /** The database connections go to; in dumpall mode only the one pg_dumpall starts from. */
  const dbName = opts.database ?? "postgres";
  const layoutName = dumpAll ? "all-databases" : dbName;
  const binDir = opts.bin_dir ?? (opts.pg_version ? `/usr/lib/postgresql/${opts.pg_version}/bin` : undefined);
  const where = `host ${opts.host}, database ${dumpAll ? "(all)" : dbName}`;
  let resolved: { value: Secret | undefined } | undefined;
  const password = (): Secret | undefined => (resolved ??= { value: opts.password?.() }).value;
  // Read on first use, like the password: listing backups needs no certificate files.
  let tlsSettings: PgTls | undefined;
  const tls = (): PgTls =>
    (tlsSettings ??= resolvePgTls(mergePgTls(opts.inheritAuthEnv ? pgTlsFromEnv(process.env) : {}, pgTlsOf(opts as Record<string, unknown>)), opts.host));

  function toolEnv(database: string): NodeJS.ProcessEnv {
    const inherited: Record<string, string | undefined> = opts.inheritAuthEnv
      ? { PGPASSWORD: process.env.PGPASSWORD, PGPASSFILE: process.env.PGPASSFILE, PGSERVICE: process.env.PGSERVICE }
      : {};
    return minimalEnv({
      ...inherited,
      PGHOST: opts.host,
      PGPORT: String(opts.port),
      PGUSER: opts.user,
      PGDATABASE: database,
      PGPASSWORD: password()?.reveal() ?? inherited.PGPASSWORD,
      ...tls().env,
      PGCONNECT_TIMEOUT: "15",
      PGAPPNAME: "dbkeep",
    });
  }

  /** A connection of dbkeep's own, with the same TLS settings as the tools' (see tls.ts). */
  async function open(database: string): Promise<pg.Client> {
    let c: pg.Client;
    try {
      c = await connectPg({
        host: opts.host,
        port: opts.port,
        user: opts.user ?? (opts.inheritAuthEnv ? process.env.PGUSER : undefined) ?? process.env.USER ?? "postgres",
        password: password()?.reveal() ?? (opts.inheritAuthEnv ? process.env.PGPASSWORD : undefined),
        database,
        connectionTimeoutMillis: 15000,
        application_name: "dbkeep",
      }, tls());
    } catch (err) {
      throw pgConnectionError(err, { host: opts.host, port: opts.port, database });
    }
    // dbkeep's catalog queries (the differential's table structure above all) are planned as expensive enough to be
    // JIT-compiled, which costs seconds and saves nothing on queries this small. Servers before 11 have no jit.
    await c.query("SET jit = off").catch(() => undefined);
    return c;
  }

  async function withClient<T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
    const c = await open(database);
    try {
      return await fn(c);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  const explain = (stderr: string) => explainPgError(stderr);

  async function toolVersion(tool: string): Promise<string> {
    const path = await pgTool(tool, binDir);
    return (await runTool(path, ["--version"])).trim().replace(/^\S+ \(PostgreSQL\) /, "");
  }

  async function maintenanceDb(): Promise<string> {
    if (opts.maintenance_db) return opts.maintenance_db;
    for (const db of ["postgres", "template1"]) {
      try {
        await withClient(db, async () => undefined);
        return db;
      } catch (err) {
        if (err instanceof DbkeepError && /does not exist/.test(err.details ?? err.message)) continue;
        throw err;
      }
    }
    return "postgres";
  }

  const selection = dumpAll ? undefined : selectionOf(opts as Record<string, unknown>);

  /**
   * A partial backup's pg_dump arguments: the globs resolved against the catalog, passed as exact names, and what
   * the tables need beyond themselves (see partialDependencies): sequences go to pg_dump as more --table arguments,
   * a plain dump starts with the statements that create the rest where the target lacks it, and what the dump
   * cannot carry is named in the manifest for the restore to check.
   */
  async function selectionArgs(log: Logger): Promise<(PgSelection & { deps: PartialDependencies }) | undefined> {
    if (!selection) return undefined;
    const sel = await withClient(dbName, async (c) => {
      const resolved = await resolvePgSelection(c, selection, dbName);
      return { ...resolved, deps: await partialDependencies(c, resolved, selection, { carry: format === "plain" }) };
    });
    for (const w of sel.warnings) log.warn(w);
    log.info({ tables: sel.names.length }, `partial backup of ${sel.names.length} table(s): ${sel.names.slice(0, 10).join(", ")}${sel.names.length > 10 ? ", ..." : ""}`);
    const carried = [...sel.deps.sequences.map((x) => `sequence ${x.schema}.${x.name}`), ...sel.deps.ddl.map((x) => x.what)];
    if (carried.length) log.info({ objects: carried.length }, `the backup also carries what its tables need: ${carried.join(", ")}`);
    if (sel.deps.requires.length) {
      log.info({ requires: sel.deps.requires }, `a restore needs the target to have ${sel.deps.requires.join(", ")} (not in this ${format} dump)`);
    }
    return { ...sel, args: [...sel.args, ...sel.deps.sequences.map((x) => `--table=${pgExactPattern(x.schema, x.name)}`)] };
  }

  function withSelection(r: DumpResult, sel: (PgSelection & { deps: PartialDependencies }) | undefined): DumpResult {
    if (!sel || !selection) return r;
    const keep = new Set(sel.names);
    return {
      ...r,
      ...(r.tables ? { tables: r.tables.filter((t) => keep.has(t.name)) } : {}),
      selection: { patterns: selection, tables: sel.names, ...(sel.deps.requires.length ? { requires: sel.deps.requires } : {}) },
    };
  }

  /** The start of a partial plain dump: the statements that create what its tables need (each only if missing). */
  function dependencyPreamble(deps: PartialDependencies): string {
    if (deps.ddl.length === 0) return "";
    return (
      "--\n-- dbkeep: what the tables of this partial backup need, each created only where the database lacks it\n--\n\n" +
      "SET client_min_messages = warning;\nSET check_function_bodies = false;\n" +
      deps.ddl.map((d) => `-- ${d.what.replace(/\n/g, " ")}\n${d.sql}\n`).join("") +
      "\n"
    );
  }

  async function connect(): Promise<pg.Client> {
    return open(dbName);
  }

  function dump(dopts: DumpOptions): Dump {
    if (dumpAll) return dumpAllDatabases(dopts);
    return startDump(async (out) => {
      // The dump's own snapshot (exported to pg_dump: counts and schema objects are taken in it while pg_dump runs)
      // is opened while pg_dump is located. pg_dump's version is asked at the same time and checked while pg_dump
      // starts, not before: nothing waits for it, and a pg_dump older than the server is stopped and reported as
      // such (it would refuse that server itself, with a less helpful message).
      const opening = openDumpSnapshot(() => open(dbName), { counts: opts.row_counts !== "estimate" }).catch((err: unknown) => {
        throw pgConnectionError(err, { host: opts.host, port: opts.port, database: dbName });
      });
      opening.catch(() => undefined); // awaited below; until then a failure must not count as unhandled
      const version = toolVersion("pg_dump");
      version.catch(() => undefined);
      let pgDump: string;
      try {
        pgDump = await pgTool("pg_dump", binDir);
      } catch (err) {
        await opening.then((s) => s.close(), () => undefined);
        throw err;
      }
      const snap = await opening;
      const serverVersion = snap.serverVersion;
      // Stops pg_dump when the version check fails (or when the backup is cancelled).
      const stop = new AbortController();
      const onAbort = () => stop.abort(dopts.signal.reason);
      if (dopts.signal.aborted) onAbort();
      else dopts.signal.addEventListener("abort", onAbort, { once: true });
      const checked = version.then((v) => (checkVersions(v, serverVersion), v));
      checked.catch(() => stop.abort());
      try {
        const sel = await selectionArgs(dopts.log);
        const timeoutMs = opts.timeout ? opts.timeout * 1000 : undefined;
        // A partial plain dump drops its own tables first: restored into an existing database it replaces just those.
        const partial = sel ? [...sel.args, ...(format === "plain" ? ["--clean", "--if-exists"] : [])] : [];
        const common = ["--no-password", `--snapshot=${snap.id}`, ...(format === "plain" ? [] : [`--compress=${opts.dump_compression ?? 0}`]), ...partial];
        const withCatalog = async (): Promise<DumpResult> => {
          const result: DumpResult = { tool: { name: "pg_dump", version: await checked }, serverVersion };
          const { tables, objects } = await snap.catalog;
          // A partial backup holds only some tables: the whole database's objects are not what it restores.
          return { ...result, tables, ...(sel ? {} : { objects }) };
        };

        if (format !== "directory") {
          const args = [`--format=${format === "custom" ? "custom" : "plain"}`, ...common];
          const output = await dopts.output;
          const preamble = sel && format === "plain" ? dependencyPreamble(sel.deps) : "";
          // Written before pg_dump starts, into the pipe or the stream pg_dump's output follows in.
          if (preamble && output) await writeFd(output.fd, Buffer.from(preamble));
          else if (preamble) out.write(preamble);
          const { child, done: exited } = spawnTool(pgDump, args, {
            env: toolEnv(dbName), signal: stop.signal, timeoutMs, context: where, explain,
            stdio: ["ignore", output ? output.fd : "pipe", "pipe"],
          });
          // The stream ends only once the catalog is taken too: a failed count fails the backup, never half-recorded.
          if (output) output.started();
          else endAfter(child.stdout as Readable, Promise.all([exited, snap.catalog, checked]), out);
          // The version check fails first when it fails: that is the error to report, not pg_dump being stopped.
          await Promise.all([checked, exited]);
          return withSelection(await withCatalog(), sel);
        }

        // Directory format: pg_dump -j needs a directory, so it is written to a private temp dir and then
        // carried through the pipe as a tar stream; the temp dir is removed as soon as tar has read it.
        const dir = await makeTempDir("pgdir");
        try {
          const args = ["--format=directory", ...common, `--jobs=${opts.jobs ?? 1}`, `--file=${join(dir, "dump")}`];
          const { done: exited } = spawnTool(pgDump, args, {
            env: toolEnv(dbName), signal: stop.signal, timeoutMs, context: where, explain,
            stdio: ["ignore", "ignore", "pipe"],
          });
          await Promise.all([checked, exited]);
          const tar = await resolveTool("tar");
          const t = spawnTool(tar, ["-C", join(dir, "dump"), "-cf", "-", "."], { signal: dopts.signal, stdio: ["ignore", "pipe", "pipe"] });
          endAfter(t.child.stdout as Readable, Promise.all([t.done, snap.catalog]), out);
          await t.done;
          return withSelection(await withCatalog(), sel);
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      } finally {
        dopts.signal.removeEventListener("abort", onAbort);
        await snap.close();
      }
    });
  }

  async function serverVersion(c: pg.Client): Promise<string> {
    const v = await c.query<{ server_version: string }>("SHOW server_version");
    return (v.rows[0]?.server_version ?? "").split(" ")[0] ?? "";
  }

  /**
   * Roles, tablespaces and every database as one plain SQL script: pg_dumpall has no other format. The script is
   * pg_dumpall's stdout alone, so with DumpOptions.output it goes straight into the compressor's pipe.
   *
   * Nothing waits before pg_dumpall starts but locating it: its version and the server's are asked meanwhile and
   * checked while it runs; a pg_dumpall older than the server is stopped and reported as such (it would refuse that
   * server itself, with a less helpful message), and the backup fails, so nothing of that dump is kept.
   */
  function dumpAllDatabases(dopts: DumpOptions): Dump {
    return startDump(async (out) => {
      const located = pgTool("pg_dumpall", binDir);
      const version = toolVersion("pg_dumpall");
      const server = withClient(dbName, serverVersion);
      version.catch(() => undefined); // awaited below; until then a failure must not count as unhandled
      server.catch(() => undefined);
      const tool = await located;
      // Stops pg_dumpall when the version check fails (or when the backup is cancelled).
      const stop = new AbortController();
      const onAbort = () => stop.abort(dopts.signal.reason);
      if (dopts.signal.aborted) onAbort();
      else dopts.signal.addEventListener("abort", onAbort, { once: true });
      const checked = Promise.all([version, server]).then(([v, s]) => (checkVersions(v, s, "pg_dumpall"), { version: v, server: s }));
      checked.catch(() => stop.abort());
      try {
        const output = await dopts.output;
        const excludes = (opts.exclude_databases ?? []).map((p) => `--exclude-database=${p}`);
        const { child, done: exited } = spawnTool(tool, ["--no-password", `--database=${dbName}`, ...excludes], {
          env: toolEnv(dbName), signal: stop.signal, timeoutMs: opts.timeout ? opts.timeout * 1000 : undefined, context: where,
          stdio: ["ignore", output ? output.fd : "pipe", "pipe"],
          // pg_dumpall runs pg_dump per database: a stop must reach that pg_dump too, or it goes on writing into
          // the output (and holds it open, so that the compressor never sees its end).
          group: true,
          explain: (stderr) => /permission denied|must be superuser/i.test(stderr)
            ? { hint: "pg_dumpall reads roles (pg_authid) and every database: run it as a superuser" }
            : explainPgError(stderr),
        });
        // The stream ends only once the versions are checked too: a refused dump is never a finished one.
        if (output) output.started();
        else endAfter(child.stdout as Readable, Promise.all([exited, checked]), out);
        // The version check (or the server's connection) fails first when it fails: that is the error to report,
        // not pg_dumpall being stopped.
        await Promise.all([checked, exited]);
        const v = await checked;
        return { tool: { name: "pg_dumpall", version: v.version }, serverVersion: v.server };
      } finally {
        dopts.signal.removeEventListener("abort", onAbort);
      }
    });
  }

  /** dumpall mode: the databases already on the server, which the script's CREATE DATABASE would collide with. */
  async function inspectServer(): Promise<TargetState> {
    const objects = await withClient(await maintenanceDb(), async (c) => {
      const r = await c.query<{ datname: string }>("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1");
      return r.rows.map((x) => `database ${x.datname}`);
    });
    return { exists: objects.length > 0, objects };
  }

  /**
   * dumpall mode. The script is applied only once it is complete and its checksum verified (a temp file), so an
   * input error leaves the server untouched. Onto the server it came from, statements such as CREATE ROLE fail
   * with "already exists": psql keeps going (ON_ERROR_STOP=0) and those errors become warnings.
   */
  async function restoreAll(input: Readable, ropts: RestoreOptions): Promise<void> {
    const psql = await pgTool("psql", binDir);
    const scratch = await makeScratchDir();
    try {
      const file = join(scratch, "dumpall.sql");
      await pipeline(input, createWriteStream(file, { mode: 0o600, flags: "wx" }), { signal: ropts.signal });
      const admin = await maintenanceDb();
      const t = spawnTool(psql, ["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0", "-f", file, "-d", admin], {
        env: toolEnv(admin), signal: ropts.signal, timeoutMs: opts.timeout ? opts.timeout * 1000 : undefined, context: where, explain,
        stdio: ["ignore", "ignore", "pipe"],
      });
      const { stderr } = await t.done;
      const errors = stderr.split("\n").filter((l) => /ERROR:/.test(l));
      const existing = errors.filter((l) => /already exists/.test(l)).length;
      if (existing) ropts.log.warn({ existing }, "objects that already exist on the server were kept as they are");
      for (const l of errors.filter((x) => !/already exists/.test(x)).slice(0, 50)) ropts.log.warn({ line: l.trim() }, "dumpall: statement failed");
      if (errors.length) ropts.log.warn({ errors: errors.length }, "pg_dumpall script applied with errors");
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  async function inspectTarget(o?: { tables?: string[]; requires?: string[] }): Promise<TargetState> {
    if (dumpAll) return inspectServer();
    const admin = await maintenanceDb();
    const exists = await withClient(admin, async (c) => {
      const r = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [dbName]);
      return (r.rowCount ?? 0) > 0;
    });
    if (o?.requires?.length) await checkRequired(o.requires, exists);
    if (!exists) return { exists: false, objects: [] };
    const objects = await withClient(dbName, async (c) => {
      const r = await c.query<{ name: string }>(
        `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' AND c.relispartition = false
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('e', 'i', 'a'))
          ORDER BY 1`,
      );
      return r.rows.map((x) => x.name);
    });
    if (o?.tables) {
      const only = new Set(o.tables);
      return { exists: true, objects: objects.filter((x) => only.has(x)) };
    }
    return { exists: true, objects };
  }

  /**
   * Runs a SQL script from `input` with psql on the target in one transaction. psql commits at the end of its input,
   * so an input error (checksum mismatch) must never look like one: the tool is killed before its stdin closes, and
   * the transaction rolls back.
   */
  async function applyScript(input: Readable, ropts: RestoreOptions): Promise<void> {
    const psql = await pgTool("psql", binDir);
    const args = ["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", dbName, "-f", "-"];
    const t = spawnTool(psql, args, { env: toolEnv(dbName), signal: ropts.signal, timeoutMs: opts.timeout ? opts.timeout * 1000 : undefined, context: where, explain, stdio: ["pipe", "ignore", "pipe"] });
    const [fed, exited] = await Promise.allSettled([feedWhileReading(input, t), t.done]);
    if (input.errored) throw input.errored;
    if (fed.status === "rejected") throw fed.reason;
    if (exited.status === "rejected") throw exited.reason;
  }

  /**
   * A partial backup that does not carry everything its tables need (a custom or directory dump, which holds only
   * tables and sequences; a foreign key to a table it does not hold) is refused before anything is created, naming
   * all that the target lacks.
   */
  async function checkRequired(requires: string[], exists: boolean): Promise<void> {
    const missing = exists
      ? await withClient(dbName, async (c) => {
          const r = await c.query<{ what: string }>(
            `SELECT what FROM unnest($1::text[]) AS what WHERE NOT CASE split_part(what, ' ', 1)
               WHEN 'schema' THEN to_regnamespace(substr(what, 8)) IS NOT NULL
               WHEN 'table' THEN to_regclass(substr(what, 7)) IS NOT NULL
               WHEN 'sequence' THEN to_regclass(substr(what, 10)) IS NOT NULL
               WHEN 'type' THEN to_regtype(substr(what, 6)) IS NOT NULL
               WHEN 'function' THEN to_regprocedure(substr(what, 10)) IS NOT NULL
               WHEN 'extension' THEN EXISTS (SELECT 1 FROM pg_extension WHERE quote_ident(extname) = substr(what, 11))
               ELSE false END`,
            [requires],
          );
          return r.rows.map((x) => x.what);
        })
      : requires;
    if (missing.length === 0) return;
    throw new DbkeepError(
      "RESTORE_REFUSED",
      `the partial backup's tables need ${missing.join(", ")}, which ${exists ? `database ${dbName} lacks` : `a new database ${dbName} would lack`}; nothing was changed`,
      {
        hint: `create ${missing.length > 1 ? "them" : "it"} in ${dbName} first, or restore into a database that has ${missing.length > 1 ? "them" : "it"}; a partial backup in format plain carries the types, domains, functions and sequences its tables use`,
      },
    );
  }

  /**
   * A partial backup goes into the existing target: the plain dump's own DROP ... IF EXISTS (it is made with
   * --clean) or pg_restore --clean replace exactly its tables, in one transaction that an input error (checksum
   * mismatch) or a failing statement rolls back. The target's other tables are not touched, so there is no staging
   * database to swap in here.
   */
  async function restorePartial(input: Readable, ropts: RestoreOptions): Promise<void> {
    const admin = await maintenanceDb();
    const created = await withClient(admin, async (c) => {
      const r = await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [dbName]);
      if (r.rowCount) return false;
      await c.query(`CREATE DATABASE ${ident(dbName)}`);
      return true;
    });
    // A database created for this restore goes again if the restore fails: never a half-made target.
    try {
      await applyPartial(input, ropts, created);
    } catch (err) {
      if (created) {
        await withClient(admin, (c) => c.query(`DROP DATABASE IF EXISTS ${ident(dbName)} WITH (FORCE)`)).catch((e: unknown) =>
          ropts.log.warn({ database: dbName, err: (e as Error).message }, "could not drop the database created for the failed restore; drop it by hand"),
        );
      }
      throw err;
    }
  }

  async function applyPartial(input: Readable, ropts: RestoreOptions, created: boolean): Promise<void> {
    ropts.log.info(
      { tables: ropts.tables?.length },
      created
        ? `restoring ${ropts.tables?.length} table(s) into the new database ${dbName}`
        : `restoring ${ropts.tables?.length} table(s) into the existing database ${dbName}; its other tables stay as they are`,
    );
    if (ropts.format === "plain") return applyScript(input, ropts);
    const pgRestore = await pgTool("pg_restore", binDir);
    const args = ["--no-password", "--exit-on-error", "--single-transaction", "--clean", "--if-exists", "-d", dbName];
    const run = { env: toolEnv(dbName), signal: ropts.signal, timeoutMs: opts.timeout ? opts.timeout * 1000 : undefined, context: where, explain };
    // pg_restore may commit before it reads the archive's last byte, i.e. before the checksum is known: the archive
    // is kept in a private temp file (or directory) first, and pg_restore runs only once it ended cleanly.
    const scratch = await makeScratchDir();
    try {
      if (ropts.format === "custom") {
        const file = join(scratch, "dump");
        await pipeline(input, createWriteStream(file, { mode: 0o600 }), { signal: ropts.signal });
        await spawnTool(pgRestore, [...args, file], { ...run, stdio: ["ignore", "ignore", "pipe"] }).done;
        return;
      }
      const source = join(scratch, "dir");
      await mkdir(source, { recursive: true, mode: 0o700 });
      const tar = spawnTool(await resolveTool("tar"), ["-C", source, "-xf", "-"], { signal: ropts.signal, stdio: ["pipe", "ignore", "pipe"], errorCode: "CORRUPT_BACKUP" });
      await feedWhileReading(input, tar);
      await tar.done;
      await spawnTool(pgRestore, [...args, "--format=directory", source], { ...run, stdio: ["ignore", "ignore", "pipe"] }).done;
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /** What restore.ts borrows of this engine: connections, the tools' environment, settings. */
  const restoreContext: RestoreContext = {
    async open(database) {
      const c = await open(database);
      c.on("error", () => undefined);
      return c;
    },
    maintenanceDb,
    toolEnv,
    binDir,
    timeoutMs: opts.timeout ? opts.timeout * 1000 : undefined,
    jobs: opts.jobs,
    where,
    explain,
  };

  /**
   * Every restore first clears what killed restores left behind (staging databases, replaced databases, temp
   * copies; never a live restore's). A whole database is restored beside the target and swapped in atomically
   * (restore.ts, swap.ts).
   */
  async function restore(input: Readable, ropts: RestoreOptions): Promise<void> {
    const putBack = await sweepBeforeRestore(restoreContext, ropts.log);
    if (!dumpAll && putBack.includes(dbName)) {
      input.destroy();
      // It looked missing when it was inspected: replacing it now would replace data nobody confirmed.
      throw new DbkeepError("RESTORE_REFUSED", `database ${dbName} was missing after an earlier restore was killed in its swap; it has been put back with its previous content`, {
        hint: "check it, then run the restore again to replace it",
      });
    }
    if (ropts.format === "dumpall") return restoreAll(input, ropts);
    if (ropts.tables) return restorePartial(input, ropts);
    return restoreDatabase(input, ropts, dbName, restoreContext);
  }

  /** Roles and tablespaces: pg_dumpall --globals-only, stored as a second object beside the dump. */
  function dumpGlobals(dopts: DumpOptions): Dump {
    return startDump(async (out) => {
      const tool = await pgTool("pg_dumpall", binDir);
      const { child, done: exited } = spawnTool(tool, ["--globals-only", "--no-password", `--database=${dbName}`], {
        env: toolEnv(dbName), signal: dopts.signal, context: where, stdio: ["ignore", "pipe", "pipe"],
        explain: (stderr) => /permission denied|must be superuser/i.test(stderr)
          ? { hint: "dumping roles needs a superuser (pg_authid); set globals: false or dump as a superuser" }
          : explainPgError(stderr),
      });
      endAfter(child.stdout as Readable, exited, out);
      await exited;
      return {};
    });
  }

  /**
   * Applies globals to the target server. Roles that exist already are reported, not fatal: restoring into the
   * server the backup came from is the common case.
   */
  async function restoreExtra(name: string, content: Buffer, ropts: { signal: AbortSignal; log: RestoreOptions["log"] }): Promise<void> {
    if (name !== "globals") throw new DbkeepError("USAGE", `postgres cannot restore "${name}"`);
    const admin = await maintenanceDb();
    const psql = await pgTool("psql", binDir);
    const { child, done: exited } = spawnTool(psql, ["-X", "-q", "--no-password", "-d", admin], {
      env: toolEnv(admin), signal: ropts.signal, context: where, explain, stdio: ["pipe", "ignore", "pipe"],
    });
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(content);
    const { stderr } = await exited;
    const errors = stderr.split("\n").filter((l) => /ERROR:/.test(l));
    const existing = errors.filter((l) => /already exists/.test(l)).length;
    if (existing) ropts.log.info({ existing }, "roles or tablespaces that already exist were kept as they are");
    for (const l of errors.filter((x) => !/already exists/.test(x))) ropts.log.warn({ line: l.trim() }, "globals: statement failed");
  }

  /** verify: true's structural check of a dump read back from the store. */
  async function checkDump(input: Readable, o: { format: string; signal: AbortSignal }): Promise<string> {
    if (o.format === "plain" || o.format === "dumpall") {
      let tail = "";
      for await (const chunk of input) tail = (tail + (chunk as Buffer).toString("latin1")).slice(-4096);
      const line = o.format === "plain" ? "PostgreSQL database dump complete" : "PostgreSQL database cluster dump complete";
      if (!tail.includes(line)) {
        throw new DbkeepError("CORRUPT_BACKUP", `the ${o.format} dump does not end with its completion line: it is truncated`);
      }
      return `${o.format} dump is complete`;
    }
    const tool = o.format === "custom" ? await pgTool("pg_restore", binDir) : await resolveTool("tar");
    const args = o.format === "custom" ? ["--list"] : ["-t", "-f", "-"];
    const t = spawnTool(tool, args, { signal: o.signal, stdio: ["pipe", "pipe", "pipe"], errorCode: "CORRUPT_BACKUP", context: "verify" });
    let listing = "";
    t.child.stdout?.setEncoding("utf8");
    t.child.stdout?.on("data", (c: string) => (listing = (listing + c).slice(-1_000_000)));
    await feedWhileReading(input, t);
    await t.done;
    if (o.format === "custom") {
      const entries = listing.split("\n").filter((l) => /^\d+;/.test(l)).length;
      return `pg_restore --list reads ${entries} entries`;
    }
    if (!/(^|\n)(\.\/)?toc\.dat(\n|$)/.test(listing)) throw new DbkeepError("CORRUPT_BACKUP", "the directory dump's tar holds no toc.dat");
    return "directory dump holds toc.dat";
  }

  /** Tools, versions and privileges, each problem as a finding; stops early only when the server is unreachable. */
  async function doctor(): Promise<DoctorFinding[]> {
    const out: DoctorFinding[] = [];
    const versions: Record<string, string> = {};
    for (const t of dumpAll ? ["pg_dumpall", "psql"] : ["pg_dump", "pg_restore", "psql"]) {
      try {
        versions[t] = await toolVersion(t);
        out.push({ level: "ok", message: `${t} ${versions[t]} (${await pgTool(t, binDir)})` });
      } catch (err) {
        const e = err as DbkeepError;
        out.push({ level: "error", message: e.message, ...(e.hint ? { hint: e.hint } : {}) });
      }
    }
    try {
      out.push(...(await restoreLeftoverFindings(restoreContext)));
    } catch (err) {
      // An unreachable server is reported once, by the connection below.
      if (!(err instanceof DbkeepError && err.code === "CONNECTION_FAILED")) {
        out.push({ level: "warn", message: `could not look for leftovers of killed restores: ${(err as Error).message}` });
      }
    }
    let facts: { server: string; user: string; superuser: boolean; replication: boolean; readAll: boolean; unreadable: string[] };
    try {
      facts = await withClient(dbName, async (c) => {
        const server = await serverVersion(c);
        const r = await c.query<{ usr: string; sup: boolean; repl: boolean; readall: boolean }>(
          `SELECT current_user AS usr, r.rolsuper AS sup, r.rolreplication AS repl,
                  (current_setting('server_version_num')::int >= 140000 AND pg_has_role(current_user, 'pg_read_all_data', 'USAGE')) AS readall
             FROM pg_roles r WHERE r.rolname = current_user`,
        );
        const t = await c.query<{ name: string }>(
          `SELECT n.nspname || '.' || c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
              AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1`,
        );
        const row = r.rows[0];
        return { server, user: row?.usr ?? "", superuser: row?.sup ?? false, replication: row?.repl ?? false, readAll: row?.readall ?? false, unreadable: t.rows.map((x) => x.name) };
      });
    } catch (err) {
      const e = err as DbkeepError;
      out.push({ level: "error", message: `${e.message}${e.details ? `: ${e.details}` : ""}`, ...(e.hint ? { hint: e.hint } : {}) });
      return out;
    }
    out.push({ level: "ok", message: `server PostgreSQL ${facts.server}, connected as ${facts.user} to database ${dbName}` });
    const dumper = dumpAll ? "pg_dumpall" : "pg_dump";
    const dv = versions[dumper];
    if (dv && major(dv) < major(facts.server)) {
      out.push({
        level: "error",
        message: `${dumper} ${dv} cannot dump server ${facts.server}: ${dumper} refuses a server newer than itself`,
        hint: `install postgresql-client-${major(facts.server)} and set pg_version: ${major(facts.server)} (or bin_dir to its bin directory)`,
      });
    } else if (dv) {
      out.push({ level: "ok", message: `${dumper} ${dv} can dump server ${facts.server}` });
    }
    if (dumpAll && !facts.superuser) {
      out.push({ level: "error", message: `${facts.user} is not a superuser: pg_dumpall cannot read roles (pg_authid)`, hint: "run all_databases backups as a superuser" });
    }
    if (facts.unreadable.length) {
      const shown = facts.unreadable.slice(0, 5).join(", ");
      const more = facts.unreadable.length > 5 ? ` and ${facts.unreadable.length - 5} more` : "";
      out.push({
        level: "error",
        message: `${facts.user} cannot read ${facts.unreadable.length} table(s) of ${dbName}: ${shown}${more}`,
        hint: `GRANT SELECT ON ALL TABLES IN SCHEMA ... TO ${facts.user}, or GRANT pg_read_all_data TO ${facts.user} (PostgreSQL 14+)`,
      });
    } else {
      out.push({ level: "ok", message: `${facts.user} can read every table of ${dbName}` });
    }
    if (facts.superuser || facts.readAll) out.push({ level: "ok", message: `${facts.user} is ${facts.superuser ? "a superuser" : "a member of pg_read_all_data"}` });
    else out.push({ level: "warn", message: `${facts.user} is neither a superuser nor a member of pg_read_all_data`, hint: "tables created later may not be readable; GRANT pg_read_all_data covers them all" });
    if (facts.replication || facts.superuser) out.push({ level: "ok", message: `${facts.user} has REPLICATION` });
    else out.push({ level: "warn", message: `${facts.user} has no REPLICATION attribute`, hint: "only physical backups (pg_basebackup) need it: ALTER ROLE ... REPLICATION" });
    return out;
  }

  return {
    name: "postgres",
    tools: dumpAll ? ["pg_dumpall", "psql"] : ["pg_dump", "pg_restore", "psql"],
    format,
    extension: EXT[format] ?? ".sql",
    dumpsToPipe: format === "plain" || format === "custom" || format === "dumpall",
    database: layoutName,
    source: () => ({ engine: "postgres", database: layoutName, host: opts.host, port: opts.port, ...(opts.user ? { user: opts.user } : {}) }),
    doctor,
    async check() {
      const tools: Record<string, string> = {};
      for (const t of dumpAll ? ["pg_dumpall", "psql"] : ["pg_dump", "pg_restore", "psql"]) tools[t] = await toolVersion(t);
      const server = await withClient(dbName, async (c) => (await c.query<{ v: string }>("SELECT version() AS v")).rows[0]?.v);
      return { tools, ...(server ? { server } : {}) };
    },
    dump,
    inspectTarget,
    restore,
    // A dumpall script is applied to the server as a whole; the per-database formats go into one database.
    canRestore: (f) => (dumpAll ? f === "dumpall" : f in EXT && f !== "dumpall"),
    ...(opts.globals && !dumpAll ? { extras: () => [{ name: "globals", extension: ".sql", dump: dumpGlobals }] } : {}),
    restoreExtra,
    checkDump,
    ...(dumpAll ? {} : { differential: createPgDifferential({ database: dbName, connect, ...(selection ? { selection } : {}), applyScript }) }),
  };
}

/** Writes all of `buf` to a descriptor (a pipe: through the thread pool, so a full pipe does not stop the event loop). */
async function writeFd(fd: number, buf: Buffer): Promise<void> {
  for (let at = 0; at < buf.length; ) {
    at += await new Promise<number>((resolve, reject) => fsWrite(fd, buf, at, buf.length - at, null, (err, n) => (err ? reject(err) : resolve(n))));
  }
}

function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function major(version: string): number {
  return Number.parseInt(version, 10);
}

function checkVersions(toolVersion: string, serverVersion: string, tool = "pg_dump"): void {
  if (major(toolVersion) < major(serverVersion)) {
    throw new DbkeepError("ENGINE_FAILED", `${tool} ${toolVersion} is older than the server (${serverVersion}); ${tool} refuses to dump a newer server`, {
      hint: `install postgresql-client-${major(serverVersion)} and set pg_version: ${major(serverVersion)} (or bin_dir)`,
    });
  }
}

export default createPostgresEngine;
