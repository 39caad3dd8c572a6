import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pgAvailable, pgQuery, tempDir } from "../helpers/env.js";
import { myAvailable, myQuery } from "../helpers/mysql.js";
import { IMAGE, RUN_ID, UNAVAILABLE, run, runAsync, volumeDir } from "./podman.js";

// Seed 000's users run `docker run --rm -v config.yaml:/config/config.yaml -e SECRET=... dbbackup backup --all`:
// the config mounted read-only, secrets in the environment, the command after the image's name.
// Two jobs of one store and prefix: their databases must have different names (the key layout is
// <prefix>/<database>/..., shared by both engines).
const PGDB = `dbkeepc0p${RUN_ID}`;
const MYDB = `dbkeepc0m${RUN_ID}`;
const MYUSER = `dbkeepc0${RUN_ID}`;
// Secrets as seed 000 passes them; the MariaDB user really has this password, so a backup proves it arrived.
const SHOP_PASSWORD = `pw-${randomBytes(8).toString("hex")}`;
const APPDB_PASSWORD = `pg-${randomBytes(8).toString("hex")}`;
const SECRETS = { APPDB_PASSWORD, SHOP_PASSWORD };

const pgUp = !UNAVAILABLE && (await pgAvailable());
const myUp = !UNAVAILABLE && (await myAvailable());

const CONFIG = `datasources:
  appdb:
    engine: postgres
    host: 127.0.0.1
    port: 5432
    user: postgres
    password_env: APPDB_PASSWORD
    database: ${PGDB}
    format: custom
    compression: zstd
  shopdb:
    engine: mariadb
    host: 127.0.0.1
    port: 3306
    user: ${MYUSER}
    password_env: SHOP_PASSWORD
    database: ${MYDB}
stores:
  local:
    type: local
    path: /backups
jobs:
  appdb-backup:
    datasource: appdb
    store: local
    prefix: prod
    verify: true
    retention: { keep_last: 1 }
  shopdb-backup:
    datasource: shopdb
    store: local
    prefix: prod
    retention: { keep_last: 1 }
`;

async function pgContent(): Promise<string> {
  const rows = await pgQuery<{ h: string }>(PGDB, "SELECT md5(string_agg(id || ':' || name || ':' || price, ',' ORDER BY id)) AS h FROM items");
  return `${rows[0]!.h}/${(await pgQuery<{ n: string }>(PGDB, "SELECT count(*)::text AS n FROM items"))[0]!.n}`;
}

async function myContent(): Promise<string> {
  const rows = await myQuery("SELECT COUNT(*), MD5(GROUP_CONCAT(id, ':', sku, ':', qty ORDER BY id SEPARATOR ',')) FROM stock", MYDB);
  return rows[0]!.join("/");
}

interface Listing {
  backups: { id: string; key: string; database: string }[];
}

describe.skipIf(!pgUp || !myUp)("seed 000's usage: the config mounted at /config/config.yaml, secrets as -e", () => {
  let cfgFile: string;
  let backups: string;
  let pgBefore: string;
  let myBefore: string;
  const mount = () => [`${cfgFile}:/config/config.yaml:ro`, `${backups}:/backups`];

  beforeAll(async () => {
    const dir = tempDir("dbkeep-ctr000-");
    cfgFile = join(dir, "config.yaml");
    writeFileSync(cfgFile, CONFIG, { mode: 0o644 });
    backups = volumeDir("dbkeep-ctr000-backups-");
    await pgQuery("postgres", `CREATE DATABASE "${PGDB}"`);
    await pgQuery(PGDB, `CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2));
      INSERT INTO items (name, price) SELECT 'item ' || g, g * 1.25 FROM generate_series(1, 2000) g`);
    await myQuery(`CREATE DATABASE ${MYDB}`);
    await myQuery(`CREATE TABLE stock (id INT PRIMARY KEY, sku VARCHAR(32) NOT NULL, qty INT NOT NULL) ENGINE=InnoDB`, MYDB);
    await myQuery(`INSERT INTO stock SELECT seq, CONCAT('sku-', seq), seq % 97 FROM seq_1_to_1500`, MYDB);
    for (const host of ["localhost", "127.0.0.1"]) {
      await myQuery(`CREATE USER '${MYUSER}'@'${host}' IDENTIFIED BY '${SHOP_PASSWORD}'`);
      // The staging database of a restore is named after the target: dbkeepc0m..._dbkeep_restore_...
      await myQuery(`GRANT ALL PRIVILEGES ON \`${MYDB}%\`.* TO '${MYUSER}'@'${host}'`);
    }
    pgBefore = await pgContent();
    myBefore = await myContent();
  });

  afterAll(async () => {
    if (pgUp) await pgQuery("postgres", `DROP DATABASE IF EXISTS "${PGDB}" WITH (FORCE)`);
    if (myUp) {
      for (const [name] of await myQuery(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '${MYDB}%'`)) await myQuery(`DROP DATABASE \`${name}\``);
      for (const host of ["localhost", "127.0.0.1"]) await myQuery(`DROP USER IF EXISTS '${MYUSER}'@'${host}'`);
    }
  });

  it(`IMAGE backup --all --parallel 2 --prune, twice: each job keeps its newest backup, and restore --auto-confirm brings the data back`, async () => {
    const first = run(["backup", "--all", "--parallel", "2", "--prune"], { volumes: mount(), env: SECRETS });
    expect(first.code, first.stderr).toBe(0);
    const listFirst = run(["list", "appdb-backup", "--json"], { volumes: mount(), env: SECRETS });
    const firstIds = (JSON.parse(listFirst.stdout) as Listing).backups.map((b) => b.id);
    expect(firstIds).toHaveLength(1);
    // Backup ids are second-precise: the second run must not land in the same second.
    await new Promise((r) => setTimeout(r, 1100));
    const second = run(["backup", "--all", "--parallel", "2", "--prune"], { volumes: mount(), env: SECRETS });
    expect(second.code, second.stderr).toBe(0);

    for (const job of ["appdb-backup", "shopdb-backup"]) {
      const l = run(["list", job, "--json"], { volumes: mount(), env: SECRETS });
      expect(l.code, l.stderr).toBe(0);
      const listing = JSON.parse(l.stdout) as Listing;
      // keep_last: 1 and --prune: the first run's backup is gone, the second's is there.
      expect(listing.backups, job).toHaveLength(1);
      expect(listing.backups[0]!.key.startsWith("prod/")).toBe(true);
      if (job === "appdb-backup") expect(listing.backups[0]!.id).not.toBe(firstIds[0]);
    }
    // The plain listing a person reads: the id, the format and the key under the job's prefix.
    const text = run(["list", "shopdb-backup"], { volumes: mount(), env: SECRETS });
    expect(text.stdout).toMatch(new RegExp(`prod/${MYDB}/${MYDB}-\\d{8}-\\d{6}`));

    // What the backups are made of, on the host: files owned by the image's user under the job's prefix.
    const files = walk(backups);
    expect(files.some((f) => f.endsWith(".manifest.json") && f.includes(`/prod/${PGDB}/`))).toBe(true);
    expect(files.some((f) => f.endsWith(".manifest.json") && f.includes(`/prod/${MYDB}/`))).toBe(true);
    for (const f of files) expect(statSync(f).uid, f).toBe(10001);
    // The secrets were in the environment only: not in a file of the store, not in any output.
    for (const f of files) for (const s of Object.values(SECRETS)) expect(readFileSync(f).includes(s), f).toBe(false);
    for (const out of [first, second]) for (const s of Object.values(SECRETS)) expect(out.stdout + out.stderr).not.toContain(s);

    // Damage both databases, then restore the latest backups over them.
    await pgQuery(PGDB, "DELETE FROM items WHERE id % 3 = 0; UPDATE items SET price = 0 WHERE id < 10; INSERT INTO items (name, price) VALUES ('junk', 1)");
    await myQuery("DELETE FROM stock WHERE id > 700; UPDATE stock SET qty = -1", MYDB);
    expect(await pgContent()).not.toBe(pgBefore);
    expect(await myContent()).not.toBe(myBefore);
    const [rp, rm] = await Promise.all([
      runAsync(["restore", "appdb-backup", "--auto-confirm"], { volumes: mount(), env: SECRETS }),
      runAsync(["restore", "shopdb-backup", "--auto-confirm"], { volumes: mount(), env: SECRETS }),
    ]);
    expect(rp.code, rp.stderr).toBe(0);
    expect(rm.code, rm.stderr).toBe(0);
    expect(await pgContent()).toBe(pgBefore);
    expect(await myContent()).toBe(myBefore);
  });

  it("without the secret in the environment, backup --all stops before anything is backed up: exit 2, naming the variable", () => {
    const count = () => (JSON.parse(run(["list", "appdb-backup", "--json"], { volumes: mount(), env: SECRETS }).stdout) as Listing).backups.length;
    const before = count();
    const r = run(["backup", "--all", "--parallel", "2"], { volumes: mount(), env: { APPDB_PASSWORD } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("SHOP_PASSWORD");
    // Secrets are checked up front (docs/configuration.md): the PostgreSQL job did not run either.
    expect(count()).toBe(before);
  });

  it("DBBACKUP_CONFIG (seed 000's name) and -c point at a config mounted elsewhere; a /config file is then not needed", () => {
    const elsewhere = [`${cfgFile}:/custom/config.yaml:ro`, `${backups}:/backups`];
    const before = (JSON.parse(run(["list", "appdb-backup", "--json"], { volumes: mount(), env: SECRETS }).stdout) as Listing).backups.length;
    const b = run(["backup", "appdb-backup"], { volumes: elsewhere, env: { ...SECRETS, DBBACKUP_CONFIG: "/custom/config.yaml" } });
    expect(b.code, b.stderr).toBe(0);
    const viaEnv = run(["list", "appdb-backup", "--json"], { volumes: elsewhere, env: { ...SECRETS, DBBACKUP_CONFIG: "/custom/config.yaml" } });
    expect((JSON.parse(viaEnv.stdout) as Listing).backups).toHaveLength(before + 1);
    const viaFlag = run(["-c", "/custom/config.yaml", "list", "appdb-backup", "--json"], { volumes: elsewhere });
    expect((JSON.parse(viaFlag.stdout) as Listing).backups).toHaveLength(before + 1);
    // With nothing mounted and no variable, dbkeep says there is no config rather than doing something else.
    const none = run(["list", "appdb-backup"], { volumes: [`${backups}:/backups`] });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/no config file/);
  });

  it("the image as an unprivileged, read-only-config user: /config/config.yaml is read-only and the process is uid 10001", () => {
    const r = run(["config", "check", "--json"], { volumes: mount(), env: SECRETS });
    expect(r.code, r.stderr).toBe(0);
    const cfg = JSON.parse(r.stdout) as { datasources: Record<string, { password_env?: string }> };
    expect(cfg.datasources.shopdb?.password_env).toBe("SHOP_PASSWORD (set)");
    expect(IMAGE).toMatch(/dbkeep/);
  });
});

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}
