import * as z from "zod";
import { COMPRESSIONS } from "../../core/compression.js";

/** Datasource options of `engine: redis`. */
export const redisDatasourceSchema = z.strictObject({
  engine: z.literal("redis"),
  /** Name used in the key layout; defaults to `redis-<host>-<port>` (plus `-db<n>` in logical mode with `db`). */
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' and '-' only").optional(),
  host: z.string().min(1).default("127.0.0.1"),
  port: z.coerce.number().int().min(1).max(65535).default(6379),
  /** A Unix socket instead of host and port. */
  socket: z.string().min(1).optional(),
  /** ACL user (Redis 6 and later); without it the password authenticates the default user. */
  username: z.string().min(1).optional(),
  password: z.string().optional(),
  password_env: z.string().optional(),
  password_file: z.string().optional(),
  /** Logical mode: the one database to back up; absent = every database that holds keys. */
  db: z.coerce.number().int().min(0).max(100000).optional(),
  /** rdb: the server's snapshot through `redis-cli --rdb`; logical: DUMP of every key, restorable online. */
  mode: z.enum(["rdb", "logical"]).default("rdb"),
  tls: z.boolean().default(false),
  tls_ca: z.string().min(1).optional(),
  tls_cert: z.string().min(1).optional(),
  tls_key: z.string().min(1).optional(),
  /** Skip the certificate check (self-signed test servers only). */
  tls_insecure: z.boolean().default(false),
  /** Where redis-cli is, when it is not on PATH. */
  bin_dir: z.string().optional(),
  /** Target side: the file the target server loads at start (its `dir`/`dbfilename`); needed to restore an rdb backup. */
  rdb_path: z.string().min(1).optional(),
  compression: z.enum(COMPRESSIONS).default("gzip"),
  compression_level: z.number().int().optional(),
  /** Seconds after which a dump or restore is stopped. */
  timeout: z.number().positive().optional(),
}).refine((o) => (o.tls_cert === undefined) === (o.tls_key === undefined), { message: "give tls_cert and tls_key together", path: ["tls_cert"] });
export type RedisDatasource = z.infer<typeof redisDatasourceSchema>;
