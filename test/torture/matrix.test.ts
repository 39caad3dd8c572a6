import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { dropDb, pgAvailable, pgQuery } from "../helpers/env.js";
import { contentOf as pgContent } from "../helpers/pgcompare.js";
import { contentOf as myContent, dropDatabasesLike, myAvailable, myQuery, schemaOf as mySchema } from "../helpers/mysql.js";
import { freePort, loadFixture, redisAvailable, snapshotRedis, startRedis, withRedis, type TestRedis } from "../helpers/redis.js";
import { sqliteContent } from "../helpers/sqlite.js";
import { sshdAvailable } from "../helpers/sshd-server.js";
import {
  loadMyFixture,
  loadPgFixture,
  makeSqliteFixture,
  MY_CHANGES,
  MY_DELETED,
  myRows,
  PARTIAL_DEPS_TABLES,
  PARTIAL_TABLES,
  PG_CHANGES,
  PG_DELETED,
  pgRows,
  pgSchema,
} from "./fixtures.js";
import { backupResult, describeRun, manifestKey, runCli, sniff, startStores, type BackupResult, type CliRun, type MatrixManifest, type MatrixStores } from "./harness.js";
import { cellName, MATRIX_AXES, roundtripMatrix, type Cell } from "./matrix-design.js";

/**
 * The roundtrip matrix (issue 17): every engine that runs here x every mode x every compression x encryption on/off
 * x a local and two remote stores, as the covering design of matrix-design.ts. Each cell backs up through the CLI,
 * restores into a fresh target and compares content (schema and per-table hashes; keys, values and TTLs for Redis),
 * and checks in the store itself that the object is compressed and encrypted as the cell says.
 *
 * The backups of all cells (for a differential chain: its full backup) run as one `dbkeep backup JOB... --parallel`
 * before the cells: one CLI start instead of fifty keeps the matrix fast on two cores, and is how a config with many
 * jobs is run. Everything after that is per cell, in the cell's test: the changes and the differential of a chain
 * (in a process of its own, where defect 1 hangs or stores nothing), the restore, the comparison.
 *
 * A new mode, compression or store joins the matrix by its axis in MATRIX_AXES (matrix-design.ts) and, for a mode,
 * a branch of its engine's plan below; the design and its unit test adapt the cells.
 */

const cells = roundtripMatrix(MATRIX_AXES);

/**
 * Cells that fail today because of a defect of issue 17 being fixed elsewhere: `it.fails` keeps the suite green and
 * turns red the moment the cell passes, so that the fix flips it back to `it`.
 */
function knownDefect(c: Cell): string | undefined {
  // Defect 1: a PostgreSQL differential with zstd or lz4 stores nothing (or hangs); gzip and none work.
  if (c.engine === "postgres" && c.mode === "differential" && (c.compression === "zstd" || c.compression === "lz4")) return "defect 1";
  // Defect 8: a partial backup of a table that needs an enum type and a sequence it does not own does not restore
  // into a database that lacks them.
  if (c.engine === "postgres" && c.mode === "partial-deps") return "defect 8";
  return undefined;
}

/** A CLI run that takes longer is killed, failing its cell; jobs stop themselves earlier (job `timeout`). */
const CLI_TIMEOUT = 60_000;
const JOB_TIMEOUT_SECONDS = 45;
const CELL_TIMEOUT = 120_000;
const BATCH_TIMEOUT = 240_000;
const DB = "dbkeep_mx_";

const available: Record<string, boolean> = {
  postgres: await pgAvailable(),
  mariadb: await myAvailable(),
  sqlite: true,
  redis: redisAvailable(),
};
// Without sshd (outside CI) the ssh cells are skipped, and named as skipped in the summary.
const sshUp = sshdAvailable();
const runs = (c: Cell) => available[c.engine] === true && (c.store !== "ssh" || sshUp);

/** What the cells share: the stores, the key, the sources, and the batch's backups. */
const m = {
  root: "",
  cfg: "",
  stores: undefined as unknown as MatrixStores,
  recipient: "",
  identity: "",
  pg: { db: `${DB}pg_src`, schema: "", content: {} as Record<string, string> },
  my: { db: `${DB}my_src`, schema: "", content: {} as Record<string, string> },
  sqlite: "",
  redis: undefined as TestRedis | undefined,
  servers: [] as TestRedis[],
  batch: undefined as CliRun | undefined,
  /** When the batch ran, and the source's TTLs just before it: what the restored TTLs are checked against. */
  batchStart: 0,
  batchEnd: 0,
  redisTtls: {} as Record<string, number>,
  results: new Map<string, BackupResult>(),
};

/** One cell: its job, datasources and keys, what it needs before the batch, and its checks after it. */
interface Plan {
  cell: Cell;
  index: number;
  job: string;
  /** Read when the config is written, after beforeAll made the sources and servers. */
  src: () => Record<string, unknown>;
  dst: () => Record<string, unknown>;
  keys: Record<string, unknown>;
  prepare?: () => Promise<void>;
  check: (c: CellRun) => Promise<void>;
}

async function dropAll(): Promise<void> {
  if (available.postgres) {
    for (const { d } of await pgQuery<{ d: string }>("postgres", `SELECT datname AS d FROM pg_database WHERE datname LIKE '${DB}%'`)) await dropDb(d);
  }
  if (available.mariadb) await dropDatabasesLike(DB);
}

const plans: Plan[] = cells.map((cell, index) => {
  const job = cellName(cell).replace(/\//g, "-");
  const base = { cell, index, job };
  switch (cell.engine) {
    case "postgres":
      return { ...base, ...postgresPlan(cell, index) };
    case "mariadb":
      return { ...base, ...mariadbPlan(cell, index) };
    case "sqlite":
      return { ...base, ...sqlitePlan(index) };
    case "redis":
      return { ...base, ...redisPlan(cell, index) };
    default:
      throw new Error(`no plan for engine ${cell.engine}`);
  }
});

const title = `roundtrip matrix: ${cells.length} cells, each engine's mode x compression cross (${MATRIX_AXES.engines
  .map((e) => `${e.engine} ${e.modes.length}x${MATRIX_AXES.compressions.length}`)
  .join(", ")}) with encryption x store by a greedy covering design (every compression x encryption x store, every mode x encryption)`;

describe.concurrent(title, () => {
  beforeAll(async () => {
    m.root = mkdtempSync(join(tmpdir(), "dbkeep-matrix-"));
    m.identity = join(m.root, "key.txt");
    m.sqlite = join(m.root, "source.db");
    makeSqliteFixture(m.sqlite);
    await dropAll();
    // Independent of each other: started together, and all settled before a failure is reported (afterAll stops
    // whatever did start).
    const setup = await Promise.allSettled([
      startStores(m.root, { ssh: sshUp }).then((s) => (m.stores = s)),
      runCli(["keygen", "-o", m.identity], {}, CLI_TIMEOUT).then((k) => {
        if (k.code !== 0) throw new Error(describeRun(k));
        m.recipient = k.stdout.trim();
      }),
      available.postgres &&
        (async () => {
          await pgQuery("postgres", `CREATE DATABASE ${m.pg.db}`);
          await loadPgFixture(m.pg.db);
          [m.pg.schema, m.pg.content] = await Promise.all([pgSchema(m.pg.db), pgContent(m.pg.db)]);
        })(),
      available.mariadb &&
        (async () => {
          await loadMyFixture(m.my.db);
          [m.my.schema, m.my.content] = await Promise.all([mySchema(m.my.db), myContent(m.my.db)]);
        })(),
      available.redis &&
        (async () => {
          m.redis = await startRedis();
          await loadFixture(m.redis);
        })(),
    ]);
    for (const r of setup) if (r.status === "rejected") throw r.reason;
    const mine = plans.filter((p) => runs(p.cell));
    for (const p of mine) mkdirSync(join(m.root, p.job));
    await Promise.all(mine.map((p) => p.prepare?.()));

    m.cfg = join(m.root, "matrix.yaml");
    const encryption = { recipients: [m.recipient], identity_file: m.identity };
    const config = {
      datasources: Object.fromEntries(mine.flatMap((p) => [[`src-${p.index}`, p.src()], [`dst-${p.index}`, p.dst()]])),
      stores: Object.fromEntries(["local", "s3", "ssh"].filter((s) => s !== "ssh" || sshUp).map((s) => [s, m.stores.entry(s)])),
      jobs: Object.fromEntries(
        mine.map((p) => [
          p.job,
          {
            datasource: `src-${p.index}`,
            store: p.cell.store,
            prefix: p.job,
            compression: p.cell.compression,
            timeout: JOB_TIMEOUT_SECONDS,
            ...(p.cell.encryption === "age" ? { encryption } : {}),
            ...p.keys,
          },
        ]),
      ),
    };
    writeFileSync(m.cfg, stringify(config), { mode: 0o600 });
    mkdirSync(join(m.root, "batch-state"));
    if (m.redis) m.redisTtls = await ttls(m.redis);
    m.batchStart = Date.now();
    m.batch = await runCli(["-c", m.cfg, "backup", ...mine.map((p) => p.job), "--parallel", "4", "--json"], { ...m.stores.env, DBKEEP_STATE_DIR: join(m.root, "batch-state") }, BATCH_TIMEOUT);
    m.batchEnd = Date.now();
    try {
      for (const r of (JSON.parse(m.batch.stdout) as { jobs: BackupResult[] }).jobs) m.results.set(r.job, r);
    } catch {
      // A batch that printed no JSON fails every cell, each with the batch's output.
    }
  }, BATCH_TIMEOUT + 120_000);

  afterAll(async () => {
    for (const s of [...m.servers, ...(m.redis ? [m.redis] : [])]) await s.stop();
    await m.stores?.stop();
    await dropAll();
    if (m.root) rmSync(m.root, { recursive: true, force: true });
  });

  for (const p of plans) {
    const defect = knownDefect(p.cell);
    const name = `${cellName(p.cell)}${defect ? ` (known failure: ${defect})` : ""}`;
    const body = () => p.check(new CellRun(p));
    if (!runs(p.cell)) it.skip(name, body);
    else if (defect) it.fails(name, body, CELL_TIMEOUT);
    else it(name, body, CELL_TIMEOUT);
  }
});

/** One cell's CLI and the checks of what its store holds. */
class CellRun {
  readonly dir: string;
  private readonly env: Record<string, string>;

  constructor(readonly plan: Plan) {
    this.dir = join(m.root, plan.job);
    this.env = { ...m.stores.env, DBKEEP_STATE_DIR: join(this.dir, "state") };
  }

  get cell(): Cell {
    return this.plan.cell;
  }

  cli(...args: string[]): Promise<CliRun> {
    return runCli(["-c", m.cfg, ...args], this.env, CLI_TIMEOUT);
  }

  /** The cell's backup from the batch, checked. */
  first(): Promise<Checked> {
    const r = m.results.get(this.plan.job);
    expect(r?.ok, `the batch's backup of ${this.plan.job}: ${r?.error ?? describeRun(m.batch!)}`).toBe(true);
    return this.checkStored(r!);
  }

  /** Another backup of the cell's job, in a process of its own. */
  async again(): Promise<Checked> {
    const run = await this.cli("backup", this.plan.job, "--json");
    const r = backupResult(run);
    expect(run.code === 0 && r?.ok, describeRun(run)).toBe(true);
    return this.checkStored(r!);
  }

  /** The stored object and its manifest, read from the store around dbkeep, are what the cell says. */
  private async checkStored(r: BackupResult): Promise<Checked> {
    const manifest = JSON.parse((await m.stores.read(this.cell.store, manifestKey(r.key, r.backup))).toString()) as MatrixManifest;
    const data = await m.stores.read(this.cell.store, r.key);
    const encrypted = this.cell.encryption === "age";
    expect(manifest).toMatchObject({ id: r.backup, key: r.key, compression: this.cell.compression, raw_bytes: r.raw_bytes, stored_bytes: data.length });
    expect(manifest.raw_bytes, "raw_bytes of the stored backup").toBeGreaterThan(0);
    expect(manifest.encryption).toEqual(encrypted ? { format: "age", recipients: [{ type: "X25519", recipient: m.recipient }] } : null);
    expect(r.key.endsWith(".age")).toBe(encrypted);
    expect(sniff(data), `what ${r.key} starts with`).toBe(encrypted ? "age" : this.cell.compression);
    return { id: r.backup, manifest };
  }

  async restore(): Promise<CliRun> {
    const run = await this.cli("restore", this.plan.job, "--to", `dst-${this.plan.index}`, "--auto-confirm", "--json");
    expect(run.code, describeRun(run)).toBe(0);
    return run;
  }
}

interface Checked {
  id: string;
  manifest: MatrixManifest;
}

/** The rest of a differential chain: the changes, a differential that holds them, restored as full + differential. */
async function chain(c: CellRun, change: () => Promise<void>): Promise<{ track: boolean; restore: CliRun }> {
  const full = await c.first();
  expect(full.manifest.differential?.kind, "the first run of a differential job").toBe("full");
  await change();
  const diff = await c.again();
  // A differential that stores nothing when rows changed would lose every change since the full backup.
  expect(diff.manifest).toMatchObject({ format: "differential", differential: { kind: "differential", base: { id: full.id } } });
  expect(diff.manifest.raw_bytes).toBeGreaterThan(0);
  const restore = await c.restore();
  expect(restore.stderr).toContain(`restoring full backup ${full.id}, then differential ${diff.id}`);
  return { track: diff.manifest.differential?.track_deletes === true, restore };
}

/** Deleted rows: gzip and lz4 cells track deletes, zstd and none do not, so both documented behaviours are run. */
function chainKeys(cell: Cell): Record<string, unknown> {
  return { mode: "differential", track_deletes: cell.compression === "gzip" || cell.compression === "lz4", cutoff_margin: 0 };
}

function pick(content: Record<string, string>, keys: string[]): Record<string, string> {
  return Object.fromEntries(keys.map((k) => [k, content[k] ?? "(missing in the source)"]));
}

function postgresPlan(cell: Cell, index: number): Omit<Plan, "cell" | "index" | "job"> {
  const { mode } = cell;
  const dst = `${DB}pg_${index}`;
  const source = mode === "differential" ? `${DB}pg_src_${index}` : `${DB}pg_src`;
  const pg = { engine: "postgres", host: "127.0.0.1", user: "postgres" };
  const format = mode === "partial" || mode === "custom" ? "custom" : mode === "directory" ? "directory" : "plain";
  const tables = mode === "partial" ? PARTIAL_TABLES : mode === "partial-deps" ? PARTIAL_DEPS_TABLES : undefined;
  const keys = tables ? { tables } : mode === "differential" ? chainKeys(cell) : {};
  const plan = { src: () => ({ ...pg, database: source, format }), dst: () => ({ ...pg, database: dst }), keys };

  if (mode === "differential") {
    return {
      ...plan,
      prepare: async () => {
        await pgQuery("postgres", `CREATE DATABASE ${source}`);
        await loadPgFixture(source);
      },
      check: async (c) => {
        let deleted: string[] = [];
        const { track, restore } = await chain(c, async () => {
          deleted = await pgRows(source, PG_DELETED.table, PG_DELETED.where);
          await pgQuery(source, PG_CHANGES);
        });
        expect(deleted).toHaveLength(1);
        // The changed and the new rows are there, whatever happens to deleted ones.
        for (const [table, where] of [
          ["public.customers", "id = 2 OR name = 'new after the full backup'"],
          ["public.orders", "id = 7 OR note = 'added after the full backup'"],
          ["public.tickets", "subject = 'after the full backup'"],
          ["public.log", "line = 'after the full backup'"],
        ] as const) {
          const want = await pgRows(source, table, where);
          expect(want.length).toBeGreaterThan(0);
          expect(await pgRows(dst, table, where), `rows changed after the full backup in ${table}`).toEqual(want);
        }
        const [srcContent, dstContent] = await Promise.all([pgContent(source), pgContent(dst)]);
        expect(await pgSchema(dst)).toEqual(await pgSchema(source));
        if (track) {
          expect(await pgRows(dst, PG_DELETED.table, PG_DELETED.where), "a row deleted after the full backup (track_deletes)").toEqual([]);
          expect(dstContent).toEqual(srcContent);
        } else {
          // Documented: without track_deletes the row comes back, and the restore says so.
          expect(await pgRows(dst, PG_DELETED.table, PG_DELETED.where)).toEqual(deleted);
          expect(restore.stderr).toMatch(/still present in [^:]*public\.orders/);
          expect(await pgRows(dst, "public.orders")).toEqual([...(await pgRows(source, "public.orders")), ...deleted].sort());
          expect({ ...dstContent, "public.orders": "-" }).toEqual({ ...srcContent, "public.orders": "-" });
        }
      },
    };
  }

  return {
    ...plan,
    check: async (c) => {
      const b = await c.first();
      expect(b.manifest.format).toBe(format);
      await c.restore();
      if (tables) {
        expect(b.manifest.selection?.tables).toEqual(tables.map((t) => `public.${t}`));
        // Exactly the selected tables with their sequences: those they own, and the one tickets takes its numbers from.
        const expected =
          mode === "partial"
            ? ["public.customers", "public.orders", "sequence public.customers_id_seq", "sequence public.orders_id_seq", "large objects"]
            : ["public.tickets", "sequence public.ticket_no", "large objects"];
        expect(await pgContent(dst)).toEqual(pick(m.pg.content, expected));
        expect(await pgSchema(dst, tables, { sorted: true })).toEqual(await pgSchema(m.pg.db, tables, { sorted: true }));
        if (mode === "partial-deps") {
          const labels = "SELECT enum_range(NULL::mood)::text AS r";
          expect(await pgQuery(dst, labels)).toEqual(await pgQuery(m.pg.db, labels));
        }
        return;
      }
      expect(await pgSchema(dst)).toEqual(m.pg.schema);
      expect(await pgContent(dst)).toEqual(m.pg.content);
    },
  };
}

function mariadbPlan(cell: Cell, index: number): Omit<Plan, "cell" | "index" | "job"> {
  const { mode } = cell;
  const dst = `${DB}my_${index}`;
  const source = mode === "differential" ? `${DB}my_src_${index}` : `${DB}my_src`;
  const my = { engine: "mariadb", host: "127.0.0.1", port: 3306, user: "root" };
  const keys = mode === "partial" ? { tables: PARTIAL_TABLES } : mode === "differential" ? chainKeys(cell) : {};
  const plan = { src: () => ({ ...my, database: source, ...(mode === "mydumper" ? { format: "mydumper" } : {}) }), dst: () => ({ ...my, database: dst }), keys };

  if (mode === "differential") {
    return {
      ...plan,
      prepare: () => loadMyFixture(source),
      check: async (c) => {
        let deleted: string[] = [];
        const { track, restore } = await chain(c, async () => {
          deleted = await myRows(source, MY_DELETED.table, MY_DELETED.where);
          await myQuery(MY_CHANGES, source);
        });
        expect(deleted).toHaveLength(1);
        for (const [table, where] of [
          ["customers", "id = 2 OR name = 'new after the full backup'"],
          ["orders", "id = 7 OR note = 'added after the full backup'"],
          ["tickets", "subject = 'after the full backup'"],
          ["log", "line = 'after the full backup'"],
        ] as const) {
          const want = await myRows(source, table, where);
          expect(want.length).toBeGreaterThan(0);
          expect(await myRows(dst, table, where), `rows changed after the full backup in ${table}`).toEqual(want);
        }
        const [srcContent, dstContent] = await Promise.all([myContent(source), myContent(dst)]);
        expect(await mySchema(dst)).toEqual(await mySchema(source));
        if (track) {
          expect(await myRows(dst, MY_DELETED.table, MY_DELETED.where), "a row deleted after the full backup (track_deletes)").toEqual([]);
          expect(dstContent).toEqual(srcContent);
        } else {
          expect(await myRows(dst, MY_DELETED.table, MY_DELETED.where)).toEqual(deleted);
          expect(restore.stderr).toMatch(/still present in [^:]*orders/);
          expect(await myRows(dst, "orders")).toEqual([...(await myRows(source, "orders")), ...deleted].sort());
          expect({ ...dstContent, "table orders": "-" }).toEqual({ ...srcContent, "table orders": "-" });
        }
      },
    };
  }

  return {
    ...plan,
    check: async (c) => {
      const b = await c.first();
      if (mode === "partial") {
        // A partial restore into a database that does not exist fails today (matrix-findings.test.ts): the target is
        // made empty beforehand, which is as fresh as a target gets.
        await myQuery(`CREATE DATABASE \`${dst}\` CHARACTER SET utf8mb4`);
      }
      await c.restore();
      if (mode === "partial") {
        expect(b.manifest.selection?.tables).toEqual(PARTIAL_TABLES);
        expect(await myContent(dst)).toEqual(pick(m.my.content, PARTIAL_TABLES.flatMap((t) => [`table ${t}`, `auto_increment ${t}`])));
        const lines = m.my.schema.split("\n").filter((l) => PARTIAL_TABLES.some((t) => l.startsWith(`BASE TABLE ${t}:`)));
        expect(lines).toHaveLength(PARTIAL_TABLES.length);
        expect(await mySchema(dst)).toEqual(lines.join("\n"));
        return;
      }
      expect(await mySchema(dst)).toEqual(m.my.schema);
      expect(await myContent(dst)).toEqual(m.my.content);
    },
  };
}

function sqlitePlan(index: number): Omit<Plan, "cell" | "index" | "job"> {
  const restored = () => join(m.root, `sqlite-restored-${index}.db`);
  return {
    src: () => ({ engine: "sqlite", path: m.sqlite, database: "source" }),
    dst: () => ({ engine: "sqlite", path: restored() }),
    keys: {},
    check: async (c) => {
      await c.first();
      await c.restore();
      expect(sqliteContent(restored())).toEqual(sqliteContent(m.sqlite));
    },
  };
}

/** Remaining time to live of the keys with one, which must survive a restore (within a tolerance for the run). */
async function ttls(s: { port: number }): Promise<Record<string, number>> {
  return withRedis(s, async (r) => {
    const out: Record<string, number> = {};
    for (const [db, key] of [["0", "ttl:string"], ["0", "ttl:hash"], ["1", "ttl:db1"]] as const) {
      await r.sendCommand(["SELECT", db]);
      out[`db${db} ${key}`] = Number(await r.sendCommand(["PTTL", key]));
    }
    return out;
  });
}

function redisPlan(cell: Cell, index: number): Omit<Plan, "cell" | "index" | "job"> {
  const redis = { engine: "redis", host: "127.0.0.1" };
  // rdb: restored into the file that a stopped server loads at its next start; logical: into a running server.
  const rdbDir = () => join(m.root, `redis-rdb-${index}`);
  let dst: Record<string, unknown> = {};
  let target: TestRedis | undefined;
  return {
    src: () => ({ ...redis, port: m.redis!.port, mode: cell.mode }),
    dst: () => dst,
    keys: {},
    prepare: async () => {
      if (cell.mode === "rdb") {
        mkdirSync(rdbDir());
        dst = { ...redis, port: await freePort(), rdb_path: join(rdbDir(), "dump.rdb") };
      } else {
        target = await startRedis();
        m.servers.push(target);
        dst = { ...redis, port: target.port, mode: "logical" };
      }
    },
    check: async (c) => {
      await c.first();
      const restoreStart = Date.now();
      await c.restore();
      if (cell.mode === "rdb") {
        target = await startRedis({ dir: rdbDir() });
        m.servers.push(target);
      }
      const source = m.redis!;
      expect(await snapshotRedis(target!)).toEqual(await snapshotRedis(source));
      const [now, got] = [await ttls(source), await ttls(target!)];
      for (const [k, before] of Object.entries(m.redisTtls)) {
        expect(before, k).toBeGreaterThan(0);
        const restored = got[k]!;
        if (cell.mode === "rdb") {
          // An RDB snapshot holds absolute expiry times: the key expires when it does in the source.
          expect(Math.abs(restored - now[k]!), `TTL of ${k}: source ${now[k]} ms, restored ${restored} ms`).toBeLessThan(10_000);
        } else {
          // A logical dump holds TTLs relative to the dump (docs/configuration.md): what was left when the batch
          // dumped it, less the time since the restore began.
          const lowest = before - (m.batchEnd - m.batchStart) - (Date.now() - restoreStart) - 5_000;
          expect(restored, `TTL of ${k} after the restore (${before} ms before the dump)`).toBeLessThanOrEqual(before);
          expect(restored, `TTL of ${k} after the restore (${before} ms before the dump)`).toBeGreaterThanOrEqual(lowest);
        }
      }
    },
  };
}
