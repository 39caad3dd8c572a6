import * as z from "zod";
import { COMPRESSIONS } from "../../core/compression.js";

/** Datasource options of `engine: mongodb`: a connection string (a secret: it can hold a password), or its parts. */
export const mongodbDatasourceSchema = z
  .strictObject({
    engine: z.literal("mongodb"),
    uri: z.string().min(1).optional(),
    uri_env: z.string().optional(),
    uri_file: z.string().optional(),
    host: z.string().min(1).optional(),
    port: z.coerce.number().int().min(1).max(65535).optional(),
    user: z.string().optional(),
    password: z.string().optional(),
    password_env: z.string().optional(),
    password_file: z.string().optional(),
    /** --authenticationDatabase: where the user is defined (often admin). */
    auth_db: z.string().min(1).optional(),
    /** One database; absent = every database of the deployment. */
    database: z.string().min(1).optional(),
    /** mongodump --oplog: a point-in-time dump of a replica set (whole deployment only). */
    oplog: z.boolean().default(false),
    /**
     * mongodump --numParallelCollections. 1 writes the collections one after another instead of interleaving their
     * blocks as they arrive: unchanged data gives the same archive bytes, which a deduplicating store (restic) then
     * stores once (seed 003's deterministic archive).
     */
    parallel_collections: z.number().int().min(1).max(64).optional(),
    compression: z.enum(COMPRESSIONS).default("gzip"),
    compression_level: z.number().int().optional(),
    bin_dir: z.string().optional(),
    timeout: z.number().positive().optional(),
  })
  .superRefine((o, ctx) => {
    const uri = o.uri !== undefined || o.uri_env !== undefined || o.uri_file !== undefined;
    if (uri && (o.host !== undefined || o.port !== undefined)) {
      ctx.addIssue({ code: "custom", path: ["uri"], message: "give either uri (uri_env, uri_file) or host/port, not both" });
    }
    if (o.oplog && o.database !== undefined) {
      // mongodump refuses --oplog with --db: the oplog covers the whole deployment.
      ctx.addIssue({ code: "custom", path: ["oplog"], message: "oplog: true needs a dump of every database; remove database" });
    }
  });
export type MongodbDatasource = z.infer<typeof mongodbDatasourceSchema>;
