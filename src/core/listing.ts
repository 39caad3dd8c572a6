import { hostname } from "node:os";
import { ownerGone, pidAlive } from "./owner.js";
import { DbkeepError } from "./errors.js";
import { checksumLine, LAST_RUN, MANIFEST_SUFFIX, objectKeysOf, parseManifest, putText, verifyKeyOf, type Manifest } from "./manifest.js";
import { readAll } from "./streams.js";
import { openCatalog, type Catalog } from "./catalog.js";
import type { Store, StoreObject } from "../stores/store.js";

/**
 * What a store holds under a prefix, object by object, sorted into backups, damaged backups and leftovers.
 *
 * The objects of one backup share its id as the start of their names (`<id>.sql.gz`, `<id>.sql.gz.sha256`,
 * `<id>.manifest.json`, `<id>.globals.sql.gz`, `<id>.verify.json`, `<id>.pending-<token>.json`): a group. A run that
 * writes or deletes a group marks it first with a pending marker (core/reserve.ts) and removes the marker only when
 * the manifest is written (or deleted with everything else), so a group is one of:
 * - a backup: its manifest is readable, matches its own checksum, and every object it names has the size it says;
 * - damaged: it holds data but its manifest is unreadable or missing and no marker says it never committed, or its
 *   manifest is fine and its data is missing or has another size. Never a leftover: nothing deletes it without
 *   --force, and `dbkeep repair` makes its manifest again where the data and its sidecar allow;
 * - a leftover: it provably never committed (a pending marker and no manifest: a run in progress, or one that was
 *   killed), an interrupted upload's temporary object, or objects that hold no data (a lone sidecar).
 * Objects whose names are not dbkeep's are no part of any of these: nothing lists or deletes them.
 */

/** `<id>.pending-<token>.json`: a group being written or deleted. */
export const PENDING_RE = /\.pending-([0-9a-f]{6,32})\.json$/;
/** The id in a backup object's name: `<database>-YYYYMMDD-HHMMSS[-N]`, then a dot. */
const ID_RE = /^(.+-\d{8}-\d{6}(?:-\d+)?)\./;
/** The temporary name of an interrupted upload (local and SSH stores): `.<name>.dbkeep-partial-<random>`. */
const PARTIAL_MARK = ".dbkeep-partial-";
/**
 * `<id>.damage.json`: written by restore and verify when the data did not match its manifest's checksum, which a
 * listing cannot see by itself (the size is right). Removed when a check passes again or sync replaces the copy.
 */
export const DAMAGE_NOTE = ".damage.json";
/** A manifest that `dbkeep repair` replaced, kept for whoever wants to look at it. */
export const DAMAGED_MANIFEST_MARK = ".damaged-manifest-";

/** What a pending marker says: who is writing (or deleting) the group. */
export interface PendingMarker {
  id: string;
  purpose: "backup" | "copy" | "delete" | "repair";
  job?: string;
  host: string;
  pid: number;
  started_at: string;
  token: string;
}

export interface DamagedBackup {
  id: string;
  /** The directory of the group, e.g. `prod/appdb`. */
  dir: string;
  /** When it was taken: from its manifest when readable, else from its id. */
  at: string;
  /** The job it belongs to, when its manifest (or a marker) says. */
  job?: string;
  /** The manifest, when it is readable (the damage is in the data). */
  manifest?: Manifest;
  manifestKey: string;
  /** What is wrong, one line each. */
  problems: string[];
  /** Every object of the group. */
  objects: StoreObject[];
  /** `dbkeep repair` can make its manifest again (data and sidecar present, the manifest unreadable or missing). */
  repairable: boolean;
  /**
   * Its manifest is fine and its objects have the right sizes: only a restore or verify found its data not
   * matching (a damage note). Named explicitly, it may be checked again; "latest" of a restore passes it over.
   */
  noted?: boolean;
}

export interface Leftover {
  /** The id of the group, when its objects' names give one. */
  id?: string;
  objects: StoreObject[];
  why: "uncommitted" | "interrupted upload" | "no data";
  /** The pending marker of an uncommitted group. */
  marker?: PendingMarker;
  /** The newest object's modification time: the grace period counts from it. */
  newest: Date;
}

export interface Listing {
  /** Complete backups (with a readable manifest and their data in place), newest first. */
  backups: Manifest[];
  /** Backups that hold data but cannot be restored as they are, newest first. */
  damaged: DamagedBackup[];
  /** Groups and objects that provably never committed, or hold nothing of value. */
  leftovers: Leftover[];
  /** Every object of `leftovers`, flat. */
  orphans: StoreObject[];
  /** Flaws of complete backups that do not stop a restore (a missing or changed sidecar), by backup id. */
  flaws: Map<string, string[]>;
  /** The key of every object listed. */
  keys: Set<string>;
}

interface Group {
  dir: string;
  id: string;
  objects: StoreObject[];
  manifest?: StoreObject;
  markers: StoreObject[];
  partials: StoreObject[];
}

function splitKey(key: string): { dir: string; base: string } {
  const i = key.lastIndexOf("/");
  return i < 0 ? { dir: "", base: key } : { dir: key.slice(0, i), base: key.slice(i + 1) };
}

/** The name an interrupted upload's temporary object would have had, if its name says. */
function finalNameOfPartial(base: string): string | undefined {
  const i = base.indexOf(PARTIAL_MARK);
  return base.startsWith(".") && i > 1 ? base.slice(1, i) : undefined;
}

export function idOfName(base: string): string | undefined {
  if (base.endsWith(MANIFEST_SUFFIX)) return base.slice(0, -MANIFEST_SUFFIX.length);
  return ID_RE.exec(base)?.[1];
}

/** Sorts a store's objects into groups by backup id; objects that belong to none are returned apart. */
export function groupObjects(objects: StoreObject[]): { groups: Group[]; loose: StoreObject[] } {
  const groups = new Map<string, Group>();
  const loose: StoreObject[] = [];
  const group = (dir: string, id: string) => {
    const k = `${dir}/${id}`;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = { dir, id, objects: [], markers: [], partials: [] }));
    return g;
  };
  // Ids named by manifests first: a backup whose id does not have the usual shape (an imported one) still groups.
  const known = new Map<string, Set<string>>();
  for (const o of objects) {
    const { dir, base } = splitKey(o.key);
    if (!o.partial && base.endsWith(MANIFEST_SUFFIX)) {
      const id = base.slice(0, -MANIFEST_SUFFIX.length);
      if (!known.has(dir)) known.set(dir, new Set());
      known.get(dir)!.add(id);
    }
  }
  const idOf = (dir: string, base: string): string | undefined => {
    const ids = known.get(dir);
    if (ids) {
      for (let i = base.indexOf("."); i > 0; i = base.indexOf(".", i + 1)) {
        if (ids.has(base.slice(0, i))) return base.slice(0, i);
      }
    }
    return idOfName(base);
  };
  for (const o of objects) {
    const { dir, base } = splitKey(o.key);
    if (base === LAST_RUN || base.startsWith(".dbkeep-")) continue;
    if (o.partial) {
      const final = finalNameOfPartial(base);
      const id = final ? idOf(dir, final) : undefined;
      if (id) group(dir, id).partials.push(o);
      else loose.push(o);
      continue;
    }
    const id = idOf(dir, base);
    if (!id) continue; // not one of dbkeep's names
    const g = group(dir, id);
    if (base === `${id}${MANIFEST_SUFFIX}`) g.manifest = o;
    else if (PENDING_RE.test(base)) g.markers.push(o);
    else g.objects.push(o);
  }
  return { groups: [...groups.values()], loose };
}

function idTime(id: string): string | undefined {
  const m = /(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})(?:-\d+)?$/.exec(id);
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.000Z` : undefined;
}

const newestOf = (objects: StoreObject[]) => new Date(objects.reduce((t, o) => Math.max(t, o.modified.getTime()), -Infinity));

/** A small object whole: in one call where the store offers it (no stream per manifest), else through get(). */
export async function readSmall(store: Store, key: string, limit: number): Promise<Buffer> {
  return store.getBytes ? store.getBytes(key, limit) : readAll(await store.get(key), limit);
}

/** Runs `fn` over `items`, at most `n` at a time, and returns the results in order. */
async function mapBounded<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** Manifests read at once: enough to keep a remote store's connections or the local thread pool busy. */
const READ_CONCURRENCY = 16;
const MANIFEST_LIMIT = 4 * 1024 * 1024;

async function readJson<T>(store: Store, key: string): Promise<T | undefined> {
  try {
    return JSON.parse((await readSmall(store, key, 65536)).toString("utf8")) as T;
  } catch {
    return undefined;
  }
}

export function readMarker(store: Store, o: StoreObject): Promise<PendingMarker | undefined> {
  return readJson<PendingMarker>(store, o.key);
}

/** The damage note of a backup (see DAMAGE_NOTE). */
export function damageNoteKey(m: Pick<Manifest, "id" | "key">): string {
  const dir = m.key.includes("/") ? m.key.slice(0, m.key.lastIndexOf("/") + 1) : "";
  return `${dir}${m.id}${DAMAGE_NOTE}`;
}

/** Records that a check found a backup's data damaged; never fails the caller. */
export async function noteDamage(store: Store, m: Pick<Manifest, "id" | "key">, by: string, error: string): Promise<void> {
  await putText(store, damageNoteKey(m), JSON.stringify({ found_at: new Date().toISOString(), by, error }) + "\n").catch(() => undefined);
}

/** A check passed: a damage note of the backup, if any, is wrong now. */
export async function clearDamage(store: Store, m: Pick<Manifest, "id" | "key">): Promise<void> {
  await store.delete([damageNoteKey(m)]).catch(() => undefined);
}

/** The sidecar's size is fixed by what it says: a flipped byte is found by verify, a cut or a loss here. */
function sidecarFlaw(m: Manifest, sizes: Map<string, number>): string | undefined {
  const size = sizes.get(m.checksum_key);
  if (size === undefined) return `its sidecar ${m.checksum_key} is missing (dbkeep repair writes it again)`;
  const want = Buffer.byteLength(checksumLine(m.sha256, m.key));
  return size !== want ? `its sidecar ${m.checksum_key} is ${size} bytes, ${want} expected (dbkeep repair writes it again)` : undefined;
}

export interface ListOptions {
  /**
   * Keep a catalog of the manifests read (core/catalog.ts) and take from it those the store lists unchanged, or
   * "rebuild" it from every manifest. Without it every manifest is read, and no catalog is written.
   */
  catalog?: "use" | "rebuild";
  /** Where the catalog lives (default: $DBKEEP_STATE_DIR/catalog). */
  catalogDir?: string;
}

/** What reading a group's manifest gave: the manifest, or why not (and as much of its text as could be read). */
type ManifestRead = { m: Manifest } | { err: unknown; text?: string } | undefined;

async function readManifestOf(store: Store, o: StoreObject, catalog: Catalog | undefined): Promise<ManifestRead> {
  const cached = catalog?.get(o);
  if (cached) return { m: cached };
  let text: string | undefined;
  try {
    text = (await readSmall(store, o.key, MANIFEST_LIMIT)).toString("utf8");
    const m = parseManifest(text, o.key);
    catalog?.put(o, m);
    return { m };
  } catch (err) {
    return { err, ...(text !== undefined ? { text } : {}) };
  }
}

/**
 * Lists what a store holds under `prefix` (see the top of this file). Reads every manifest (or, with a catalog,
 * those new or changed since it last did), pending marker and damage note.
 */
export async function listBackups(store: Store, prefix: string, o: ListOptions = {}): Promise<Listing> {
  const catalog = o.catalog ? await openCatalog(store, prefix, { rebuild: o.catalog === "rebuild", ...(o.catalogDir ? { dir: o.catalogDir } : {}) }) : undefined;
  const objects: StoreObject[] = [];
  for await (const x of store.list(prefix)) objects.push(x);
  const sizes = new Map<string, number>();
  for (const x of objects) if (!x.partial) sizes.set(x.key, x.size);
  const { groups, loose } = groupObjects(objects);
  const out: Listing = { backups: [], damaged: [], leftovers: [], orphans: [], flaws: new Map(), keys: new Set(objects.map((o) => o.key)) };
  const leftover = (l: Omit<Leftover, "newest">) => {
    if (l.objects.length) out.leftovers.push({ ...l, newest: newestOf(l.objects) });
  };
  for (const o of loose) leftover({ objects: [o], why: "interrupted upload" });

  // Every manifest first, several at a time; then each group in turn.
  const reads = await mapBounded(groups, READ_CONCURRENCY, (g) => (g.manifest ? readManifestOf(store, g.manifest, catalog) : Promise.resolve(undefined)));
  for (const [gi, g] of groups.entries()) {
    const manifestKey = g.manifest?.key ?? [g.dir, `${g.id}${MANIFEST_SUFFIX}`].filter(Boolean).join("/");
    if (g.partials.length && (g.manifest || !g.markers.length)) leftover({ id: g.id, objects: g.partials, why: "interrupted upload" });
    const sidecars = g.objects.filter((o) => o.key.endsWith(".sha256"));
    const notes = g.objects.filter((o) => o.key.endsWith(DAMAGE_NOTE));
    const data = g.objects.filter((o) => !o.key.endsWith(".sha256") && !o.key.endsWith(".verify.json") && !o.key.endsWith(DAMAGE_NOTE) && !o.key.includes(DAMAGED_MANIFEST_MARK));
    const read = reads[gi];
    if (g.manifest && read) {
      let m: Manifest;
      if ("m" in read) m = read.m;
      else {
        const { err, text } = read;
        if (err instanceof DbkeepError && err.code === "STORE_NOT_FOUND") continue; // deleted while we listed
        // The job it names, if that much can still be read: a job's prune --force deletes only its own.
        const job = text ? /"job"\s*:\s*"([^"\\]{1,200})"/.exec(text)?.[1] : undefined;
        out.damaged.push({
          id: g.id,
          dir: g.dir,
          at: idTime(g.id) ?? g.manifest.modified.toISOString(),
          ...(job ? { job } : {}),
          manifestKey,
          problems: [`its manifest is unreadable: ${(err as Error).message}`],
          objects: [g.manifest, ...g.objects, ...g.markers],
          repairable: data.length > 0 && sidecars.length > 0,
        });
        continue;
      }
      if (g.markers.length) leftover({ id: g.id, objects: g.markers, why: "uncommitted" });
      const problems = [{ key: m.key, bytes: m.stored_bytes }, ...(m.extras ?? []).map((x) => ({ key: x.key, bytes: x.stored_bytes }))]
        .map((x) => {
          const size = sizes.get(x.key);
          return size === undefined ? `${x.key} is missing` : size !== x.bytes ? `${x.key} is ${size} bytes, the manifest says ${x.bytes}` : undefined;
        })
        .filter((x): x is string => x !== undefined);
      for (const n of notes) {
        const note = await readJson<{ found_at?: string; by?: string; error?: string }>(store, n.key);
        problems.push(`${note?.by ?? "a check"} found its data damaged${note?.found_at ? ` on ${note.found_at}` : ""}${note?.error ? `: ${note.error}` : ""}`);
      }
      if (problems.length) {
        const noted = problems.length === notes.length;
        out.damaged.push({ id: m.id, dir: g.dir, at: m.started_at, ...(m.job ? { job: m.job } : {}), manifest: m, manifestKey, problems, objects: [g.manifest, ...g.objects], repairable: false, ...(noted ? { noted } : {}) });
        continue;
      }
      out.backups.push(m);
      const flaw = sidecarFlaw(m, sizes);
      if (flaw) out.flaws.set(m.id, [flaw]);
      // Objects of the group that the manifest does not name (and that are not its verify report) are leftovers.
      // Most groups hold only the objects their manifest names: those are passed without building the set.
      const named = (k: string) => k === m.key || k === m.checksum_key || k.endsWith(DAMAGE_NOTE) || (m.extras?.some((x) => x.key === k) ?? false);
      const others = g.objects.filter((o) => !named(o.key));
      const owned = others.length ? new Set([...objectKeysOf(m), verifyKeyOf(m), ...notes.map((n) => n.key)]) : undefined;
      const extra = others.filter((o) => !owned!.has(o.key) && !o.key.includes(DAMAGED_MANIFEST_MARK));
      if (extra.length) leftover({ id: g.id, objects: extra, why: "no data" });
      continue;
    }
    if (g.markers.length) {
      const marker = await readMarker(store, g.markers[0]!);
      leftover({ id: g.id, objects: [...g.objects, ...g.partials, ...g.markers], why: "uncommitted", ...(marker ? { marker } : {}) });
      continue;
    }
    if (data.length) {
      out.damaged.push({
        id: g.id,
        dir: g.dir,
        at: idTime(g.id) ?? newestOf(g.objects).toISOString(),
        manifestKey,
        problems: [`its manifest ${manifestKey} is missing${sidecars.length ? "" : ", and so is its sidecar"}`],
        objects: g.objects,
        repairable: sidecars.length > 0,
      });
      continue;
    }
    leftover({ id: g.id, objects: g.objects, why: "no data" });
  }
  out.orphans = out.leftovers.flatMap((l) => l.objects);
  const newestFirst = (a: { at: string; id: string }, b: { at: string; id: string }) => (a.at < b.at ? 1 : a.at > b.at ? -1 : a.id < b.id ? 1 : -1);
  out.backups.sort((a, b) => (a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : a.id < b.id ? 1 : -1));
  out.damaged.sort(newestFirst);
  await catalog?.save();
  return out;
}

/** Whether a leftover's run is provably over: its marker names a process of this host that no longer exists. */
export function markerProcessGone(marker: PendingMarker | undefined): boolean {
  return Boolean(marker && marker.host === hostname() && marker.pid !== process.pid && !pidAlive(marker.pid));
}

/**
 * Whether an interrupted upload's temporary object was left by a process of this host that is gone: stores that
 * name their temporary objects `.<name>.dbkeep-partial-<hostTag>-<pid>-<random>` (ownerTag) say who wrote them.
 */
export function partialOwnerGone(key: string): boolean {
  const base = key.slice(key.lastIndexOf("/") + 1);
  const i = base.indexOf(PARTIAL_MARK);
  const m = i >= 0 ? /^([0-9a-f]{4}-\d+)-/.exec(base.slice(i + PARTIAL_MARK.length)) : null;
  return Boolean(m && ownerGone(m[1]!));
}

/** The backups and damaged backups a job's commands work on: its own, and those no job claims. */
export function ofJob(listing: Listing, job: string | undefined): Listing {
  if (job === undefined) return listing;
  const mine = (j: string | undefined) => j === undefined || j === job;
  return {
    ...listing,
    backups: listing.backups.filter((m) => mine(m.job)),
    damaged: listing.damaged.filter((d) => mine(d.job)),
    leftovers: listing.leftovers.filter((l) => mine(l.marker?.job)),
    orphans: listing.leftovers.filter((l) => mine(l.marker?.job)).flatMap((l) => l.objects),
  };
}

/**
 * Finds a backup by id, data file name, manifest name, or "latest" (the newest complete one). A reference to a
 * damaged backup fails with what is wrong with it, never with "not found".
 */
export function resolveBackup(
  listing: Pick<Listing, "backups" | "damaged">,
  ref: string | undefined,
  where: string,
  o: { latestMayBeNoted?: boolean } = {},
): { manifest: Manifest; skipped: DamagedBackup[]; recheck?: DamagedBackup } {
  if (!ref || ref === "latest") {
    // verify looks at the newest backup even when an earlier check found it damaged: that is what it checks again.
    const noted = o.latestMayBeNoted ? listing.damaged.find((d) => d.noted && d.manifest && (!listing.backups[0] || d.at > listing.backups[0].started_at)) : undefined;
    if (noted) return { manifest: noted.manifest!, skipped: [], recheck: noted };
    const m = listing.backups[0];
    if (!m) {
      if (listing.damaged.length) {
        const d = listing.damaged[0]!;
        throw new DbkeepError("CORRUPT_BACKUP", `no complete backup in ${where}: ${listing.damaged.length} damaged (newest: ${d.id}, ${d.problems[0]})`, { hint: damagedHint(d) });
      }
      throw new DbkeepError("BACKUP_NOT_FOUND", `no backups in ${where}`, { hint: "run a backup first, or check the job's store and prefix" });
    }
    return { manifest: m, skipped: listing.damaged.filter((d) => d.at > m.started_at) };
  }
  const name = (k: string) => k.split("/").pop();
  const m = findBackup(listing.backups, ref);
  if (m) return { manifest: m, skipped: [] };
  const d = listing.damaged.find((x) => x.id === ref || x.objects.some((o) => o.key === ref || name(o.key) === ref));
  // Named explicitly, a backup only a check found damaged is checked again by the restore or verify that reads it.
  if (d?.noted && d.manifest) return { manifest: d.manifest, skipped: [], recheck: d };
  if (d) throw new DbkeepError("CORRUPT_BACKUP", `backup ${d.id} in ${where} is damaged: ${d.problems.join("; ")}`, { hint: damagedHint(d) });
  throw new DbkeepError("BACKUP_NOT_FOUND", `backup ${ref} not found in ${where}`, { hint: "dbkeep list shows the backups there" });
}

export function damagedHint(d: DamagedBackup): string {
  if (d.repairable) return `dbkeep repair makes its manifest again from the data and its sidecar; or restore another backup`;
  if (d.manifest) return "if another store of the job holds it intact, dbkeep sync copies it back; else restore another backup";
  return "restore another backup; prune --force deletes it";
}

/** Finds a complete backup by id, data file name, manifest name, or "latest" (the newest). */
export function findBackup(backups: Manifest[], ref: string | undefined): Manifest | undefined {
  if (!ref || ref === "latest") return backups[0];
  const name = (k: string) => k.split("/").pop();
  return backups.find((b) => b.id === ref || b.key === ref || name(b.key) === ref || `${b.id}${MANIFEST_SUFFIX}` === ref);
}

/** The listing a job's commands see (its own backups and those no job claims); all of it for a store URL. */
export async function listFor(store: Store, prefix: string, job: string | undefined, o: ListOptions = {}): Promise<Listing> {
  return ofJob(await listBackups(store, prefix, o), job);
}
