import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeep, dropDb, pgAvailable, pgQuery, tempDir } from "../helpers/env.js";

const A = "dbkeep_it_da_a";
const B = "dbkeep_it_da_b";
const available = await pgAvailable();

describe.skipIf(!available)("PostgreSQL all_databases (pg_dumpall)", () => {
  let cfg: string;

  beforeAll(async () => {
    const dir = tempDir();
    await createDb(A);
    await createDb(B);
    await pgQuery(A, "CREATE TABLE ta (id int PRIMARY KEY, v text); INSERT INTO ta SELECT g, 'a' || g FROM generate_series(1, 50) g");
    await pgQuery(B, "CREATE TABLE tb (id int PRIMARY KEY, v text); INSERT INTO tb SELECT g, 'b' || g FROM generate_series(1, 70) g");
    // The local server is shared with the other test files (and holds large benchmark databases): everything but
    // the two databases of this test is left out, including databases other tests create while this one runs.
    const others = (await pgQuery<{ datname: string }>("postgres", "SELECT datname FROM pg_database WHERE NOT datistemplate OR datname = 'template1'"))
      .map((r) => r.datname)
      .filter((d) => d !== A && d !== B);
    const excludes = [...others, "dk_*", "cmp*", "dbkeep_conf_*", "dbkeep_it_[^d]*", "dbkeep_it_daemon*", "dbkeep_bench*"];
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  cluster:
    engine: postgres
    host: 127.0.0.1
    user: postgres
    all_databases: true
    exclude_databases: [${excludes.map((e) => JSON.stringify(e)).join(", ")}]
stores:
  local:
    type: local
    path: ${join(dir, "backups")}
jobs:
  cluster-backup:
    datasource: cluster
    store: local
    verify: true
`,
    );
  });

  afterAll(async () => {
    await dropDb(A);
    await dropDb(B);
  });

  it("backs up every database with pg_dumpall and restores them after they were dropped", async () => {
    const b = dbkeep(["-c", cfg, "backup", "cluster-backup"]);
    expect(b.code, b.stderr).toBe(0);
    const l = dbkeep(["-c", cfg, "list", "cluster-backup", "--json"]);
    const backups = (JSON.parse(l.stdout) as { backups: { key: string; format: string }[] }).backups;
    expect(backups).toHaveLength(1);
    expect(backups[0]!.format).toBe("dumpall");
    expect(backups[0]!.key).toMatch(/^all-databases\/all-databases-\d{8}-\d{6}\.sql\.gz$/);

    await dropDb(A);
    await dropDb(B);
    const r = dbkeep(["-c", cfg, "restore", "cluster-backup", "--auto-confirm"]);
    expect(r.code, r.stderr).toBe(0);
    expect(await pgQuery(A, "SELECT count(*)::int AS n, max(v) AS m FROM ta")).toEqual([{ n: 50, m: "a9" }]);
    expect(await pgQuery(B, "SELECT count(*)::int AS n FROM tb")).toEqual([{ n: 70 }]);
  });
});
