import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeep, dropDb, PG, pgAvailable, pgQuery, pgUrl, tempDir } from "../helpers/env.js";
import { dropDatabasesLike, myAvailable, myQuery } from "../helpers/mysql.js";
import { contentOf as myContentOf } from "../helpers/mysql.js";

const SRC = "dbkeep_it_partial_src";
const DST = "dbkeep_it_partial_dst";
const pgUp = await pgAvailable();
const myUp = await myAvailable();

interface ManifestLike {
  manifest_version: number;
  selection?: { patterns: Record<string, string[]>; tables: string[] };
  tables?: { name: string }[];
}

function manifests(dir: string): ManifestLike[] {
  const out: ManifestLike[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith(".manifest.json")) out.push(JSON.parse(readFileSync(join(d, e.name), "utf8")) as ManifestLike);
    }
  };
  walk(dir);
  return out;
}

/** Every row of a table, as text, in order: what a user compares. */
async function rowsOf(db: string, table: string): Promise<string[]> {
  return (await pgQuery<{ r: string }>(db, `SELECT x::text AS r FROM ${table} x ORDER BY 1`)).map((x) => x.r);
}

describe.skipIf(!pgUp)("partial backups of PostgreSQL", () => {
  let dir: string;
  beforeAll(async () => {
    dir = tempDir("dbkeep-partial-");
    await createDb(SRC);
    await createDb(DST);
    await pgQuery(
      SRC,
      `CREATE SCHEMA app;
       CREATE TABLE app.users (id serial PRIMARY KEY, name text NOT NULL);
       CREATE TABLE app."Mixed.Case" (id int PRIMARY KEY, note text);
       CREATE TABLE public.orders (id int PRIMARY KEY, user_id int, total numeric(10,2));
       CREATE TABLE public.orders_archive (id int PRIMARY KEY);
       CREATE TABLE public.audit (at timestamptz DEFAULT now(), what text);
       INSERT INTO app.users (name) SELECT 'user ' || g FROM generate_series(1, 50) g;
       INSERT INTO app."Mixed.Case" VALUES (1, 'dots and case');
       INSERT INTO public.orders SELECT g, g % 50 + 1, g * 1.5 FROM generate_series(1, 200) g;
       INSERT INTO public.orders_archive VALUES (1), (2);
       INSERT INTO public.audit (what) VALUES ('x');`,
    );
  });
  afterAll(async () => {
    await dropDb(SRC);
    await dropDb(DST);
  });

  it("--table backs up only the matching tables, records the selection, and restores just those into the existing target", async () => {
    await pgQuery(DST, `CREATE SCHEMA app; CREATE TABLE app.users (id int PRIMARY KEY, name text); INSERT INTO app.users VALUES (999, 'stale');
                        CREATE TABLE keepme (k int); INSERT INTO keepme VALUES (42); CREATE TABLE public.orders_archive (id int); INSERT INTO orders_archive VALUES (7)`);
    const store = join(dir, "one-off");
    const b = dbkeep(["backup", pgUrl(SRC, "format=custom"), "--to", store, "--table", "app.*", "--table", "Orders"]);
    expect(b.code, b.stderr).toBe(0);
    const [m] = manifests(store);
    expect(m?.manifest_version).toBe(2);
    // A custom-format dump holds no schema: the restore checks that the target has it (see below).
    expect(m?.selection).toEqual({ patterns: { tables: ["app.*", "Orders"] }, tables: ["app.Mixed.Case", "app.users", "public.orders"], requires: ["schema app"] });
    expect(dbkeep(["list", store]).stdout).toMatch(/KIND[\s\S]*partial: 3 table\(s\)/);
    expect(m?.tables?.map((t) => t.name).sort()).toEqual(["app.Mixed.Case", "app.users", "public.orders"]);

    // Without a terminal and --auto-confirm the restore refuses, naming only the selected tables that exist.
    const refused = dbkeep(["restore", store, "latest", "--to", pgUrl(DST)]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("app.users");
    expect(refused.stderr).not.toContain("keepme");
    expect(await rowsOf(DST, "app.users")).toEqual(["(999,stale)"]);

    const r = dbkeep(["restore", store, "latest", "--to", pgUrl(DST), "--auto-confirm"]);
    expect(r.code, r.stderr).toBe(0);
    for (const t of ["app.users", 'app."Mixed.Case"', "public.orders"]) expect(await rowsOf(DST, t)).toEqual(await rowsOf(SRC, t));
    expect(await rowsOf(DST, "keepme")).toEqual(["(42)"]);
    expect(await rowsOf(DST, "public.orders_archive")).toEqual(["(7)"]);
    expect(await pgQuery(DST, "SELECT 1 FROM pg_class WHERE relname = 'audit'")).toEqual([]);
    // The sequence of a selected table comes along.
    expect(await pgQuery(DST, "SELECT last_value::int AS v FROM app.users_id_seq")).toEqual([{ v: 50 }]);
  });

  it("a damaged partial backup leaves the target as it was (restored in one transaction, the checksum known only at the end)", async () => {
    await pgQuery(DST, "CREATE TABLE IF NOT EXISTS public.orders (id int PRIMARY KEY, user_id int, total numeric(10,2)); INSERT INTO public.orders VALUES (1, 1, 1) ON CONFLICT DO NOTHING");
    for (const format of ["plain", "custom"]) {
      const store = join(dir, `damaged-${format}`);
      const b = dbkeep(["backup", pgUrl(SRC, `format=${format}&compression=none`), "--to", store, "--table", "public.orders"]);
      expect(b.code, b.stderr).toBe(0);
      const file = readdirSync(join(store, SRC)).find((f) => f.endsWith(format === "plain" ? ".sql" : ".dump"))!;
      const path = join(store, SRC, file);
      const bytes = readFileSync(path);
      // A digit of a row near the end of the data: the dump still parses, only its checksum tells.
      const at = bytes.lastIndexOf(Buffer.from("199\t")) > 0 ? bytes.lastIndexOf(Buffer.from("199\t")) : bytes.lastIndexOf(Buffer.from("199"));
      expect(at).toBeGreaterThan(0);
      bytes[at] = "7".charCodeAt(0);
      writeFileSync(path, bytes);
      await pgQuery(DST, "UPDATE public.orders SET total = -1");
      const r = dbkeep(["restore", store, "latest", "--to", pgUrl(DST), "--auto-confirm"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/checksum|SHA-256/i);
      expect(await pgQuery(DST, "SELECT DISTINCT total::text AS t FROM public.orders")).toEqual([{ t: "-1.00" }]);
    }
  });

  it("job keys exclude schemas and tables (plain format); a pattern that matches nothing fails the backup", async () => {
    const cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${SRC} }
  dst: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${DST} }
stores:
  local: { type: local, path: ${join(dir, "cfg")} }
jobs:
  most:
    datasource: src
    store: local
    exclude_schemas: [app]
    exclude_tables: ["orders_*"]
  typo:
    datasource: src
    store: local
    prefix: typo
    tables: [ordres]
`,
    );
    const b = dbkeep(["-c", cfg, "backup", "most"]);
    expect(b.code, b.stderr).toBe(0);
    const [m] = manifests(join(dir, "cfg"));
    expect(m?.selection?.tables).toEqual(["public.audit", "public.orders"]);
    await pgQuery(DST, "UPDATE public.orders SET total = 0");
    const r = dbkeep(["-c", cfg, "restore", "most", "--to", "dst", "--auto-confirm"]);
    expect(r.code, r.stderr).toBe(0);
    expect(await rowsOf(DST, "public.orders")).toEqual(await rowsOf(SRC, "public.orders"));
    expect(await rowsOf(DST, "public.audit")).toEqual(await rowsOf(SRC, "public.audit"));
    expect(await rowsOf(DST, "keepme")).toEqual(["(42)"]);

    const t = dbkeep(["-c", cfg, "backup", "typo"]);
    expect(t.code).toBe(1);
    expect(t.stderr).toMatch(/table pattern "ordres" matches no table of database dbkeep_it_partial_src/);
  });
});

const MSRC = "dbkeep_it_mpartial_src";
const MDST = "dbkeep_it_mpartial_dst";

describe.skipIf(!myUp)("partial backups of MariaDB", () => {
  let dir: string;
  beforeAll(async () => {
    dir = tempDir("dbkeep-mpartial-");
    await dropDatabasesLike("dbkeep_it_mpartial_");
    await myQuery(
      `CREATE DATABASE ${MSRC}; CREATE DATABASE ${MDST}; USE ${MSRC};
       CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40), photo BLOB);
       CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, FOREIGN KEY (customer_id) REFERENCES customers(id));
       CREATE TABLE log_2024 (line TEXT); CREATE TABLE log_2025 (line TEXT);
       INSERT INTO customers (name, photo) VALUES ('a', 0x00ff10), ('b''s', NULL);
       INSERT INTO orders VALUES (1, 1), (2, 2);
       INSERT INTO log_2024 VALUES ('old'); INSERT INTO log_2025 VALUES ('new');
       USE ${MDST};
       CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40)); INSERT INTO customers VALUES (9, 'stale');
       CREATE TABLE keepme (k INT); INSERT INTO keepme VALUES (42);`,
    );
  });
  afterAll(async () => {
    await dropDatabasesLike("dbkeep_it_mpartial_");
  });

  it("globs are expanded against the database, and restore replaces only the chosen tables", async () => {
    const store = join(dir, "store");
    const b = dbkeep(["backup", `mysql://root@127.0.0.1:3306/${MSRC}?tables=customers,log_*,orders&exclude_tables=log_2024`, "--to", store]);
    expect(b.code, b.stderr).toBe(0);
    const [m] = manifests(store);
    expect(m?.selection?.tables).toEqual(["customers", "log_2025", "orders"]);
    const r = dbkeep(["restore", store, "latest", "--to", `mysql://root@127.0.0.1:3306/${MDST}`, "--auto-confirm"]);
    expect(r.code, r.stderr).toBe(0);
    const src = await myContentOf(MSRC);
    const dst = await myContentOf(MDST);
    for (const t of ["customers", "orders", "log_2025"]) expect(dst[`table ${t}`]).toBe(src[`table ${t}`]);
    expect(dst["table keepme"]).toBe(src["table keepme"] ?? dst["table keepme"]);
    expect(await myQuery("SELECT k FROM keepme", MDST)).toEqual([["42"]]);
    expect(dst["table log_2024"]).toBeUndefined();

    const bad = dbkeep(["backup", `mysql://root@127.0.0.1:3306/${MSRC}`, "--to", store, "--table", "nothing_*"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/table pattern "nothing_\*" matches no table of database dbkeep_it_mpartial_src/);
  });

  it("a table whose default draws from a sequence restores, sequence and all, into a database that did not exist; a failed restore leaves none", async () => {
    const fresh = "dbkeep_it_mpartial_new";
    await myQuery(
      `CREATE SEQUENCE note_seq; CREATE TABLE notes (id INT NOT NULL DEFAULT NEXTVAL(note_seq) PRIMARY KEY, body TEXT);
       INSERT INTO notes (body) VALUES ('first'), ('second');`,
      MSRC,
    );
    const store = join(dir, "seq");
    const b = dbkeep(["backup", `mysql://root@127.0.0.1:3306/${MSRC}?compression=none`, "--to", store, "--table", "notes"]);
    expect(b.code, b.stderr).toBe(0);
    const r = dbkeep(["restore", store, "latest", "--to", `mysql://root@127.0.0.1:3306/${fresh}`, "--auto-confirm"]);
    expect(r.code, r.stderr).toBe(0);
    expect((await myContentOf(fresh))["table notes"]).toBe((await myContentOf(MSRC))["table notes"]);
    expect(await myQuery("SELECT next_not_cached_value FROM note_seq", fresh)).toEqual(await myQuery("SELECT next_not_cached_value FROM note_seq", MSRC));

    await myQuery(`DROP DATABASE ${fresh}`);
    const file = readdirSync(join(store, MSRC)).find((f) => f.endsWith(".sql"))!;
    const bytes = readFileSync(join(store, MSRC, file));
    const at = bytes.lastIndexOf(Buffer.from("second"));
    expect(at).toBeGreaterThan(0);
    bytes[at] = "S".charCodeAt(0);
    writeFileSync(join(store, MSRC, file), bytes);
    const damaged = dbkeep(["restore", store, "latest", "--to", `mysql://root@127.0.0.1:3306/${fresh}`, "--auto-confirm"]);
    expect(damaged.code).toBe(1);
    expect(damaged.stderr).toMatch(/checksum|SHA-256/i);
    expect(await myQuery(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '${fresh}%'`)).toEqual([]);
  });
});

const FIXTURES = join(import.meta.dirname, "../fixtures/sample-schemas");
const PSRC = "dbkeep_it_partial_pagila";
const PNEW = "dbkeep_it_partial_pagila_new";
const PSHAPED = "dbkeep_it_partial_pagila_shaped";

function psqlFile(db: string, file: string): void {
  execFileSync("psql", ["-X", "-q", "-h", PG.host, "-p", String(PG.port), "-U", PG.user, "-v", "ON_ERROR_STOP=1", "-f", file, db], { stdio: ["ignore", "ignore", "pipe"] });
}
const databaseExists = async (db: string) => (await pgQuery("postgres", "SELECT 1 FROM pg_database WHERE datname = $1", [db])).length > 0;

/**
 * pagila's tables call nextval() on sequences they do not own, use an enum (mpaa_rating) and a domain (year), and
 * their triggers call a function of pagila's (last_updated): pg_dump --table carries none of that.
 */
describe.skipIf(!pgUp)("partial backups of pagila tables (PostgreSQL)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = tempDir("dbkeep-ppagila-");
    for (const d of [PNEW, PSHAPED]) await dropDb(d);
    await createDb(PSRC);
    for (const f of ["pagila-schema.sql", "pagila-data.sql"]) psqlFile(PSRC, join(FIXTURES, f));
  });
  afterAll(async () => {
    for (const d of [PSRC, PNEW, PSHAPED]) await dropDb(d);
  });
  const selected = ["--table", "actor", "--table", "film", "--table", "language"];

  it("a plain partial backup carries its sequences, enum, domain and trigger function: it restores into a new database, and again over it", async () => {
    const store = join(dir, "plain");
    const b = dbkeep(["backup", pgUrl(PSRC), "--to", store, ...selected]);
    expect(b.code, b.stderr).toBe(0);
    for (let round = 1; round <= 2; round++) {
      const r = dbkeep(["restore", store, "latest", "--to", pgUrl(PNEW), "--auto-confirm"]);
      expect(r.code, `round ${round}: ${r.stderr}`).toBe(0);
      for (const t of ["public.actor", "public.film", "public.language"]) expect(await rowsOf(PNEW, t)).toEqual(await rowsOf(PSRC, t));
      for (const seq of ["actor_actor_id_seq", "film_film_id_seq", "language_language_id_seq"]) {
        expect(await pgQuery(PNEW, `SELECT last_value::text AS v FROM ${seq}`)).toEqual(await pgQuery(PSRC, `SELECT last_value::text AS v FROM ${seq}`));
      }
    }
    expect(await pgQuery(PNEW, "SELECT count(*)::int AS n FROM pg_class WHERE relname IN ('customer', 'store', 'payment')")).toEqual([{ n: 0 }]);
    // The restored tables work as in pagila: defaults from the sequences, the enum, the domain, the trigger.
    const [row] = await pgQuery<{ film_id: number; last_update: string }>(
      PNEW,
      `INSERT INTO film (title, language_id, rating, release_year) VALUES ('NEW FILM', 1, 'NC-17', 2024) RETURNING film_id, last_update::text`,
    );
    const [src] = await pgQuery<{ v: number }>(PSRC, "SELECT last_value::int AS v FROM film_film_id_seq");
    expect(row?.film_id).toBe((src?.v ?? 0) + 1);
    await expect(pgQuery(PNEW, "INSERT INTO film (title, language_id, release_year) VALUES ('TOO OLD', 1, 1800)")).rejects.toThrow(/year_check/);
    await pgQuery(PNEW, "UPDATE actor SET last_update = '2000-01-01' WHERE actor_id = 1");
    expect(await pgQuery(PNEW, "SELECT last_update > '2020-01-01' AS touched FROM actor WHERE actor_id = 1")).toEqual([{ touched: true }]);
  });

  it("a custom-format partial backup names what it does not carry: refused up front where it is missing, restored where it is there", async () => {
    const store = join(dir, "custom");
    const b = dbkeep(["backup", pgUrl(PSRC, "format=custom"), "--to", store, ...selected, "--table", "customer"]);
    expect(b.code, b.stderr).toBe(0);
    const [m] = manifests(store) as (ManifestLike & { selection?: { requires?: string[] } })[];
    expect(m?.selection?.requires).toEqual(["table public.address", "table public.store", "type public.mpaa_rating", "type public.year", "function public.last_updated()"]);

    const refused = dbkeep(["restore", store, "latest", "--to", pgUrl(PSHAPED), "--auto-confirm"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/need table public\.address, table public\.store, type public\.mpaa_rating, type public\.year, function public\.last_updated\(\), which a new database dbkeep_it_partial_pagila_shaped would lack; nothing was changed/);
    expect(await databaseExists(PSHAPED)).toBe(false);

    // A database with the referenced tables (and the rows the foreign keys need), the enum and the domain, but not
    // the trigger function.
    await createDb(PSHAPED);
    const ids = async (sql: string) => (await pgQuery<{ id: number }>(PSRC, sql)).map((x) => `(${x.id})`).join(", ");
    await pgQuery(
      PSHAPED,
      `CREATE TYPE mpaa_rating AS ENUM ('G', 'PG', 'PG-13', 'R', 'NC-17');
       CREATE DOMAIN year AS integer CONSTRAINT year_check CHECK (VALUE >= 1901 AND VALUE <= 2155);
       CREATE TABLE address (address_id integer PRIMARY KEY); CREATE TABLE store (store_id integer PRIMARY KEY);
       INSERT INTO address VALUES ${await ids("SELECT DISTINCT address_id AS id FROM customer")};
       INSERT INTO store VALUES ${await ids("SELECT DISTINCT store_id AS id FROM customer")};`,
    );
    const lacking = dbkeep(["restore", store, "latest", "--to", pgUrl(PSHAPED), "--auto-confirm"]);
    expect(lacking.code).toBe(1);
    expect(lacking.stderr).toMatch(/need function public\.last_updated\(\), which database dbkeep_it_partial_pagila_shaped lacks/);
    expect(await pgQuery(PSHAPED, "SELECT 1 FROM pg_class WHERE relname = 'film'")).toEqual([]);

    await pgQuery(PSHAPED, "CREATE FUNCTION last_updated() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.last_update = CURRENT_TIMESTAMP; RETURN NEW; END $$");
    const r = dbkeep(["restore", store, "latest", "--to", pgUrl(PSHAPED), "--auto-confirm"]);
    expect(r.code, r.stderr).toBe(0);
    for (const t of ["public.actor", "public.film", "public.language", "public.customer"]) expect(await rowsOf(PSHAPED, t)).toEqual(await rowsOf(PSRC, t));
  });

  it("a restore that fails into a database that did not exist leaves no database behind", async () => {
    await dropDb(PNEW);
    const store = join(dir, "damaged");
    const b = dbkeep(["backup", pgUrl(PSRC, "compression=none"), "--to", store, ...selected]);
    expect(b.code, b.stderr).toBe(0);
    const file = readdirSync(join(store, PSRC)).find((f) => f.endsWith(".sql"))!;
    const bytes = readFileSync(join(store, PSRC, file));
    const at = bytes.lastIndexOf(Buffer.from("PENELOPE"));
    expect(at).toBeGreaterThan(0);
    bytes[at] = "Q".charCodeAt(0);
    writeFileSync(join(store, PSRC, file), bytes);
    const r = dbkeep(["restore", store, "latest", "--to", pgUrl(PNEW), "--auto-confirm"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/checksum|SHA-256/i);
    expect(await databaseExists(PNEW)).toBe(false);
  });
});
