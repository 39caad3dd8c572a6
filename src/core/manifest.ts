import { Readable } from "node:stream";
import { z } from "zod";
import { COMPRESSIONS, COMPRESSION_EXT, type Compression } from "./compression.js";
import { DbkeepError } from "./errors.js";
import { readAll } from "./streams.js";
import type { Store, StoreObject } from "../stores/store.js";

export const MANIFEST_VERSION = 1;
export const MANIFEST_SUFFIX = ".manifest.json";
/** The outcome of a job's last run, beside its backups (read by prune). */
export const LAST_RUN = ".dbkeep-last-run.json";

const tableSchema = z.object({ name: z.string(), rows: z.number().optional(), rows_estimate: z.number().optional() });

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
  manifest_version: z.literal(MANIFEST_VERSION),
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
  /** Objects beside the main dump (PostgreSQL globals), each with its own checksum. */
  extras: z.array(z.object({ name: z.string(), key: z.string(), sha256: z.string(), raw_bytes: z.number(), stored_bytes: z.number() })).optional(),
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
  for (const o of objects) {
    if (o.partial || !o.key.endsWith(MANIFEST_SUFFIX)) continue;
    try {
      const m = await readManifest(store, o.key);
      backups.push(m);
      for (const k of objectKeysOf(m)) owned.add(k);
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

export function manifestKeyOf(m: Manifest): string {
  const dir = m.key.includes("/") ? m.key.slice(0, m.key.lastIndexOf("/")) : "";
  return joinKey(dir, `${m.id}${MANIFEST_SUFFIX}`);
}

/** Finds a backup by id, data file name, or "latest". */
export function findBackup(backups: Manifest[], ref: string | undefined): Manifest | undefined {
  if (!ref || ref === "latest") return backups[0];
  return backups.find((b) => b.id === ref || b.key === ref || b.key.split("/").pop() === ref || manifestKeyOf(b).split("/").pop() === ref);
}
