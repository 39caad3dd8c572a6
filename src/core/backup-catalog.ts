import type { Manifest } from "./manifest.js";

/**
 * `backup_catalog.json` as the DB Backup Utility (seed 004) wrote it, made from dbkeep's manifests, so that scripts
 * that read that file keep working:
 *
 * ```json
 * { "backups": [ { "id": "full_mydb_20251101_120000_a1b2", "type": "full", "status": "completed",
 *     "timestamp_start": "2025-11-01T12:00:00+00:00", "duration_seconds": 12.5, "compress": true,
 *     "backup_location": "/backups/...", "statistics": { "total_tables": 5, "total_rows_processed": 50000,
 *     "total_size_bytes": 2097152 } } ] }
 * ```
 *
 * Exactly these fields, in this order and nesting; nothing of dbkeep's own is added, so a reader that checks the
 * keys finds the ones it knows.
 */
export interface SeedCatalogEntry {
  /** `<type>_<database>_<YYYYMMDD_HHMMSS>_<4 hex>`: the type, the database, the start (UTC), the SHA-256's first 4 hex digits. */
  id: string;
  type: SeedBackupType;
  /** Only complete backups are listed: always "completed". */
  status: "completed";
  /** The start in UTC, to the second, as Python's isoformat writes it: `2025-11-01T12:00:00+00:00`. */
  timestamp_start: string;
  duration_seconds: number;
  /** Whether the backup is compressed (any compression but none). */
  compress: boolean;
  /** Where the backup's data is: an absolute path for a local store, `<store>/<key>` for any other. */
  backup_location: string;
  statistics: {
    total_tables: number;
    total_rows_processed: number;
    /** The stored bytes of the backup: its data object and its extras (PostgreSQL globals). */
    total_size_bytes: number;
  };
}

export type SeedBackupType = "full" | "partial" | "differential";

export interface SeedCatalog {
  backups: SeedCatalogEntry[];
}

/** What seed 004 would call the backup: a differential, a partial (table selection) or a full backup. */
export function seedTypeOf(m: Pick<Manifest, "differential" | "selection">): SeedBackupType {
  if (m.differential?.kind === "differential") return "differential";
  return m.selection ? "partial" : "full";
}

/** `2025-11-01T12:00:00+00:00` from any ISO instant. */
export function seedTimestamp(iso: string): string {
  return new Date(iso).toISOString().slice(0, 19) + "+00:00";
}

function stamp(iso: string): string {
  const t = new Date(iso).toISOString();
  return `${t.slice(0, 4)}${t.slice(5, 7)}${t.slice(8, 10)}_${t.slice(11, 13)}${t.slice(14, 16)}${t.slice(17, 19)}`;
}

export function seedEntry(m: Manifest, location: string): SeedCatalogEntry {
  const type = seedTypeOf(m);
  const tables: { name: string; rows?: number; rows_estimate?: number }[] = m.tables ?? (m.selection ? m.selection.tables.map((name) => ({ name })) : []);
  const rows = tables.reduce((n, t) => n + (t.rows ?? t.rows_estimate ?? 0), 0);
  return {
    id: `${type}_${m.database}_${stamp(m.started_at)}_${m.sha256.slice(0, 4)}`,
    type,
    status: "completed",
    timestamp_start: seedTimestamp(m.started_at),
    duration_seconds: Math.round(m.duration_seconds * 100) / 100,
    compress: m.compression !== "none",
    backup_location: location,
    statistics: {
      total_tables: tables.length,
      total_rows_processed: rows,
      total_size_bytes: m.stored_bytes + (m.extras ?? []).reduce((n, x) => n + x.stored_bytes, 0),
    },
  };
}

/**
 * The catalog of these backups, oldest first as the seed tool appended them. A backup that appears in several
 * listings (the same store reached through two jobs) is listed once.
 */
export function seedCatalog(backups: { manifest: Manifest; location: string }[]): SeedCatalog {
  const seen = new Set<string>();
  const unique = backups.filter((b) => {
    const k = `${b.location}\n${b.manifest.sha256}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  unique.sort((a, b) => (a.manifest.started_at < b.manifest.started_at ? -1 : a.manifest.started_at > b.manifest.started_at ? 1 : a.manifest.id < b.manifest.id ? -1 : 1));
  return { backups: unique.map((b) => seedEntry(b.manifest, b.location)) };
}
