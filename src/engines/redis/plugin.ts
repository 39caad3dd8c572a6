import type { EnginePlugin } from "../registry.js";
import { redisDatasourceSchema } from "./schema.js";

/** `engine: redis`: the client library is imported only when a Redis datasource is used. */
export const redisPlugin: EnginePlugin = {
  schema: redisDatasourceSchema,
  secrets: ["password"],
  async create(o, ctx) {
    const { createRedisEngine } = await import("./index.js");
    const { password: _literal, password_env: _env, password_file: _file, compression: _c, compression_level: _l, engine: _e, ...ds } = redisDatasourceSchema.parse(o);
    // Resolved on first use, so that listing backups does not need the server's password.
    return createRedisEngine({ ...ds, password: () => ctx.secret("password"), inheritAuthEnv: ctx.oneOff ?? false });
  },
};
