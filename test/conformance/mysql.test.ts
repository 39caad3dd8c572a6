import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";
import { contentOf, dropDatabasesLike, MY, myAvailable, myQuery, mySource, quoteId, schemaOf } from "../helpers/mysql.js";
import { engineConformance } from "./engine.suite.js";
import { runWatchingChildren } from "../helpers/proc.js";

const ID = randomBytes(3).toString("hex");
const RUN = `dbkeep_it_my_${ID}`;
const SRC = `${RUN}_src`;
const DST = `${RUN}_dst`;
// Per run, like the databases: a second run on the same server must not drop this one's user.
const USER = `dbkeep_it_${ID}`;
const SECRET = "My-S3cret-pw-4711";
const FIXTURE = join(ROOT, "test/fixtures/mariadb-fixture.sql");
const available = await myAvailable();

async function createFromFixture(db: string): Promise<void> {
  await myQuery(`DROP DATABASE IF EXISTS ${quoteId(db)}`);
  await myQuery(`CREATE DATABASE ${quoteId(db)}`);
  mySource(db, FIXTURE);
}

let sourceReady: Promise<void> | undefined;
/** The source database and the backup user, made once for both blocks below (each may run alone with -t). */
function ensureSource(): Promise<void> {
  sourceReady ??= (async () => {
    await createFromFixture(SRC);
    await myQuery(`CREATE OR REPLACE USER '${USER}'@'%' IDENTIFIED BY '${SECRET}'`);
    // What a backup needs, and no more: the password test below dumps as this user.
    await myQuery(`GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, EXECUTE ON *.* TO '${USER}'@'%'`);
  })();
  return sourceReady;
}

async function snapshot(db: string): Promise<Record<string, string>> {
  return { schema: await schemaOf(db), ...(await contentOf(db)) };
}

if (available) {
  afterAll(async () => {
    await dropDatabasesLike(RUN);
    await myQuery(`DROP USER IF EXISTS '${USER}'@'%'`);
  });

  engineConformance({
    engine: "mysql",
    async setup() {
      await ensureSource();
      await myQuery(`DROP DATABASE IF EXISTS ${quoteId(DST)}`);
      // Enough rows that zstd -19 keeps the dump running while the test cuts its connection.
      await myQuery(
        `CREATE TABLE filler (id INT NOT NULL PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB;
         INSERT INTO filler SELECT seq, CONCAT(MD5(seq), SHA2(seq, 256), MD5(seq * 7)) FROM seq_1_to_100000`,
        SRC,
      );
      const base = { engine: "mysql", host: MY.host, port: MY.port, user: MY.user };
      return { source: { ...base, database: SRC }, target: { ...base, database: DST } };
    },
    snapshot: (which) => snapshot(which === "source" ? SRC : DST),
    async teardown() {
      // The source stays for the tests below, without the filler that only the interruption needs.
      await myQuery(`DROP TABLE IF EXISTS ${quoteId(SRC)}.filler`);
      await myQuery(`DROP DATABASE IF EXISTS ${quoteId(DST)}`);
    },
    variants: [
      { label: "mysqldump + zstd", options: { compression: "zstd" } },
      { label: "mysqldump + gzip", options: { compression: "gzip" } },
      { label: "mydumper + lz4, 2 threads", options: { tool: "mydumper", compression: "lz4", threads: 2 } },
    ],
    authFailure: {
      options: { engine: "mariadb", host: MY.host, port: MY.port, user: USER, password: "not-the-password", database: SRC },
      message: new RegExp(`cannot connect to the MySQL/MariaDB server \\(host 127\\.0\\.0\\.1, port 3306, user ${USER}\\)\nERROR 1045 .*Access denied for user '${USER}'`),
    },
    async interruptDump() {
      // mysqldump's connection is the only one using the source database; between rows it often shows as Sleep, so
      // it is found by its database, not by its query. Lookup and KILL run in one block on the server: as two client
      // calls, the dump (a fraction of a second) could end between them and the test would count a miss as a cut.
      const [row] = await myQuery(`DELIMITER //
        BEGIN NOT ATOMIC
          DECLARE victim BIGINT;
          SELECT MAX(ID) INTO victim FROM information_schema.PROCESSLIST WHERE DB = '${SRC}' AND ID <> CONNECTION_ID();
          IF victim IS NOT NULL THEN KILL CONNECTION victim; END IF;
          SELECT IFNULL(victim, 0);
        END//`);
      return Number(row?.[0] ?? 0) > 0;
    },
    missingTool: { options: { bin_dir: "/nonexistent" }, message: /error: mysqldump not found in \/nonexistent\nhint: install mariadb-client or set bin_dir/ },
  });
}


describe.skipIf(!available)("mysql engine: credentials, warnings, damage, restoring under another name", () => {
  const COPY = `${RUN}_copy`;
  const OTHER = `${RUN}_other`;
  let dir: string;
  let cfg: string;
  let calls: string;

  beforeAll(async () => {
    await ensureSource();
    dir = tempDir();
    cfg = join(dir, "dbkeep.yaml");
    const server = { host: MY.host, port: MY.port };
    // The src datasource runs the client tools through these wrappers: each call's arguments, environment and the
    // option file's mode are recorded as the tool saw them, however short-lived the process.
    const bin = join(dir, "bin");
    calls = join(dir, "calls.log");
    mkdirSync(bin);
    for (const tool of ["mariadb-dump", "mariadb"]) {
      const real = execFileSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" }).trim();
      writeFileSync(
        join(bin, tool),
        `#!/bin/sh
{
  printf 'ARGV %s' "$0"; for a in "$@"; do printf ' %s' "$a"; done; printf '\n'
  case "$1" in --defaults-extra-file=*) f="\${1#--defaults-extra-file=}"; printf 'MODE %s %s\n' "$(stat -c %a "$f")" "$(stat -c %a "$(dirname "$f")")" ;; esac
  env | sed 's/^/ENV /'
} >> '${calls}'
exec '${real}' "$@"
`,
      );
      chmodSync(join(bin, tool), 0o755);
    }
    writeFileSync(
      cfg,
      stringify({
        datasources: {
          src: { engine: "mysql", ...server, user: USER, password_env: "DBKEEP_IT_MY_PW", database: SRC, compression: "zstd", bin_dir: bin },
          srcmd: { engine: "mariadb", ...server, user: MY.user, database: SRC, tool: "mydumper", threads: 2, compression: "gzip" },
          copy: { engine: "mariadb", ...server, user: MY.user, database: COPY },
          pair: { engine: "mysql", ...server, user: MY.user, databases: [`${RUN}_a`, `${RUN}_b`] },
        },
        stores: { local: { type: "local", path: join(dir, "backups") } },
        jobs: {
          "src-backup": { datasource: "src", store: "local", prefix: "it", verify: true },
          "mydumper-backup": { datasource: "srcmd", store: "local", prefix: "md", verify: true },
          "pair-backup": { datasource: "pair", store: "local", prefix: "pair" },
        },
      }),
      { mode: 0o600 },
    );
  });

  it("the password reaches the tools through a private option file only: never an argument list or environment, and the file is gone afterwards", async () => {
    const tmp = join(dir, "tmp");
    mkdirSync(tmp);
    const { code, output, procs } = await runWatchingChildren(["-c", cfg, "backup", "src-backup"], { DBKEEP_IT_MY_PW: SECRET, TMPDIR: tmp });
    expect(code, output).toBe(0);
    // Whatever the polling caught (zstd, the tools, the wrappers' shells): no password anywhere. A child caught
    // between fork and exec still runs node with dbkeep's own environment; no tool ever sees that, so it is skipped.
    for (const p of procs.filter((x) => !x.cmdline.startsWith(`${process.execPath} `))) {
      expect(p.cmdline).not.toContain(SECRET);
      expect(p.environ).not.toContain(SECRET);
      expect(p.environ).not.toContain("DBKEEP_IT_MY_PW");
    }
    const log = readFileSync(calls, "utf8");
    expect(log).not.toContain(SECRET);
    expect(log).not.toContain("DBKEEP_IT_MY_PW");
    const dumpCall = log.split("\n").find((l) => /^ARGV \S+\/mariadb-dump --defaults-extra-file=/.test(l));
    expect(dumpCall, log).toBeDefined();
    expect(dumpCall).toContain("--single-transaction");
    const optionFile = /--defaults-extra-file=(\S+)/.exec(dumpCall!)?.[1];
    expect(optionFile).toMatch(new RegExp(`^${tmp}/dbkeep-mysql-[\\w-]+/client\\.cnf$`));
    // Every call that got the option file saw it private: the file 0600, its directory 0700.
    const modes = log.split("\n").filter((l) => l.startsWith("MODE "));
    expect(modes.length).toBeGreaterThan(1);
    expect(new Set(modes)).toEqual(new Set(["MODE 600 700"]));
    expect(output).not.toContain(SECRET);
    expect(existsSync(optionFile!)).toBe(false);
    expect(readdirSync(tmp)).toEqual([]);
    // The MyISAM table cannot be part of the dump's transaction, and the log says so in one line naming it.
    const warnings = output.split("\n").filter((l) => l.includes("not transactional"));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain("legacy_log (MyISAM)");
    expect(output).toMatch(/verified: .*dump is complete/);
  });

  it("a flipped byte in a stored backup makes restore refuse, and the target keeps its content", async () => {
    const first = dbkeep(["-c", cfg, "restore", "src-backup", "--to", "copy", "--auto-confirm"]);
    expect(first.stderr).not.toContain("error:");
    expect(first.code).toBe(0);
    expect(await contentOf(COPY)).toEqual(await contentOf(SRC));
    await myQuery("INSERT INTO legacy_log (message) VALUES ('written after the restore')", COPY);
    const before = await snapshot(COPY);

    const folder = join(dir, "backups/it", SRC);
    const data = readdirSync(folder).find((f) => f.endsWith(".sql.zst"))!;
    const path = join(folder, data);
    const fd = openSync(path, "r+");
    const at = Math.floor(statSync(path).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);

    const r = dbkeep(["-c", cfg, "restore", "src-backup", "--to", "copy", "--auto-confirm"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/error: .*(SHA-256|damaged|corrupt)/i);
    expect(await snapshot(COPY)).toEqual(before);
    const leftovers = (await myQuery("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")).map(([n]) => n).filter((n) => n?.startsWith(RUN) && n.includes("_dbkeep_"));
    expect(leftovers).toEqual([]);
  });

  it("restores under another database name given as a URL", async () => {
    // The damaged backup of the test above is the latest; a fresh one is taken first.
    await new Promise((r) => setTimeout(r, 1100));
    const b = dbkeep(["-c", cfg, "backup", "src-backup"], { env: { DBKEEP_IT_MY_PW: SECRET } });
    expect(b.code, b.stderr).toBe(0);
    const r = dbkeep(["-c", cfg, "restore", "src-backup", "--to", `mysql://root@127.0.0.1:3306/${OTHER}`, "--auto-confirm"]);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    expect(await snapshot(OTHER)).toEqual(await snapshot(SRC));
  });

  it("mydumper backups pass verify's structural check (the tar holds mydumper's metadata file)", () => {
    const b = dbkeep(["-c", cfg, "backup", "mydumper-backup"]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).toMatch(/verified: .*mydumper tar holds metadata/);
    const list = JSON.parse(dbkeep(["-c", cfg, "list", "mydumper-backup", "--json"]).stdout) as { backups: { key: string; format: string; tool?: { name: string } }[] };
    expect(list.backups[0]?.format).toBe("mydumper");
    expect(list.backups[0]?.key).toMatch(/\.mydumper\.tar\.gz$/);
  });

  it("MariaDB's UUID, INET4 and INET6 columns roundtrip with mysqldump; mydumper 0.10, which would corrupt them, refuses", async () => {
    const db = `${RUN}_modern`;
    await myQuery(`CREATE DATABASE ${quoteId(db)}`);
    await myQuery(
      `CREATE TABLE ids (id INT PRIMARY KEY, uid UUID, a4 INET4, a6 INET6);
       INSERT INTO ids VALUES (1, '123e4567-e89b-12d3-a456-426614174000', '192.0.2.1', '2001:db8::1'), (2, UUID(), '0.0.0.0', '::ffff:192.0.2.1'), (3, NULL, NULL, NULL)`,
      db,
    );
    const store = join(dir, "modern");
    const b = dbkeep(["backup", `mysql://root@127.0.0.1:3306/${db}`, "--to", store]);
    expect(b.code, b.stderr).toBe(0);
    const r = dbkeep(["restore", store, "latest", "--to", `mariadb://root@127.0.0.1:3306/${db}_copy`]);
    expect(r.code, r.stderr).toBe(0);
    expect(await snapshot(`${db}_copy`)).toEqual(await snapshot(db));

    const m = dbkeep(["backup", `mysql://root@127.0.0.1:3306/${db}?tool=mydumper`, "--to", store]);
    expect(m.code).toBe(1);
    expect(m.stderr).toContain("error: mydumper 0.10.0 cannot back up UUID, INET4 and INET6 columns correctly: ids.uid (uuid), ids.a4 (inet4), ids.a6 (inet6)");
    expect(m.stderr).toContain("hint: use tool: mysqldump");
  });

  it("ssl_mode: required refuses a server without TLS instead of falling back to plain text", () => {
    const r = dbkeep(["backup", `mysql://root@127.0.0.1:3306/${SRC}?ssl_mode=required`, "--to", join(dir, "tls")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("error: ssl_mode is required, but the connection to the server (host 127.0.0.1, port 3306) is not encrypted");
  });

  it("a list of databases is dumped with --databases and restored under their own names", async () => {
    for (const name of ["a", "b"]) {
      await myQuery(`CREATE DATABASE ${quoteId(`${RUN}_${name}`)}`);
      await myQuery(`CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, '${name}'), (2, NULL)`, `${RUN}_${name}`);
    }
    const before = { a: await snapshot(`${RUN}_a`), b: await snapshot(`${RUN}_b`) };
    const b = dbkeep(["-c", cfg, "backup", "pair-backup"]);
    expect(b.code, b.stderr).toBe(0);
    await myQuery(`DROP DATABASE ${quoteId(`${RUN}_b`)}`);
    await myQuery("DELETE FROM t", `${RUN}_a`);
    const r = dbkeep(["-c", cfg, "restore", "pair-backup", "--auto-confirm"]);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    expect({ a: await snapshot(`${RUN}_a`), b: await snapshot(`${RUN}_b`) }).toEqual(before);
  });
});
