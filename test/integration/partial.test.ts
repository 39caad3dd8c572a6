import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, tempDir } from "../helpers/env.js";
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
    expect(m?.selection).toEqual({ patterns: { tables: ["app.*", "Orders"] }, tables: ["app.Mixed.Case", "app.users", "public.orders"] });
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
});
