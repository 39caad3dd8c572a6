import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";

/** Every table's rows in order, and the schema: what a user compares after restoring a SQLite database. */
export function sqliteContent(file: string): Record<string, string> {
  const db = new Database(file, { readonly: true });
  try {
    const tables = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").all() as { name: string }[];
    const out: Record<string, string> = { schema: JSON.stringify(db.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY name").all()) };
    for (const { name } of tables) out[name] = JSON.stringify(db.prepare(`SELECT * FROM "${name}" ORDER BY rowid`).all(), (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString("hex") : v));
    return out;
  } finally {
    db.close();
  }
}

/**
 * Writes DIR/dbkeep.yaml (0600) for a store test: datasource `app` (DIR/app.db unless `db`), an empty target
 * `copy` beside it, the `stores:` entries given as YAML (indented by two), and job `app-backup` writing `app`
 * into `store` under prefix `app`, verified. Returns the file's path.
 */
export function sqliteJobConfig(dir: string, o: { store: string; stores: string; compression?: string; db?: string }): string {
  const cfg = join(dir, "dbkeep.yaml");
  const text = [
    "datasources:",
    `  app: { engine: sqlite, path: ${o.db ?? join(dir, "app.db")}, compression: ${o.compression ?? "zstd"} }`,
    `  copy: { engine: sqlite, path: ${join(dir, "copy.db")} }`,
    "stores:",
    o.stores.replace(/\n+$/, ""),
    "jobs:",
    `  app-backup: { datasource: app, store: ${o.store}, prefix: app, verify: true }`,
    "",
  ].join("\n");
  writeFileSync(cfg, text, { mode: 0o600 });
  return cfg;
}
