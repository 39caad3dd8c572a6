import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfigFile, parseConfig, resolveSecret } from "../../src/config/load.js";
import { DbkeepError } from "../../src/core/errors.js";
import { planJob } from "../../src/core/jobs.js";
import { ROOT, tempDir } from "../helpers/env.js";

function problemsOf(yaml: string): string[] {
  try {
    parseConfig(yaml, "test.yaml");
  } catch (err) {
    expect(err).toBeInstanceOf(DbkeepError);
    expect((err as DbkeepError).exitCode).toBe(2);
    return ((err as DbkeepError).details ?? "").split("\n").map((l) => l.trim());
  }
  throw new Error("expected the config to be invalid");
}

describe("config", () => {
  it("reads seed 000's documented config unchanged", () => {
    const cfg = parseConfig(readFileSync(join(ROOT, "test/fixtures/seed000.yaml"), "utf8"));
    expect(Object.keys(cfg.datasources)).toEqual(["appdb", "warehousedb"]);
    expect(cfg.datasources.appdb?.options).toMatchObject({ engine: "postgres", pg_version: 17, timeout: 3600, format: "plain", compression: "gzip" });
    expect(cfg.datasources.warehousedb?.options).toMatchObject({ format: "custom", compression: "zstd", compression_level: 5 });
    expect(cfg.stores.r2?.type).toBe("s3");
    expect(cfg.notifications.email_ops?.options.to).toEqual(["ops@example.com", "dev-team@example.com"]);
    const plan = planJob(cfg, "appdb-backup");
    expect(plan).toMatchObject({ prefix: "prod", verify: true, compression: "gzip", retry: { maxAttempts: 3, delaySeconds: 30, multiplier: 2 } });
    expect(plan.retention).toEqual({ keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_monthly: 6, keep_yearly: 1 });
    expect(cfg.warnings.join("\n")).not.toContain("not available");
  });

  it("reports every problem at once with its dotted path", () => {
    const problems = problemsOf(`
datasources:
  appdb: { engine: postgres, database: app, port: 99999, colour: blue }
  other: { engine: oracle }
stores:
  local: { type: local, path: ./b }
  r2: { type: local, path: ./r2 }
jobs:
  appdb-backup: { datasource: appdb, store: r3 }
  second: { datasource: nope, store: local, retention: { keep_daily: -1, keep_dayly: 3 } }
`);
    expect(problems).toContain('jobs.appdb-backup.store: unknown store "r3" (defined: local, r2)');
    expect(problems).toContain('jobs.second.datasource: unknown datasource "nope" (defined: appdb, other)');
    expect(problems).toContain('datasources.appdb: unknown key "colour"');
    expect(problems.some((p) => p.startsWith("datasources.appdb.port:"))).toBe(true);
    expect(problems.some((p) => p.startsWith('datasources.other.engine: unknown engine "oracle"'))).toBe(true);
    expect(problems.some((p) => p.startsWith("jobs.second.retention.keep_daily:"))).toBe(true);
    expect(problems).toContain('jobs.second.retention: unknown key "keep_dayly" (did you mean "keep_daily"?)');
  });

  it("accepts the mongodb and db2 engines", () => {
    const c = parseConfig("datasources:\n  m: { engine: mongodb, uri_env: MONGO_URI }\n  d: { engine: db2, database: SAMPLE }\n");
    expect(Object.keys(c.datasources)).toEqual(["m", "d"]);
  });

  it("reports YAML syntax errors as config errors", () => {
    expect(problemsOf("jobs: [unclosed\n")[0]).toMatch(/^YAML: /);
  });

  it("rejects a compression level out of range when the config is read, as the job would", () => {
    expect(problemsOf("datasources:\n  d: { engine: sqlite, path: a.db, compression: gzip, compression_level: 15 }\nstores:\n  s: { type: local, path: b }\njobs:\n  j: { datasource: d, store: s }\n")).toEqual([
      "datasources.d.compression_level: gzip level must be between 1 and 9, got 15",
    ]);
    // The job's own compression changes the range its datasource's level must fit.
    const ok = "datasources:\n  d: { engine: sqlite, path: a.db, compression: zstd, compression_level: 15 }\nstores:\n  s: { type: local, path: b }\njobs:\n";
    expect(Object.keys(parseConfig(ok + "  j: { datasource: d, store: s }\n").jobs)).toEqual(["j"]);
    expect(problemsOf(ok + "  j: { datasource: d, store: s, compression: lz4 }\n")).toEqual(["jobs.j.compression: lz4 level must be between 1 and 12, got 15 (the compression_level of datasources.d)"]);
    expect(problemsOf(ok + "  j: { datasource: d, store: s, compression_level: 0 }\n")).toEqual(["jobs.j.compression_level: zstd level must be between 1 and 19, got 0"]);
  });

  it("says what is missing and what is unknown in words, with a did-you-mean for near misses", () => {
    const problems = problemsOf(`
datasorces:
  x: { engine: sqlite, path: a.db }
datasources:
  app: { engine: sqlite }
  pg: { engine: postgres, databse: app, password: 12345 }
  red: { engine: redis, host: localhost, tls: yes }
stores:
  s: { type: s3 }
  t: { path: ./b }
jobs:
  j: { datasource: app, store: s, schedule: 5, retention: { keep_last: 1.5 }, encryption: { recipients: [], bogus: 1 } }
`);
    expect(problems).toContain('unknown top-level key "datasorces" (did you mean "datasources"?)');
    expect(problems).toContain('datasources.app: missing key "path" (the SQLite file)');
    expect(problems).toContain('datasources.pg: unknown key "databse" (did you mean "database"?)');
    // A secret's value is never shown, not even when it has the wrong type.
    expect(problems).toContain("datasources.pg.password: expected text, got a number");
    expect(problems.join("\n")).not.toContain("12345");
    expect(problems).toContain('datasources.red.tls: expected true or false, got "yes"');
    expect(problems).toContain('stores.s: missing key "bucket"');
    expect(problems).toContain('stores.t: missing key "type" (one of: local, s3, ssh, gcs, azure, restic, rclone)');
    expect(problems).toContain("jobs.j.schedule: expected text, got 5");
    expect(problems).toContain("jobs.j.retention.keep_last: expected a whole number, got 1.5");
    expect(problems).toContain('jobs.j.encryption: unknown key "bogus"');
    expect(problems).toContain("jobs.j.encryption.recipients: must list at least 1 item");
    expect(problems.join("\n")).not.toMatch(/Invalid input|received|expected string/);
  });

  it("an empty document, a list, or a config that defines nothing is not valid", () => {
    for (const text of ["", "\n# only a comment\n", "null\n"]) {
      expect(() => parseConfig(text, "t.yaml"), JSON.stringify(text)).toThrow("config t.yaml is empty");
    }
    expect(problemsOf("- datasources\n- jobs\n")).toEqual(["expected a mapping with datasources, stores and jobs at the top, got a list"]);
    expect(problemsOf("datasources:\nstores:\njobs:\n")).toEqual(["defines no datasources, stores or jobs"]);
    // A section of the wrong shape is named once, without a cascade of "unknown datasource" after it.
    expect(problemsOf("datasources: [a]\nstores:\n  s: { type: local, path: b }\njobs:\n  j: { datasource: a, store: s }\n")).toEqual(["datasources: expected a mapping (key: value lines), got a list"]);
  });

  it("refuses database names the server would cut short", () => {
    const name = "a".repeat(64);
    expect(problemsOf(`datasources:\n  p: { engine: postgres, database: ${name} }\n`)).toEqual([`datasources.p.database: database name "${"a".repeat(20)}..." is 64 bytes long; PostgreSQL keeps only the first 63 and would take it for another database`]);
    // Bytes, not characters: 32 two-byte letters are 64 bytes.
    expect(problemsOf(`datasources:\n  p: { engine: postgres, database: ${"é".repeat(32)} }\n`)[0]).toContain("is 64 bytes long");
    expect(Object.keys(parseConfig(`datasources:\n  p: { engine: postgres, database: ${"a".repeat(63)} }\n  m: { engine: mysql, database: ${name} }\n`).datasources)).toEqual(["p", "m"]);
    expect(problemsOf(`datasources:\n  m: { engine: mariadb, database: ${"b".repeat(65)} }\n`)[0]).toContain("is 65 characters long; MySQL and MariaDB allow at most 64");
  });

  it("resolves *_env and *_file secrets, and says which variable is missing", () => {
    const dir = tempDir();
    const file = join(dir, "pw");
    writeFileSync(file, "s3cret-from-file\n", { mode: 0o600 });
    const section = (options: Record<string, unknown>) => ({ options, secretFields: ["password"] as const });
    process.env.DBKEEP_TEST_PW = "s3cret-from-env";
    expect(resolveSecret(section({ password_env: "DBKEEP_TEST_PW" }), "password", "datasources.a")?.reveal()).toBe("s3cret-from-env");
    expect(resolveSecret(section({ password_file: file }), "password", "datasources.a")?.reveal()).toBe("s3cret-from-file");
    expect(String(resolveSecret(section({ password_file: file }), "password", "datasources.a"))).toBe("***");
    expect(() => resolveSecret(section({ password_env: "DBKEEP_TEST_UNSET" }), "password", "datasources.a")).toThrow("datasources.a.password_env: environment variable DBKEEP_TEST_UNSET is not set");
    const warnings: string[] = [];
    chmodSync(file, 0o644);
    resolveSecret(section({ password_file: file }), "password", "datasources.a", (w) => warnings.push(w));
    expect(warnings[0]).toContain("is readable by others");
  });

  it("warns when a config readable by others holds a literal secret", () => {
    const dir = tempDir();
    const file = join(dir, "dbkeep.yaml");
    writeFileSync(file, "datasources:\n  d: { engine: postgres, database: app, password: hunter22 }\n", { mode: 0o644 });
    chmodSync(file, 0o644);
    expect(loadConfigFile(file).warnings[0]).toMatch(/readable by others \(mode 644\) and holds a literal secret at datasources\.d\.password/);
    chmodSync(file, 0o600);
    expect(loadConfigFile(file).warnings).toEqual([]);
  });
});
