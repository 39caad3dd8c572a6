import * as z from "zod";
import { COMPRESSIONS } from "../../core/compression.js";

export const sqliteDatasourceSchema = z.strictObject({
  engine: z.literal("sqlite"),
  path: z.string().min(1).describe("the SQLite file"),
  /** Name used in the key layout; defaults to the file name without its extension. */
  database: z.string().optional(),
  compression: z.enum(COMPRESSIONS).default("gzip"),
  compression_level: z.number().int().optional(),
});
export type SqliteDatasource = z.infer<typeof sqliteDatasourceSchema>;
