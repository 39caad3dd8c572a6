import type { Readable } from "node:stream";
import type { Logger } from "../core/log.js";
import type { ManifestDifferential, ManifestSelection } from "../core/manifest.js";

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
  /**
   * Offered only to engines with `dumpsToPipe`: where the dump tool's stdout goes instead of a pipe to node, the
   * write end of a pipe that a compressor process reads (the dump's bytes then never pass through node). The engine
   * awaits it just before it starts the tool: with a pipe, it gives `fd` to the tool as stdout, calls `started()`
   * once the tool runs and leaves the Dump's `stream` unused (`done` still says whether the dump succeeded); with
   * undefined, it writes to `stream` as usual.
   */
  output?: Promise<DumpOutput | undefined>;
}

export interface DumpOutput {
  fd: number;
  /** The tool runs with `fd`: the caller may close its own copy (the compressor then sees the end when it exits). */
  started(): void;
}

/** Schema objects by kind ("indexes", "foreign_keys", "views", ...), each a sorted list of qualified names. */
export type SchemaObjects = Partial<Record<"indexes" | "foreign_keys" | "views" | "functions" | "triggers" | "sequences" | "types" | "events", string[]>>;

export interface DumpResult {
  tool?: { name: string; version: string };
  serverVersion?: string;
  tables?: TableInfo[];
  /** The schema objects the dump holds, taken in its snapshot where the engine allows: what verify expects back. */
  objects?: SchemaObjects;
  /** A partial backup: its patterns and the tables they resolved to. */
  selection?: ManifestSelection;
  /** A full backup of a differential job, or a differential. */
  differential?: ManifestDifferential;
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
  /**
   * A partial backup (from its manifest): only these tables are replaced, in the existing target; the target's
   * other tables stay as they are.
   */
  tables?: string[];
}

/** Settings of one differential dump (a job's `mode: differential`). */
export interface DifferentialDumpSettings {
  /** The full backup it builds on: changes at or after its safe point are dumped. */
  base: { id: string; manifest_key: string; sha256: string; safe_point: string; schema_digest: string };
  /** Basis column of every table (default updated_at); null: dump that table whole. */
  basisColumn: string;
  basisColumns: Record<string, string | null>;
  trackDeletes: boolean;
}

/**
 * Differential backups (PostgreSQL, MySQL/MariaDB): dbkeep's own dump of the rows changed since a full backup, as
 * upserts, applied on top of that full backup on restore. See docs/partial-and-differential.md.
 */
export interface DifferentialSupport {
  /**
   * Fingerprint of the selected tables, their columns and keys: a change makes the next run a full backup. Refuses
   * a basis column that is not a timestamp type, so that a wrong setting fails before anything is dumped.
   */
  schemaDigest(basis: Pick<DifferentialDumpSettings, "basisColumn" | "basisColumns">): Promise<string>;
  /**
   * Taken right before a full backup starts: the database's clock, moved back to the start of the oldest
   * transaction still open and by `marginSeconds`. Every row a later transaction writes has a basis value at or
   * after it.
   */
  safePoint(o: { marginSeconds: number; log: Logger }): Promise<string>;
  dump(opts: DumpOptions, d: DifferentialDumpSettings): Dump;
  /** Applies a differential (already checksum-verified as it streams) to the target in one transaction. */
  apply(input: Readable, opts: RestoreOptions): Promise<void>;
  /** The primary-key set of each table in the target, as the differential's key_digests records it. */
  keyDigests(tables: string[]): Promise<Record<string, string>>;
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
  /** Whether dump() honours DumpOptions.output (its dump is one tool's stdout). */
  readonly dumpsToPipe?: boolean;
  /** The name used in the key layout `<prefix>/<database>/<database>-<timestamp>.<ext>`. */
  readonly database: string;
  source(): SourceInfo;
  check(): Promise<{ tools: Record<string, string>; server?: string }>;
  dump(opts: DumpOptions): Dump;
  /**
   * With `tables` (a partial backup): only those of them that exist in the target. With `requires` (the objects a
   * partial backup needs and does not carry, from its manifest): rejects with RESTORE_REFUSED, naming them, when
   * the target lacks any, before anything is created or changed.
   */
  inspectTarget(o?: { tables?: string[]; requires?: string[] }): Promise<TargetState>;
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
  /** Differential backups; engines without it only make full backups. */
  differential?: DifferentialSupport;
}

export interface ExtraDump {
  name: string;
  /** Extension before compression, e.g. ".sql". */
  extension: string;
  dump(opts: DumpOptions): Dump;
}
