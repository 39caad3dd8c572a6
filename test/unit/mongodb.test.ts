import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { sourceFromUrl } from "../../src/config/urls.js";
import { explainMongoError } from "../../src/engines/mongodb/index.js";
import { dbkeep, tempDir, storedBackup } from "../helpers/env.js";

const PASSWORD = "s3cr3t-Mongo#pw";
/** Stands in for an archive: bytes 0x00-0xff, so any mangling on the way shows. */
const BLOB = Buffer.concat([Buffer.from("mongodump-archive\n"), Buffer.from(Array.from({ length: 4096 }, (_v, i) => i % 256))]);

/**
 * Fake mongodump / mongorestore: record argv, the --config file (content and mode) and the environment in log/,
 * then behave like the real tools: mongodump writes the archive to stdout, mongorestore reads --archive=FILE.
 * The child gets a minimal environment, so the scripts are steered by files beside them, not by variables.
 */
function fakeTools(dir: string): { bin: string; log: string } {
  const bin = join(dir, "bin");
  const log = join(dir, "log");
  for (const d of [bin, log]) {
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
  }
  const common = `
name=$(basename "$0")
if [ "$1" = "--version" ]; then echo "$name version: 100.10.0"; echo "git version: fake"; exit 0; fi
printf '%s\\n' "$@" > "${log}/$name.argv"
env > "${log}/$name.env"
for a in "$@"; do case "$a" in --config=*) cfg="\${a#--config=}"; cp "$cfg" "${log}/$name.config"; stat -c %a "$cfg" > "${log}/$name.config-mode";; esac; done
if [ -f "${bin}/fail-auth" ]; then
  echo "2026-01-01T00:00:00.000+0000	Failed: can't create session: could not connect to server: connection() error occurred during connection handshake: auth error: sasl conversation error: unable to authenticate using mechanism \\"SCRAM-SHA-256\\": (AuthenticationFailed) Authentication failed." >&2
  exit 1
fi
`;
  writeFileSync(join(bin, "mongodump"), `#!/bin/sh\n${common}\ncat "${bin}/blob"\necho "2026-01-01T00:00:00.000+0000	done dumping app.items (3 documents)" >&2\n`);
  writeFileSync(
    join(bin, "mongorestore"),
    `#!/bin/sh\n${common}\nfor a in "$@"; do case "$a" in --archive=*) cp "\${a#--archive=}" "${log}/restored";; esac; done\necho "2026-01-01T00:00:00.000+0000	3 document(s) restored successfully. 0 document(s) failed to restore." >&2\n`,
  );
  writeFileSync(join(bin, "blob"), BLOB);
  chmodSync(join(bin, "mongodump"), 0o755);
  chmodSync(join(bin, "mongorestore"), 0o755);
  return { bin, log };
}

function config(dir: string, bin: string, source: string): string {
  const file = join(dir, "dbkeep.yaml");
  writeFileSync(
    file,
    `datasources:
  src:
    engine: mongodb
    ${source}
    bin_dir: ${bin}
    compression: zstd
  dst:
    engine: mongodb
    host: db.internal
    port: 27017
    user: backup
    password_env: MONGO_PW
    auth_db: admin
    database: app_copy
    bin_dir: ${bin}
stores:
  local: { type: local, path: ${join(dir, "backups")} }
jobs:
  mongo: { datasource: src, store: local }
`,
    { mode: 0o600 },
  );
  return file;
}

const ENV = { MONGO_PW: PASSWORD, MONGO_URI: `mongodb://backup:${PASSWORD}@db.internal:27017/?authSource=admin&replicaSet=rs0` };
const read = (p: string) => readFileSync(p, "utf8");
const argv = (log: string, tool: string) => read(join(log, `${tool}.argv`)).trimEnd().split("\n");
const configPath = (args: string[]) => args.find((a) => a.startsWith("--config="))?.slice("--config=".length) ?? "";


describe("mongodb engine through the CLI, with stand-in mongodump / mongorestore", () => {
  it("dumps one database as an archive with the password only in a 0600 config file, and restores it under another name", () => {
    const dir = tempDir();
    const { bin, log } = fakeTools(dir);
    const cfg = config(dir, bin, "host: db.internal\n    port: 27017\n    user: backup\n    password_env: MONGO_PW\n    auth_db: admin\n    database: app");

    const b = dbkeep(["-c", cfg, "backup", "mongo"], { env: ENV });
    expect(b.stderr).not.toContain("error:");
    expect(b.code).toBe(0);
    const dumpArgs = argv(log, "mongodump");
    expect(dumpArgs).toEqual([`--config=${configPath(dumpArgs)}`, "--host=db.internal", "--port=27017", "--username=backup", "--authenticationDatabase=admin", "--db=app", "--archive"]);
    expect(dumpArgs.join(" ")).not.toContain(PASSWORD);
    expect(dumpArgs).not.toContain("--gzip");
    expect(read(join(log, "mongodump.config"))).toBe(`password: ${JSON.stringify(PASSWORD)}\n`);
    expect(read(join(log, "mongodump.config-mode")).trim()).toBe("600");
    expect(existsSync(configPath(dumpArgs))).toBe(false);
    expect(read(join(log, "mongodump.env"))).not.toContain(PASSWORD);

    const l = dbkeep(["-c", cfg, "list", "mongo", "--json"], { env: ENV });
    expect(l.code).toBe(0);
    expect(l.stdout).toMatch(/app-\d{8}-\d{6}\.archive\.zst/);

    const r = dbkeep(["-c", cfg, "restore", "mongo", "--to", "dst", "--auto-confirm"], { env: ENV });
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    const restoreArgs = argv(log, "mongorestore");
    const archive = restoreArgs.find((a) => a.startsWith("--archive="))?.slice("--archive=".length) ?? "";
    expect(restoreArgs).toEqual([
      `--config=${configPath(restoreArgs)}`, "--host=db.internal", "--port=27017", "--username=backup", "--authenticationDatabase=admin",
      `--archive=${archive}`, "--nsFrom=app.*", "--nsTo=app_copy.*", "--drop",
    ]);
    expect(restoreArgs.join(" ")).not.toContain(PASSWORD);
    expect(read(join(log, "mongorestore.config-mode")).trim()).toBe("600");
    expect(existsSync(configPath(restoreArgs))).toBe(false);
    expect(existsSync(archive)).toBe(false);
    expect(readFileSync(join(log, "restored")).equals(BLOB)).toBe(true);
  });

  it("refuses to restore without a confirmation, since --drop replaces collections it cannot list", () => {
    const dir = tempDir();
    const { bin, log } = fakeTools(dir);
    const cfg = config(dir, bin, "uri_env: MONGO_URI\n    database: app");
    expect(dbkeep(["-c", cfg, "backup", "mongo"], { env: ENV }).code).toBe(0);
    const r = dbkeep(["-c", cfg, "restore", "mongo", "--to", "dst"], { env: ENV });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/restore refused/);
    expect(existsSync(join(log, "mongorestore.argv"))).toBe(false);
  });

  it("puts a uri in the config file, and dumps every database with --oplog", () => {
    const dir = tempDir();
    const { bin, log } = fakeTools(dir);
    const cfg = config(dir, bin, "uri_env: MONGO_URI\n    oplog: true");
    const b = dbkeep(["-c", cfg, "backup", "mongo"], { env: ENV });
    expect(b.stderr).not.toContain("error:");
    const args = argv(log, "mongodump");
    expect(args).toEqual([`--config=${configPath(args)}`, "--oplog", "--archive"]);
    expect(read(join(log, "mongodump.config"))).toBe(`uri: ${JSON.stringify(ENV.MONGO_URI)}\n`);
    expect(b.stdout + b.stderr).not.toContain(PASSWORD);
    expect(storedBackup(dir, ".archive.zst")).toMatch(/all-databases-\d{8}-\d{6}\.archive\.zst$/);
  });

  it("turns Authentication failed into one clear line with a hint, exit 1, and nothing listed", () => {
    const dir = tempDir();
    const { bin } = fakeTools(dir);
    writeFileSync(join(bin, "fail-auth"), "");
    const cfg = config(dir, bin, "host: db.internal\n    user: backup\n    password_env: MONGO_PW\n    database: app");
    const b = dbkeep(["-c", cfg, "--log-format", "text", "backup", "mongo"], { env: ENV });
    expect(b.code).toBe(1);
    expect(b.stderr.split("\n").filter((l) => l.startsWith("error:"))).toEqual([expect.stringMatching(/^error: mongodump failed with exit code 1 \(/)]);
    expect(b.stderr).toMatch(/hint: check the datasource's password/);
    expect(b.stderr).not.toContain(PASSWORD);
    const l = dbkeep(["-c", cfg, "list", "mongo", "--json"], { env: ENV });
    expect((JSON.parse(l.stdout) as { backups: unknown[] }).backups).toEqual([]);
  });

  it("never calls mongorestore for a stored backup with a flipped byte", () => {
    const dir = tempDir();
    const { bin, log } = fakeTools(dir);
    const cfg = config(dir, bin, "host: db.internal\n    database: app");
    expect(dbkeep(["-c", cfg, "backup", "mongo"], { env: ENV }).code).toBe(0);
    const file = storedBackup(dir, ".archive.zst");
    const bytes = readFileSync(file);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] ?? 0) ^ 0x01;
    writeFileSync(file, bytes);
    const r = dbkeep(["-c", cfg, "restore", "mongo", "--to", "dst", "--auto-confirm"], { env: ENV });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SHA-256|checksum|damaged/i);
    expect(existsSync(join(log, "mongorestore.argv"))).toBe(false);
  });

  it("names the package when mongodump is missing", () => {
    const dir = tempDir();
    mkdirSync(join(dir, "empty"));
    const cfg = config(dir, join(dir, "empty"), "host: db.internal\n    database: app");
    const b = dbkeep(["-c", cfg, "--log-format", "text", "backup", "mongo"], { env: ENV });
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/mongodump not found/);
    expect(b.stderr).toMatch(/install mongodb-database-tools or set bin_dir/);
  });
});

describe("mongodb URLs and config", () => {
  it("keeps the connection string as uri and takes dbkeep's own keys out of it", () => {
    const s = sourceFromUrl("mongodb://backup@db1:27017,db2:27017/app?replicaSet=rs0&authSource=admin&compression=zstd&level=5");
    expect(s.engine).toBe("mongodb");
    expect(s.options).toMatchObject({ engine: "mongodb", uri: "mongodb://backup@db1:27017,db2:27017/app?replicaSet=rs0&authSource=admin", database: "app", compression: "zstd", compression_level: 5 });
    expect(s.warnings).toEqual([]);
    expect(sourceFromUrl("mongodb+srv://backup@cluster0.example.net/?oplog=true").options).toMatchObject({ uri: "mongodb+srv://backup@cluster0.example.net/", oplog: true });
  });

  it("warns about a password in the URL", () => {
    const s = sourceFromUrl("mongodb://backup:pw@db/app");
    expect(s.warnings[0]).toMatch(/password in a URL/);
  });

  it("refuses oplog with one database, uri with host, and two password sources", () => {
    const problems = (body: string): string[] => {
      try {
        parseConfig(`datasources:\n  m: { engine: mongodb, ${body} }\n`);
        return [];
      } catch (err) {
        return ((err as { details?: string }).details ?? "").split("\n").map((l) => l.trim());
      }
    };
    expect(problems("uri_env: X, database: app")).toEqual([]);
    expect(problems("database: app, oplog: true")).toContain("datasources.m.oplog: oplog: true needs a dump of every database; remove database");
    expect(problems("uri_env: X, host: h")).toContain("datasources.m.uri: give either uri (uri_env, uri_file) or host/port, not both");
    expect(problems("host: h, password: x, password_env: Y")).toContain("datasources.m.password: give only one of password, password_env");
  });

  it("maps the tools' errors to codes and hints", () => {
    expect(explainMongoError("(AuthenticationFailed) Authentication failed.")).toMatchObject({ code: "CONNECTION_FAILED", hint: expect.stringMatching(/password/) });
    expect(explainMongoError("Failed: can't create session: server selection error: server selection timeout")).toMatchObject({ code: "CONNECTION_FAILED", retryable: true });
    expect(explainMongoError("dial tcp 127.0.0.1:27017: connect: connection refused")).toMatchObject({ retryable: true });
    expect(explainMongoError("no reachable servers")).toMatchObject({ retryable: true });
    expect(explainMongoError("something else")).toBeUndefined();
  });
});
