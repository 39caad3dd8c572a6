import { mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { Catalog, EngineVerifier, ScratchOptions, ScratchTarget } from "../../verify/engine.js";
import type { CheckResult } from "../../verify/report.js";
import { markDirKept, removeDeadScratchDirs, scratchDirName } from "../../verify/scratch.js";
import type { SchemaObjects } from "../engine.js";

function q(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Tables with exact row counts and schema objects of an open SQLite database (the backup's own naming). */
export function sqliteCatalog(db: Database.Database): Catalog {
  const rows = db.prepare("SELECT type, name, tbl_name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY name").all() as { type: string; name: string; tbl_name: string }[];
  const tableNames = rows.filter((r) => r.type === "table").map((r) => r.name);
  const tables = tableNames.map((name) => {
    // Virtual tables may need a module this process lacks; their rows are not counted then.
    try {
      return { name, rows: Number((db.prepare(`SELECT count(*) AS n FROM ${q(name)}`).get() as { n: number }).n) };
    } catch {
      return { name };
    }
  });
  const fks: string[] = [];
  for (const t of tableNames) {
    try {
      const list = db.prepare(`PRAGMA foreign_key_list(${q(t)})`).all() as { id: number; table: string; from: string; to: string | null }[];
      const byId = new Map<number, string[]>();
      for (const f of list) byId.set(f.id, [...(byId.get(f.id) ?? []), `${f.from}->${f.table}.${f.to ?? "?"}`]);
      for (const cols of byId.values()) fks.push(`${t}(${cols.join(",")})`);
    } catch {
      // virtual tables have no foreign keys
    }
  }
  const objects: SchemaObjects = {
    indexes: rows.filter((r) => r.type === "index").map((r) => r.name),
    views: rows.filter((r) => r.type === "view").map((r) => r.name),
    triggers: rows.filter((r) => r.type === "trigger").map((r) => `${r.tbl_name}.${r.name}`),
    foreign_keys: fks.sort(),
  };
  return { tables, objects };
}

export const sqliteVerifier: EngineVerifier = {
  async prepare(o: ScratchOptions): Promise<ScratchTarget> {
    const dir = join(tmpdir(), scratchDirName("sqlite"));
    await mkdir(dir, { mode: 0o700 });
    const path = join(dir, `${o.manifest.database}.db`);
    const open = <T>(fn: (db: Database.Database) => T): T => {
      const db = new Database(path, { readonly: true, fileMustExist: true });
      try {
        return fn(db);
      } finally {
        db.close();
      }
    };
    return {
      kind: "file",
      name: path,
      where: `temporary file ${path}`,
      datasource: { engine: "sqlite", path, database: o.manifest.database },
      catalog: async () => open(sqliteCatalog),
      integrity: async (): Promise<CheckResult> =>
        open((db) => {
          const r = (db.prepare("PRAGMA integrity_check").all() as { integrity_check: string }[]).map((x) => x.integrity_check);
          const fk = db.prepare("PRAGMA foreign_key_check").all() as unknown[];
          if (r.length !== 1 || r[0] !== "ok") return { name: "integrity", status: "FAIL", detail: `PRAGMA integrity_check: ${r.slice(0, 3).join("; ")}` };
          return { name: "integrity", status: "PASS", detail: `PRAGMA integrity_check ok${fk.length ? "" : ", foreign_key_check ok"}` };
        }),
      orphans: async (limit: number): Promise<CheckResult> =>
        open((db) => {
          const rows = db.prepare(`PRAGMA foreign_key_check`).all() as { table: string; parent: string }[];
          const anyFk = (db.prepare("SELECT count(*) AS n FROM sqlite_schema WHERE type = 'table' AND sql LIKE '%REFERENCES%'").get() as { n: number }).n;
          if (!anyFk) return { name: "orphans", status: "SKIP", detail: "no foreign keys" };
          if (rows.length) {
            const by = new Map<string, number>();
            for (const r of rows.slice(0, limit)) by.set(`${r.table}->${r.parent}`, (by.get(`${r.table}->${r.parent}`) ?? 0) + 1);
            return { name: "orphans", status: "FAIL", detail: `rows pointing nowhere: ${[...by].map(([k, n]) => `${k}: ${n} row(s)`).join("; ")}`, data: { orphans: Object.fromEntries(by) } };
          }
          return { name: "orphans", status: "PASS", detail: "PRAGMA foreign_key_check: no orphan rows" };
        }),
      query: async (sql: string) =>
        open((db) => {
          const row = db.prepare(sql).raw(true).get() as unknown[] | undefined;
          if (!row) return undefined;
          return row[0] === null || row[0] === undefined ? null : String(row[0]);
        }),
      env: () => ({ DATABASE_URL: `sqlite:${path}`, DBKEEP_VERIFY_PATH: path }),
      async drop() {
        await rm(dir, { recursive: true, force: true });
      },
      keep: () => markDirKept(dir),
    };
  },
  async cleanupLeftovers() {
    return removeDeadScratchDirs("sqlite");
  },
};
