import { describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/config/env.js";
import { validateConfig } from "../../src/config/load.js";
import { SEED003_VARIABLES } from "../../src/config/seeds/seed003.js";
import { dumpArgs } from "../../src/engines/mongodb/index.js";

/** The mongo-backup service of seed 003's docker-compose.yml. */
const MONGO_ENV = {
  DB_TYPE: "mongo",
  MONGO_HOST: "mongo",
  RESTIC_REPOSITORY: "s3:s3.amazonaws.com/your-bucket/path",
  AWS_ACCESS_KEY_ID: "your-access-key",
  AWS_SECRET_ACCESS_KEY: "your-secret-key",
  AWS_DEFAULT_REGION: "eu-west-1",
  RESTIC_PASSWORD: "supersecret-password",
  RESTIC_TAGS: "app,env=dev",
  CRON_SCHEDULE: "30 2 * * *",
  TZ: "Europe/Amsterdam",
};

describe("seed 003's environment", () => {
  it("MongoDB: one collection after another in the archive (deterministic for restic), zstd level 3, seed 003's host", () => {
    const { raw, once } = configFromEnv(MONGO_ENV);
    const config = validateConfig(raw, "environment");
    const ds = config.datasources.source!.options;
    expect(ds).toMatchObject({ engine: "mongodb", host: "mongo", port: 27017, parallel_collections: 1, compression: "zstd", compression_level: 3 });
    expect(dumpArgs(["--config=/x/tool.yaml", "--host=mongo", "--port=27017"], { oplog: false, parallel_collections: 1 })).toEqual([
      "--config=/x/tool.yaml",
      "--host=mongo",
      "--port=27017",
      "--numParallelCollections=1",
      "--archive",
    ]);
    // Without the option, mongodump's own default (several collections at once) stays.
    expect(dumpArgs([], { oplog: false })).toEqual(["--archive"]);
    expect(once).toBe(false);
    const store = config.stores.store!.options;
    expect(store).toMatchObject({ type: "restic", repository: MONGO_ENV.RESTIC_REPOSITORY, password_env: "RESTIC_PASSWORD", init: true, prune: true });
    expect(store.tags).toEqual(["app", "env=dev", "type=mongo", "host=mongo"]);
    // The backend's credentials reach restic by name, never copied into the config.
    expect(store.env).toMatchObject({ AWS_ACCESS_KEY_ID: { env: "AWS_ACCESS_KEY_ID" }, AWS_SECRET_ACCESS_KEY: { env: "AWS_SECRET_ACCESS_KEY" } });
    expect(JSON.stringify(raw)).not.toContain("your-secret-key");
    expect(JSON.stringify(raw)).not.toContain("supersecret-password");
    const job = config.jobs.backup!;
    expect(job).toMatchObject({ schedule: "30 2 * * *", prune_after_backup: true, retention: { keep_daily: 7, keep_weekly: 4, keep_monthly: 12, keep_yearly: 3 } });
    expect(config.timezone).toBe("Europe/Amsterdam");
  });

  it("MONGODB_URI is the connection string when MONGO_URI is not set", () => {
    const { raw } = configFromEnv({ ...MONGO_ENV, MONGO_HOST: undefined, MONGODB_URI: "mongodb://u:p@db:27017/?authSource=admin" });
    const ds = validateConfig(raw, "environment").datasources.source!.options;
    expect(ds).toMatchObject({ uri_env: "MONGODB_URI", parallel_collections: 1 });
    expect(JSON.stringify(raw)).not.toContain("u:p@");
  });

  it("no schedule: one run and exit, as seed 003's BACKUP_INTERVAL_SECONDS default 0; SQL dumps uncompressed for restic; PRUNE_ON_SUCCESS=false", () => {
    const env = { DB_TYPE: "pg", RESTIC_REPOSITORY: "/r", RESTIC_PASSWORD_FILE: "/run/secrets/restic", PRUNE_ON_SUCCESS: "false", KEEP_DAILIES: "3" };
    const { raw, once } = configFromEnv(env);
    const config = validateConfig(raw, "environment");
    expect(once).toBe(true);
    expect(config.datasources.source!.options).toMatchObject({ engine: "postgres", host: "postgres", user: "postgres", database: "postgres" });
    expect(config.stores.store!.options).toMatchObject({ password_file: "/run/secrets/restic", prune: false, tags: ["db", "encrypted", "type=postgres", "host=postgres"] });
    expect(config.jobs.backup).toMatchObject({ compression: "none", retention: { keep_daily: 3, keep_weekly: 4 } });
    expect(configFromEnv({ ...env, BACKUP_INTERVAL_SECONDS: "3600" }).once).toBe(false);
  });

  it("a repository without a password is refused with the variables to set", () => {
    expect(() => configFromEnv({ DB_TYPE: "mysql", RESTIC_REPOSITORY: "/r" })).toThrow(/neither RESTIC_PASSWORD nor RESTIC_PASSWORD_FILE/);
  });

  it("variables dbkeep does not use are warned about by name, with what to do instead", () => {
    const { warnings } = configFromEnv({ DB_TYPE: "mysql", RESTIC_REPOSITORY: "/r", RESTIC_PASSWORD: "x", BACKUP_DIR: "/backup", BACKUP_WORK_DIR: "/backup/work", WEBHOOK_AUTH_HEADER: "Authorization: x", MONGO_URI: "mongodb://h" });
    expect(warnings).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^BACKUP_DIR is set but not used: .*DBKEEP_STATE_DIR/),
        expect.stringMatching(/^BACKUP_WORK_DIR is set but not used/),
        expect.stringMatching(/^WEBHOOK_AUTH_HEADER is set but ignored: no WEBHOOK_URL/),
        expect.stringMatching(/MONGO_\* variables are ignored: DB_TYPE is mysql/),
      ]),
    );
    expect(configFromEnv({ DB_TYPE: "mysql", RESTIC_REPOSITORY: "/r", RESTIC_PASSWORD: "x", DBKEEP_STORE: "/b" }).warnings).toEqual([expect.stringMatching(/^RESTIC_REPOSITORY is set but ignored: DBKEEP_STORE/)]);
    // Every variable of seed 003's README is in the table.
    const readme = ["DB_TYPE", "RESTIC_REPOSITORY", "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_TAGS", "BACKUP_INTERVAL_SECONDS", "KEEP_DAILIES", "KEEP_WEEKLIES", "KEEP_MONTHLIES", "KEEP_YEARLIES", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "WEBHOOK_URL", "WEBHOOK_METHOD", "WEBHOOK_AUTH_HEADER", "WEBHOOK_EXTRA_HEADERS", "WEBHOOK_TIMEOUT_SECONDS", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PG_DUMP_ALL", "MYSQL_HOST", "MYSQL_PORT", "MYSQL_USER", "MYSQL_PASSWORD", "MYSQL_DATABASE", "MONGO_URI", "MONGODB_URI", "MONGO_HOST", "MONGO_PORT", "MONGO_USER", "MONGO_PASSWORD", "MONGO_AUTH_DB", "CRON_SCHEDULE", "TZ"];
    expect(SEED003_VARIABLES.map((v) => v.name)).toEqual(expect.arrayContaining(readme));
  });
});
