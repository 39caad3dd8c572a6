import * as z from "zod";
import { COMPRESSIONS } from "../../core/compression.js";

/** `databases: [a, b]` in YAML, `?databases=a,b` in a URL. */
const databaseList = z.preprocess(
  (v) => (typeof v === "string" ? v.split(",").map((s) => s.trim()).filter(Boolean) : v),
  z.array(z.string().min(1)).min(1),
);

/** Datasource options of `engine: mysql` / `engine: mariadb` (one engine, two names). */
export const mysqlDatasourceSchema = z
  .strictObject({
    engine: z.enum(["mysql", "mariadb"]),
    host: z.string().default("localhost"),
    port: z.coerce.number().int().min(1).max(65535).default(3306),
    socket: z.string().optional(),
    user: z.string().optional(),
    password: z.string().optional(),
    password_env: z.string().optional(),
    password_file: z.string().optional(),
    database: z.string().min(1).optional(),
    databases: databaseList.optional(),
    all_databases: z.boolean().default(false),
    single_transaction: z.boolean().default(true),
    routines: z.boolean().default(true),
    triggers: z.boolean().default(true),
    events: z.boolean().default(true),
    tool: z.enum(["mysqldump", "mydumper"]).optional(),
    /** What a job's or the CLI's `format` override sets: `plain` is mysqldump's SQL, `mydumper` its directory. */
    format: z.enum(["plain", "mydumper"]).optional(),
    threads: z.number().int().min(1).max(64).optional(),
    compression: z.enum(COMPRESSIONS).default("gzip"),
    compression_level: z.number().int().optional(),
    bin_dir: z.string().optional(),
    timeout: z.number().positive().optional(),
    /** MySQL's --ssl-mode; without it, ssl_ca means verify_ca and no ssl_ca preferred (see tls.ts). */
    ssl_mode: z.enum(["disabled", "preferred", "required", "verify_ca", "verify_identity"]).optional(),
    ssl_ca: z.string().min(1).optional(),
    /** Client certificate and key, for accounts with REQUIRE X509 / SUBJECT. */
    ssl_cert: z.string().min(1).optional(),
    ssl_key: z.string().min(1).optional(),
    /** exact: rows counted in a consistent snapshot started with the dump (exact when nothing writes meanwhile); estimate: statistics. */
    row_counts: z.enum(["exact", "estimate"]).default("exact"),
    /** A partial backup: only these tables of `database` (globs), see docs/partial-and-differential.md. */
    tables: databaseList.optional(),
    exclude_tables: databaseList.optional(),
  })
  .superRefine((o, ctx) => {
    const given = [o.database !== undefined && "database", o.databases !== undefined && "databases", o.all_databases && "all_databases"].filter(Boolean);
    if (given.length !== 1) {
      ctx.addIssue({
        code: "custom",
        path: ["database"],
        message: given.length ? `give only one of ${given.join(", ")}` : "give database, databases (a list) or all_databases: true",
      });
    }
    for (const k of ["tables", "exclude_tables"] as const) {
      if (o[k] && o.database === undefined) ctx.addIssue({ code: "custom", path: [k], message: `${k} selects tables of one database: give database: NAME` });
      if (o[k] && (o.tool === "mydumper" || o.format === "mydumper")) ctx.addIssue({ code: "custom", path: [k], message: `${k} works with mysqldump, not mydumper` });
    }
    if ((o.ssl_cert === undefined) !== (o.ssl_key === undefined)) {
      ctx.addIssue({ code: "custom", path: ["ssl_cert"], message: "give ssl_cert and ssl_key together" });
    }
    if (o.tool && o.format && (o.tool === "mydumper") !== (o.format === "mydumper")) {
      ctx.addIssue({ code: "custom", path: ["format"], message: `format ${o.format} does not go with tool ${o.tool}` });
    }
  });
export type MysqlDatasource = z.infer<typeof mysqlDatasourceSchema>;
