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
