import type * as z from "zod";
import type { Secret } from "../core/redact.js";
import type { Engine } from "./engine.js";
import { db2DatasourceSchema } from "./db2/schema.js";
import { mongodbDatasourceSchema } from "./mongodb/schema.js";
import { mysqlDatasourceSchema } from "./mysql/schema.js";
import { postgresDatasourceSchema } from "./postgres/schema.js";
import { redisPlugin } from "./redis/plugin.js";
import { sqliteDatasourceSchema } from "./sqlite/schema.js";

export interface EngineContext {
  /** Resolves `<field>`, `<field>_env` or `<field>_file` of this datasource. */
  secret(field: string): Secret | undefined;
  /** One-off (URL) mode: tools may use their usual environment variables for credentials. */
  oneOff?: boolean;
}

export interface EnginePlugin {
  /** Options of a datasource with this engine; checked when the config is loaded. */
  schema: z.ZodType<Record<string, unknown>>;
  /** Fields holding secrets (each also accepted as `<field>_env` and `<field>_file`). */
  secrets: readonly string[];
  /** Imported lazily so that `dbkeep --version` does not load every client library. */
  create(options: Record<string, unknown>, ctx: EngineContext): Promise<Engine>;
}

const postgres: EnginePlugin = {
  schema: postgresDatasourceSchema,
  secrets: ["password"],
  async create(o, ctx) {
    const { createPostgresEngine } = await import("./postgres/index.js");
    const { password: _literal, password_env: _env, password_file: _file, ...ds } = postgresDatasourceSchema.parse(o);
    // Resolved on first use, so that listing backups does not need the database password.
    return createPostgresEngine({ ...ds, password: () => ctx.secret("password"), inheritAuthEnv: ctx.oneOff ?? false });
  },
};

const mysql: EnginePlugin = {
  schema: mysqlDatasourceSchema,
  secrets: ["password"],
  async create(o, ctx) {
    const { createMysqlEngine } = await import("./mysql/index.js");
    const { engine: _engine, password: _literal, password_env: _env, password_file: _file, ...ds } = mysqlDatasourceSchema.parse(o);
    return createMysqlEngine({ ...ds, password: () => ctx.secret("password"), oneOff: ctx.oneOff ?? false });
  },
};

const mongodb: EnginePlugin = {
  schema: mongodbDatasourceSchema,
  secrets: ["uri", "password"],
  async create(o, ctx) {
    const { createMongodbEngine } = await import("./mongodb/index.js");
    const { engine: _e, uri: _u, uri_env: _ue, uri_file: _uf, password: _p, password_env: _pe, password_file: _pf, compression: _c, compression_level: _l, ...ds } =
      mongodbDatasourceSchema.parse(o);
    return createMongodbEngine({ ...ds, uri: () => ctx.secret("uri"), password: () => ctx.secret("password") });
  },
};

const db2: EnginePlugin = {
  schema: db2DatasourceSchema,
  secrets: ["password"],
  async create(o, ctx) {
    const { createDb2Engine } = await import("./db2/index.js");
    const { engine: _e, password: _p, password_env: _pe, password_file: _pf, compression: _c, compression_level: _l, ...ds } = db2DatasourceSchema.parse(o);
    return createDb2Engine({ ...ds, password: () => ctx.secret("password") });
  },
};

/** Folder name = `engine:` value = registry key. Adding an engine is a folder and a line here. */
export const ENGINES: Record<string, EnginePlugin> = {
  postgres,
  postgresql: postgres,
  mysql,
  mariadb: mysql,
  redis: redisPlugin,
  mongodb,
  db2,
  sqlite: {
    schema: sqliteDatasourceSchema,
    secrets: [],
    async create(o) {
      const { createSqliteEngine } = await import("./sqlite/index.js");
      const ds = sqliteDatasourceSchema.parse(o);
      return createSqliteEngine({ path: ds.path, ...(ds.database ? { database: ds.database } : {}) });
    },
  },
};

/** Engines the mission names that this version cannot run yet: named in the error instead of "unknown". */
export const PLANNED_ENGINES: string[] = [];
