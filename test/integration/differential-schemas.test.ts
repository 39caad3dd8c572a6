import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeepAsync, dropDb, PG, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";
import { dropDatabasesLike, myAvailable, myQuery, mySource, contentOf as myContentOf, schemaOf as mySchemaOf } from "../helpers/mysql.js";
import { contentOf, schemaOf } from "../helpers/pgcompare.js";

/**
 * Differential chains on real-world sample schemas (test/fixtures/sample-schemas: pagila and Sakila, trimmed, plus
 * what they lack): declarative partitions, inheritance with rules that route inserts, generated and identity
 * columns, triggers (ENABLE ALWAYS too), a table without a primary key, enums and domains, sequences that are not
 * OWNED BY their column, foreign-key cycles, a materialized view, MariaDB sequences. A full backup + differential
 * must restore to exactly the source: content, sequences and counters, and the schema with its trigger states.
 */

const FIXTURES = join(import.meta.dirname, "../fixtures/sample-schemas");
const pgUp = await pgAvailable();
const myUp = await myAvailable();
const pause = () => new Promise((r) => setTimeout(r, 1100)); // backups are named by the second, DATETIME has seconds

interface Manifest {
  format: string;
  raw_bytes: number;
  differential?: { kind: string; full_tables?: { name: string; reason: string }[]; basis?: Record<string, string> };
}
function manifestsOf(dir: string): Manifest[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".manifest.json"))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as Manifest);
}

function psqlFile(db: string, file: string, user = PG.user): void {
  execFileSync("psql", ["-X", "-q", "-h", PG.host, "-p", String(PG.port), "-U", user, "-v", "ON_ERROR_STOP=1", "-f", file, db], { stdio: ["ignore", "ignore", "pipe"] });
}

const SRC = "dbkeep_it_dsch_pagila";
const DST = ["dbkeep_it_dsch_pagila_t", "dbkeep_it_dsch_pagila_u"];

describe.skipIf(!pgUp)("differential chains on pagila (PostgreSQL)", () => {
  let dir: string;
  let cfg: string;
  const run = (...args: string[]) => dbkeepAsync(["-c", cfg, ...args], {}, 120_000);

  beforeAll(async () => {
    dir = tempDir("dbkeep-dsch-");
    for (const d of [SRC, ...DST]) await createDb(d);
    for (const f of ["pagila-schema.sql", "pagila-data.sql", "pagila-additions.sql"]) psqlFile(SRC, join(FIXTURES, f));
    cfg = join(dir, "dbkeep.yaml");
    const job = `mode: differential, basis_column: last_update, basis_columns: { public.customer_audit: at }, cutoff_margin: 0`;
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${SRC} }
  tracked-dst: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${DST[0]} }
  untracked-dst: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${DST[1]} }
stores:
  local: { type: local, path: ${join(dir, "store")} }
jobs:
  tracked: { datasource: src, store: local, prefix: tracked, format: custom, compression: zstd, track_deletes: true, ${job} }
  untracked: { datasource: src, store: local, prefix: untracked, format: plain, compression: lz4, ${job} }
`,
    );
  });
  afterAll(async () => {
    for (const d of [SRC, ...DST]) await dropDb(d);
  });

  const restoreAndCompare = async (job: "tracked" | "untracked") => {
    const target = DST[job === "tracked" ? 0 : 1]!;
    const r = await run("restore", job, "--to", `${job}-dst`, "--auto-confirm");
    expect(r.code, r.stderr).toBe(0);
    expect(await contentOf(target), job).toEqual(await contentOf(SRC));
    // The schema as pg_dump prints it: trigger and rule states (ENABLE ALWAYS) are back as they were.
    expect(schemaOf(target), job).toEqual(schemaOf(SRC));
  };

  it("inserts and updates through partitions, rules, triggers, generated and identity columns restore exactly", { timeout: 300_000 }, async () => {
    for (const job of ["tracked", "untracked"]) expect((await run("backup", job)).code).toBe(0);
    await pause();
    await pgQuery(
      SRC,
      `UPDATE actor SET last_name = 'GUINESS-SMITH' WHERE actor_id = 1;
       INSERT INTO actor (first_name, last_name) VALUES ('NEW', 'ACTOR');
       INSERT INTO film (title, description, release_year, language_id, rental_duration, rental_rate, length, replacement_cost, rating, special_features)
         VALUES ('DBKEEP DIFFERENTIAL', 'A Thrilling Tale of a Backup who must Restore a Database', 2023, 1, 3, 4.99, 95, 19.99, 'NC-17', '{Trailers,"Deleted Scenes"}');
       UPDATE film SET length = 121 WHERE film_id = 2;
       INSERT INTO film_actor (actor_id, film_id) VALUES (currval('actor_actor_id_seq'), currval('film_film_id_seq'));
       INSERT INTO customer (store_id, first_name, last_name, email, address_id, active)
         VALUES (1, 'NEW', 'CUSTOMER', 'new@sakilacustomer.org', (SELECT min(address_id) FROM address), 1);
       UPDATE customer SET email = 'changed@sakilacustomer.org' WHERE customer_id = 2;
       -- A new store and its new manager: a foreign-key cycle (store.manager_staff_id, staff.store_id).
       INSERT INTO store (manager_staff_id, address_id)
         VALUES ((SELECT min(staff_id) FROM staff WHERE staff_id NOT IN (SELECT manager_staff_id FROM store)), (SELECT min(address_id) FROM address));
       INSERT INTO staff (first_name, last_name, address_id, email, store_id, active, username)
         VALUES ('New', 'Manager', (SELECT min(address_id) FROM address), 'new.manager@sakilastaff.com', currval('store_store_id_seq'), true, 'newmgr');
       UPDATE store SET manager_staff_id = currval('staff_staff_id_seq') WHERE store_id = currval('store_store_id_seq');
       -- Rentals and payments into two partitions of the declaratively partitioned payment.
       INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) VALUES ('2022-07-20 10:00:00+00', (SELECT min(inventory_id) FROM inventory), 1, currval('staff_staff_id_seq'));
       INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES
         (1, currval('staff_staff_id_seq'), currval('rental_rental_id_seq'), 3.99, '2022-07-21 10:00:00+00'),
         (1, currval('staff_staff_id_seq'), currval('rental_rental_id_seq'), 1.25, '2022-03-05 10:00:00+00');
       -- Inheritance with rules: routed to the children, and one that no rule takes stays in the parent.
       INSERT INTO payment_legacy (customer_id, staff_id, amount, payment_date) VALUES
         (1, 1, 1.99, '2007-01-20 10:00:00+00'), (2, 1, 7.99, '2007-02-20 10:00:00+00'), (3, 1, 0.50, '2008-01-01 10:00:00+00');
       UPDATE payment_legacy SET amount = 9.99 WHERE payment_id = 2;
       INSERT INTO rental_note (rental_id, note) VALUES (currval('rental_rental_id_seq'), 'new note');
       UPDATE rental_note SET note = 'returned very late' WHERE note_id = 1;
       INSERT INTO film_view_log (film_id) VALUES (2);
       REFRESH MATERIALIZED VIEW rental_by_category;`,
    );
    for (const job of ["tracked", "untracked"]) {
      const b = await run("backup", job);
      expect(b.code, b.stderr).toBe(0);
      const [full, diff] = manifestsOf(join(dir, "store", job, SRC));
      expect(full?.differential?.kind).toBe("full");
      expect(diff?.format).toBe("differential");
      expect(diff?.differential?.full_tables).toEqual(
        expect.arrayContaining([
          { name: "public.film_view_log", reason: "no primary key" },
          { name: "public.payment", reason: "no column last_update" },
        ]),
      );
      expect(diff?.differential?.basis).toMatchObject({ "public.payment_legacy": "last_update", "public.payment_legacy_p2007_01": "last_update", "public.customer_audit": "at" });
    }
    for (const job of ["tracked", "untracked"] as const) await restoreAndCompare(job);
  });

  it("deletes (track_deletes) across partitions, inheritance children and a table without a primary key", { timeout: 300_000 }, async () => {
    await pause();
    await pgQuery(
      SRC,
      `DELETE FROM film_actor WHERE actor_id = 1;
       DELETE FROM payment WHERE amount = 1.25;
       DELETE FROM payment_legacy WHERE payment_date < '2007-02-01';
       DELETE FROM rental_note WHERE note_id = 2;
       DELETE FROM film_view_log WHERE film_id = 1;
       UPDATE customer SET active = 0 WHERE customer_id = 3;
       REFRESH MATERIALIZED VIEW rental_by_category;`,
    );
    const b = await run("backup", "tracked");
    expect(b.code, b.stderr).toBe(0);
    expect(manifestsOf(join(dir, "store/tracked", SRC)).map((m) => m.differential?.kind)).toEqual(["full", "differential", "differential"]);
    await restoreAndCompare("tracked");
  });

  it("a new enum label, a new partition or a changed domain makes the next run a full backup", { timeout: 120_000 }, async () => {
    const kinds = () => manifestsOf(join(dir, "store/untracked", SRC)).map((m) => m.differential?.kind);
    const before = kinds().length;
    for (const change of [
      "ALTER TYPE mpaa_rating ADD VALUE 'X'",
      "CREATE TABLE payment_p2022_08 PARTITION OF payment FOR VALUES FROM ('2022-08-01 00:00:00+00') TO ('2022-09-01 00:00:00+00')",
      "ALTER DOMAIN year DROP CONSTRAINT year_check",
    ]) {
      await pause();
      await pgQuery(SRC, change);
      const b = await run("backup", "untracked");
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr, change).toMatch(/full backup: the tables or their columns changed since full backup/);
    }
    expect(kinds().slice(before)).toEqual(["full", "full", "full"]);
  });
});

const OWNER = "dbkeep_it_dsch_owner";
const OSRC = "dbkeep_it_dsch_owned";
const ODST = "dbkeep_it_dsch_owned_copy";

/**
 * Without superuser, session_replication_role cannot be set: the apply switches the triggers and rules of the tables
 * it writes (partitions included) off with ALTER TABLE as their owner, and foreign keys stay checked, so parents must
 * come first even when the keys are declared on partitions only (as pagila declares them).
 */
describe.skipIf(!pgUp)("a differential applied by the tables' owner, who is not a superuser (PostgreSQL)", () => {
  let dir: string;
  let cfg: string;
  const run = (...args: string[]) => dbkeepAsync(["-c", cfg, ...args], {}, 120_000);

  beforeAll(async () => {
    dir = tempDir("dbkeep-osch-");
    for (const d of [OSRC, ODST]) await dropDb(d);
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${OWNER}`);
    await pgQuery("postgres", `CREATE ROLE ${OWNER} LOGIN CREATEDB`);
    await pgQuery("postgres", `CREATE DATABASE ${OSRC} OWNER ${OWNER}`);
    const schema = join(dir, "owned.sql");
    writeFileSync(
      schema,
      `CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
       CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.note := coalesce(NEW.note, '') || ' [stamped]'; RETURN NEW; END$$;
       CREATE TABLE entry (account_id int NOT NULL, at date NOT NULL, n int NOT NULL, note text, updated_at timestamptz NOT NULL DEFAULT now(),
                           PRIMARY KEY (account_id, at, n)) PARTITION BY RANGE (at);
       CREATE TABLE entry_2024 PARTITION OF entry FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
       CREATE TABLE entry_2025 PARTITION OF entry FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
       CREATE TABLE ledger_account (id int PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
       ALTER TABLE entry_2024 ADD FOREIGN KEY (account_id) REFERENCES ledger_account (id);
       ALTER TABLE entry_2025 ADD FOREIGN KEY (account_id) REFERENCES ledger_account (id);
       CREATE TRIGGER touch BEFORE UPDATE ON ledger_account FOR EACH ROW EXECUTE FUNCTION touch();
       CREATE TRIGGER stamp BEFORE INSERT ON entry FOR EACH ROW EXECUTE FUNCTION stamp();
       CREATE TRIGGER stamp_always BEFORE INSERT ON entry_2025 FOR EACH ROW EXECUTE FUNCTION stamp();
       ALTER TABLE entry_2025 ENABLE ALWAYS TRIGGER stamp_always;
       CREATE TABLE event (id int PRIMARY KEY, kind text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
       CREATE TABLE event_archive (PRIMARY KEY (id)) INHERITS (event);
       CREATE RULE archive AS ON INSERT TO event WHERE new.kind = 'old' DO INSTEAD INSERT INTO event_archive VALUES (new.*);
       INSERT INTO ledger_account (id, name) VALUES (1, 'cash'), (2, 'bank');
       INSERT INTO entry (account_id, at, n, note) VALUES (1, '2024-05-01', 1, 'first'), (2, '2025-02-01', 1, NULL);
       INSERT INTO event (id, kind) VALUES (1, 'new'), (2, 'old');`,
    );
    psqlFile(OSRC, schema, OWNER);
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: postgres, host: 127.0.0.1, user: ${OWNER}, database: ${OSRC} }
  dst: { engine: postgres, host: 127.0.0.1, user: ${OWNER}, database: ${ODST} }
stores:
  local: { type: local, path: ${join(dir, "store")} }
jobs:
  owned: { datasource: src, store: local, mode: differential, track_deletes: true, cutoff_margin: 0 }
`,
    );
  });
  afterAll(async () => {
    for (const d of [OSRC, ODST]) await dropDb(d);
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${OWNER}`);
  });

  it("triggers (cloned to partitions, ENABLE ALWAYS) and rules do not act on the applied rows; foreign keys on partitions hold", { timeout: 300_000 }, async () => {
    const [su] = await pgQuery<{ s: boolean }>("postgres", `SELECT rolsuper AS s FROM pg_roles WHERE rolname = '${OWNER}'`);
    expect(su?.s).toBe(false);
    const b1 = await run("backup", "owned");
    expect(b1.code, b1.stderr).toBe(0);
    await pause();
    await pgQuery(
      OSRC,
      `INSERT INTO ledger_account (id, name) VALUES (3, 'card');
       UPDATE ledger_account SET name = 'checking' WHERE id = 2;
       INSERT INTO entry (account_id, at, n, note) VALUES (3, '2024-06-01', 1, 'card 2024'), (3, '2025-06-01', 1, 'card 2025');
       UPDATE entry SET note = 'first, edited', updated_at = now() WHERE account_id = 1;
       INSERT INTO event (id, kind) VALUES (3, 'old'), (4, 'new');
       UPDATE event SET kind = 'newer', updated_at = now() WHERE id = 1;
       DELETE FROM event WHERE id = 2;`,
    );
    const b2 = await run("backup", "owned");
    expect(b2.code, b2.stderr).toBe(0);
    const r = await run("restore", "owned", "--to", "dst", "--auto-confirm");
    expect(r.code, r.stderr).toBe(0);
    expect(await contentOf(ODST)).toEqual(await contentOf(OSRC));
    expect(schemaOf(ODST)).toEqual(schemaOf(OSRC));
  });
});

const MSRC = "dbkeep_it_dsch_sakila";
const MDST = "dbkeep_it_dsch_sakila_t";

describe.skipIf(!myUp)("differential chains on Sakila (MariaDB)", () => {
  let dir: string;
  let cfg: string;
  const run = (...args: string[]) => dbkeepAsync(["-c", cfg, ...args], {}, 120_000);

  beforeAll(async () => {
    dir = tempDir("dbkeep-msch-");
    await dropDatabasesLike("dbkeep_it_dsch_");
    await myQuery(`CREATE DATABASE ${MSRC}; CREATE DATABASE ${MDST}`);
    for (const f of ["sakila-schema.sql", "sakila-data.sql", "sakila-additions.sql"]) mySource(MSRC, join(FIXTURES, f));
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MSRC} }
  dst: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MDST} }
stores:
  local: { type: local, path: ${join(dir, "store")} }
jobs:
  tracked: { datasource: src, store: local, compression: zstd, mode: differential, basis_column: last_update, track_deletes: true, cutoff_margin: 0 }
`,
    );
  });
  afterAll(async () => {
    await dropDatabasesLike("dbkeep_it_dsch_");
  });

  const restoreAndCompare = async () => {
    const r = await run("restore", "tracked", "--to", "dst", "--auto-confirm");
    expect(r.code, r.stderr).toBe(0);
    expect(await myContentOf(MDST)).toEqual(await myContentOf(MSRC));
    // Triggers, with their definers, sql_mode and character sets, are back as they were.
    expect(await mySchemaOf(MDST)).toEqual(await mySchemaOf(MSRC));
  };

  it("the target's triggers do not fire on the applied rows; sequences, generated columns, partitions restore exactly", { timeout: 300_000 }, async () => {
    expect((await run("backup", "tracked")).code).toBe(0);
    await pause();
    // Sakila's own triggers set create_date, rental_date and payment_date to NOW() and fill film_text from film.
    await myQuery(
      `UPDATE actor SET last_name = 'GUINESS-SMITH' WHERE actor_id = 1;
       INSERT INTO actor (first_name, last_name) VALUES ('NEW', 'ACTOR');
       INSERT INTO film (title, description, release_year, language_id, rental_duration, rental_rate, length, replacement_cost, rating, special_features)
         VALUES ('DBKEEP DIFFERENTIAL', 'A Thrilling Tale of a Backup', 2023, 1, 3, 4.99, 95, 19.99, 'NC-17', 'Trailers,Deleted Scenes');
       UPDATE film SET length = 121, description = 'A Changed Description' WHERE film_id = 2;
       INSERT INTO customer (store_id, first_name, last_name, email, address_id, active, create_date) VALUES (1, 'NEW', 'CUSTOMER', NULL, 5, 1, '2000-01-01');
       UPDATE customer SET email = 'changed@sakilacustomer.org' WHERE customer_id = 2;
       INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) VALUES ('2000-01-01', 6, 4, 2);
       INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES (4, 2, LAST_INSERT_ID(), 4.99, '2000-01-01');
       INSERT INTO rental_note (note_id, rental_id, note) VALUES (NEXTVAL(rental_note_seq), 3, 'new note');
       INSERT INTO film_view_log (film_id) VALUES (3);
       INSERT INTO payment_archive (payment_id, customer_id, amount, payment_date) VALUES (3, 1, 1.99, '2007-01-01');
       UPDATE payment_archive SET amount = 9.99 WHERE payment_id = 1;`,
      MSRC,
    );
    const b = await run("backup", "tracked");
    expect(b.code, b.stderr).toBe(0);
    const [full, diff] = manifestsOf(join(dir, "store", MSRC));
    expect(full?.differential?.kind).toBe("full");
    expect(diff?.differential?.full_tables).toEqual(
      expect.arrayContaining([
        { name: "film_text", reason: "no column last_update" },
        { name: "film_view_log", reason: "no primary key" },
      ]),
    );
    await restoreAndCompare();
  });

  it("deletes (track_deletes), including a table without a primary key and a partitioned table", { timeout: 300_000 }, async () => {
    await pause();
    await myQuery(
      `DELETE FROM film_actor WHERE actor_id = 1; DELETE FROM rental_note WHERE note_id = 1;
       DELETE FROM film_view_log WHERE film_id = 1; DELETE FROM payment_archive WHERE payment_id = 2;`,
      MSRC,
    );
    const b = await run("backup", "tracked");
    expect(b.code, b.stderr).toBe(0);
    await restoreAndCompare();
  });
});
