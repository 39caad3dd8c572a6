import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { DbkeepError, isDbkeepError } from "./errors.js";
import { groupObjects, idOfName, markerProcessGone, partialOwnerGone, readMarker as readMarkerOf, type PendingMarker } from "./listing.js";
import { backupKeys, joinKey, putText, timestampId, type BackupKeys } from "./manifest.js";
import type { Compression } from "./compression.js";
import type { Store, StoreObject } from "../stores/store.js";

/**
 * Pending markers: `<dir>/<id>.pending-<token>.json`, written before anything else of a group and removed only after
 * its manifest is written (or, when a group is deleted, after everything else is gone). A group with a marker and no
 * manifest provably never committed: prune may remove it. A group with data and neither is a backup whose manifest
 * was lost, which nothing removes without --force (core/listing.ts).
 *
 * The marker is also how a backup's id is made unique without a lock that spans machines. A run lists the ids of
 * its second, picks the first free one, writes its marker, and lists the id's objects again: if it sees anything but
 * its own marker, it removes its marker and tries the next id. Two runs that picked the same id cannot both go on:
 * the one that listed second wrote its marker after the other's list, so it lists after the other's marker exists,
 * and a marker is removed only once its manifest is there. (Both may step back; they then try again, apart.) This
 * needs only that a store lists what was written before the list began, which every store here does.
 */

export interface MarkerInfo {
  purpose: PendingMarker["purpose"];
  job?: string;
}

export function newMarker(id: string, info: MarkerInfo, now = new Date()): PendingMarker {
  return { id, purpose: info.purpose, ...(info.job ? { job: info.job } : {}), host: hostname(), pid: process.pid, started_at: now.toISOString(), token: randomBytes(8).toString("hex") };
}

export function markerKey(dir: string, marker: PendingMarker): string {
  return joinKey(dir, `${marker.id}.pending-${marker.token}.json`);
}

/** Writes a marker; a store that already holds this exact key is broken, not busy. */
export async function putMarker(store: Store, dir: string, marker: PendingMarker, signal?: AbortSignal): Promise<string> {
  const key = markerKey(dir, marker);
  await putText(store, key, JSON.stringify(marker) + "\n", signal, { ifAbsent: true });
  return key;
}

async function collect(store: Store, prefix: string): Promise<StoreObject[]> {
  const out: StoreObject[] = [];
  for await (const o of store.list(prefix)) out.push(o);
  return out;
}

export interface Reserved {
  keys: BackupKeys;
  /** The marker's key in each store that holds it. */
  markers: Map<Store, string>;
  /** Stores that could not be asked or written: the backup goes on without them. */
  unreachable: Map<Store, unknown>;
}

export interface ReserveOptions {
  prefix?: string;
  database: string;
  at: Date;
  extension: string;
  compression: Compression;
  /** `.age` for encrypted backups. */
  suffix: string;
  job?: string;
  signal?: AbortSignal;
  /** Pause between two tries after a clash (tests make it 0). */
  backoffMs?: () => number;
}

/**
 * Reserves a backup id in every store (see the top of this file): `<database>-<YYYYMMDD-HHMMSS>`, or with -2, -3 ...
 * when that second is taken. Stores that cannot be reached are reported in `unreachable`; if none can, it throws.
 */
export async function reserveBackupId(stores: Store[], o: ReserveOptions): Promise<Reserved> {
  const unreachable = new Map<Store, unknown>();
  const dir = joinKey(o.prefix, o.database);
  const stem = `${o.database}-${timestampId(o.at)}`;
  const taken = new Set<number>();
  const live = () => stores.filter((s) => !unreachable.has(s));
  const settle = async <T>(fn: (s: Store) => Promise<T>): Promise<Map<Store, T>> => {
    const asked = live();
    const r = await Promise.allSettled(asked.map(fn));
    const out = new Map<Store, T>();
    r.forEach((x, i) => (x.status === "rejected" ? unreachable.set(asked[i]!, x.reason) : out.set(asked[i]!, x.value)));
    if (live().length === 0) throw [...unreachable.values()][0];
    return out;
  };
  const numberOf = (key: string): number | undefined => {
    const base = key.slice(key.lastIndexOf("/") + 1);
    const id = idOfName(base.startsWith(".") ? base.slice(1) : base);
    if (id === stem) return 1;
    const m = id?.startsWith(stem + "-") ? /^\d+$/.exec(id.slice(stem.length + 1)) : null;
    return m ? Number(m[0]) : undefined;
  };
  for (let attempt = 0; attempt < 25; attempt++) {
    if (o.signal?.aborted) throw new DbkeepError("ABORTED", "backup was cancelled");
    const listed = await settle((s) => collect(s, joinKey(dir, stem)));
    for (const objs of listed.values()) {
      for (const x of objs) {
        const k = numberOf(x.key);
        if (k !== undefined) taken.add(k);
      }
    }
    let n = 1;
    while (taken.has(n)) n++;
    if (n > 999) throw new DbkeepError("STORE_FAILED", `more than 999 backups of ${o.database} in the same second`);
    const keys = backupKeys(o.prefix, o.database, o.at, o.extension, o.compression, n, o.suffix);
    const marker = newMarker(keys.id, { purpose: "backup", ...(o.job ? { job: o.job } : {}) }, o.at);
    const markers = new Map<Store, string>();
    await settle(async (s) => markers.set(s, await putMarker(s, dir, marker, o.signal)));
    // Anything of this id besides our own marker, in any store, means another run has it.
    const seen = await settle((s) => collect(s, joinKey(dir, `${keys.id}.`)));
    const clash = [...seen.entries()].some(([s, objs]) => objs.some((x) => x.key !== markers.get(s)));
    if (!clash) {
      for (const s of [...markers.keys()]) if (unreachable.has(s)) markers.delete(s);
      return { keys, markers, unreachable };
    }
    await Promise.all([...markers].map(([s, k]) => s.delete([k]).catch(() => undefined)));
    taken.add(n);
    const pause = o.backoffMs?.() ?? 20 + Math.floor(Math.random() * 200);
    if (pause > 0) await new Promise((r) => setTimeout(r, pause));
  }
  throw new DbkeepError("STORE_FAILED", `could not reserve a backup id for ${o.database}: other runs kept taking them`, { hint: "too many backups of one database start at once; stagger them" });
}

/**
 * Deletes a group so that an interruption at any point leaves either the whole backup or a group that provably
 * never committed: a marker first, then the manifest, then the rest, then the marker.
 */
export async function deleteGroup(store: Store, dir: string, id: string, manifestKey: string | undefined, keys: string[], info: MarkerInfo): Promise<void> {
  const marker = newMarker(id, info);
  const mk = await putMarker(store, dir, marker).catch((err: unknown) => {
    if (isDbkeepError(err, "ALREADY_EXISTS")) return markerKey(dir, marker);
    throw err;
  });
  if (manifestKey) await store.delete([manifestKey]);
  await store.delete(keys.filter((k) => k !== manifestKey && k !== mk));
  await store.delete([mk]);
}

/**
 * Removes what runs of `job` on this host left when they were killed: groups with a pending marker, no manifest, and
 * a marker that names a process that is gone. Only manifests are not read, so it costs one listing. Resolves to the
 * keys removed.
 */
export async function sweepDeadRuns(store: Store, prefix: string, job: string | undefined): Promise<string[]> {
  const objects = await collect(store, prefix);
  const { groups, loose } = groupObjects(objects);
  const removed: string[] = [];
  // Temporary objects of interrupted uploads whose writer is gone (stores that name them by their owner).
  const deadPartials = [...loose, ...groups.flatMap((g) => (g.manifest || g.markers.length ? [] : g.partials))].filter((o) => partialOwnerGone(o.key)).map((o) => o.key);
  if (deadPartials.length) {
    await store.delete(deadPartials);
    removed.push(...deadPartials);
  }
  for (const g of groups) {
    if (g.manifest || g.markers.length === 0) continue;
    const marker = await readMarkerOf(store, g.markers[0]!);
    if (!marker || (marker.job ?? undefined) !== job || !markerProcessGone(marker)) continue;
    const keys = [...g.objects, ...g.partials].map((o) => o.key);
    await store.delete(keys);
    await store.delete(g.markers.map((o) => o.key));
    removed.push(...keys, ...g.markers.map((o) => o.key));
  }
  return removed;
}
