import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DbkeepError } from "./errors.js";
import type { Logger } from "./log.js";
import { type Manifest } from "./manifest.js";
import { streamFromStore, type Progress } from "./pipeline.js";
import { HashStage, readAll } from "./streams.js";
import type { Engine } from "../engines/engine.js";
import type { Store } from "../stores/store.js";

export interface RestoreSpec {
  manifest: Manifest;
  store: Store;
  /** The engine of the target datasource. */
  engine: Engine;
  log: Logger;
  signal: AbortSignal;
  /** Asked when the target already holds objects; resolve false to refuse. */
  confirm: (objects: string[], target: string) => Promise<boolean>;
  jobs?: number;
  /** Apply the backup's extras (PostgreSQL roles and tablespaces) before the database. */
  extras?: boolean;
  onProgress?: (p: Progress) => void;
}

export interface RestoreResult {
  seconds: number;
  storedBytes: number;
  target: string;
  replaced: string[];
}

const ALIASES: Record<string, string> = { postgresql: "postgres" };

/**
 * Restores one backup. The target is inspected first (existing objects need a yes); then the backup streams from
 * the store through the checksum check into the engine, which swaps the result in only after the stream ended
 * cleanly, so a damaged backup never changes the target.
 */
export async function runRestore(spec: RestoreSpec): Promise<RestoreResult> {
  const { manifest: m, engine, store, log } = spec;
  const kind = ALIASES[m.engine] ?? m.engine;
  if (kind !== engine.name || !engine.canRestore(m.format)) {
    throw new DbkeepError("USAGE", `backup ${m.id} is a ${m.engine} ${m.format} backup and cannot be restored into a ${engine.name} datasource`, {
      hint: "pick a target datasource of the same engine with --to",
    });
  }
  await checkSidecar(store, m);
  const target = `${engine.name} database ${engine.database}`;
  const state = await engine.inspectTarget();
  if (state.objects.length > 0) {
    const ok = await spec.confirm(state.objects, target);
    if (!ok) {
      throw new DbkeepError("RESTORE_REFUSED", `restore refused: ${target} already holds ${state.objects.length} table(s) or view(s)`, {
        hint: "run it on a terminal to confirm, or pass --auto-confirm to replace them",
      });
    }
  }
  if (spec.extras) await restoreExtras(spec);
  log.info({ backup: m.id, store: store.name, target: engine.database }, `restoring ${m.id} into ${target}`);
  const started = Date.now();
  const { stream, done } = await streamFromStore({
    store,
    key: m.key,
    expected: { sha256: m.sha256, bytes: m.stored_bytes, what: m.key },
    compression: m.compression,
    signal: spec.signal,
    onProgress: spec.onProgress,
  });
  try {
    await engine.restore(stream, { signal: spec.signal, log, format: m.format, ...(spec.jobs ? { jobs: spec.jobs } : {}) });
    await done;
  } catch (err) {
    // A restore tool that stopped early on damaged input reports a syntax or format error; the real cause is the
    // damage, so the stored object is checked before the tool's error is reported.
    if (!spec.signal.aborted && !(err instanceof DbkeepError && err.code === "CHECKSUM_MISMATCH")) {
      const damage = await checkStored(store, m, spec.signal);
      if (damage) throw damage;
    }
    throw err;
  }
  return { seconds: (Date.now() - started) / 1000, storedBytes: m.stored_bytes, target, replaced: state.objects };
}

/** Extras are small: each is read whole, checked against its manifest checksum, and only then applied. */
async function restoreExtras(spec: RestoreSpec): Promise<void> {
  const { manifest: m, engine, store } = spec;
  if (!m.extras?.length) {
    throw new DbkeepError("USAGE", `backup ${m.id} holds no roles or tablespaces`, { hint: "back up with globals: true on the datasource" });
  }
  if (!engine.restoreExtra) throw new DbkeepError("USAGE", `${engine.name} has nothing to restore besides the database`);
  for (const x of m.extras) {
    const { stream, done } = await streamFromStore({ store, key: x.key, expected: { sha256: x.sha256, bytes: x.stored_bytes, what: x.key }, compression: m.compression, signal: spec.signal });
    const content = await readAll(stream, 256 * 1024 * 1024);
    await done;
    spec.log.info({ key: x.key }, `applying ${x.name}`);
    await engine.restoreExtra(x.name, content, { signal: spec.signal, log: spec.log });
  }
}

/** Reads the stored object once more, hashing only; returns the mismatch error if it is damaged. */
async function checkStored(store: Store, m: Manifest, signal: AbortSignal): Promise<DbkeepError | undefined> {
  try {
    const body = await store.get(m.key, { signal });
    await pipeline(body, new HashStage({ sha256: m.sha256, bytes: m.stored_bytes, what: m.key }), new Writable({ write: (_c, _e, cb) => cb() }));
    return undefined;
  } catch (err) {
    return err instanceof DbkeepError && err.code === "CHECKSUM_MISMATCH" ? err : undefined;
  }
}

/** Seed 000 restores verify the .sha256 sidecar when there is one: it must agree with the manifest. */
async function checkSidecar(store: Store, m: Manifest): Promise<void> {
  let text: string;
  try {
    text = (await readAll(await store.get(m.checksum_key), 4096)).toString("utf8");
  } catch (err) {
    if (err instanceof DbkeepError && err.code === "STORE_NOT_FOUND") return;
    throw err;
  }
  const sha = text.trim().split(/\s+/)[0];
  if (sha !== m.sha256) {
    throw new DbkeepError("CHECKSUM_MISMATCH", `the .sha256 sidecar of ${m.id} disagrees with its manifest`, {
      hint: "the backup's files were changed after it was written; restore another backup",
    });
  }
}
