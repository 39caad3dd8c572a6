import { Readable } from "node:stream";
import * as z from "zod";
import { COMPRESSIONS, COMPRESSION_EXT, type Compression } from "./compression.js";
import { DbkeepError } from "./errors.js";
import { readAll } from "./streams.js";
import type { Store, StoreObject } from "../stores/store.js";

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
    .array(z.discriminatedUnion("type", [z.object({ type: z.literal("X25519"), recipient: z.string().regex(/^age1[02-9ac-hj-np-z]{58}$/) }), z.object({ type: z.literal("scrypt") })]))
    .min(1),
});
export type ManifestEncryption = z.infer<typeof manifestEncryptionSchema>;

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
  dbkeep_version: z.string(),
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

export function serializeManifest(m: Manifest): string {
  return JSON.stringify(m, null, 2) + "\n";
}

export function parseManifest(text: string, key: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new DbkeepError("CORRUPT_BACKUP", `manifest ${key} is not valid JSON`, { cause: err });
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    throw new DbkeepError("CORRUPT_BACKUP", `manifest ${key} is not a dbkeep manifest: ${parsed.error.issues[0]?.message ?? "invalid"}`);
  }
  return parsed.data;
}

export async function putText(store: Store, key: string, text: string, signal?: AbortSignal): Promise<void> {
  await store.put(key, Readable.from([Buffer.from(text, "utf8")]), { signal, size: Buffer.byteLength(text) });
}

export async function readManifest(store: Store, key: string): Promise<Manifest> {
  const body = await readAll(await store.get(key), 4 * 1024 * 1024);
  return parseManifest(body.toString("utf8"), key);
}

export interface Listing {
  /** Complete backups (with a manifest), newest first. */
  backups: Manifest[];
  /** Objects no manifest accounts for: leftovers of failed or killed runs. */
  orphans: StoreObject[];
  /** Manifests that could not be read. */
  broken: { key: string; error: string }[];
}

/** Lists the backups under `prefix`: only those with a manifest count. */
export async function listBackups(store: Store, prefix: string): Promise<Listing> {
  const objects: StoreObject[] = [];
  for await (const o of store.list(prefix)) objects.push(o);
  const backups: Manifest[] = [];
  const broken: Listing["broken"] = [];
  const owned = new Set<string>();
  const sizes = new Map(objects.filter((o) => !o.partial).map((o) => [o.key, o.size]));
  for (const o of objects) {
    if (o.partial || !o.key.endsWith(MANIFEST_SUFFIX)) continue;
    try {
      const m = await readManifest(store, o.key);
      for (const k of objectKeysOf(m)) owned.add(k);
      owned.add(verifyKeyOf(m));
      // A manifest whose data is gone or cut short is not a backup: reported (list --all), never restored from,
      // and filled again by sync from a store that holds it intact.
      const damage = [{ key: m.key, bytes: m.stored_bytes }, ...(m.extras ?? []).map((x) => ({ key: x.key, bytes: x.stored_bytes }))]
        .map((x) => {
          const size = sizes.get(x.key);
          return size === undefined ? `${x.key} is missing` : size !== x.bytes ? `${x.key} is ${size} bytes, the manifest says ${x.bytes}` : undefined;
        })
        .find(Boolean);
      if (damage) broken.push({ key: o.key, error: `backup ${m.id}: ${damage}` });
      else backups.push(m);
    } catch (err) {
      broken.push({ key: o.key, error: (err as Error).message });
      owned.add(o.key);
    }
  }
  const orphans = objects.filter((o) => !owned.has(o.key) && !o.key.endsWith("/" + LAST_RUN) && o.key !== LAST_RUN);
  backups.sort((a, b) => (a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : a.id < b.id ? 1 : -1));
  return { backups, orphans, broken };
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

/** Finds a backup by id, data file name, or "latest". */
export function findBackup(backups: Manifest[], ref: string | undefined): Manifest | undefined {
  if (!ref || ref === "latest") return backups[0];
  return backups.find((b) => b.id === ref || b.key === ref || b.key.split("/").pop() === ref || manifestKeyOf(b).split("/").pop() === ref);
}
