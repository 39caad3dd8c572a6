import * as z from "zod";
import { COMPRESSIONS } from "../../core/compression.js";

/** Datasource options of `engine: db2`: a database of a local Db2 instance, backed up with BACKUP DATABASE. */
export const db2DatasourceSchema = z.strictObject({
  engine: z.literal("db2"),
  /** DB2INSTANCE for the CLP; absent = the instance of the environment's db2profile. */
  instance: z.string().min(1).optional(),
  database: z.string().regex(/^[A-Za-z][A-Za-z0-9@#$_]{0,7}$/, "a Db2 database name: a letter, then up to 7 letters, digits, @, #, $ or _"),
  user: z.string().optional(),
  password: z.string().optional(),
  password_env: z.string().optional(),
  password_file: z.string().optional(),
  /** Where BACKUP DATABASE writes its image before it is streamed; absent = a private temp dir. */
  staging_dir: z.string().min(1).optional(),
  /** BACKUP ... ONLINE (needs archive logging on the database); offline otherwise. */
  online: z.boolean().default(false),
  compression: z.enum(COMPRESSIONS).default("gzip"),
  compression_level: z.number().int().optional(),
  bin_dir: z.string().optional(),
  timeout: z.number().positive().optional(),
});
export type Db2Datasource = z.infer<typeof db2DatasourceSchema>;
