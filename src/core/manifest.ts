import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import * as z from "zod";
import { COMPRESSIONS, COMPRESSION_EXT, type Compression } from "./compression.js";
import { DbkeepError } from "./errors.js";
import { readAll } from "./streams.js";
import type { Store } from "../stores/store.js";

export const MANIFEST_VERSION = 1;
/**
 * Written by partial and differential backups: a dbkeep that predates them refuses such a manifest instead of
 * restoring a partial backup as if it were a whole database. Version 1 manifests parse unchanged.
 */
export const MANIFEST_VERSION_SELECTIVE = 2;
export const MANIFEST_SUFFIX = ".manifest.json";
/** The outcome of a job's last run, beside its backups (read by prune). */
export const LAST_RUN = ".dbkeep-last-run.json";

const tableSchema = z.object({ name: z.string(), rows: z.number().optional(), rows_estimate: z.number().optional() });

export const selectionSchema = z.object({
  patterns: z.object({
    tables: z.array(z.string()).optional(),
    exclude_tables: z.array(z.string()).optional(),
    schemas: z.array(z.string()).optional(),
    exclude_schemas: z.array(z.string()).optional(),
  }),
  /** `schema.table` (PostgreSQL) or `table` (MySQL/MariaDB, in the datasource's database). */
  tables: z.array(z.string()),
  /**
   * What the tables need in the target and the backup does not carry, as `kind name` ("table public.language",
   * "type public.mood"): a restore into a target without them is refused before anything changes.
   */
  requires: z.array(z.string()).optional(),
});
export type ManifestSelection = z.infer<typeof selectionSchema>;

export const differentialSchema = z.object({
  kind: z.enum(["full", "differential"]),
  /** Fingerprint of the tables and their columns: a differential builds only on a full backup with the same one. */
  schema_digest: z.string(),
  /** Full: the instant (UTC, from the database's clock) from which the differentials built on it take changes. */
  safe_point: z.string().optional(),
  /** Differential: the full backup it applies on. */
  base: z.object({ id: z.string(), manifest_key: z.string(), sha256: z.string() }).optional(),
  /** Differential: rows whose basis column is at or after this instant are in it (the base's safe_point). */
  cutoff: z.string().optional(),
  /** Differential: the database's clock inside the dump's snapshot. */
  snapshot_at: z.string().optional(),
  /** Differential: the basis column of each table dumped by changes. */
  basis: z.record(z.string(), z.string()).optional(),
  /** Differential: tables dumped whole, each with the reason. */
  full_tables: z.array(z.object({ name: z.string(), reason: z.string() })).optional(),
  track_deletes: z.boolean().optional(),
  /** Differential without track_deletes: each table's primary-key set at dump time ("rows:digest"). */
  key_digests: z.record(z.string(), z.string()).optional(),
});
export type ManifestDifferential = z.infer<typeof differentialSchema>;

/** Appended to the names of encrypted objects: `app-20260101-000000.sql.zst.age`. */
export const ENCRYPTED_EXT = ".age";

/**
 * An encrypted backup: the format and its recipients' public keys (`{"type":"scrypt"}` for a passphrase), so that
 * anyone can see whose key opens it; never a secret.
 */
export const manifestEncryptionSchema = z.object({
  format: z.literal("age"),
  recipients: z
    .array(
      z.discriminatedUnion("type", [
        // A manifest made again by `dbkeep repair` knows that a recipient was an X25519 key, not which one.
        z.object({ type: z.literal("X25519"), recipient: z.string().regex(/^age1[02-9ac-hj-np-z]{58}$/).optional() }),
        z.object({ type: z.literal("scrypt") }),
      ]),
    )
    .min(1),
});
export type ManifestEncryption = z.infer<typeof manifestEncryptionSchema>;

export const importedSchema = z.object({
  /** The file's name (without its directory). */
  file: z.string(),
  bytes: z.number(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** How the file was packed around the dump, outermost first, e.g. ["fernet", "gzip"]; empty for a bare dump. */
  layers: z.array(z.string()),
  /** Where the time the backup was taken comes from. */
  taken_from: z.enum(["--taken-at", "file name", "fernet timestamp", "file mtime"]),
  at: z.string(),
});
export type ManifestImported = z.infer<typeof importedSchema>;

/** The JSON manifest, written last: a backup exists only when its manifest does. Never holds a secret. */
export const manifestSchema = z.object({
  manifest_version: z.union([z.literal(MANIFEST_VERSION), z.literal(MANIFEST_VERSION_SELECTIVE)]),
  id: z.string(),
  job: z.string().optional(),
  /** The backup's kind, e.g. daily, weekly or manual; manual backups are kept until deleted by hand. */
  type: z.string().optional(),
  engine: z.string(),
  database: z.string(),
  source: z.record(z.string(), z.union([z.string(), z.number()])).optional(),
  format: z.string(),
  compression: z.enum(COMPRESSIONS),
  compression_level: z.number().optional(),
  encryption: z.null().or(manifestEncryptionSchema),
  key: z.string(),
  checksum_key: z.string(),
  raw_bytes: z.number(),
  stored_bytes: z.number(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  started_at: z.string(),
  finished_at: z.string(),
  duration_seconds: z.number(),
  tool: z.object({ name: z.string(), version: z.string() }).optional(),
  server_version: z.string().optional(),
  tables: z.array(tableSchema).optional(),
  /** Schema objects by kind (indexes, foreign_keys, views, functions, triggers, sequences, types, events). */
  objects: z.record(z.string(), z.array(z.string())).optional(),
  /** Objects beside the main dump (PostgreSQL globals), each with its own checksum. */
  extras: z.array(z.object({ name: z.string(), key: z.string(), sha256: z.string(), raw_bytes: z.number(), stored_bytes: z.number() })).optional(),
  /** A partial backup: the patterns it was made with and the tables they resolved to; restore puts back only these. */
  selection: selectionSchema.optional(),
  /** A full backup a differential can build on, or a differential (see docs/partial-and-differential.md). */
  differential: differentialSchema.optional(),
  /**
   * Set by `dbkeep import` on a backup made by another tool and adopted into the store: the file it came from as it
   * was (name, size, SHA-256, how it was wrapped), and when it was adopted. `started_at` is when it was taken.
   */
  imported: importedSchema.optional(),
  /** Set by `dbkeep repair` on a manifest it made again from the data object and its sidecar. */
  repaired: z.object({ at: z.string(), reason: z.string() }).optional(),
  dbkeep_version: z.string(),
  /**
   * SHA-256 of the manifest's other fields (see manifestChecksum): a changed byte anywhere in them makes the
   * manifest unreadable instead of quietly wrong. Manifests written before it existed have none.
   */
  checksum: z.string().optional(),
});
export type Manifest = z.infer<typeof manifestSchema>;

/** `YYYYMMDD-HHMMSS` in UTC. */
export function timestampId(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`;
}

export function joinKey(...parts: (string | undefined)[]): string {
  return parts
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/^\/+|\/+$/g, ""))
    .filter((p) => p !== "")
    .join("/");
}

export interface BackupKeys {
  id: string;
  data: string;
  checksum: string;
  manifest: string;
}

/** `<prefix>/<database>/<database>-<YYYYMMDD-HHMMSS>.<ext>`, its `.sha256` sidecar and its manifest. */
export function backupKeys(prefix: string | undefined, database: string, at: Date, extension: string, compression: Compression, n = 1, suffix = ""): BackupKeys {
  const id = `${database}-${timestampId(at)}${n > 1 ? `-${n}` : ""}`;
  const dir = joinKey(prefix, database);
  const data = joinKey(dir, `${id}${extension}${COMPRESSION_EXT[compression]}${suffix}`);
  return { id, data, checksum: `${data}.sha256`, manifest: joinKey(dir, `${id}${MANIFEST_SUFFIX}`) };
}

/** The sidecar in the format `sha256sum -c` accepts. */
export function checksumLine(sha256: string, dataKey: string): string {
  return `${sha256}  ${dataKey.split("/").pop()}\n`;
}

/**
 * `sha256:<hex>` of the manifest without its `checksum` field, as compact JSON in the order its keys were written.
 * JSON.parse keeps that order, so a reader computes the same text from what it parsed; unknown fields (of a newer
 * dbkeep) are part of it too.
 */
export function manifestChecksum(fields: Record<string, unknown>): string {
  const { checksum: _c, ...rest } = fields;
  return "sha256:" + createHash("sha256").update(JSON.stringify(rest)).digest("hex");
}

export function serializeManifest(m: Manifest): string {
  const { checksum: _c, ...rest } = m;
  return JSON.stringify({ ...rest, checksum: manifestChecksum(rest) }, null, 2) + "\n";
}

export function parseManifest(text: string, key: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new DbkeepError("CORRUPT_BACKUP", `manifest ${key} is not valid JSON`, { cause: err });
  }
  if (raw && typeof raw === "object" && !Array.isArray(raw) && "checksum" in raw) {
    const fields = raw as Record<string, unknown>;
    if (fields.checksum !== manifestChecksum(fields)) {
      throw new DbkeepError("CORRUPT_BACKUP", `manifest ${key} does not match its own checksum: it was changed or damaged after it was written`);
    }
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new DbkeepError("CORRUPT_BACKUP", `manifest ${key} is not a dbkeep manifest: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  }
  return parsed.data;
}

/** Writes a small text object; with `ifAbsent`, only where none exists (rejects with ALREADY_EXISTS otherwise). */
export async function putText(store: Store, key: string, text: string, signal?: AbortSignal, o: { ifAbsent?: boolean } = {}): Promise<void> {
  await store.put(key, Readable.from([Buffer.from(text, "utf8")]), { ...(signal ? { signal } : {}), size: Buffer.byteLength(text), ...(o.ifAbsent ? { ifAbsent: true } : {}) });
}

export async function readManifest(store: Store, key: string): Promise<Manifest> {
  const body = await readAll(await store.get(key), 4 * 1024 * 1024);
  return parseManifest(body.toString("utf8"), key);
}

/** Every object that belongs to a backup: what prune deletes with it. The manifest comes first. */
export function objectKeysOf(m: Manifest): string[] {
  return [manifestKeyOf(m), m.key, m.checksum_key, ...(m.extras ?? []).map((e) => e.key)];
}

/**
 * The report of the backup's last verification by a restore (`dbkeep verify`), beside its manifest. Not part of
 * the backup: listed with it while it exists, a leftover for prune once the backup is gone.
 */
export function verifyKeyOf(m: Manifest): string {
  const dir = m.key.includes("/") ? m.key.slice(0, m.key.lastIndexOf("/")) : "";
  return joinKey(dir, `${m.id}.verify.json`);
}

export function manifestKeyOf(m: Manifest): string {
  const dir = m.key.includes("/") ? m.key.slice(0, m.key.lastIndexOf("/")) : "";
  return joinKey(dir, `${m.id}${MANIFEST_SUFFIX}`);
}
