import type { Readable } from "node:stream";
import type { Logger } from "../core/log.js";

export interface TableInfo {
  name: string;
  /** Exact row count when the engine can take it cheaply and consistently (SQLite: counted on the snapshot). */
  rows?: number;
  /** Estimated row count (PostgreSQL statistics), when no exact count is taken. */
  rows_estimate?: number;
}

export interface DumpOptions {
  signal: AbortSignal;
  log: Logger;
}

export interface DumpResult {
  tool?: { name: string; version: string };
  serverVersion?: string;
  tables?: TableInfo[];
}

export interface Dump {
  /** The dump's bytes. It ends only when the dump succeeded; a failed dump makes it error. */
  stream: Readable;
  /** Resolves with what the engine learned during the dump; rejects with a DbkeepError. */
  done: Promise<DumpResult>;
}

export interface TargetState {
  exists: boolean;
  /** Tables, views and the like already in the target ("schema.name"), which a restore would replace. */
  objects: string[];
}

export interface RestoreOptions {
  signal: AbortSignal;
  log: Logger;
  /** Format of the backup (from its manifest, not from today's config). */
  format: string;
  /** Parallel restore jobs, for the engines that have them. */
  jobs?: number;
  /** The database the backup was taken of (from its manifest), for engines that rename on restore. */
  sourceDatabase?: string;
}

/** Where the dump came from, for the manifest: never a secret. */
export interface SourceInfo {
  engine: string;
  database: string;
  host?: string;
  port?: number;
  user?: string;
  path?: string;
}

/** One line of `dbkeep doctor`: an error means a backup or restore of this datasource would fail. */
export interface DoctorFinding {
  level: "ok" | "warn" | "error";
  message: string;
  hint?: string;
}

/**
 * A database engine, created from one datasource's options.
 *
 * restore() contract: `input` ends cleanly only when the backup was read completely and its checksum matched; if
 * it errors instead, the engine must leave the target exactly as it was. Engines meet this by restoring beside the
 * target (a staging database, a temporary file) and swapping it in only after a clean end.
 */
export interface Engine {
  readonly name: string;
  /** Client tools this engine runs, checked by `doctor`. */
  readonly tools: readonly string[];
  /** The dump format this datasource is configured for ("plain", "custom", "directory", "file"). */
  readonly format: string;
  /** File extension of a dump in that format, before compression (".sql", ".dump", ".tar", ".db"). */
  readonly extension: string;
  /** The name used in the key layout `<prefix>/<database>/<database>-<timestamp>.<ext>`. */
  readonly database: string;
  source(): SourceInfo;
  check(): Promise<{ tools: Record<string, string>; server?: string }>;
  dump(opts: DumpOptions): Dump;
  inspectTarget(): Promise<TargetState>;
  restore(input: Readable, opts: RestoreOptions): Promise<void>;
  /** Whether this engine can restore a backup made in `format`. */
  canRestore(format: string): boolean;
  /**
   * Structural check of a dump read back from the store (decompressed), used by `verify: true`: e.g. pg_restore
   * --list for custom dumps, the completion trailer of plain dumps, SQLite's header and integrity_check. Must
   * consume `input` to its end (the caller's checksum is computed on the way) and reject with CORRUPT_BACKUP.
   */
  checkDump?(input: Readable, o: { format: string; rawBytes: number; signal: AbortSignal }): Promise<string>;
  /** Objects a backup carries beside the main dump, e.g. PostgreSQL roles and tablespaces ("globals"). */
  extras?(): ExtraDump[];
  /**
   * Pre-flight checks for `dbkeep doctor`: tools, versions, privileges. Reports problems as findings instead of
   * throwing, so that one missing tool does not hide the other problems.
   */
  doctor?(): Promise<DoctorFinding[]>;
  /** Applies one extra (already read and checksum-verified) to the target server. */
  restoreExtra?(name: string, content: Buffer, opts: { signal: AbortSignal; log: Logger }): Promise<void>;
}

export interface ExtraDump {
  name: string;
  /** Extension before compression, e.g. ".sql". */
  extension: string;
  dump(opts: DumpOptions): Dump;
}
