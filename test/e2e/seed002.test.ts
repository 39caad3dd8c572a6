import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BlobServiceClient } from "@azure/storage-blob";
import { CLI, CLI_ENV, IN_CI, PG, dbkeep, dbkeepAsync, dropDb, createDb, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";
import { contentOf as myContent, myAvailable, myQuery } from "../helpers/mysql.js";
import { contentOf as pgContent } from "../helpers/pgcompare.js";
import { AZURITE_KEY, azuriteAvailable, startAzurite } from "../helpers/azurite-server.js";
import { runWatchingChildren } from "../helpers/proc.js";
import { startGcsFake } from "../helpers/gcs-fake.js";
import { startS3, S3RVER_KEY, type TestS3 } from "../helpers/s3-server.js";
import { sqliteContent } from "../helpers/sqlite.js";

/**
 * Seed 002 (DBVault): the command lines of its README, run as its users wrote them (host, user and database names
 * swapped for the local servers'), checked the way its users check: the database they named is in the output
 * directory and restores to the same content, the .enc files their old version wrote decrypt.
 */
const PG_DB = "seed002_analytics";
const MY_DB = "seed002_mydb";
const MY_USER = "seed002_u";
const MY_PASSWORD = "S3ed002-pass-Xq7";
const dir = tempDir("dbkeep-seed002-");

/** Python with `cryptography`: DBVault's own Fernet implementation, to make .enc files independently of dbkeep. */
const PY = ["python3", "python"].find((py) => spawnSync(py, ["-c", "import cryptography.fernet"]).status === 0);

let pgOk = false;
let myOk = false;
let s3: TestS3 | undefined;

beforeAll(async () => {
  pgOk = await pgAvailable();
  myOk = await myAvailable();
  if (pgOk) {
    await createDb(PG_DB);
    await pgQuery(PG_DB, "CREATE TABLE events (id serial PRIMARY KEY, kind text NOT NULL, at timestamptz DEFAULT '2024-01-01')");
    await pgQuery(PG_DB, "INSERT INTO events (kind) SELECT 'kind-' || g FROM generate_series(1, 500) g");
  }
  if (myOk) {
    await myQuery(`DROP DATABASE IF EXISTS ${MY_DB}; CREATE DATABASE ${MY_DB}`);
    await myQuery("CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40), qty INT); INSERT INTO orders (item, qty) VALUES ('apple', 3), ('pear', 5), ('fig', 7)", MY_DB);
    // A user with a password, for the prompt and --password: root has none here.
    await myQuery(
      `DROP USER IF EXISTS '${MY_USER}'@'localhost', '${MY_USER}'@'127.0.0.1';
       CREATE USER '${MY_USER}'@'localhost' IDENTIFIED BY '${MY_PASSWORD}'; CREATE USER '${MY_USER}'@'127.0.0.1' IDENTIFIED BY '${MY_PASSWORD}';
       GRANT ALL ON ${MY_DB}.* TO '${MY_USER}'@'localhost'; GRANT ALL ON ${MY_DB}.* TO '${MY_USER}'@'127.0.0.1';
       GRANT RELOAD, PROCESS ON *.* TO '${MY_USER}'@'localhost'; GRANT RELOAD, PROCESS ON *.* TO '${MY_USER}'@'127.0.0.1'`,
    );
  }
  s3 = await startS3({ bucket: "my-backup-bucket" });
}, 60_000);

afterAll(async () => {
  if (pgOk) for (const db of [PG_DB, `${PG_DB}_r1`, `${PG_DB}_r2`, `${PG_DB}_r3`, `${PG_DB}_r4`]) await dropDb(db);
  if (myOk) {
    await myQuery(`DROP DATABASE IF EXISTS ${MY_DB}; DROP DATABASE IF EXISTS ${MY_DB}_r1; DROP DATABASE IF EXISTS ${MY_DB}_r2; DROP DATABASE IF EXISTS ${MY_DB}_r3`);
    await myQuery(`DROP USER IF EXISTS '${MY_USER}'@'localhost', '${MY_USER}'@'127.0.0.1'`);
  }
  await s3?.stop();
});

/** A fresh working directory, as a user's shell would be in when running the README's commands. */
function workdir(name: string): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  return d;
}

/** The data files (not sidecars or manifests) under a directory, relative to it. */
function dataFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (!e.name.startsWith(".") && !/\.(sha256|manifest\.json)$/.test(e.name)) out.push(p.slice(root.length + 1));
    }
  };
  if (existsSync(root)) walk(root);
  return out.sort();
}

/**
 * Runs the CLI in a pseudo-terminal (util-linux `script`), answering the password prompt when it shows. Returns
 * everything the terminal showed.
 */
function inPty(args: string[], o: { cwd: string; env?: Record<string, string>; answer?: string }): Promise<{ code: number; screen: string }> {
  const quote = (a: string) => `'${a.replace(/'/g, "'\\''")}'`;
  const cmd = [process.execPath, CLI, ...args].map(quote).join(" ");
  return new Promise((resolve, reject) => {
    const child = spawn("script", ["-qefc", cmd, "/dev/null"], { cwd: o.cwd, env: { ...process.env, ...CLI_ENV, ...o.env }, stdio: ["pipe", "pipe", "pipe"] });
    let screen = "";
    let answered = false;
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const onData = (d: Buffer) => {
      screen += d.toString();
      if (o.answer !== undefined && !answered && /Password[^:\n]*: $/.test(screen)) {
        answered = true;
        child.stdin.write(`${o.answer}\r`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ code: code ?? -1, screen });
    });
  });
}

function scriptAvailable(): boolean {
  const ok = spawnSync("script", ["-qefc", "true", "/dev/null"]).status === 0;
  if (!ok && IN_CI) throw new Error("util-linux script is needed for the terminal tests under CI");
  return ok;
}
const PTY = scriptAvailable();

describe("seed 002 README: backups", () => {
  it("1. MySQL: --db mysql --host localhost --user root --database mydb --output ./backups", async (ctx) => {
    if (!myOk) return ctx.skip();
    const cwd = workdir("ex1");
    // As in the README; run without a terminal (cron, CI): no prompt, root has no password here.
    const r = dbkeep(["backup", "--db", "mysql", "--host", "localhost", "--user", "root", "--database", MY_DB, "--output", "./backups"], { cwd });
    expect(r.stderr).toContain(`note: DBVault form; the native equivalent is: dbkeep backup mysql://root@localhost/${MY_DB} --to ./backups --verify`);
    const files = dataFiles(join(cwd, "backups"));
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(new RegExp(`^${MY_DB}/${MY_DB}-\\d{8}-\\d{6}\\.sql\\.gz$`));
    expect(gunzipSync(readFileSync(join(cwd, "backups", files[0]!))).toString()).toContain("INSERT INTO `orders`");
    // What a user checks: it restores to the same content.
    const back = dbkeep(["restore", "./backups", "latest", "--to", `mysql://root@127.0.0.1:3306/${MY_DB}_r1`, "--auto-confirm"], { cwd });
    expect(back.stderr).not.toMatch(/error/i);
    expect(await myContent(`${MY_DB}_r1`)).toEqual(await myContent(MY_DB));
  });

  it.skipIf(!PTY)("2. PostgreSQL with --encrypt and no key, on a terminal: asks for the password, shows a new key once, and that key restores", async (ctx) => {
    if (!pgOk) return ctx.skip();
    const cwd = workdir("ex2");
    // The README's line, with the local host and user; trust auth takes any password, so an empty answer is fine.
    const r = await inPty(["backup", "--db", "postgres", "--host", "127.0.0.1", "--user", "postgres", "--database", PG_DB, "--output", "./backups", "--encrypt"], { cwd, answer: "" });
    expect(r.screen).toMatch(/Password for postgres: /);
    const key = /AGE-SECRET-KEY-1[0-9A-Z]+/.exec(r.screen)?.[0];
    expect(key, r.screen).toBeDefined();
    expect(r.screen).toMatch(/note: DBVault form; the native equivalent is: dbkeep backup postgres:\/\/postgres@127\.0\.0\.1\/seed002_analytics --to \.\/backups -r age1[0-9a-z]+ --verify/);
    const files = dataFiles(join(cwd, "backups"));
    expect(files).toEqual([expect.stringMatching(new RegExp(`^${PG_DB}/${PG_DB}-\\d{8}-\\d{6}\\.sql\\.gz\\.age$`))]);
    writeFileSync(join(cwd, "key.txt"), `${key}\n`, { mode: 0o600 });
    const back = dbkeep(["restore", "./backups", "latest", "--to", `postgres://postgres@127.0.0.1:5432/${PG_DB}_r1`, "-i", "key.txt", "--auto-confirm"], { cwd });
    expect(back.stderr).not.toMatch(/error/i);
    expect(await pgContent(`${PG_DB}_r1`)).toEqual(await pgContent(PG_DB));
  });

  it("2. without a terminal, --encrypt with no key is refused before anything runs, and says how to make a key", async (ctx) => {
    if (!pgOk) return ctx.skip();
    const cwd = workdir("ex2-cron");
    const r = dbkeep(["backup", "--db", "postgres", "--host", "127.0.0.1", "--user", "postgres", "--database", PG_DB, "--output", "./backups", "--encrypt"], { cwd });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--encrypt without --key");
    expect(r.stderr).toContain("dbkeep keygen --save key.txt");
    expect(dataFiles(join(cwd, "backups"))).toEqual([]);
  });

  it("2. keygen --save, then --encrypt --key FILE; a Fernet key given to --key is refused with the way forward", async (ctx) => {
    if (!pgOk) return ctx.skip();
    const cwd = workdir("ex2-key");
    const home = workdir("ex2-home");
    const g = dbkeep(["keygen", "--save", join(home, ".dbvault.key")], { cwd, env: { HOME: home } });
    expect(g.stdout).toMatch(/^age1[0-9a-z]+\n$/);
    expect(g.stderr).toContain("dbkeep encrypts with age");
    expect(readFileSync(join(home, ".dbvault.key"), "utf8")).toMatch(/^AGE-SECRET-KEY-1/m);
    expect(statSync(join(home, ".dbvault.key")).mode & 0o077).toBe(0);

    const r = dbkeep(["backup", "--db", "postgres", "--host", "127.0.0.1", "--user", "postgres", "--database", PG_DB, "--output", "./backups", "--encrypt", "--key", join(home, ".dbvault.key")], { cwd });
    expect(r.stderr).toContain(`-r ${g.stdout.trim()}`);
    const back = dbkeep(["restore", "./backups", "latest", "--to", `postgres://postgres@127.0.0.1:5432/${PG_DB}_r2`, "-i", join(home, ".dbvault.key"), "--auto-confirm"], { cwd });
    expect(back.stderr).not.toMatch(/error/i);
    expect(await pgContent(`${PG_DB}_r2`)).toEqual(await pgContent(PG_DB));

    const fernet = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const f = dbkeep(["backup", "--db", "postgres", "--host", "127.0.0.1", "--user", "postgres", "--database", PG_DB, "--output", "./other", "--encrypt", "--key", fernet], { cwd });
    expect(f.code).toBe(2);
    expect(f.stderr).toContain("--key is a Fernet key: dbkeep encrypts backups with age");
    expect(f.stderr).toContain("dbkeep decrypt --file FILE.enc --key KEY");
    expect(f.stderr).not.toContain(fernet);
    expect(dataFiles(join(cwd, "other"))).toEqual([]);
  });

  it.skipIf(!PTY)("3. MySQL with --encrypt to S3 with --s3-owner: one dump in ./backups and in the bucket, the same bytes", async (ctx) => {
    if (!myOk) return ctx.skip();
    const cwd = workdir("ex3");
    const env = { AWS_ENDPOINT_URL: s3!.endpoint, AWS_ACCESS_KEY_ID: S3RVER_KEY.accessKeyId, AWS_SECRET_ACCESS_KEY: S3RVER_KEY.secretAccessKey, AWS_REGION: "us-east-1" };
    const r = await inPty(
      ["backup", "--db", "mysql", "--host", "localhost", "--user", "root", "--database", MY_DB, "--output", "./backups", "--encrypt", "--cloud", "s3", "--s3-bucket", "my-backup-bucket", "--s3-owner", "123456789012"],
      { cwd, env, answer: "" },
    );
    expect(r.code, r.screen).toBe(0);
    expect(r.screen).toContain(`--to ./backups --to 's3://my-backup-bucket?endpoint=`);
    expect(r.screen).toContain("expected_bucket_owner=123456789012");
    const key = /AGE-SECRET-KEY-1[0-9A-Z]+/.exec(r.screen)?.[0];
    expect(key).toBeDefined();
    const [local] = dataFiles(join(cwd, "backups"));
    expect(local).toMatch(/\.sql\.gz\.age$/);
    // s3rver keeps each object as a file named after its key; the object has the same bytes as the local copy.
    const remote = spawnSync("find", [s3!.dir, "-name", "*._S3rver_object"], { encoding: "utf8" }).stdout.split("\n").filter((l) => l.endsWith(`/${local!.split("/")[1]}._S3rver_object`));
    expect(remote).toHaveLength(1);
    expect(readFileSync(remote[0]!).equals(readFileSync(join(cwd, "backups", local!)))).toBe(true);
    writeFileSync(join(cwd, "key.txt"), `${key}\n`, { mode: 0o600 });
    const back = dbkeep(["restore", `s3://my-backup-bucket?endpoint=${s3!.endpoint}`, "latest", "--to", `mysql://root@127.0.0.1:3306/${MY_DB}_r2`, "-i", "key.txt", "--auto-confirm"], { cwd, env });
    expect(back.stderr).not.toMatch(/error/i);
    expect(await myContent(`${MY_DB}_r2`)).toEqual(await myContent(MY_DB));
  });

  it("5. MinIO (--cloud minio --minio-endpoint --minio-bucket, MINIO_ACCESS_KEY/MINIO_SECRET_KEY); SQLite as the README's development example", () => {
    // The README's example 5 backs up MongoDB, which cannot run on this machine: the same flags with the SQLite
    // command of its "Run the CLI from source" section.
    const cwd = workdir("ex5");
    const db = new Database(join(cwd, "my.db"));
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('one'), ('two'), ('three');");
    db.close();
    const env = { MINIO_ACCESS_KEY: S3RVER_KEY.accessKeyId, MINIO_SECRET_KEY: S3RVER_KEY.secretAccessKey };
    const r = dbkeep(["backup", "--db", "sqlite", "--database", "./my.db", "--output", "./out", "--cloud", "minio", "--minio-endpoint", s3!.endpoint, "--minio-bucket", "my-backup-bucket", "--minio-object", "nightly/my.db.gz", "--async-mode"], { cwd, env });
    expect(r.stderr).toContain("--async-mode is ignored");
    expect(r.stderr).toContain("--minio-object nightly/my.db.gz: dbkeep names each backup's objects itself");
    expect(r.stderr).toContain("they go under the prefix nightly/");
    expect(r.stderr).not.toContain(S3RVER_KEY.secretAccessKey + "@");
    expect(dataFiles(join(cwd, "out"))).toEqual([expect.stringMatching(/^my\/my-\d{8}-\d{6}\.db\.gz$/)]);
    const back = dbkeep(["restore", `s3://my-backup-bucket/nightly?endpoint=${s3!.endpoint}&access_key_env=MINIO_ACCESS_KEY&secret_key_env=MINIO_SECRET_KEY`, "latest", "--to", "sqlite:./restored.db"], { cwd, env });
    expect(back.stderr).not.toMatch(/error/i);
    expect(sqliteContent(join(cwd, "restored.db"))).toEqual(sqliteContent(join(cwd, "my.db")));
  });

  it("Azure (--cloud azure --azure-conn-str --azure-container --azure-blob) into Azurite: the string stays out of every output", async (ctx) => {
    if (!azuriteAvailable()) return ctx.skip();
    const cwd = workdir("azure");
    const db = new Database(join(cwd, "my.db"));
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('x'), ('y');");
    db.close();
    const azurite = await startAzurite();
    try {
      await BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("dbvault").create();
      const r = await dbkeepAsync(["backup", "--db", "sqlite", "--database", join(cwd, "my.db"), "--output", join(cwd, "out"), "--cloud", "azure", "--azure-conn-str", azurite.connectionString, "--azure-container", "dbvault", "--azure-blob", "daily/my.db.gz"]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain("a connection string on the command line (--azure-conn-str) is visible");
      expect(r.stderr).toContain("AZURE_STORAGE_CONNECTION_STRING=*** dbkeep backup sqlite:");
      expect(r.stderr + r.stdout).not.toContain(AZURITE_KEY);
      const names: string[] = [];
      for await (const b of BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient("dbvault").listBlobsFlat()) names.push(b.name);
      const [local] = dataFiles(join(cwd, "out"));
      expect(names).toContain(`daily/${local}`);
      const back = await dbkeepAsync(["restore", "azure://dbvault/daily", "latest", "--to", `sqlite:${join(cwd, "restored.db")}`], { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString });
      expect(back.stderr).not.toMatch(/error/i);
      expect(sqliteContent(join(cwd, "restored.db"))).toEqual(sqliteContent(join(cwd, "my.db")));
    } finally {
      await azurite.stop();
    }
  });

  it("4. GCS (--cloud gcp --gcp-bucket BUCKET --gcp-blob NAME): the backup lands in the bucket under the blob's directory and restores from there (a local stand-in of the GCS API named by DBKEEP_GCS_ENDPOINT)", async () => {
    const cwd = workdir("gcs");
    const db = new Database(join(cwd, "my.db"));
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('g'), ('cs');");
    db.close();
    const fake = await startGcsFake({ buckets: ["dbvault-gcs"] });
    try {
      const env = { DBKEEP_GCS_ENDPOINT: fake.endpoint };
      const r = await dbkeepAsync(["backup", "--db", "sqlite", "--database", join(cwd, "my.db"), "--output", join(cwd, "out"), "--cloud", "gcp", "--gcp-bucket", "dbvault-gcs", "--gcp-blob", "nightly/my.db.gz"], env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain("dbkeep backup sqlite:");
      const [local] = dataFiles(join(cwd, "out"));
      expect(fake.objects("dbvault-gcs")).toContain(`nightly/${local}`);
      const back = await dbkeepAsync(["restore", `gs://dbvault-gcs/nightly?endpoint=${encodeURIComponent(fake.endpoint)}`, "latest", "--to", `sqlite:${join(cwd, "restored.db")}`]);
      expect(back.code, back.stderr).toBe(0);
      expect(sqliteContent(join(cwd, "restored.db"))).toEqual(sqliteContent(join(cwd, "my.db")));
    } finally {
      await fake.stop();
    }
  });
  it.skip("5. as written (--db mongo): MongoDB cannot run on this machine");
});

describe("seed 002: passwords", () => {
  it.skipIf(!PTY)("with --password left out on a terminal, asks without echo, and the password reaches the dump tool only through its environment", async (ctx) => {
    if (!myOk) return ctx.skip();
    const cwd = workdir("pw-prompt");
    const r = await inPty(["backup", "--db", "mysql", "--host", "127.0.0.1", "--user", MY_USER, "--database", MY_DB, "--output", "./backups"], { cwd, answer: MY_PASSWORD });
    expect(r.code, r.screen).toBe(0);
    expect(r.screen).toContain(`Password for ${MY_USER}: `);
    expect(r.screen).not.toContain(MY_PASSWORD);
    expect(r.screen).toContain(`MYSQL_PWD=*** dbkeep backup mysql://${MY_USER}@127.0.0.1/${MY_DB} --to ./backups`);
    expect(dataFiles(join(cwd, "backups"))).toHaveLength(1);
    const back = dbkeep(["restore", "./backups", "latest", "--to", `mysql://root@127.0.0.1:3306/${MY_DB}_r3`, "--auto-confirm"], { cwd });
    expect(back.stderr).not.toMatch(/error/i);
    expect(await myContent(`${MY_DB}_r3`)).toEqual(await myContent(MY_DB));
  });

  it("a wrong password typed at the prompt fails the backup, and nothing is kept", async (ctx) => {
    if (!myOk || !PTY) return ctx.skip();
    const cwd = workdir("pw-wrong");
    const r = await inPty(["backup", "--db", "mysql", "--host", "127.0.0.1", "--user", MY_USER, "--database", MY_DB, "--output", "./backups"], { cwd, answer: "not-the-password" });
    expect(r.code).toBe(1);
    expect(r.screen).toMatch(/Access denied/);
    expect(r.screen).not.toContain("not-the-password");
    expect(dataFiles(join(cwd, "backups"))).toEqual([]);
  });

  it("--password on the command line works with the URL warning; it is in no child's argument list and in no output", async (ctx) => {
    if (!myOk) return ctx.skip();
    const out = workdir("pw-flag");
    const run = await runWatchingChildren(["backup", "--db", "mysql", "--host", "127.0.0.1", "--user", MY_USER, "--password", MY_PASSWORD, "--database", MY_DB, "--output", join(out, "backups")], {});
    expect(run.code, run.output).toBe(0);
    expect(run.output).toContain("a password on the command line (--password) is visible to other users in the process list; use MYSQL_PWD");
    expect(run.output).not.toContain(MY_PASSWORD);
    const tools = run.procs.filter((p) => /mariadb-dump|mysqldump/.test(p.cmdline));
    expect(tools.length).toBeGreaterThan(0);
    // dbkeep's own argument list holds what the user typed (hence the warning); no process it starts does.
    for (const p of run.procs.filter((p) => !p.cmdline.includes(CLI))) expect(p.cmdline).not.toContain(MY_PASSWORD);
    const files = dataFiles(join(out, "backups"));
    expect(files).toHaveLength(1);
    const manifest = readdirSync(join(out, "backups", MY_DB)).find((n) => n.endsWith(".manifest.json"))!;
    expect(readFileSync(join(out, "backups", MY_DB, manifest), "utf8")).not.toContain(MY_PASSWORD);
  });
});

describe("seed 002: old .enc files", () => {
  it.skipIf(!PY && !IN_CI)("4. decrypt --file ./backups/backup.sql.gz.enc --key K: a dump DBVault's way encrypted (pg_dump | gzip | Fernet in Python) comes back and loads", async (ctx) => {
    if (!pgOk) return ctx.skip();
    if (!PY) throw new Error("python3 with the cryptography package is needed under CI");
    const cwd = workdir("dec");
    mkdirSync(join(cwd, "backups"));
    const dump = execFileSync("pg_dump", ["-h", PG.host, "-p", String(PG.port), "-U", PG.user, PG_DB]);
    writeFileSync(join(cwd, "dump.sql"), dump);
    const key = execFileSync(PY, ["-c", "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"], { encoding: "utf8" }).trim();
    execFileSync(PY, ["-c", "import gzip, os, sys\nfrom cryptography.fernet import Fernet\nopen('backups/backup.sql.gz.enc','wb').write(Fernet(os.environ['K'].encode()).encrypt(gzip.compress(open('dump.sql','rb').read())))"], { cwd, env: { ...process.env, K: key } });

    // As the README writes it: the key on the command line (warned about), the plain file beside the .enc.
    const r = dbkeep(["decrypt", "--file", "./backups/backup.sql.gz.enc", "--key", key], { cwd });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe("backups/backup.sql.gz");
    expect(r.stderr).toContain("a key on the command line is visible");
    expect(r.stderr).not.toContain(key);
    expect(gunzipSync(readFileSync(join(cwd, "backups/backup.sql.gz"))).equals(dump)).toBe(true);
    await createDb(`${PG_DB}_r3`);
    execFileSync("psql", ["-h", PG.host, "-p", String(PG.port), "-U", PG.user, "-q", "-v", "ON_ERROR_STOP=1", "-d", `${PG_DB}_r3`], { input: gunzipSync(readFileSync(join(cwd, "backups/backup.sql.gz"))) });
    expect(await pgContent(`${PG_DB}_r3`)).toEqual(await pgContent(PG_DB));

    // The key from the file `dbvault keygen --save` wrote; a wrong key writes nothing.
    writeFileSync(join(cwd, "dbvault.key"), `${key}\n`, { mode: 0o600 });
    const again = dbkeep(["decrypt", "--file", "./backups/backup.sql.gz.enc", "--key", "dbvault.key", "-o", "copy.sql.gz"], { cwd });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toContain("visible");
    expect(readFileSync(join(cwd, "copy.sql.gz")).equals(readFileSync(join(cwd, "backups/backup.sql.gz")))).toBe(true);
    const wrongKey = execFileSync(PY, ["-c", "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"], { encoding: "utf8" }).trim();
    const wrong = dbkeep(["decrypt", "--file", "./backups/backup.sql.gz.enc", "--key", wrongKey, "-o", "wrong.sql.gz"], { cwd });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("wrong key");
    expect(existsSync(join(cwd, "wrong.sql.gz"))).toBe(false);
  });

  it("5. keygen prints a key as DBVault's did (an age identity here), and the native decrypt still reads age files", () => {
    const r = dbkeep(["keygen"]);
    expect(r.stdout).toMatch(/^AGE-SECRET-KEY-1[0-9A-Z]+$/m);
    expect(r.stderr).toMatch(/Public key: age1/);
  });

  it("seed-002 flags without --db are named, not ignored", () => {
    const r = dbkeep(["backup", "--output", "./x", "--encrypt"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--output, --encrypt belong to the DBVault form, which needs --db ENGINE");
  });
});
