import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeep, dbkeepAsync, dropDb, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";
import { contentOf } from "../helpers/pgcompare.js";
import { contentOf as myContentOf, dropDatabasesLike, myAvailable, myQuery } from "../helpers/mysql.js";

const pgUp = await pgAvailable();
const myUp = await myAvailable();

interface DiffManifest {
  id: string;
  format: string;
  manifest_version: number;
  differential?: {
    kind: "full" | "differential";
    safe_point?: string;
    cutoff?: string;
    snapshot_at?: string;
    base?: { id: string };
    full_tables?: { name: string; reason: string }[];
    basis?: Record<string, string>;
    track_deletes?: boolean;
    key_digests?: Record<string, string>;
  };
}

/** The job's manifests, oldest first. */
function manifestsOf(dir: string): DiffManifest[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".manifest.json"))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as DiffManifest);
}

const INSTANT = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const pause = () => new Promise((r) => setTimeout(r, 1100)); // backups are named by the second

const SRC = "dbkeep_it_diff_src";
const DST = "dbkeep_it_diff_dst";
const DST2 = "dbkeep_it_diff_dst2";

describe.skipIf(!pgUp)("differential backups of PostgreSQL", () => {
  let dir: string;
  let cfg: string;
  const run = (...args: string[]) => dbkeep(["-c", cfg, ...args]);

  beforeAll(async () => {
    dir = tempDir("dbkeep-diff-");
    for (const d of [SRC, DST, DST2]) await createDb(d);
    await pgQuery(
      SRC,
      `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
       CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
       CREATE FUNCTION touch_local() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := localtimestamp; RETURN NEW; END $$;
       CREATE TABLE parent (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
       CREATE TABLE child (id bigserial PRIMARY KEY, parent_id int REFERENCES parent(id), data jsonb, raw bytea, tags text[], m mood,
                           price numeric(12,3), f float8, note text, updated_at timestamp NOT NULL DEFAULT localtimestamp);
       CREATE TABLE composite (a int, b text, n int, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (a, b));
       CREATE TABLE gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, x int, doubled int GENERATED ALWAYS AS (x * 2) STORED, updated_at timestamptz DEFAULT now());
       CREATE TABLE events (seen_at timestamptz DEFAULT now(), what text);
       CREATE TABLE settings (k text PRIMARY KEY, v text);
       CREATE TRIGGER t1 BEFORE UPDATE ON parent FOR EACH ROW EXECUTE FUNCTION touch();
       CREATE TRIGGER t2 BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION touch_local();
       CREATE TRIGGER t3 BEFORE UPDATE ON composite FOR EACH ROW EXECUTE FUNCTION touch();
       INSERT INTO parent (id, name) SELECT g, 'p' || g FROM generate_series(1, 5) g;
       INSERT INTO child (parent_id, data, raw, tags, m, price, f, note)
         SELECT g % 5 + 1, jsonb_build_object('g', g, 'q', 'it''s "quoted"'), decode(lpad(to_hex(g), 2, '0') || '00ff5c27', 'hex'),
                ARRAY['a,b', NULL, '{x}'], 'ok', g * 1.125, 1.0 / 3 + g, E'line\\nbreak \\\\ tab\\t ☃' FROM generate_series(1, 40) g;
       INSERT INTO composite (a, b, n) VALUES (1, 'x', 1), (1, 'y', 2), (2, 'x', 3);
       INSERT INTO gen (x) SELECT g FROM generate_series(1, 3) g;
       INSERT INTO events (what) VALUES ('boot');
       INSERT INTO settings VALUES ('theme', 'dark'), ('lang', 'en');`,
    );
    await pgQuery(SRC, "ALTER TABLE events ADD COLUMN note text; ALTER TABLE events DROP COLUMN note"); // a dropped column
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${SRC}, format: custom }
  dst: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${DST} }
  dst2: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${DST2} }
stores:
  local: { type: local, path: ${join(dir, "store")} }
jobs:
  tracked:
    datasource: src
    store: local
    prefix: tracked
    mode: differential
    track_deletes: true
    cutoff_margin: 0
    retention: { keep_last: 1 }
  untracked:
    datasource: src
    store: local
    prefix: untracked
    mode: differential
    max_chain: 1
  badtype:
    datasource: src
    store: local
    prefix: bad
    mode: differential
    basis_columns: { public.parent: name }
`,
    );
  });
  afterAll(async () => {
    for (const d of [SRC, DST, DST2]) await dropDb(d);
  });

  it("a chain of a full backup and two differentials with inserts, updates and deletes restores to exactly the source (track_deletes)", async () => {
    const b1 = run("backup", "tracked");
    expect(b1.code, b1.stderr).toBe(0);
    expect(run("backup", "untracked").code).toBe(0);
    await pause();
    await pgQuery(
      SRC,
      `INSERT INTO parent (id, name) VALUES (6, 'six');
       INSERT INTO child (parent_id, note, raw) VALUES (6, 'new', '\\x00'::bytea), (6, NULL, NULL);
       UPDATE child SET data = '{"changed": true}', tags = NULL WHERE id = 3;
       DELETE FROM child WHERE id IN (4, 5);
       UPDATE composite SET n = 20 WHERE a = 1 AND b = 'y';
       INSERT INTO gen (x) VALUES (10);
       INSERT INTO events (what) VALUES ('second');
       UPDATE settings SET v = 'light' WHERE k = 'theme';`,
    );
    const b2 = run("backup", "tracked");
    expect(b2.code, b2.stderr).toBe(0);
    await pause();
    await pgQuery(
      SRC,
      `DELETE FROM child WHERE parent_id = 6 AND note IS NULL;
       UPDATE parent SET name = 'two' WHERE id = 2;
       DELETE FROM child WHERE parent_id = 1; DELETE FROM parent WHERE id = 1;
       INSERT INTO composite (a, b, n) VALUES (3, 'z', 9);
       DELETE FROM composite WHERE a = 2;
       DELETE FROM settings WHERE k = 'lang';
       UPDATE gen SET x = 11 WHERE id = 4;`,
    );
    const b3 = run("backup", "tracked");
    expect(b3.code, b3.stderr).toBe(0);

    const [full, d1, d2] = manifestsOf(join(dir, "store/tracked", SRC));
    // list says which backups are differentials and what they build on.
    const listed = run("list", "tracked");
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/\bKIND\b/);
    expect(listed.stdout.split("\n").filter((l) => l.includes(`differential of ${full?.id}`))).toHaveLength(2);
    expect(listed.stdout.split("\n").find((l) => l.startsWith(full?.id ?? "-"))).toMatch(/ full /);
    expect(full?.differential).toMatchObject({ kind: "full" });
    expect(full?.differential?.safe_point).toMatch(INSTANT);
    expect(full?.format).toBe("custom");
    for (const d of [d1, d2]) {
      expect(d?.format).toBe("differential");
      expect(d?.manifest_version).toBe(2);
      // Differential: every change since the full backup, so each names the full backup and its safe point.
      expect(d?.differential).toMatchObject({ kind: "differential", base: { id: full?.id }, cutoff: full?.differential?.safe_point, track_deletes: true });
      expect(d?.differential?.snapshot_at).toMatch(INSTANT);
      expect(d?.differential?.full_tables).toEqual([
        { name: "public.events", reason: "no primary key" },
        { name: "public.settings", reason: "no column updated_at" },
      ]);
      expect(d?.differential?.basis).toMatchObject({ "public.parent": "updated_at", "public.child": "updated_at" });
    }

    const r = run("restore", "tracked", "--to", "dst", "--auto-confirm");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(d2!.id);
    expect(r.stderr).not.toMatch(/still present/);
    expect(await contentOf(DST)).toEqual(await contentOf(SRC));
  });

  it("without track_deletes the restore warns that deleted rows are back; max_chain makes the next run a full backup", async () => {
    await pause();
    const b = run("backup", "untracked");
    expect(b.code, b.stderr).toBe(0);
    const r = run("restore", "untracked", "--to", "dst2", "--auto-confirm");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/rows deleted in the source since full backup \S+ are still present in [^:]*public\.child/);
    expect(r.stderr).toMatch(/does not track deletes/);
    const src = await contentOf(SRC);
    const dst = await contentOf(DST2);
    expect(dst["public.child"]).not.toEqual(src["public.child"]);
    expect(dst["public.settings"]).toEqual(src["public.settings"]); // dumped whole: exact even without track_deletes
    expect(dst["public.events"]).toEqual(src["public.events"]);
    await pause();
    expect(run("backup", "untracked").code).toBe(0);
    const kinds = manifestsOf(join(dir, "store/untracked", SRC)).map((m) => m.differential?.kind);
    expect(kinds).toEqual(["full", "differential", "full"]);
    const [, diff] = manifestsOf(join(dir, "store/untracked", SRC));
    expect(Object.keys(diff?.differential?.key_digests ?? {}).sort()).toEqual(["public.child", "public.composite", "public.gen", "public.parent"]);
  });

  it("prune keeps the full backup a kept differential applies on", async () => {
    const before = manifestsOf(join(dir, "store/tracked", SRC));
    const p = run("prune", "tracked");
    expect(p.code, p.stderr).toBe(0);
    const after = manifestsOf(join(dir, "store/tracked", SRC)).map((m) => m.id);
    expect(after).toEqual([before[0]!.id, before[2]!.id]);
    await pgQuery(DST, "TRUNCATE child, parent CASCADE");
    const r = run("restore", "tracked", "--to", "dst", "--auto-confirm");
    expect(r.code, r.stderr).toBe(0);
    expect(await contentOf(DST)).toEqual(await contentOf(SRC));
  });

  it("a basis column that is not a timestamp is refused before anything is dumped", () => {
    const r = run("backup", "badtype");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/basis column public\.parent\.name is text, not a timestamp/);
    expect(r.stderr).toMatch(/hint: .*basis_columns/);
  });
});

const MSRC = "dbkeep_it_mdiff_src";
const MDST = "dbkeep_it_mdiff_dst";

describe.skipIf(!myUp)("differential backups of MariaDB", () => {
  let dir: string;
  let cfg: string;
  const run = (...args: string[]) => dbkeep(["-c", cfg, ...args]);

  beforeAll(async () => {
    dir = tempDir("dbkeep-mdiff-");
    await dropDatabasesLike("dbkeep_it_mdiff_");
    await myQuery(
      `CREATE DATABASE ${MSRC}; CREATE DATABASE ${MDST}; USE ${MSRC};
       CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20) CHARACTER SET latin1, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6));
       CREATE TABLE child (id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT, b BLOB, e VARBINARY(4), bits BIT(5), j JSON, v VARCHAR(50), d DECIMAL(10,3),
                           at DATETIME(3), updated_at DATETIME(6) NOT NULL DEFAULT NOW(6) ON UPDATE NOW(6), FOREIGN KEY (parent_id) REFERENCES parent(id));
       CREATE TABLE events (what TEXT);
       CREATE TABLE settings (k VARCHAR(10) PRIMARY KEY, v TEXT);
       INSERT INTO parent (id, name) VALUES (1, 'ä'), (2, 'b'), (3, 'c');
       INSERT INTO child (parent_id, b, e, bits, j, v, d, at) VALUES
         (1, 0x00ff275c0a, '', b'101', '{"a": [1, "x"]}', 'it''s \\\\ \\t ☃', 1.5, '2024-01-02 03:04:05.678'),
         (2, '', NULL, b'0', NULL, NULL, NULL, NULL), (3, 0x41, 0x42, b'11111', '[]', 'x', -2.25, NOW(3));
       INSERT INTO events VALUES ('boot'); INSERT INTO settings VALUES ('theme', 'dark'), ('lang', 'en');`,
    );
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MSRC} }
  dst: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MDST} }
stores:
  local: { type: local, path: ${join(dir, "store")} }
jobs:
  tracked: { datasource: src, store: local, mode: differential, track_deletes: true, cutoff_margin: 0 }
  bad: { datasource: src, store: local, prefix: bad, mode: differential, basis_columns: { child: v } }
`,
    );
  });
  afterAll(async () => {
    await dropDatabasesLike("dbkeep_it_mdiff_");
  });

  it("a chain of three runs with inserts, updates and deletes restores to exactly the source", async () => {
    expect(run("backup", "tracked").code).toBe(0);
    await pause();
    await myQuery(
      `INSERT INTO parent (id, name) VALUES (4, 'vier');
       INSERT INTO child (parent_id, v) VALUES (4, 'new'), (4, 'newer');
       UPDATE child SET v = 'changed', b = 0x00 WHERE id = 1;
       DELETE FROM child WHERE id = 2;
       UPDATE settings SET v = 'light' WHERE k = 'theme'; INSERT INTO events VALUES ('second');`,
      MSRC,
    );
    expect(run("backup", "tracked").code).toBe(0);
    await pause();
    await myQuery(
      `DELETE FROM child WHERE id = 5; UPDATE parent SET name = 'zwei' WHERE id = 2;
       DELETE FROM child WHERE parent_id = 3; DELETE FROM parent WHERE id = 3; DELETE FROM settings WHERE k = 'lang';`,
      MSRC,
    );
    const b = run("backup", "tracked");
    expect(b.code, b.stderr).toBe(0);
    const [full, , d2] = manifestsOf(join(dir, "store", MSRC));
    expect(full?.differential?.kind).toBe("full");
    expect(d2?.differential).toMatchObject({ kind: "differential", base: { id: full?.id }, cutoff: full?.differential?.safe_point });
    expect(d2?.differential?.cutoff).toMatch(INSTANT);
    expect(d2?.differential?.full_tables).toEqual([
      { name: "events", reason: "no primary key" },
      { name: "settings", reason: "no column updated_at" },
    ]);
    const r = run("restore", "tracked", "--to", "dst", "--auto-confirm");
    expect(r.code, r.stderr).toBe(0);
    expect(await myContentOf(MDST)).toEqual(await myContentOf(MSRC));
  });

  it("a basis column that is not TIMESTAMP or DATETIME is refused", () => {
    const r = run("backup", "bad");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/basis column child\.v is varchar\(50\), not a TIMESTAMP or DATETIME/);
  });
});

const CSRC = "dbkeep_it_diffz_src";
const CDST = "dbkeep_it_diffz_dst";
const COMPRESSIONS = ["zstd", "lz4"] as const;

/**
 * zstd and lz4 run as processes that can read a dump tool's stdout through a kernel pipe; a differential is written
 * by dbkeep itself and must never be offered that pipe. The change is larger than the pipes' buffers: a dump that
 * writes where nobody reads stalls instead of finishing.
 */
describe.skipIf(!pgUp)("differential chains of PostgreSQL with every compression", () => {
  let dir: string;
  let cfg: string;

  beforeAll(async () => {
    dir = tempDir("dbkeep-diffz-");
    for (const d of [CSRC, CDST]) await createDb(d);
    await pgQuery(
      CSRC,
      `CREATE TABLE items (id int PRIMARY KEY, payload text, updated_at timestamptz NOT NULL DEFAULT now());
       INSERT INTO items (id, payload) SELECT g, 'initial ' || g FROM generate_series(1, 3000) g;`,
    );
    cfg = join(dir, "dbkeep.yaml");
    const jobs = COMPRESSIONS.flatMap((c) => [
      `  plain-${c}: { datasource: src, store: local, prefix: plain-${c}, format: plain, compression: ${c}, mode: differential, cutoff_margin: 0 }`,
      `  custom-${c}: { datasource: src, store: local, prefix: custom-${c}, format: custom, compression: ${c}, mode: differential, cutoff_margin: 0 }`,
    ]);
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${CSRC} }
  dst: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${CDST} }
stores:
  local: { type: local, path: ${join(dir, "store")} }
jobs:
${jobs.join("\n")}
`,
    );
  });
  afterAll(async () => {
    for (const d of [CSRC, CDST]) await dropDb(d);
  });

  it("full backup + differential restore to the source's content (zstd and lz4; plain and custom full backups)", { timeout: 300_000 }, async () => {
    const names = COMPRESSIONS.flatMap((c) => [`plain-${c}`, `custom-${c}`]);
    const backups = async () => {
      const done = await Promise.all(names.map((job) => dbkeepAsync(["-c", cfg, "backup", job], {}, 120_000)));
      done.forEach((b, i) => expect(b.code, `${names[i]}: ${b.stderr}`).toBe(0));
    };
    await backups();
    await pause();
    // About 1 MB of changed rows: far more than a pipe or a stream buffer holds.
    await pgQuery(CSRC, `UPDATE items SET payload = repeat(md5(id::text), 10), updated_at = now() WHERE id % 3 = 0; INSERT INTO items (id, payload) VALUES (5001, 'new row')`);
    await backups();
    for (const job of names) {
      const [full, diff] = manifestsOf(join(dir, "store", job, CSRC)) as (DiffManifest & { raw_bytes: number; compression: string })[];
      expect(full?.differential?.kind).toBe("full");
      expect(diff?.differential?.kind, job).toBe("differential");
      expect(diff?.compression).toBe(job.split("-")[1]);
      expect(diff?.raw_bytes, `${job}: the differential holds the changed rows`).toBeGreaterThan(300_000);
    }
    const src = await contentOf(CSRC);
    for (const job of names) {
      await pgQuery(CDST, "DROP TABLE IF EXISTS items");
      const r = await dbkeepAsync(["-c", cfg, "restore", job, "--to", "dst", "--auto-confirm"], {}, 120_000);
      expect(r.code, `${job}: ${r.stderr}`).toBe(0);
      expect(await contentOf(CDST), job).toEqual(src);
    }
  });
});

const MCSRC = "dbkeep_it_mdiffz_src";
const MCDST = "dbkeep_it_mdiffz_dst";

describe.skipIf(!myUp)("differential chains of MariaDB with zstd and lz4", () => {
  let dir: string;
  let cfg: string;

  beforeAll(async () => {
    dir = tempDir("dbkeep-mdiffz-");
    await dropDatabasesLike("dbkeep_it_mdiffz_");
    await myQuery(
      `CREATE DATABASE ${MCSRC}; CREATE DATABASE ${MCDST}; USE ${MCSRC};
       CREATE TABLE items (id INT PRIMARY KEY, payload TEXT, updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6));
       INSERT INTO items (id, payload) SELECT seq, CONCAT('initial ', seq) FROM seq_1_to_3000;`,
    );
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MCSRC} }
  dst: { engine: mariadb, host: 127.0.0.1, user: root, database: ${MCDST} }
stores:
  local: { type: local, path: ${join(dir, "store")} }
jobs:
${COMPRESSIONS.map((c) => `  ${c}: { datasource: src, store: local, prefix: ${c}, compression: ${c}, mode: differential, cutoff_margin: 0 }`).join("\n")}
`,
    );
  });
  afterAll(async () => {
    await dropDatabasesLike("dbkeep_it_mdiffz_");
  });

  it("full backup + differential restore to the source's content", { timeout: 300_000 }, async () => {
    const backups = async () => {
      const done = await Promise.all(COMPRESSIONS.map((job) => dbkeepAsync(["-c", cfg, "backup", job], {}, 120_000)));
      done.forEach((b, i) => expect(b.code, `${COMPRESSIONS[i]}: ${b.stderr}`).toBe(0));
    };
    await backups();
    await pause();
    await myQuery(`UPDATE items SET payload = REPEAT(MD5(id), 10) WHERE id % 3 = 0; INSERT INTO items (id, payload) VALUES (5001, 'new row')`, MCSRC);
    await backups();
    for (const job of COMPRESSIONS) {
      const [, diff] = manifestsOf(join(dir, "store", job, MCSRC)) as (DiffManifest & { raw_bytes: number })[];
      expect(diff?.differential?.kind, job).toBe("differential");
      expect(diff?.raw_bytes, `${job}: the differential holds the changed rows`).toBeGreaterThan(300_000);
    }
    const src = await myContentOf(MCSRC);
    for (const job of COMPRESSIONS) {
      await myQuery("DROP TABLE IF EXISTS items", MCDST);
      const r = await dbkeepAsync(["-c", cfg, "restore", job, "--to", "dst", "--auto-confirm"], {}, 120_000);
      expect(r.code, `${job}: ${r.stderr}`).toBe(0);
      expect(await myContentOf(MCDST), job).toEqual(src);
    }
  });
});
