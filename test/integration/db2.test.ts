import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { dbkeep, tempDir } from "../helpers/env.js";

const onPath = (tool: string) => spawnSync("sh", ["-c", `command -v ${tool}`]).status === 0;
const hasDb2 = onPath("db2") && onPath("db2ckbkp");
/** The instance and a database to back up come from the machine's Db2 setup: dbkeep cannot create an instance. */
const DATABASE = process.env.DBKEEP_TEST_DB2_DATABASE ?? "SAMPLE";

describe.skipIf(!hasDb2)("Db2 engine against a real instance (db2 not on this machine)", () => {
  it("backs up a database offline and restores it into another database", () => {
    const dir = tempDir("dbkeep-db2-it-");
    const cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: db2, database: ${DATABASE} }
  dst: { engine: db2, database: DBKCOPY }
stores:
  local: { type: local, path: ${join(dir, "backups")} }
jobs:
  db2: { datasource: src, store: local }
`,
      { mode: 0o600 },
    );
    const b = dbkeep(["-c", cfg, "backup", "db2"]);
    expect(b.stderr).not.toContain("error:");
    expect(b.code).toBe(0);
    const r = dbkeep(["-c", cfg, "restore", "db2", "--to", "dst", "--auto-confirm"]);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
  });
});
