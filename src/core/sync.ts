import { DbkeepError, toDbkeepError } from "./errors.js";
import type { Logger } from "./log.js";
import { checksumLine, manifestKeyOf, MANIFEST_SUFFIX, putText, serializeManifest, type Manifest } from "./manifest.js";
import { damageNoteKey, listBackups, type Listing, type ListOptions } from "./listing.js";
import { newMarker, putMarker, sweepDeadRuns } from "./reserve.js";
import { redact } from "./redact.js";
import { applyRetention, hasRules, type RetentionPolicy } from "./retention.js";
import { HashStage } from "./streams.js";
import type { Store } from "../stores/store.js";

/** The objects of a backup with the checksum each must have, data first. */
function objectsOf(m: Manifest): { key: string; sha256: string; bytes: number }[] {
  return [{ key: m.key, sha256: m.sha256, bytes: m.stored_bytes }, ...(m.extras ?? []).map((x) => ({ key: x.key, sha256: x.sha256, bytes: x.stored_bytes }))];
}

/**
 * Copies one backup from a store to another, streaming each object through a checksum check against the manifest
 * (a damaged source object fails the copy, it is never spread), then the sidecar, then the manifest last, written
 * only where none exists, behind a pending marker (core/reserve.ts): the copy exists in `to` only when all of it
 * arrived intact, and a copy cut short is a leftover. A failed copy removes what it wrote.
 */
export async function copyBackup(m: Manifest, from: Store, to: Store, o: { signal: AbortSignal; log: Logger; replaceDamaged?: boolean }): Promise<{ bytes: number }> {
  const written: string[] = [];
  let bytes = 0;
  const dir = m.key.includes("/") ? m.key.slice(0, m.key.lastIndexOf("/")) : "";
  try {
    const marker = await putMarker(to, dir, newMarker(m.id, { purpose: "copy", ...(m.job ? { job: m.job } : {}) }), o.signal);
    written.push(marker);
    if (!o.replaceDamaged) {
      // Another run writing this backup there (a second sync) has it: this copy steps back and removes only its marker.
      for await (const x of to.list(`${manifestKeyOf(m).slice(0, -MANIFEST_SUFFIX.length)}.`)) {
        if (x.key !== marker) throw new DbkeepError("ALREADY_EXISTS", `${to.name} already holds ${x.key} of backup ${m.id}: another run is writing it`, { hint: "run dbkeep status again once it is done" });
      }
    }
    for (const obj of objectsOf(m)) {
      const body = await from.get(obj.key, { signal: o.signal });
      const check = new HashStage({ sha256: obj.sha256, bytes: obj.bytes, what: `${obj.key} in ${from.name}` });
      body.on("error", (err) => check.destroy(err));
      // Only what this copy created is removed on failure: a damaged copy's objects stay for repair to look at.
      if (!o.replaceDamaged || !(await to.stat(obj.key))) written.push(obj.key);
      // The store reads `check` to its end; a mismatch makes it error there, so the put fails and nothing shows.
      await to.put(obj.key, body.pipe(check), { signal: o.signal, size: obj.bytes });
      if (check.errored) throw check.errored;
      bytes += obj.bytes;
    }
    if (!o.replaceDamaged || !(await to.stat(m.checksum_key))) written.push(m.checksum_key);
    await putText(to, m.checksum_key, checksumLine(m.sha256, m.key), o.signal);
    // Over a damaged copy (`replaceDamaged`, known from a listing), its manifest is replaced; else never.
    await putText(to, manifestKeyOf(m), serializeManifest(m), o.signal, { ifAbsent: !o.replaceDamaged });
    await to.delete([written[0]!, ...(o.replaceDamaged ? [damageNoteKey(m)] : [])]).catch(() => undefined);
    o.log.info({ backup: m.id, from: from.name, to: to.name, bytes }, `copied ${m.id} to ${to.name}`);
    return { bytes };
  } catch (err) {
    // Newest first, the marker last.
    await to.delete(written.reverse()).catch(() => undefined);
    throw toDbkeepError(err, "STORE_FAILED");
  }
}

/** Which stores hold each backup of a job (seed 001's "uploaded vs pending"), newest first. */
export interface BackupPresence {
  id: string;
  started_at: string;
  manifest: Manifest;
  /** Store name -> present (with a manifest) or missing. */
  in: Record<string, boolean>;
  /** Store name -> what is wrong, for the stores that hold the backup damaged (their `in` is false). */
  damaged: Record<string, string>;
}

export interface StoreListing {
  store: Store;
  listing?: Listing;
  /** Set when the store could not be listed. */
  error?: DbkeepError;
}

export async function listEach(stores: Store[], prefix: string, o: ListOptions = {}): Promise<StoreListing[]> {
  return Promise.all(
    stores.map(async (store) => {
      try {
        return { store, listing: await listBackups(store, prefix, o) };
      } catch (err) {
        return { store, error: toDbkeepError(err, "STORE_FAILED") };
      }
    }),
  );
}

export function presence(listings: StoreListing[]): BackupPresence[] {
  const byId = new Map<string, BackupPresence>();
  for (const { store, listing } of listings) {
    for (const m of listing?.backups ?? []) {
      const p = byId.get(m.id) ?? { id: m.id, started_at: m.started_at, manifest: m, in: Object.fromEntries(listings.map((l) => [l.store.name, false])), damaged: {} };
      p.in[store.name] = true;
      byId.set(m.id, p);
    }
  }
  for (const { store, listing } of listings) {
    for (const d of listing?.damaged ?? []) {
      const p = byId.get(d.id);
      if (p) p.damaged[store.name] = d.problems.join("; ");
    }
  }
  return [...byId.values()].sort((a, b) => (a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : a.id < b.id ? 1 : -1));
}

/**
 * The backups (of `rows`) a store's retention policy would keep, or undefined when the policy has no rules (it
 * keeps everything). What sync copies into a store and what status calls missing there both follow it.
 */
export function keptBy(policy: RetentionPolicy | undefined, rows: BackupPresence[], timezone: string, now: Date): Set<string> | undefined {
  if (!policy || !hasRules(policy)) return undefined;
  const items = rows.map((p) => ({ id: p.id, at: new Date(p.started_at), pinned: p.manifest.type === "manual", ...(p.manifest.type ? { type: p.manifest.type } : {}) }));
  return new Set(applyRetention(items, policy, { timeZone: timezone, now }).keep.map((d) => d.item.id));
}

export interface SyncPlanEntry {
  id: string;
  from: string;
  to: string;
  bytes: number;
}

export interface SyncResult {
  copied: SyncPlanEntry[];
  failed: (SyncPlanEntry & { error: string })[];
  /** Backups missing from a store that its retention policy would delete at once: not copied. */
  skipped: { id: string; to: string; reason: string }[];
  /** Stores that could not be listed. */
  unreachable: { store: string; error: string }[];
}

export interface SyncOptions {
  /** The retention policy of each target store: backups it would prune right away are not copied back into it. */
  policyFor?: (store: Store) => RetentionPolicy | undefined;
  timezone?: string;
  now?: Date;
  dryRun?: boolean;
  /** The job whose backups these are: what its killed runs left in a target is removed before copying. */
  job?: string;
  signal: AbortSignal;
  log: Logger;
}

/**
 * Copies the backups missing from each target store from the first source store (in the given order) that holds
 * them. Running it twice copies nothing the second time. Backups that the target's own retention policy would
 * delete at once (e.g. a local store that keeps 7 days, filled from a cloud store that keeps a year) are skipped.
 */
export async function syncStores(sources: Store[], targets: Store[], prefix: string, o: SyncOptions): Promise<SyncResult> {
  const all = [...new Set([...sources, ...targets])];
  // A copy that was killed left a group behind its marker; it would block the copy of that backup until prune.
  if (!o.dryRun) for (const t of targets) await sweepDeadRuns(t, prefix, o.job).catch(() => undefined);
  const listings = await listEach(all, prefix);
  const out: SyncResult = { copied: [], failed: [], skipped: [], unreachable: [] };
  for (const l of listings) if (l.error) out.unreachable.push({ store: l.store.name, error: redact(l.error.message) });
  const ok = (s: Store) => listings.find((l) => l.store === s)?.listing !== undefined;
  const have = presence(listings.filter((l) => l.listing));
  for (const target of targets.filter(ok)) {
    const missing = have.filter((p) => !p.in[target.name] && sources.some((s) => s !== target && p.in[s.name]));
    if (missing.length === 0) continue;
    const policy = o.policyFor?.(target);
    let wanted = missing;
    const kept = keptBy(policy, have.filter((p) => p.in[target.name] || missing.includes(p)), o.timezone ?? "UTC", o.now ?? new Date());
    if (kept) {
      wanted = missing.filter((p) => kept.has(p.id));
      for (const p of missing.filter((x) => !kept.has(x.id))) out.skipped.push({ id: p.id, to: target.name, reason: "its retention policy would delete it" });
    }
    // Oldest first, so that an interrupted sync has filled the gap from the back.
    for (const p of [...wanted].reverse()) {
      const from = sources.find((s) => s !== target && p.in[s.name])!;
      const entry = { id: p.id, from: from.name, to: target.name, bytes: p.manifest.stored_bytes };
      if (o.dryRun) {
        out.copied.push(entry);
        continue;
      }
      try {
        await copyBackup(p.manifest, from, target, { ...o, ...(p.damaged[target.name] ? { replaceDamaged: true } : {}) });
        out.copied.push(entry);
      } catch (err) {
        if (o.signal.aborted) throw err;
        const e = toDbkeepError(err, "STORE_FAILED");
        o.log.error({ backup: p.id, from: from.name, to: target.name, err: redact(e.message) }, "copy failed");
        out.failed.push({ ...entry, error: redact(e.message) });
      }
    }
  }
  return out;
}

/** A probe of one store: write, stat, read back, list, delete, each step timed and reported. */
export interface ProbeStep {
  step: "write" | "stat" | "read" | "list" | "delete";
  ok: boolean;
  ms: number;
  error?: string;
  hint?: string;
}

export async function probeStore(store: Store, signal: AbortSignal): Promise<ProbeStep[]> {
  const key = `.dbkeep-probe/${process.pid}-${Date.now().toString(36)}.txt`;
  const body = `dbkeep store check ${new Date().toISOString()}\n`;
  const steps: ProbeStep[] = [];
  const run = async (step: ProbeStep["step"], fn: () => Promise<void>): Promise<boolean> => {
    const t = Date.now();
    try {
      await fn();
      steps.push({ step, ok: true, ms: Date.now() - t });
      return true;
    } catch (err) {
      const e = toDbkeepError(err, "STORE_FAILED");
      steps.push({ step, ok: false, ms: Date.now() - t, error: redact(e.message), ...(e.hint ? { hint: e.hint } : {}) });
      return false;
    }
  };
  const wrote = await run("write", () => putText(store, key, body, signal));
  if (wrote) {
    await run("stat", async () => {
      const st = await store.stat(key);
      if (!st) throw new DbkeepError("STORE_FAILED", `${key} was written but stat does not find it`);
      if (st.size !== Buffer.byteLength(body)) throw new DbkeepError("STORE_FAILED", `${key} is ${st.size} bytes, ${Buffer.byteLength(body)} were written`);
    });
    await run("read", async () => {
      const chunks: Buffer[] = [];
      for await (const c of await store.get(key, { signal })) chunks.push(c as Buffer);
      if (Buffer.concat(chunks).toString("utf8") !== body) throw new DbkeepError("STORE_FAILED", `${key} reads back different from what was written`);
    });
  }
  await run("list", async () => {
    let seen = false;
    for await (const o of store.list(".dbkeep-probe/")) if (o.key === key) seen = true;
    if (wrote && !seen) throw new DbkeepError("STORE_FAILED", `${key} was written but list does not show it`);
  });
  if (wrote) {
    await run("delete", async () => {
      await store.delete([key]);
      if (await store.stat(key)) throw new DbkeepError("STORE_FAILED", `${key} is still there after delete`);
    });
  }
  return steps;
}
