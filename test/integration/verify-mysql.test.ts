import { spawn } from "node:child_process";
import { cpSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, dbkeep, tempDir } from "../helpers/env.js";
import { dropDatabasesLike, myAvailable, myQuery, mySource, quoteId } from "../helpers/mysql.js";
import { checkOf, dataPath, editManifest, flipByte, parseReport, rewriteDump } from "../helpers/verify.js";

const DB = "dbkeep_it_verify_my";
const BIG = "dbkeep_it_verify_mybig";
const FIXTURE = join(import.meta.dirname, "../fixtures/mariadb-fixture.sql");
const ON = "mysql://root@127.0.0.1:3306/mysql";
const available = await myAvailable();

async function scratchDbs(): Promise<string[]> {
  const rows = await myQuery("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'dbkeep\\_verify\\_\\_%' ORDER BY 1");
  return rows.map((r) => r[0] ?? "");
}

function backup(db: string, store: string): void {
  const r = dbkeep(["backup", `mysql://root@127.0.0.1:3306/${db}?compression=none`, "--to", store]);
  expect(r.code, r.stderr).toBe(0);
}

function verify(store: string) {
  const r = dbkeep(["verify", store, "latest", "--on", ON, "--json"]);
  expect(r.stdout, r.stderr).not.toBe("");
  return { code: r.code, report: parseReport(r.stdout) };
}

describe.skipIf(!available)("dbkeep verify: MariaDB", () => {
  const dir = tempDir("dbkeep-it-verify-my-");
  const good = join(dir, "good");
  const small = join(dir, "small");

  beforeAll(async () => {
    await dropDatabasesLike("dbkeep_it_verify_my");
    await myQuery(`CREATE DATABASE ${quoteId(DB)}`);
    mySource(DB, FIXTURE);
    backup(DB, good);
    // A few tables, a trigger, and enough rows that a restore lasts long enough to be killed half-way.
    await myQuery(`CREATE DATABASE ${quoteId(BIG)}`);
    await myQuery(
      `CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20)) ENGINE=InnoDB;
       CREATE TABLE child (id INT PRIMARY KEY, parent_id INT, KEY child_parent (parent_id), CONSTRAINT fk_child_parent FOREIGN KEY (parent_id) REFERENCES parent (id)) ENGINE=InnoDB;
       CREATE TRIGGER child_check BEFORE INSERT ON child FOR EACH ROW SET NEW.id = NEW.id;
       CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(200)) ENGINE=InnoDB;
       INSERT INTO parent SELECT seq, CONCAT('p', seq) FROM seq_1_to_50;
       INSERT INTO child SELECT seq, 1 + seq % 50 FROM seq_1_to_200;
       INSERT INTO big SELECT seq, CONCAT(MD5(seq), REPEAT(' payload ', 8)) FROM seq_1_to_150000;`,
      BIG,
    );
    backup(BIG, small);
  });

  afterAll(async () => {
    await dropDatabasesLike("dbkeep_it_verify_my");
  });

  it("a good backup passes every check, with the counts taken beside the dump, and its scratch database is gone", async () => {
    const { code, report } = verify(good);
    expect(code).toBe(0);
    expect(report.checks.filter((c) => c.status === "FAIL")).toEqual([]);
    for (const name of ["checksum", "restore", "tables", "row_counts", "indexes", "foreign_keys", "views", "functions", "triggers", "events", "orphans", "integrity"]) {
      expect(checkOf(report, name).status, name).toBe("PASS");
    }
    expect(checkOf(report, "integrity").detail).toMatch(/^CHECK TABLE/);
    expect(checkOf(report, "row_counts").detail).toMatch(/as recorded at backup time/);
    expect(report.restore?.seconds).toBeGreaterThan(0);
    expect(await scratchDbs()).toEqual([]);
  });

  it("a manifest that claims more fails tables, row_counts and indexes; an edited dump fails triggers", async () => {
    const claims = join(dir, "claims");
    cpSync(small, claims, { recursive: true });
    editManifest(claims, (m) => {
      const tables = m.tables as { name: string; rows?: number }[];
      tables.find((t) => t.name === "parent")!.rows! += 1;
      tables.push({ name: "ghost", rows: 0 });
      (m.objects as Record<string, string[]>).indexes!.push("parent.ghost_idx");
    });
    const a = verify(claims);
    expect(a.code).toBe(1);
    expect(checkOf(a.report, "tables")).toMatchObject({ status: "FAIL", detail: "missing 1 of 4: ghost" });
    expect(checkOf(a.report, "row_counts")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("parent: 50 rows, expected 51") });
    expect(checkOf(a.report, "indexes")).toMatchObject({ status: "FAIL", detail: "missing 1 of 5: parent.ghost_idx" });

    const edited = join(dir, "edited");
    cpSync(small, edited, { recursive: true });
    // Take one trigger out of the plain dump before it is "stored".
    rewriteDump(edited, (sql) => {
      const start = sql.indexOf("/*!50003 CREATE*/");
      expect(start).toBeGreaterThan(0);
      const end = sql.indexOf(";;\n", start);
      return sql.slice(0, start) + "/*!50003 SELECT 1 */" + sql.slice(end);
    });
    const b = verify(edited);
    expect(b.code).toBe(1);
    expect(checkOf(b.report, "triggers")).toMatchObject({ status: "FAIL", detail: "missing 1 of 1: child.child_check" });
    expect(checkOf(b.report, "tables").status).toBe("PASS");
    expect(await scratchDbs()).toEqual([]);
  });

  it("a corrupted object fails at the checksum, and nothing is restored", async () => {
    const store = join(dir, "corrupt");
    cpSync(small, store, { recursive: true });
    flipByte(dataPath(store), 300);
    const { code, report } = verify(store);
    expect(code).toBe(1);
    expect(checkOf(report, "checksum").status).toBe("FAIL");
    expect(checkOf(report, "restore").status).toBe("SKIP");
    expect(report.restore).toBeNull();
    expect(await scratchDbs()).toEqual([]);
  });

  it("a verify killed mid-restore leaves its scratch database, and the next run drops it", async () => {
    const store = small;
    const child = spawn(process.execPath, [CLI, "verify", store, "latest", "--on", ON], { env: { ...process.env, ...CLI_ENV }, stdio: "ignore" });
    const exited = new Promise((r) => child.once("exit", r));
    let seen: string[] = [];
    for (let i = 0; i < 400 && seen.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
      seen = await scratchDbs();
    }
    expect(seen.length).toBeGreaterThan(0);
    child.kill("SIGKILL");
    await exited;
    const { code, report } = verify(store);
    expect(code).toBe(0);
    expect(report.leftovers_removed.length).toBeGreaterThan(0);
    for (const name of report.leftovers_removed) expect(name).toContain(`_${child.pid}_`);
    expect(await scratchDbs()).toEqual([]);
  });
});
