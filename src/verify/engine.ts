import type { Logger } from "../core/log.js";
import type { Manifest } from "../core/manifest.js";
import type { Secret } from "../core/redact.js";
import type { SchemaObjects, TableInfo } from "../engines/engine.js";
import type { CheckResult } from "./report.js";

/** What a restored copy holds, in the same naming as the manifest's `tables` and `objects`. */
export interface Catalog {
  tables: TableInfo[];
  objects: SchemaObjects;
}

export interface ScratchOptions {
  job: string | undefined;
  manifest: Manifest;
  /** Options of the datasource whose server holds the scratch target (verify_datasource, else the job's). */
  options: Record<string, unknown>;
  password: Secret | undefined;
  /** PostgreSQL: restore into a temporary cluster started from the local binaries instead. */
  cluster: boolean;
  log: Logger;
  signal: AbortSignal;
}

/** A restore target made for one verification, never the database the backup came from. */
export interface ScratchTarget {
  kind: "database" | "cluster" | "file" | "server";
  name: string;
  /** Where it is, for the report: "database dbkeep_verify_... on 127.0.0.1:5432". */
  where: string;
  /** Options of a datasource of the same engine pointing at the scratch target: the restore goes through it. */
  datasource: Record<string, unknown>;
  /**
   * Called after the restore for targets that are loaded rather than restored into (a Redis RDB is loaded by a
   * server started on it).
   */
  afterRestore?(): Promise<void>;
  catalog(): Promise<Catalog>;
  /** Engine-level integrity (amcheck, CHECK TABLE, PRAGMA integrity_check, key counts). */
  integrity(): Promise<CheckResult>;
  /** Rows whose foreign key points nowhere, sampled up to `limit` rows per foreign key. */
  orphans?(limit: number): Promise<CheckResult>;
  /** First column of the first row of a query, as text (null for SQL NULL, undefined for no row). */
  query?(sql: string): Promise<string | null | undefined>;
  /** Variables that point an application at the scratch target (for the health check's command). */
  env(): Record<string, string>;
  drop(): Promise<void>;
  /** --keep: marks the target so that later runs do not take it for the leftover of a killed run. */
  keep(): Promise<void>;
}

export interface EngineVerifier {
  /** Why this backup cannot be verified by a restore (e.g. it would recreate databases under their own names). */
  refuse?(m: Manifest, cluster: boolean): string | undefined;
  prepare(o: ScratchOptions): Promise<ScratchTarget>;
  /** Drops the scratch targets of earlier runs that were killed; returns their names. */
  cleanupLeftovers(o: Omit<ScratchOptions, "manifest">): Promise<string[]>;
}

const ALIASES: Record<string, string> = { postgresql: "postgres", mariadb: "mysql" };

/** Engine name = folder = key; each verify.ts is imported only when a backup of that engine is verified. */
const VERIFIERS: Record<string, () => Promise<EngineVerifier>> = {
  postgres: async () => (await import("../engines/postgres/verify.js")).postgresVerifier,
  mysql: async () => (await import("../engines/mysql/verify.js")).mysqlVerifier,
  sqlite: async () => (await import("../engines/sqlite/verify.js")).sqliteVerifier,
  redis: async () => (await import("../engines/redis/verify.js")).redisVerifier,
};

export function verifierEngines(): string[] {
  return Object.keys(VERIFIERS);
}

export async function verifierFor(engine: string): Promise<EngineVerifier | undefined> {
  const load = VERIFIERS[ALIASES[engine] ?? engine];
  return load ? load() : undefined;
}
