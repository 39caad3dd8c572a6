import { randomBytes } from "node:crypto";
import { constants as fsConstants, createReadStream, createWriteStream } from "node:fs";
import { access, mkdir, rename, rm, unlink } from "node:fs/promises";
import { makeTempDir } from "../../core/tempdir.js";
import { basename, dirname, extname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import Database from "better-sqlite3";
import { DbkeepError } from "../../core/errors.js";
import type { DoctorFinding, Dump, DumpOptions, Engine, RestoreOptions, SchemaObjects, TableInfo, TargetState } from "../engine.js";
import { sqliteCatalog } from "./verify.js";
import { fsyncPath } from "../../core/fsync.js";
import { startDump } from "../dump.js";

export interface SqliteEngineOptions {
  path: string;
  database?: string;
}

/**
 * SQLite, the embedded default. A dump is a consistent copy of the live database made with SQLite's online
 * backup API (measured against VACUUM INTO in bench/sqlite-snapshot.mjs), checked with PRAGMA integrity_check
 * and streamed from a private temp file that is removed once read. A restore writes beside the target, checks the
 * copy, fsyncs and renames it over the target, so the target is either the old database or the new one.
 */
export function createSqliteEngine(opts: SqliteEngineOptions): Engine {
  const path = resolve(opts.path);
  const database = opts.database ?? (basename(path, extname(path)) || "sqlite");

  function dump(dopts: DumpOptions): Dump {
    return startDump(async (out) => {
      try {
        await access(path);
      } catch {
        throw new DbkeepError("ENGINE_FAILED", `SQLite database ${path} not found`, { hint: "check the datasource's path" });
      }
      const dir = await makeTempDir("sqlite");
      try {
        const copy = join(dir, "snapshot.db");
        let src: Database.Database;
        try {
          src = new Database(path, { readonly: true, fileMustExist: true });
        } catch (err) {
          throw new DbkeepError("ENGINE_FAILED", `cannot open SQLite database ${path}: ${(err as Error).message}`, { cause: err });
        }
        try {
          await src.backup(copy);
        } catch (err) {
          throw new DbkeepError("ENGINE_FAILED", `SQLite backup of ${path} failed: ${(err as Error).message}`, { cause: err, retryable: true });
        } finally {
          src.close();
        }
        dopts.signal.throwIfAborted();
        const { tables, version, objects } = inspectCopy(copy);
        const stream = createReadStream(copy);
        stream.on("error", (e) => out.destroy(e));
        await pipeline(stream, out, { signal: dopts.signal });
        return { tool: { name: "sqlite", version }, serverVersion: version, tables, objects };
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  async function inspectTarget(): Promise<TargetState> {
    try {
      await access(path);
    } catch {
      return { exists: false, objects: [] };
    }
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare("SELECT name FROM sqlite_schema WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[];
      return { exists: true, objects: rows.map((r) => r.name) };
    } finally {
      db.close();
    }
  }

  async function restore(input: Readable, ropts: RestoreOptions): Promise<void> {
    const dir = dirname(path);
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.${basename(path)}.dbkeep-partial-${randomBytes(6).toString("hex")}`);
    try {
      await pipeline(input, createWriteStream(tmp, { flags: "wx", mode: 0o600 }), { signal: ropts.signal });
      await fsyncPath(tmp, "r+");
      inspectCopy(tmp); // integrity_check before it replaces anything
      // A stale WAL of the old database must not be replayed onto the new one.
      for (const side of ["-wal", "-shm", "-journal"]) await unlink(path + side).catch(() => undefined);
      await rename(tmp, path);
      await fsyncPath(dir);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /**
   * verify: true's structural check: the SQLite header always; PRAGMA integrity_check too when the database is
   * small enough to decompress into a temp file (256 MiB), since SQLite can only check a file.
   */
  async function checkDump(input: Readable, o: { rawBytes: number; signal: AbortSignal }): Promise<string> {
    const small = o.rawBytes > 0 && o.rawBytes <= 256 * 1024 * 1024;
    const dir = small ? await makeTempDir("sqlite-check") : undefined;
    try {
      let head = Buffer.alloc(0);
      const file = dir ? createWriteStream(join(dir, "check.db"), { mode: 0o600 }) : undefined;
      for await (const chunk of input) {
        if (head.length < 16) head = Buffer.concat([head, chunk as Buffer]).subarray(0, 16);
        if (file && !file.write(chunk as Buffer)) await new Promise<void>((r) => file.once("drain", () => r()));
      }
      if (file) await new Promise<void>((resolve, reject) => file.end((err?: Error | null) => (err ? reject(err) : resolve())));
      if (head.toString("latin1") !== "SQLite format 3\0") throw new DbkeepError("CORRUPT_BACKUP", "not a SQLite database: the header is wrong");
      if (!dir) return "SQLite header ok (too large for integrity_check here)";
      const { tables } = inspectCopy(join(dir, "check.db"));
      return `SQLite integrity_check ok, ${tables.length} tables`;
    } finally {
      if (dir) await rm(dir, { recursive: true, force: true });
    }
  }

  return {
    name: "sqlite",
    tools: [],
    format: "file",
    extension: ".db",
    database,
    source: () => ({ engine: "sqlite", database, path }),
    async doctor() {
      const out: DoctorFinding[] = [];
      const db = new Database(":memory:");
      try {
        out.push({ level: "ok", message: `SQLite library ${(db.prepare("SELECT sqlite_version() AS v").get() as { v: string }).v}` });
      } finally {
        db.close();
      }
      try {
        await access(path, fsConstants.R_OK);
        out.push({ level: "ok", message: `${path} exists and is readable` });
      } catch (err) {
        const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
        out.push({
          level: "error",
          message: missing ? `SQLite database ${path} not found` : `SQLite database ${path} is not readable: ${(err as Error).message}`,
          hint: missing ? "check the datasource's path" : "run dbkeep as a user that can read the file (and its -wal)",
        });
      }
      return out;
    },
    async check() {
      const db = new Database(":memory:");
      try {
        const v = (db.prepare("SELECT sqlite_version() AS v").get() as { v: string }).v;
        return { tools: { sqlite: v } };
      } finally {
        db.close();
      }
    },
    dump,
    inspectTarget,
    restore,
    canRestore: (f) => f === "file",
    checkDump,
  };
}

/** Opens a copy, runs integrity_check and counts rows per table. Throws CORRUPT_BACKUP when the copy is damaged. */
function inspectCopy(file: string): { tables: TableInfo[]; version: string; objects: SchemaObjects } {
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new DbkeepError("CORRUPT_BACKUP", `not a SQLite database: ${(err as Error).message}`, { cause: err });
  }
  try {
    const check = db.prepare("PRAGMA integrity_check").all() as { integrity_check: string }[];
    if (check.length !== 1 || check[0]?.integrity_check !== "ok") {
      throw new DbkeepError("CORRUPT_BACKUP", "SQLite integrity_check failed", {
        details: check.slice(0, 5).map((r) => r.integrity_check).join("\n"),
      });
    }
    const names = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[];
    const tables = names.map(({ name }) => ({
      name,
      rows: Number((db.prepare(`SELECT count(*) AS n FROM "${name.replace(/"/g, '""')}"`).get() as { n: number }).n),
    }));
    const version = (db.prepare("SELECT sqlite_version() AS v").get() as { v: string }).v;
    return { tables, version, objects: sqliteCatalog(db).objects };
  } catch (err) {
    if (err instanceof DbkeepError) throw err;
    throw new DbkeepError("CORRUPT_BACKUP", `SQLite check failed: ${(err as Error).message}`, { cause: err });
  } finally {
    db.close();
  }
}

export default createSqliteEngine;
