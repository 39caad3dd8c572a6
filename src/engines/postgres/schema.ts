import * as z from "zod";
import { COMPRESSIONS } from "../../core/compression.js";

/** Glob patterns of a partial backup: a YAML list, or `a,b` in a URL. */
export const patternList = z.preprocess(
  (v) => (typeof v === "string" ? v.split(",").map((s) => s.trim()).filter(Boolean) : v),
  z.array(z.string().min(1)).min(1),
);

/** Datasource options of `engine: postgres`: seed 000's keys, plus bin_dir, jobs, globals and libpq's TLS settings. */
export const postgresDatasourceSchema = z.strictObject({
  engine: z.enum(["postgres", "postgresql"]),
  host: z.string().default("localhost"),
  port: z.coerce.number().int().min(1).max(65535).default(5432),
  user: z.string().optional(),
  password: z.string().optional(),
  password_env: z.string().optional(),
  password_file: z.string().optional(),
  /** With all_databases: only the database pg_dumpall connects to first (default postgres). */
  database: z.string().min(1).optional(),
  /** libpq's sslmode (default prefer), for dbkeep's own connections and the tools' alike: see tls.ts. */
  sslmode: z.enum(["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]).optional(),
  /** PEM file of the CA(s) that the server's certificate must chain to (libpq's default: ~/.postgresql/root.crt). */
  sslrootcert: z.string().min(1).optional(),
  /** Client certificate and its key (libpq's defaults: ~/.postgresql/postgresql.crt and .key). */
  sslcert: z.string().min(1).optional(),
  sslkey: z.string().min(1).optional(),
  pg_version: z.coerce.number().int().min(9).max(99).optional(),
  bin_dir: z.string().optional(),
  timeout: z.number().positive().optional(),
  format: z.enum(["plain", "custom", "directory"]).default("plain"),
  compression: z.enum(COMPRESSIONS).default("gzip"),
  compression_level: z.number().int().optional(),
  /** custom and directory formats: pg_dump's own compression level (-Z 0-9; default 0, dbkeep compresses), e.g. with compression: none. */
  dump_compression: z.number().int().min(0).max(9).optional(),
  jobs: z.number().int().min(1).max(64).optional(),
  maintenance_db: z.string().optional(),
  /** Also back up roles and tablespaces (pg_dumpall --globals-only), stored beside the dump. */
  globals: z.boolean().default(false),
  /** Every database of the server, with roles and tablespaces, in one pg_dumpall plain SQL dump. */
  all_databases: z.boolean().default(false),
  /** With all_databases: databases left out (pg_dumpall --exclude-database patterns), e.g. large scratch databases. */
  exclude_databases: z.array(z.string().min(1)).optional(),
  /** exact: rows counted in the dump's own snapshot while it runs (what verify compares); estimate: statistics only. */
  row_counts: z.enum(["exact", "estimate"]).default("exact"),
  /** A partial backup: only these tables (globs, `schema.table` or `table`), see docs/partial-and-differential.md. */
  tables: patternList.optional(),
  exclude_tables: patternList.optional(),
  schemas: patternList.optional(),
  exclude_schemas: patternList.optional(),
}).superRefine((ds, ctx) => {
  if (ds.dump_compression !== undefined && ds.format === "plain") ctx.addIssue({ code: "custom", path: ["dump_compression"], message: "dump_compression applies to format: custom or directory" });
  if (!ds.database && !ds.all_databases) ctx.addIssue({ code: "custom", path: ["database"], message: "database is required (or set all_databases: true)" });
  for (const k of ["tables", "exclude_tables", "schemas", "exclude_schemas"] as const) {
    if (ds.all_databases && ds[k]) ctx.addIssue({ code: "custom", path: [k], message: `${k} selects tables of one database and does not go with all_databases` });
  }
});
export type PostgresDatasource = z.infer<typeof postgresDatasourceSchema>;
