import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, rename, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { stateDir } from "./lock.js";
import type { Manifest } from "./manifest.js";
import { VERSION } from "./version.js";
import type { Store, StoreObject } from "../stores/store.js";

/**
 * The catalog: the manifests a listing read from one store under one prefix, kept so that the next listing need
 * not read them again. A cache, never the truth:
 * - it lives on this machine, in $DBKEEP_STATE_DIR/catalog/, one file per store and prefix. Not in the store: it
 *   would make list and status write to the store (a read-only credential, a bucket with object lock or
 *   versioning, a restic repository where each small upload is a snapshot), and a copy every machine shares would
 *   be one every machine can spoil for the others;
 * - the store's listing decides what exists: an entry is used only for a manifest object that is listed with the
 *   size, modification time and change token (etag) the entry recorded when the manifest was read. A manifest
 *   that is new, written again or edited is read again; an entry whose manifest is not listed is dropped. So the
 *   catalog never makes a deleted backup appear, and everything else a listing decides (damaged data, pending
 *   markers, damage notes, leftovers) is decided from the listing as before;
 * - it holds only manifests that were read whole, matched their own checksum and parsed: an unreadable manifest is
 *   read again every time, so a damaged backup is never hidden;
 * - a catalog file that is missing, cut, changed (it carries its own SHA-256), of another format or dbkeep version,
 *   or of another store is ignored and written anew from the manifests;
 * - it is written beside itself and renamed into place: two processes writing at once leave one whole catalog or
 *   the other, each of which the next listing checks against the store again.
 */

/** Bumped whenever what a manifest parses to may change, so that catalogs written before are not trusted. */
const CATALOG_FORMAT = 1;

/**
 * The file: a header line, one line per entry, and a trailer line with the SHA-256 of every byte before it. Read
 * and written a line at a time, so that no string as large as the file is ever made.
 */
interface Header {
  dbkeep_catalog: number;
  dbkeep_version: string;
  store: string;
  prefix: string;
}
interface Trailer {
  entries: number;
  sha256: string;
}

/** key, size, modification time (ms), etag, manifest. */
type Entry = [string, number, number, string | null, Manifest];

export interface Catalog {
  /** The manifest read earlier from this object, if the store lists it unchanged since. */
  get(o: StoreObject): Manifest | undefined;
  /** A manifest just read from the store and found sound. */
  put(o: StoreObject, m: Manifest): void;
  /**
   * Writes the catalog, if the listing found it different from what it holds: then it holds the entries that were
   * used or put since it was opened, and nothing else. Never fails: a catalog that cannot be written is not one.
   */
  save(): Promise<void>;
  /** How the listing used it, for tests and --debug: hits, reads, and entries dropped. */
  readonly stats: { loaded: boolean; hits: number; puts: number; dropped: number };
}

export interface CatalogOptions {
  /** Where catalogs live (default: $DBKEEP_STATE_DIR/catalog). */
  dir?: string;
  /** Ignore what the catalog holds: every manifest is read, and the catalog written anew. */
  rebuild?: boolean;
}

export function catalogDir(): string {
  return join(stateDir(), "catalog");
}

/** The file of one store and prefix. The store's name says which store of the config it is (`local:offsite`). */
export function catalogFile(store: Pick<Store, "name">, prefix: string, dir = catalogDir()): string {
  return join(dir, createHash("sha256").update(`${store.name}\n${prefix}`).digest("hex").slice(0, 32) + ".json");
}

const sameObject = (e: Entry, o: StoreObject) => e[1] === o.size && e[2] === o.modified.getTime() && e[3] === (o.etag ?? null);

/**
 * The value with each of its strings replaced by an equal one seen before: the manifests of a job repeat most of
 * their strings (engine, tool, source, table and object names), and JSON.parse makes a copy of each for every
 * manifest. Unique values (ids, keys, checksums, times) are longer than the limit and are left as they are.
 */
function intern(v: unknown, strings: Map<string, string>): unknown {
  if (typeof v === "string") {
    if (v.length > INTERN_MAX) return v;
    const seen = strings.get(v);
    if (seen !== undefined) return seen;
    strings.set(v, v);
    return v;
  }
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = intern(v[i], strings);
  } else if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    for (const k in o) o[k] = intern(o[k], strings);
  }
  return v;
}
const INTERN_MAX = 48;

const isEntry = (e: unknown): e is Entry =>
  Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "number" && typeof e[2] === "number" && (e[3] === null || typeof e[3] === "string") && typeof e[4] === "object" && e[4] !== null;

/**
 * The entries of a catalog file, or undefined when it is missing, damaged or not this store's. Read in chunks and
 * parsed a line at a time: the file is about 1 KB per backup, and holding it whole beside what it parses to would
 * add its size to the peak memory of every listing.
 */
async function load(file: string, store: string, prefix: string): Promise<Map<string, Entry> | undefined> {
  let fh;
  try {
    fh = await open(file, "r");
  } catch {
    return undefined;
  }
  try {
    const hash = createHash("sha256");
    const out = new Map<string, Entry>();
    const strings = new Map<string, string>();
    const chunk = Buffer.allocUnsafe(256 * 1024);
    let carry: Buffer = Buffer.alloc(0);
    let header: Header | undefined;
    // The line before the newest: only once another follows is it known not to be the trailer.
    let pending: Buffer | undefined;
    const take = (line: Buffer): boolean => {
      hash.update(line);
      const text = line.toString("utf8", 0, line.length - 1);
      if (!header) {
        header = JSON.parse(text) as Header;
        return header.dbkeep_catalog === CATALOG_FORMAT && header.dbkeep_version === VERSION && header.store === store && header.prefix === prefix;
      }
      const e: unknown = JSON.parse(text);
      if (!isEntry(e)) return false;
      e[4] = intern(e[4], strings) as Manifest;
      out.set(e[0], e);
      return true;
    };
    for (;;) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      let data = carry.length ? Buffer.concat([carry, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
      for (let nl; (nl = data.indexOf(10)) >= 0; data = data.subarray(nl + 1)) {
        if (pending && !take(pending)) return undefined;
        pending = data.subarray(0, nl + 1);
      }
      // Copied: `chunk` is read into again.
      if (pending) pending = Buffer.from(pending);
      carry = Buffer.from(data);
    }
    if (carry.length || !pending || !header) return undefined;
    const t = JSON.parse(pending.toString("utf8")) as Trailer;
    return t.sha256 === hash.digest("hex") && t.entries === out.size ? out : undefined;
  } catch {
    return undefined;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** Temporary files of writers that were killed before their rename, older than this, are removed by the next. */
const STALE_TEMP_MS = 3600_000;
/** Catalogs not written for this long (of stores gone or not listed any more) are removed by the next writer. */
const STALE_CATALOG_MS = 90 * 86400_000;

/** Lines written to the file at once. */
const WRITE_BATCH = 256;

async function write(file: string, dir: string, store: string, prefix: string, entries: Entry[]): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`;
  const hash = createHash("sha256");
  let fh;
  try {
    fh = await open(tmp, "wx", 0o600);
    const put = async (text: string) => {
      const b = Buffer.from(text, "utf8");
      hash.update(b);
      await fh!.write(b);
    };
    const header: Header = { dbkeep_catalog: CATALOG_FORMAT, dbkeep_version: VERSION, store, prefix };
    await put(JSON.stringify(header) + "\n");
    for (let i = 0; i < entries.length; i += WRITE_BATCH) {
      await put(entries.slice(i, i + WRITE_BATCH).map((e) => JSON.stringify(e) + "\n").join(""));
    }
    const trailer: Trailer = { entries: entries.length, sha256: hash.digest("hex") };
    await fh.write(JSON.stringify(trailer) + "\n");
    await fh.close();
    fh = undefined;
    // No fsync: a catalog cut by a crash fails its checksum and is written again from the manifests.
    await rename(tmp, file);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  const now = Date.now();
  for (const name of await readdir(dir)) {
    const age = name.endsWith(".tmp") ? STALE_TEMP_MS : name.endsWith(".json") ? STALE_CATALOG_MS : undefined;
    if (age === undefined) continue;
    const p = join(dir, name);
    const st = await stat(p).catch(() => undefined);
    if (st && now - st.mtimeMs > age) await unlink(p).catch(() => undefined);
  }
}

/** The catalog of `store` under `prefix` (see the top of this file). */
export async function openCatalog(store: Pick<Store, "name">, prefix: string, o: CatalogOptions = {}): Promise<Catalog> {
  const dir = o.dir ?? catalogDir();
  const file = catalogFile(store, prefix, dir);
  const old = o.rebuild ? undefined : await load(file, store.name, prefix);
  const next = new Map<string, Entry>();
  const stats = { loaded: old !== undefined, hits: 0, puts: 0, dropped: 0 };
  return {
    stats,
    get(o) {
      const e = old?.get(o.key);
      if (!e || !sameObject(e, o)) return undefined;
      next.set(o.key, e);
      stats.hits++;
      return e[4];
    },
    put(o, m) {
      next.set(o.key, [o.key, o.size, o.modified.getTime(), o.etag ?? null, m]);
      stats.puts++;
    },
    async save() {
      stats.dropped = old ? [...old.keys()].filter((k) => !next.has(k) || next.get(k) !== old.get(k)).length : 0;
      if (old && stats.puts === 0 && stats.dropped === 0 && old.size === next.size) return;
      try {
        await write(file, dir, store.name, prefix, [...next.values()]);
      } catch {
        // A cache that cannot be written (a read-only home, a full disk) only costs the next listing its reads.
      }
    },
  };
}
