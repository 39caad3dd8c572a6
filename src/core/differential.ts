import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DbkeepError } from "./errors.js";
import type { Logger } from "./log.js";
import { joinKey, readManifest, type Manifest } from "./manifest.js";
import { listBackups } from "./listing.js";
import { streamFromStore } from "./pipeline.js";
import { createAgeDecryptStream } from "../crypto/age.js";
import { startDump } from "../engines/dump.js";
import type { Engine } from "../engines/engine.js";
import type { Store } from "../stores/store.js";
import type { RestoreResult, RestoreSpec } from "./restore.js";

/** A job's `mode: differential` settings. */
export interface DifferentialPlan {
  basisColumn: string;
  /** Per table (`schema.table` or `table`): its basis column, or null to dump it whole every time. */
  basisColumns: Record<string, string | null>;
  trackDeletes: boolean;
  /** After this many differentials on one full backup, the next run is a full backup. */
  maxChain: number;
  /** A full backup older than this makes the next run a full backup. */
  fullEverySeconds?: number;
  /** Subtracted from the safe point of a full backup (clock skew of applications that set the basis column). */
  marginSeconds: number;
}

export const DIFFERENTIAL_FORMAT = "differential";
const TRAILER = "-- dbkeep differential complete";

export interface RunKind {
  kind: "full" | "differential";
  reason: string;
  base?: Manifest;
}

/**
 * Which kind the next run of a differential job is: a differential on the newest full backup of the job in `store`
 * when there is one with the same tables and columns, within max_chain and full_every; else a full backup.
 * Differentials hold every change since their full backup (not since the previous differential), so a restore is
 * always that full backup plus one differential.
 */
export async function nextRunKind(o: { job: string | undefined; prefix?: string; basename?: string; engine: Engine; store: Store; settings: DifferentialPlan; schemaDigest: string; now: Date }): Promise<RunKind> {
  const { backups } = await listBackups(o.store, joinKey(o.prefix, o.basename ?? o.engine.database) + "/");
  const base = backups.find((b) => b.job === o.job && b.differential?.kind === "full" && b.differential.safe_point && b.engine === o.engine.name);
  if (!base) return { kind: "full", reason: "no full backup of this job to build on" };
  if (base.differential?.schema_digest !== o.schemaDigest) return { kind: "full", reason: `the tables or their columns changed since full backup ${base.id}` };
  const chain = backups.filter((b) => b.differential?.kind === "differential" && b.differential.base?.id === base.id).length;
  if (chain >= o.settings.maxChain) return { kind: "full", reason: `${chain} differential(s) on full backup ${base.id} already (max_chain ${o.settings.maxChain})` };
  const age = (o.now.getTime() - Date.parse(base.started_at)) / 1000;
  if (o.settings.fullEverySeconds !== undefined && age >= o.settings.fullEverySeconds) {
    return { kind: "full", reason: `full backup ${base.id} is older than full_every (${Math.round(age)}s)` };
  }
  return { kind: "differential", reason: `differential ${chain + 1} of max_chain ${o.settings.maxChain} on full backup ${base.id}`, base };
}

/**
 * The engine a differential job's run dumps with: for a full backup, the normal dump with the safe point taken just
 * before it; for a differential, dbkeep's own dump of the changed rows (format "differential").
 */
export async function prepareDifferential(
  plan: { name: string; prefix?: string; basename?: string; differential?: DifferentialPlan; oneOff?: boolean },
  engine: Engine,
  store: Store,
  log: Logger,
  now: Date,
): Promise<Engine> {
  const settings = plan.differential!;
  const diff = engine.differential;
  if (!diff) {
    throw new DbkeepError("USAGE", `job ${plan.name}: mode: differential needs a PostgreSQL datasource, or a MySQL/MariaDB datasource with database: NAME and mysqldump`, {
      hint: "remove mode: differential from the job, or point it at such a datasource",
    });
  }
  const schemaDigest = await diff.schemaDigest({ basisColumn: settings.basisColumn, basisColumns: settings.basisColumns });
  // A one-off run's backups carry no job (runBackup leaves it out): its differentials build on the store's unnamed ones.
  const next = await nextRunKind({ job: plan.oneOff ? undefined : plan.name, ...(plan.prefix ? { prefix: plan.prefix } : {}), ...(plan.basename ? { basename: plan.basename } : {}), engine, store, settings, schemaDigest, now });
  log.info({ kind: next.kind }, `${next.kind} backup: ${next.reason}`);
  if (next.kind === "full") {
    // The wrapped engine's own dump gets `opts` unchanged, DumpOptions.output included: it honours the pipe exactly
    // when the engine does, so dumpsToPipe stays the engine's.
    return {
      ...engine,
      dump(opts) {
        return startDump(async (out) => {
          // Taken before the full dump's snapshot exists: everything the snapshot misses is written after it.
          const safePoint = await diff.safePoint({ marginSeconds: settings.marginSeconds, log: opts.log });
          const inner = engine.dump(opts);
          inner.stream.on("error", (e) => out.destroy(e));
          inner.stream.pipe(out);
          const r = await inner.done;
          return { ...r, differential: { kind: "full", schema_digest: schemaDigest, safe_point: safePoint } };
        });
      },
    };
  }
  const base = next.base!;
  // dbkeep writes a differential itself, into the Dump's stream: it never honours DumpOptions.output, so this
  // engine must not claim dumpsToPipe (the compressor would read an empty pipe while nobody reads the stream).
  const { extras: _extras, dumpsToPipe: _pipe, ...rest } = engine;
  return {
    ...rest,
    dumpsToPipe: false,
    format: DIFFERENTIAL_FORMAT,
    extension: ".diff.sql",
    dump: (opts) =>
      diff.dump(opts, {
        base: { id: base.id, manifest_key: manifestKey(base), sha256: base.sha256, safe_point: base.differential!.safe_point!, schema_digest: schemaDigest },
        basisColumn: settings.basisColumn,
        basisColumns: settings.basisColumns,
        trackDeletes: settings.trackDeletes,
      }),
    checkDump: checkDifferential,
  };
}

function manifestKey(m: Manifest): string {
  const dir = m.key.includes("/") ? m.key.slice(0, m.key.lastIndexOf("/")) : "";
  return joinKey(dir, `${m.id}.manifest.json`);
}

/** verify: true's structural check: a differential ends with its completion line. */
async function checkDifferential(input: NodeJS.ReadableStream): Promise<string> {
  let tail = "";
  for await (const chunk of input) tail = (tail + (chunk as Buffer).toString("latin1")).slice(-4096);
  if (!tail.includes(TRAILER)) throw new DbkeepError("CORRUPT_BACKUP", "the differential does not end with its completion line: it is truncated");
  return "differential is complete";
}

/**
 * Restores a differential: its full backup (found through the manifest's base reference) the usual way, then the
 * differential on top, in one transaction. The differential is read and checked completely before the target is
 * touched, so a damaged differential never leaves the target at its full backup's state by surprise.
 */
export async function restoreDifferential(spec: RestoreSpec, restoreOne: (s: RestoreSpec) => Promise<RestoreResult>): Promise<RestoreResult> {
  const { manifest: m, engine, store, log } = spec;
  const d = m.differential!;
  const kind = m.engine === "postgresql" ? "postgres" : m.engine;
  if (kind !== engine.name || !engine.differential) {
    throw new DbkeepError("USAGE", `backup ${m.id} is a ${m.engine} differential and cannot be restored into a ${engine.name} datasource${engine.name === kind ? " of several databases" : ""}`, {
      hint: "pick a target datasource of the same engine (MySQL/MariaDB: with database: NAME) with --to",
    });
  }
  if (!d.base) throw new DbkeepError("CORRUPT_BACKUP", `differential ${m.id} names no full backup to apply on`);
  let base: Manifest;
  try {
    base = await readManifest(store, d.base.manifest_key);
  } catch (err) {
    if (err instanceof DbkeepError && err.code === "STORE_NOT_FOUND") {
      throw new DbkeepError("BACKUP_NOT_FOUND", `differential ${m.id} applies on full backup ${d.base.id}, which is not in ${store.name}`, {
        hint: "a differential restores only on top of its full backup; restore that full backup or an older complete one instead",
      });
    }
    throw err;
  }
  if (base.sha256 !== d.base.sha256) {
    throw new DbkeepError("CORRUPT_BACKUP", `full backup ${base.id} is not the one differential ${m.id} was made on (its SHA-256 changed)`, {
      hint: "restore the full backup itself, or a differential made on it",
    });
  }
  const started = Date.now();
  await readThrough(spec, m);
  log.info({ backup: m.id, base: base.id }, `restoring full backup ${base.id}, then differential ${m.id}`);
  const r = await restoreOne({ ...spec, manifest: base });
  const ids = m.encryption ? (spec.identities?.() ?? []) : [];
  const { stream, done } = await streamFromStore({
    store,
    key: m.key,
    expected: { sha256: m.sha256, bytes: m.stored_bytes, what: m.key },
    compression: m.compression,
    ...(m.encryption ? { stages: [createAgeDecryptStream(ids, { what: m.key })] } : {}),
    signal: spec.signal,
  });
  await engine.differential.apply(stream, { signal: spec.signal, log, format: m.format, sourceDatabase: m.database, ...(m.selection ? { tables: m.selection.tables } : {}) });
  await done;
  log.info({ backup: m.id, cutoff: d.cutoff, whole: d.full_tables?.length ?? 0 }, `applied differential ${m.id} (changes at or after ${d.cutoff})`);
  if (!d.track_deletes && d.key_digests) {
    const target = await engine.differential.keyDigests(Object.keys(d.key_digests));
    const differ = Object.entries(d.key_digests).filter(([t, v]) => target[t] !== v).map(([t]) => t);
    if (differ.length) {
      log.warn(
        { tables: differ },
        `rows deleted in the source since full backup ${base.id} are still present in ${differ.join(", ")}: differential ${m.id} does not track deletes (track_deletes: true on the job removes them)`,
      );
    }
  }
  return { ...r, seconds: (Date.now() - started) / 1000, storedBytes: r.storedBytes + m.stored_bytes };
}

/** Reads a backup once through checksum, decryption and decompression, keeping nothing. */
async function readThrough(spec: RestoreSpec, m: Manifest): Promise<void> {
  if (m.encryption && !(spec.identities?.() ?? []).length) {
    throw new DbkeepError("USAGE", `backup ${m.id} is encrypted; restoring it needs the identity`, { hint: "pass --identity FILE, or set encryption.identity_file in the config" });
  }
  const { stream, done } = await streamFromStore({
    store: spec.store,
    key: m.key,
    expected: { sha256: m.sha256, bytes: m.stored_bytes, what: m.key },
    compression: m.compression,
    ...(m.encryption ? { stages: [createAgeDecryptStream(spec.identities!(), { what: m.key })] } : {}),
    signal: spec.signal,
  });
  await Promise.all([pipeline(stream, new Writable({ write: (_c, _e, cb) => cb() })), done]);
}

/**
 * Retention must not delete a full backup that a kept differential applies on: such a full backup is kept, with
 * the differential named as the reason. Changes `result` in place.
 */
export function keepBasesOfDifferentials<T extends { id: string; m: Manifest }>(result: { keep: { item: T; reasons: string[] }[]; remove: T[] }): void {
  for (const k of [...result.keep]) {
    const baseId = k.item.m.differential?.kind === "differential" ? k.item.m.differential.base?.id : undefined;
    const i = baseId ? result.remove.findIndex((r) => r.id === baseId) : -1;
    if (i < 0) continue;
    const [base] = result.remove.splice(i, 1);
    result.keep.push({ item: base!, reasons: [`base of differential ${k.item.id}`] });
  }
}
