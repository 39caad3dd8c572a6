import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createPostgresEngine } from "../../src/engines/postgres/index.js";
import { CLI, CLI_ENV, ROOT, createDb, dbkeep, dropDb, IN_CI, PG, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";

// pg_dumpall's script goes straight from pg_dumpall into the compressor (zstd, lz4) through a kernel pipe, or through
// node (gzip, none). Each is checked by what comes back: every database restored equal to what was dumped.
const A = "dkpipe_da_a";
const B = "dkpipe_da_b";
const available = await pgAvailable();
if (IN_CI && !available) throw new Error("PostgreSQL is not reachable at 127.0.0.1:5432");

/** Every row of a table, in key order, as one digest. */
async function digest(db: string, table: string): Promise<{ n: number; d: string }> {
  const [r] = await pgQuery<{ n: number; d: string }>(db, `SELECT count(*)::int AS n, md5(string_agg(t::text, '|' ORDER BY id)) AS d FROM ${table} t`);
  return r!;
}

/** What a backup would leave in a store (the run-history record of a failed run aside). */
function stored(dir: string): string[] {
  return files(dir).filter((f) => !/\/\.dbkeep-last-run\.[^/]*$/.test(f));
}

function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else out.push(join(d, e.name));
    }
  };
  try {
    walk(dir);
  } catch {
    /* no store directory: nothing stored */
  }
  return out;
}

function decompress(file: string): Buffer {
  if (file.endsWith(".zst")) return execFileSync("zstd", ["-dc", file], { maxBuffer: 1 << 28 });
  if (file.endsWith(".lz4")) return execFileSync("lz4", ["-dc", file], { maxBuffer: 1 << 28 });
  if (file.endsWith(".gz")) return execFileSync("gzip", ["-dc", file], { maxBuffer: 1 << 28 });
  return readFileSync(file);
}

describe.skipIf(!available)("PostgreSQL all_databases: the dump through a kernel pipe", () => {
  let dir: string;
  let excludes: string[];
  let want: { a: { n: number; d: string }; b: { n: number; d: string } };

  const config = (name: string, compression: string, extra = "") => {
    const cfg = join(dir, `${name}.yaml`);
    writeFileSync(
      cfg,
      `datasources:
  cluster:
    engine: postgres
    host: 127.0.0.1
    user: postgres
    all_databases: true
    exclude_databases: [${excludes.map((e) => JSON.stringify(e)).join(", ")}]
    compression: ${compression}
${extra}stores:
  local:
    type: local
    path: ${join(dir, name)}
jobs:
  cluster-backup:
    datasource: cluster
    store: local
`,
    );
    return cfg;
  };

  beforeAll(async () => {
    dir = tempDir("dbkeep-dapipe-");
    await dropDb(A);
    await dropDb(B);
    await createDb(A);
    await createDb(B);
    // A few MB each: far more than a pipe's buffer, so pg_dumpall and the compressor really run side by side.
    await pgQuery(A, "CREATE TABLE ta (id int PRIMARY KEY, v text, b bytea); INSERT INTO ta SELECT g, md5(g::text) || ' ä ''q''', decode(md5((g * 7)::text), 'hex') FROM generate_series(1, 40000) g");
    await pgQuery(B, "CREATE TABLE tb (id int PRIMARY KEY, j jsonb, t timestamptz); INSERT INTO tb SELECT g, jsonb_build_object('k', g, 's', repeat('x', g % 50)), timestamptz '2026-01-01' + g * interval '1 minute' FROM generate_series(1, 30000) g");
    want = { a: await digest(A, "ta"), b: await digest(B, "tb") };
    // The server is shared with other test files: only these two databases are dumped (and the roles), also when
    // another file creates a database meanwhile. Patterns leave out every name that does not start with dkpipe_da_.
    const prefix = "dkpipe_da_";
    excludes = [];
    for (let i = 0; i < prefix.length; i++) excludes.push(`${prefix.slice(0, i)}[^${prefix[i]}]*`, prefix.slice(0, i + 1));
  });

  afterAll(async () => {
    await dropDb(A);
    await dropDb(B);
  });

  it("the all-databases engine takes the pipe (zstd and lz4 then read pg_dumpall's output) and has no differential", () => {
    const e = createPostgresEngine({ host: "127.0.0.1", port: 5432, user: "postgres", all_databases: true } as Parameters<typeof createPostgresEngine>[0]);
    expect(e.format).toBe("dumpall");
    expect(e.dumpsToPipe).toBe(true);
    expect(e.differential).toBeUndefined();
  });

  for (const compression of ["zstd", "lz4", "gzip", "none"]) {
    it(`${compression}: every database comes back equal, and the manifest's checksum and size are the stored file's`, async () => {
      const cfg = config(compression, compression);
      const b = dbkeep(["-c", cfg, "backup", "cluster-backup"]);
      expect(b.code, b.stderr).toBe(0);
      const data = files(join(dir, compression)).filter((f) => /\.sql(\.(zst|lz4|gz))?$/.test(f));
      expect(data).toHaveLength(1);
      const manifest = JSON.parse(readFileSync(files(join(dir, compression)).find((f) => f.endsWith("manifest.json"))!, "utf8")) as {
        sha256: string;
        raw_bytes: number;
        stored_bytes: number;
      };
      const file = readFileSync(data[0]!);
      expect(manifest.sha256).toBe(createHash("sha256").update(file).digest("hex"));
      expect(manifest.stored_bytes).toBe(file.length);
      const raw = decompress(data[0]!);
      expect(manifest.raw_bytes).toBe(raw.length);
      const script = raw.toString("utf8");
      expect(script).toMatch(/^--\n-- PostgreSQL database cluster dump\n/);
      expect(script).toMatch(/PostgreSQL database cluster dump complete\n--\n\s*$/);

      await dropDb(A);
      await dropDb(B);
      const r = dbkeep(["-c", cfg, "restore", "cluster-backup", "--auto-confirm"]);
      expect(r.code, r.stderr).toBe(0);
      expect(await digest(A, "ta")).toEqual(want.a);
      expect(await digest(B, "tb")).toEqual(want.b);
    });
  }

  it("a pg_dumpall that fails half-way (stopped by the datasource's timeout) leaves nothing in the store", async () => {
    // B's table is locked, so pg_dumpall writes the roles and A into the pipe, then waits on B until the timeout.
    const locker = new pg.Client({ ...PG, database: B });
    await locker.connect();
    try {
      await locker.query("BEGIN; LOCK TABLE tb IN ACCESS EXCLUSIVE MODE");
      const cfg = config("failing", "zstd", "    timeout: 2\n");
      const b = dbkeep(["-c", cfg, "backup", "cluster-backup"]);
      expect(b.code).not.toBe(0);
      expect(b.stderr).toMatch(/pg_dumpall/);
      expect(stored(join(dir, "failing"))).toEqual([]);
      const l = dbkeep(["-c", cfg, "list", "cluster-backup", "--json"]);
      expect((JSON.parse(l.stdout) as { backups: unknown[] }).backups).toEqual([]);
    } finally {
      await locker.query("ROLLBACK").catch(() => undefined);
      await locker.end();
    }
  });

  it("a cancelled backup (SIGTERM) stops pg_dumpall and the compressor and leaves nothing", async () => {
    const locker = new pg.Client({ ...PG, database: B });
    await locker.connect();
    try {
      await locker.query("BEGIN; LOCK TABLE tb IN ACCESS EXCLUSIVE MODE");
      const cfg = config("cancelled", "zstd");
      const child = spawn(process.execPath, [CLI, "-c", cfg, "backup", "cluster-backup"], { cwd: ROOT, env: { ...process.env, ...CLI_ENV }, stdio: "ignore" });
      // pg_dumpall's pg_dump of B waits on the lock: the dump is running, part of it already in the pipe.
      const waiting = async () =>
        (await pgQuery<{ n: number }>("postgres", "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [B]))[0]!.n;
      for (let i = 0; i < 100 && (await waiting()) === 0; i++) await new Promise((r) => setTimeout(r, 100));
      expect(await waiting()).toBe(1);
      const kids = execFileSync("ps", ["-o", "pid=", "--ppid", String(child.pid)], { encoding: "utf8" }).trim().split(/\s+/).map(Number);
      expect(kids.length).toBeGreaterThanOrEqual(2); // pg_dumpall and zstd
      const code = await new Promise<number | null>((resolve) => {
        child.once("close", (c) => resolve(c));
        child.kill("SIGTERM");
      });
      expect(code).not.toBe(0);
      for (const pid of kids) expect(() => process.kill(pid, 0)).toThrow();
      expect(await waiting()).toBe(0);
      expect(stored(join(dir, "cancelled"))).toEqual([]);
    } finally {
      await locker.query("ROLLBACK").catch(() => undefined);
      await locker.end();
    }
  });
});
