// Builds a local store that holds many backups of one job, for the catalog benchmark (bench/catalog.mjs):
//
//   node bench/lib/catalog-store.mjs DIR [COUNT]      # default 10000, hourly, newest at 2026-12-01T00:00:00Z
//
// Each backup is what dbkeep writes for a SQLite job (data object, `.sha256` sidecar, manifest with its
// self-checksum, made by the build's own serializeManifest), so that every listing reads it as complete. The data
// objects are small: a listing reads sizes, never data. Run after `npm run build`.

import { createHash } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const { serializeManifest, checksumLine, backupKeys } = await import(pathToFileURL(join(ROOT, "dist", "core", "manifest.js")).href);

export const JOB = "app-backup";
export const PREFIX = "prod";
export const DATABASE = "app";

/** The config of the job whose store `storeDir` is (for list, status and prune with a job name). */
export function catalogConfig(storeDir, dbPath) {
  return `datasources:
  app:
    engine: sqlite
    path: ${dbPath}
    compression: zstd
stores:
  local:
    type: local
    path: ${storeDir}
jobs:
  ${JOB}:
    datasource: app
    store: local
    prefix: ${PREFIX}
    retention:
      keep_last: 24
      keep_daily: 14
      keep_weekly: 8
      keep_monthly: 12
`;
}

function manifestOf(at, i) {
  const keys = backupKeys(PREFIX, DATABASE, at, ".db", "zstd");
  const data = Buffer.from(`backup ${i} of ${DATABASE} taken at ${at.toISOString()}\n`);
  const sha256 = createHash("sha256").update(data).digest("hex");
  const m = {
    manifest_version: 1,
    id: keys.id,
    job: JOB,
    engine: "sqlite",
    database: DATABASE,
    source: { engine: "sqlite", database: DATABASE, path: "/srv/app/app.db" },
    format: "file",
    compression: "zstd",
    encryption: null,
    key: keys.data,
    checksum_key: keys.checksum,
    raw_bytes: 389120 + i,
    stored_bytes: data.length,
    sha256,
    started_at: at.toISOString(),
    finished_at: new Date(at.getTime() + 140).toISOString(),
    duration_seconds: 0.14,
    tool: { name: "sqlite", version: "3.53.2" },
    server_version: "3.53.2",
    tables: [
      { name: "customers", rows: 500 },
      { name: "orders", rows: 5000 + i },
      { name: "products", rows: 200 },
    ],
    objects: {
      indexes: ["orders_by_customer"],
      views: ["order_totals"],
      triggers: ["products.no_negative_price"],
      foreign_keys: ["orders(customer_id->customers.id)", "orders(product_id->products.id)"],
    },
    dbkeep_version: "0.1.0",
  };
  return { keys, data, sidecar: checksumLine(sha256, keys.data), manifest: serializeManifest(m) };
}

/** Writes `count` hourly backups (newest at `newest`) into a fresh local store at `dir`. */
export async function makeCatalogStore(dir, count, newest = new Date("2026-12-01T00:00:00Z")) {
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(dir, PREFIX, DATABASE), { recursive: true, mode: 0o700 });
  const BATCH = 256;
  for (let start = 0; start < count; start += BATCH) {
    const writes = [];
    for (let i = start; i < Math.min(count, start + BATCH); i++) {
      const b = manifestOf(new Date(newest.getTime() - i * 3600_000), i);
      writes.push(
        writeFile(join(dir, b.keys.data), b.data, { mode: 0o600 }),
        writeFile(join(dir, b.keys.checksum), b.sidecar, { mode: 0o600 }),
        writeFile(join(dir, b.keys.manifest), b.manifest, { mode: 0o600 }),
      );
    }
    await Promise.all(writes);
  }
  // The job's last run succeeded (prune reads it).
  await writeFile(join(dir, PREFIX, DATABASE, `.dbkeep-last-run.${JOB}.json`), JSON.stringify({ ok: true, at: newest.toISOString() }) + "\n");
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const dir = process.argv[2];
  if (!dir) {
    console.error("usage: node bench/lib/catalog-store.mjs DIR [COUNT]");
    process.exit(2);
  }
  await makeCatalogStore(dir, Number(process.argv[3] ?? 10000));
  console.log(`wrote ${process.argv[3] ?? 10000} backups to ${dir}`);
}
