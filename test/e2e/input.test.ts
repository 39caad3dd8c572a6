import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, ROOT, tempDir } from "../helpers/env.js";

/** Every file under `dir`, so that a test can say "nothing was written". */
function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

let dir: string;
let cfg: string;

beforeAll(() => {
  dir = tempDir("dbkeep-input-");
  copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
  cfg = join(dir, "dbkeep.yaml");
  writeFileSync(
    cfg,
    `datasources:\n  app: { engine: sqlite, path: ${join(dir, "app.db")} }\nstores:\n  local: { type: local, path: ${join(dir, "backups")} }\ndaemon: { history: ${join(dir, "history.db")} }\njobs:\n  app: { datasource: app, store: local }\n`,
    { mode: 0o600 },
  );
  const b = dbkeep(["-c", cfg, "backup", "app"]);
  expect(b.code, b.stderr).toBe(0);
});

describe("flags with a wrong value stop the command before it does anything, exit 2", () => {
  const cases: [string, string[], string][] = [
    ["--parallel abc", ["backup", "app", "--parallel", "abc"], "option '--parallel <n>' argument 'abc' is invalid. Expected a whole number of 1 or more."],
    ["--parallel 0", ["backup", "app", "--parallel", "0"], "argument '0' is invalid. Expected a whole number of 1 or more, not 0."],
    ["--parallel -1", ["backup", "app", "--parallel", "-1"], "argument '-1' is invalid. Expected a whole number of 1 or more, not -1."],
    ["--type bogus", ["backup", "app", "--type", "bogus"], "argument 'bogus' is invalid. Expected one of hourly, daily, weekly, monthly, yearly, manual."],
    ["--type manaul", ["backup", "app", "--type", "manaul"], "Expected one of hourly, daily, weekly, monthly, yearly, manual (did you mean manual?)."],
    ["--compression zstdd", ["backup", "sqlite:./app.db", "--to", "./one-off", "--compression", "zstdd"], "(did you mean zstd?)"],
    ["--level abc", ["backup", "sqlite:./app.db", "--to", "./one-off", "--level", "abc"], "option '--level <n>' argument 'abc' is invalid. Expected a whole number."],
    ["--format on sqlite", ["backup", "sqlite:./app.db", "--to", "./one-off", "--format", "custom"], "error: --format: a sqlite backup has no format to choose"],
    ["--format bogus", ["backup", "postgres://postgres@127.0.0.1/app", "--to", "./one-off", "--format", "bogus"], 'error: --format: expected one of "plain", "custom", "directory", got "bogus"'],
    ["--keep-last -3", ["prune", "app", "--keep-last", "-3"], "option '--keep-last <n>' argument '-3' is invalid. Expected a whole number of 1 or more, not -3."],
    ["--keep-last 0", ["prune", "app", "--keep-last", "0"], "not 0."],
    ["--keep-last abc", ["prune", "app", "--keep-last", "abc", "--dry-run"], "argument 'abc' is invalid."],
    ["--now", ["prune", "app", "--dry-run", "--now", "yesterday"], "Expected a date such as 2027-01-01"],
    ["--orphan-grace", ["prune", "app", "--orphan-grace", "5x"], "Expected a duration such as 30s, 5m, 2h or 7d."],
    ["--jobs 0", ["restore", "app", "--to", "sqlite:./copy.db", "--jobs", "0"], "option '--jobs <n>' argument '0' is invalid."],
    ["--limit abc", ["history", "--limit", "abc"], "option '--limit <n>' argument 'abc' is invalid."],
    ["--max-rows 0", ["query", "sqlite:./app.db", "SELECT 1", "--max-rows", "0"], "option '--max-rows <n>' argument '0' is invalid."],
    ["--listen", ["daemon", "--listen", "nope"], "option '--listen <host:port>' argument 'nope' is invalid."],
  ];
  for (const [name, args, message] of cases) {
    it(name, () => {
      const before = filesUnder(dir);
      const r = dbkeep(["-c", cfg, ...args], { cwd: dir });
      expect(r.stderr).toContain(message);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      expect(r.stderr).not.toMatch(/backing up|restoring|pruned|deleted/);
      expect(filesUnder(dir)).toEqual(before);
    });
  }
});

describe("stores, config files and secrets that are not there", () => {
  it("list, restore and prune of a store directory that does not exist: exit 2, not an empty store", () => {
    for (const args of [["list", "./nonexistent"], ["restore", "./nonexistent", "--to", "sqlite:./x.db"], ["prune", "./nonexistent", "--keep-last", "1"]]) {
      const r = dbkeep(args, { cwd: dir });
      expect(r.stderr, args.join(" ")).toContain("error: no such store directory: ./nonexistent\nhint: ");
      expect(r.stdout).not.toContain("no backups");
      expect(r.code).toBe(2);
    }
    const file = dbkeep(["list", "./app.db"], { cwd: dir });
    expect(file.stderr).toContain("error: ./app.db is a file, not a store directory");
    expect(file.code).toBe(2);
    // An existing store without backups is still "no backups", exit 0.
    mkdirSync(join(dir, "empty-store"));
    const empty = dbkeep(["list", "./empty-store"], { cwd: dir });
    expect(empty.stdout).toMatch(/^no (complete )?backups in local:\.\/empty-store/);
    expect(empty.code).toBe(0);
  });

  it("-c DIR: one line saying it is a directory, with a hint; no raw EISDIR", () => {
    const r = dbkeep(["-c", dir, "list", "app"]);
    expect(r.stderr).toBe(`error: config ${dir} is a directory, not a file\nhint: pass the YAML file itself, e.g. -c ${join(dir, "dbkeep.yaml")}\n`);
    expect(r.code).toBe(2);
  });

  it("an unreadable config: one line saying so, with a hint; no raw EACCES", () => {
    const file = join(dir, "locked.yaml");
    copyFileSync(cfg, file);
    chmodSync(file, 0o600);
    // root reads any file: the check runs as nobody then, as a service account would.
    const asRoot = process.getuid?.() === 0;
    if (!asRoot) chmodSync(file, 0o000);
    const r = spawnSync(process.execPath, [CLI, "-c", file, "list", "app"], { cwd: "/", env: { ...process.env, ...CLI_ENV }, encoding: "utf8", ...(asRoot ? { uid: 65534, gid: 65534 } : {}) });
    expect(r.stderr).toMatch(new RegExp(`^error: config ${file} cannot be read: permission denied\\nhint: dbkeep runs as \\S+ who may not read it: run dbkeep as the file's owner, or give that user read access`));
    expect(r.stderr).not.toContain("EACCES");
    expect(r.status).toBe(2);
  });

  it("an empty config file, or one that defines nothing, is not valid", () => {
    for (const [text, message] of [
      ["", "is empty"],
      ["# nothing yet\n", "is empty"],
      ["datasources:\nstores:\njobs:\n", "defines no datasources, stores or jobs"],
    ] as const) {
      const file = join(dir, "empty.yaml");
      writeFileSync(file, text, { mode: 0o600 });
      const r = dbkeep(["-c", file, "config", "check"]);
      expect(r.stderr, JSON.stringify(text)).toContain(message);
      expect(r.stdout).not.toContain("valid");
      expect(r.code).toBe(2);
    }
  });

  it("config check refuses a compression_level that backup would refuse: one check for both", () => {
    const file = join(dir, "levels.yaml");
    writeFileSync(
      file,
      `datasources:\n  a: { engine: sqlite, path: ${join(dir, "app.db")}, compression: gzip, compression_level: 15 }\n  z: { engine: sqlite, path: ${join(dir, "app.db")}, compression: zstd, compression_level: 15 }\nstores:\n  s: { type: local, path: ${join(dir, "levels")} }\njobs:\n  a: { datasource: a, store: s }\n  z-ok: { datasource: z, store: s }\n  z-gzip: { datasource: z, store: s, compression: gzip }\n  z-level: { datasource: z, store: s, compression_level: 22 }\n`,
      { mode: 0o600 },
    );
    const check = dbkeep(["-c", file, "config", "check"]);
    expect(check.code).toBe(2);
    expect(check.stderr).toContain(`error: config ${file} has 3 problems\n`);
    expect(check.stderr).toContain("  datasources.a.compression_level: gzip level must be between 1 and 9, got 15\n");
    expect(check.stderr).toContain("  jobs.z-gzip.compression: gzip level must be between 1 and 9, got 15 (the compression_level of datasources.z)\n");
    expect(check.stderr).toContain("  jobs.z-level.compression_level: zstd level must be between 1 and 19, got 22\n");
    const backup = dbkeep(["-c", file, "backup", "z-ok"]);
    expect(backup.stderr).toBe(check.stderr);
    expect(backup.code).toBe(2);
    expect(existsSync(join(dir, "levels"))).toBe(false);
  });

  it("an unset password_env or passphrase_env is a config error: exit 2 before anything is backed up", () => {
    const file = join(dir, "secrets.yaml");
    writeFileSync(
      file,
      `datasources:\n  pg: { engine: postgres, host: 127.0.0.1, user: postgres, database: dbkeep_e2e_input_none, password_env: DBKEEP_E2E_INPUT_UNSET_PW }\n  app: { engine: sqlite, path: ${join(dir, "app.db")} }\nstores:\n  s: { type: local, path: ${join(dir, "secret-store")} }\njobs:\n  pg: { datasource: pg, store: s }\n  sealed: { datasource: app, store: s, encryption: { passphrase_env: DBKEEP_E2E_INPUT_UNSET_PASS } }\n  checked: { datasource: app, store: s, verify: restore, encryption: { recipients: [age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p], identity_env: DBKEEP_E2E_INPUT_UNSET_ID } }\n  plain: { datasource: app, store: s }\n`,
      { mode: 0o600 },
    );
    const one = dbkeep(["-c", file, "backup", "pg"]);
    expect(one.stderr).toBe("error: datasources.pg.password_env: environment variable DBKEEP_E2E_INPUT_UNSET_PW is not set\nhint: export DBKEEP_E2E_INPUT_UNSET_PW=... before running dbkeep\n");
    expect(one.code).toBe(2);
    // With several jobs, every missing secret is named and none of the jobs runs, not even the one that could.
    const all = dbkeep(["-c", file, "backup", "--all"]);
    expect(all.stderr).toContain("error: 3 secrets cannot be read; nothing was backed up\n");
    expect(all.stderr).toContain("  datasources.pg.password_env: environment variable DBKEEP_E2E_INPUT_UNSET_PW is not set\n");
    expect(all.stderr).toContain("  jobs.sealed.encryption.passphrase_env: environment variable DBKEEP_E2E_INPUT_UNSET_PASS is not set\n");
    // verify: restore decrypts right after the backup: its identity is needed too.
    expect(all.stderr).toContain("  jobs.checked.encryption.identity_env: environment variable DBKEEP_E2E_INPUT_UNSET_ID is not set\n");
    expect(all.stderr).not.toContain("backing up");
    expect(all.code).toBe(2);
    expect(filesUnder(join(dir, "secret-store"))).toEqual([]);
    const set = dbkeep(["-c", file, "backup", "sealed"], { env: { DBKEEP_E2E_INPUT_UNSET_PASS: "a long enough passphrase" } });
    expect(set.code, set.stderr).toBe(0);
  });

  it("config problems read as a person would write them, each with its dotted path, all at once", () => {
    const file = join(dir, "typos.yaml");
    writeFileSync(
      file,
      [
        "datasource:",
        "  x: { engine: sqlite, path: a.db }",
        "datasources:",
        "  app: { engine: sqlite, compresion: zstd }",
        "  pg: { engine: postgress, database: app }",
        "  pg2: { engine: postgres, database: app, port: 99999, format: custm }",
        "stores:",
        "  local: { type: local }",
        "jobs:",
        "  app: { datasourse: app, store: local, verify: maybe, retention: { keep_dayly: 3, keep_last: -1 } }",
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    const r = dbkeep(["-c", file, "config", "check"]);
    expect(r.code).toBe(2);
    expect(r.stderr).not.toContain("Invalid input");
    expect(r.stderr).not.toContain("received undefined");
    const lines = r.stderr.split("\n").map((l) => l.trim());
    for (const line of [
      'unknown top-level key "datasource" (did you mean "datasources"?)',
      'datasources.app: missing key "path" (the SQLite file)',
      'datasources.app: unknown key "compresion" (did you mean "compression"?)',
      'datasources.pg.engine: unknown engine "postgress" (did you mean "postgres"?) (available: postgres, postgresql, mysql, mariadb, redis, mongodb, db2, sqlite)',
      "datasources.pg2.port: must be 65535 or less, got 99999",
      'datasources.pg2.format: expected one of "plain", "custom", "directory", got "custm" (did you mean "custom"?)',
      'stores.local: missing key "path" (the directory that holds the backups)',
      'jobs.app: missing key "datasource" (the name of a datasource under datasources:)',
      'jobs.app: unknown key "datasourse" (did you mean "datasource"?)',
      'jobs.app.verify: expected true, false or "restore", got "maybe"',
      'jobs.app.retention: unknown key "keep_dayly" (did you mean "keep_daily"?)',
      "jobs.app.retention.keep_last: must be 0 or more, got -1",
    ]) {
      expect(lines, line).toContain(line);
    }
    expect(lines[0]).toBe(`error: config ${file} has 12 problems`);
  });
});

const PG_SOURCE = "dbkeep_e2e_input_src";
// 63 bytes, PostgreSQL's longest name; the restore target below is this plus a tail.
const VICTIM = "dbkeep_e2e_input_victim_".padEnd(63, "v");
const available = await pgAvailable();

describe.skipIf(!available)("restore target names PostgreSQL would cut short", () => {
  beforeAll(async () => {
    await createDb(PG_SOURCE);
    await pgQuery(PG_SOURCE, "CREATE TABLE t (v text); INSERT INTO t VALUES ('from the backup')");
    await createDb(VICTIM);
    await pgQuery(VICTIM, "CREATE TABLE t (v text); INSERT INTO t VALUES ('precious')");
  });
  afterAll(async () => {
    await dropDb(PG_SOURCE);
    await dropDb(VICTIM);
  });

  it("a target name over 63 bytes is refused with exit 2; the database its first 63 bytes name is untouched", async () => {
    const store = join(dir, "pg-store");
    const b = dbkeep(["backup", pgUrl(PG_SOURCE), "--to", store]);
    expect(b.code, b.stderr).toBe(0);
    const target = `${VICTIM}_restored`;
    const r = dbkeep(["restore", store, "latest", "--to", pgUrl(target), "--auto-confirm"]);
    expect(r.stderr).toContain(`error: database name "${target.slice(0, 20)}..." is ${target.length} bytes long; PostgreSQL keeps only the first 63 and would take it for another database\nhint: `);
    expect(r.code).toBe(2);
    expect(await pgQuery(VICTIM, "SELECT v FROM t")).toEqual([{ v: "precious" }]);
    // The same name in a config is refused when the config is read.
    const file = join(dir, "long-name.yaml");
    writeFileSync(file, `datasources:\n  pg: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${target} }\n`, { mode: 0o600 });
    const check = dbkeep(["-c", file, "config", "check"]);
    expect(check.stderr).toContain(`datasources.pg.database: database name "${target.slice(0, 20)}..." is ${target.length} bytes long`);
    expect(check.code).toBe(2);
  });
});
