import { copyFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { ROOT, tempDir } from "../helpers/env.js";
import { engineConformance } from "./engine.suite.js";

const dir = tempDir("dbkeep-conf-sqlite-");
const SRC = join(dir, "source.db");
const DST = join(dir, "target.db");

/** The schema and every table's rows (BLOBs as hex), in rowid order. */
function snapshot(file: string): Record<string, string> {
  const db = new Database(file, { readonly: true });
  try {
    const out: Record<string, string> = { schema: JSON.stringify(db.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name").all()) };
    const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[];
    for (const { name } of tables) {
      const rows = db.prepare(`SELECT * FROM "${name.replace(/"/g, '""')}" ORDER BY rowid`).all();
      out[`table ${name}`] = `${rows.length}:${JSON.stringify(rows, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString("hex") : v))}`;
    }
    return out;
  } finally {
    db.close();
  }
}

engineConformance({
  engine: "sqlite",
  async setup() {
    copyFileSync(join(ROOT, "examples/app.db"), SRC);
    // Live writes in WAL mode: the backup must still be one consistent snapshot.
    const db = new Database(SRC);
    db.pragma("journal_mode = WAL");
    db.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, data BLOB); INSERT INTO notes (body, data) VALUES ('ünïcödé ✓', x'00ff10'), (NULL, NULL)");
    db.close();
    rmSync(DST, { force: true });
    return { source: { engine: "sqlite", path: SRC }, target: { engine: "sqlite", path: DST } };
  },
  async snapshot(which) {
    return snapshot(which === "source" ? SRC : DST);
  },
  async teardown() {},
  variants: [
    { label: "zstd", options: { compression: "zstd" } },
    { label: "gzip", options: { compression: "gzip" } },
    { label: "none", options: { compression: "none" } },
  ],
});
