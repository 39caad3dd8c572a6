import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeep, dropDb, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";
import { contentOf } from "../helpers/pgcompare.js";
import { runWatchingChildren } from "../helpers/proc.js";

const SRC = "dbkeep_it_cfg_src";
const DST = "dbkeep_it_cfg_dst";
const ROLE = "dbkeep_it_globals_role";
const SECRET = "Sup3r-Secret-pw-4711";
const available = await pgAvailable();


describe.skipIf(!available)("PostgreSQL in config mode", () => {
  let dir: string;
  let cfg: string;

  beforeAll(async () => {
    dir = tempDir();
    await createDb(SRC);
    await pgQuery(SRC, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g");
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
    await pgQuery("postgres", `CREATE ROLE ${ROLE} NOLOGIN CONNECTION LIMIT 7`);
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src:
    engine: postgres
    host: 127.0.0.1
    user: postgres
    password_env: DBKEEP_IT_PW
    database: ${SRC}
    format: custom
    compression: zstd
    globals: true
  dst:
    engine: postgres
    host: 127.0.0.1
    user: postgres
    database: ${DST}
stores:
  local:
    type: local
    path: ${join(dir, "backups")}
jobs:
  src-backup:
    datasource: src
    store: local
    prefix: it
    verify: true
    retention:
      keep_last: 1
`,
      { mode: 0o600 },
    );
  });

  afterAll(async () => {
    await dropDb(SRC);
    await dropDb(DST);
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
  });

  it("the password reaches pg_dump through its environment only: never an argument list, never another child", async () => {
    const { code, output, procs } = await runWatchingChildren(["-c", cfg, "backup", "src-backup"], { DBKEEP_IT_PW: SECRET });
    expect(code, output).toBe(0);
    expect(procs.some((p) => p.cmdline.includes("pg_dump"))).toBe(true);
    for (const p of procs) expect(p.cmdline).not.toContain(SECRET);
    const dumper = procs.find((p) => /\/pg_dump --format/.test(p.cmdline) && p.environ !== "");
    expect(dumper?.environ).toContain(`PGPASSWORD=${SECRET}`);
    for (const p of procs.filter((x) => x.cmdline.includes("zstd"))) {
      expect(p.environ).not.toContain(SECRET);
      expect(p.environ).not.toContain("DBKEEP_IT_PW");
    }
    expect(output).not.toContain(SECRET);
  });

  it("globals: roles are backed up beside the dump and restored with --globals", async () => {
    const list = JSON.parse(dbkeep(["-c", cfg, "list", "src-backup", "--json"]).stdout) as { backups: { id: string; extras?: { name: string; key: string }[] }[] };
    const m = list.backups[0]!;
    expect(m.extras?.map((x) => x.name)).toEqual(["globals"]);
    expect(m.extras?.[0]?.key).toMatch(/^it\/dbkeep_it_cfg_src\/dbkeep_it_cfg_src-\d{8}-\d{6}\.globals\.sql\.zst$/);
    await pgQuery("postgres", `DROP ROLE ${ROLE}`);
    const r = dbkeep(["-c", cfg, "restore", "src-backup", "--to", "dst", "--globals", "--auto-confirm"]);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    const roles = await pgQuery<{ rolconnlimit: number }>("postgres", "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", [ROLE]);
    expect(roles).toEqual([{ rolconnlimit: 7 }]);
    expect(await contentOf(DST)).toEqual(await contentOf(SRC));
  });

  it("backup --prune applies the job's retention after a successful backup, removing every object of the old one", async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const r = dbkeep(["-c", cfg, "backup", "src-backup", "--prune"], { env: { DBKEEP_IT_PW: SECRET } });
    expect(r.code).toBe(0);
    const files = readdirSync(join(dir, "backups/it", SRC));
    expect(files.filter((f) => f.endsWith(".manifest.json"))).toHaveLength(1);
    expect(files.filter((f) => f.includes(".globals."))).toHaveLength(1);
    expect(files.filter((f) => !f.startsWith(".dbkeep-last-run"))).toHaveLength(4); // dump, sidecar, globals, manifest
  });
});
