import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DbkeepError } from "./errors.js";
import type { Logger } from "./log.js";
import { checksumLine, type Manifest } from "./manifest.js";
import { streamFromStore, type Progress } from "./pipeline.js";
import { HashStage, readAll } from "./streams.js";
import { AgeError, createAgeDecryptStream, fileKeyIdentity, readHeader, unlockHeader, X25519Identity, type Identity } from "../crypto/age.js";
import type { Engine } from "../engines/engine.js";
import type { Store } from "../stores/store.js";
import { restoreDifferential } from "./differential.js";

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
  /** What decrypts an encrypted backup; called only for one, so that no secret is read for plain backups. */
  identities?: () => Identity[];
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
  try {
    return await restoreOne(spec);
  } catch (err) {
    // Cancelled, every stage reports its own way of being stopped (a killed tool's EPIPE, a stream closed early);
    // the cause is the cancel, and the CLI needs ABORTED to say so and exit 130/143.
    if (spec.signal.aborted && !(err instanceof DbkeepError && err.code === "ABORTED")) {
      throw new DbkeepError("ABORTED", `restore of ${spec.manifest.id} was cancelled`, { cause: err });
    }
    throw err;
  }
}

async function restoreOne(spec: RestoreSpec): Promise<RestoreResult> {
  const { manifest: m, engine, store, log } = spec;
  // A differential applies on its full backup: that one first, then the differential, in one call.
  if (m.differential?.kind === "differential") return restoreDifferential(spec, runRestore);
  const kind = ALIASES[m.engine] ?? m.engine;
  if (kind !== engine.name || !engine.canRestore(m.format)) {
    throw new DbkeepError("USAGE", `backup ${m.id} is a ${m.engine} ${m.format} backup and cannot be restored into a ${engine.name} datasource`, {
      hint: "pick a target datasource of the same engine with --to",
    });
  }
  await checkSidecar(store, m, log);
  // A wrong key fails here, before the target is inspected, asked about or touched.
  const decryptWith = m.encryption ? await unlock(spec, m.key) : undefined;
  const target = `${engine.name} database ${engine.database}`;
  // A partial backup replaces only its own tables: only those are asked about.
  const state = await engine.inspectTarget(m.selection ? { tables: m.selection.tables, ...(m.selection.requires ? { requires: m.selection.requires } : {}) } : undefined);
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
  const decrypter = decryptWith ? createAgeDecryptStream([decryptWith], { what: m.key }) : undefined;
  const { stream, done } = await streamFromStore({
    store,
    key: m.key,
    expected: { sha256: m.sha256, bytes: m.stored_bytes, what: m.key },
    compression: m.compression,
    ...(decrypter ? { stages: [decrypter] } : {}),
    signal: spec.signal,
    onProgress: spec.onProgress,
  });
  try {
    await engine.restore(stream, { signal: spec.signal, log, format: m.format, sourceDatabase: m.database, ...(spec.jobs ? { jobs: spec.jobs } : {}), ...(m.selection ? { tables: m.selection.tables } : {}) });
    await done;
  } catch (err) {
    // A restore tool that stopped early on damaged input reports a syntax or format error; the real cause is the
    // damage, so the stored object is checked before the tool's error is reported.
    if (!spec.signal.aborted && !(err instanceof DbkeepError && err.code === "CHECKSUM_MISMATCH")) {
      const damage = await checkStored(store, m, spec.signal);
      if (damage) throw damage;
    }
    // Data that failed authentication explains whatever the restore tool said about it.
    if (decrypter?.errored instanceof AgeError) throw decrypter.errored;
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
    const decryptWith = m.encryption ? await unlock(spec, x.key) : undefined;
    const stages = decryptWith ? [createAgeDecryptStream([decryptWith], { what: x.key })] : undefined;
    const { stream, done } = await streamFromStore({ store, key: x.key, expected: { sha256: x.sha256, bytes: x.stored_bytes, what: x.key }, compression: m.compression, ...(stages ? { stages } : {}), signal: spec.signal });
    const content = await readAll(stream, 256 * 1024 * 1024);
    await done;
    spec.log.info({ key: x.key }, `applying ${x.name}`);
    await engine.restoreExtra(x.name, content, { signal: spec.signal, log: spec.log });
  }
}

/**
 * Opens the header of an encrypted object with the given identities and returns an identity holding its file key:
 * the key is checked before anything streams, and a passphrase's scrypt runs once.
 */
async function unlock(spec: RestoreSpec, key: string): Promise<Identity> {
  const m = spec.manifest;
  const to = (m.encryption?.recipients ?? []).map((r) => (r.type === "X25519" ? r.recipient : "a passphrase"));
  const ids = spec.identities?.() ?? [];
  if (ids.length === 0) {
    throw new DbkeepError("USAGE", `backup ${m.id} is encrypted (to ${to.join(", ")}); restoring it needs the identity`, {
      hint: to.includes("a passphrase") ? "pass --passphrase-env NAME, or set encryption.passphrase_env in the config" : "pass --identity FILE, or set encryption.identity_file in the config",
    });
  }
  const header = await readHeader(await spec.store.get(key, { signal: spec.signal }), key);
  try {
    return fileKeyIdentity(await unlockHeader(header, ids, key));
  } catch (err) {
    if (!(err instanceof AgeError)) throw err;
    const given = ids.flatMap((i) => (i instanceof X25519Identity ? [i.recipient] : []));
    const rightKey = given.some((g) => to.includes(g));
    if (err.reason === "no-match" && given.length > 0 && !rightKey && !to.includes("a passphrase")) {
      throw new AgeError("no-match", `cannot decrypt backup ${m.id}: it is encrypted to ${to.join(", ")}, and the identity given is ${given.join(", ")}`, `use the identity file whose "# public key:" line is one of ${to.join(", ")}`, err);
    }
    // The right key that cannot open the header, or a malformed header: damage, which the checksum confirms.
    if (err.reason !== "no-match" || rightKey) {
      const extra = m.extras?.find((x) => x.key === key);
      const damage = await checkStored(spec.store, extra ? { ...m, key, sha256: extra.sha256, stored_bytes: extra.stored_bytes } : m, spec.signal);
      if (damage) throw damage;
    }
    throw err;
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

/**
 * Seed 000 restores verify the .sha256 sidecar when there is one: its checksum must agree with the manifest. A
 * sidecar whose checksum agrees but whose file name or layout was changed does not stop the restore (the data is
 * proven by the manifest's checksum); it is named, since `sha256sum -c` would fail on it, and repair writes it again.
 */
async function checkSidecar(store: Store, m: Manifest, log: Logger): Promise<void> {
  let text: string;
  try {
    text = (await readAll(await store.get(m.checksum_key), 4096)).toString("utf8");
  } catch (err) {
    if (err instanceof DbkeepError && err.code === "STORE_NOT_FOUND") return;
    throw err;
  }
  // The checksum is the line's first 64 characters (`sha256sum` writes it so); the rest is the name.
  const sha = text.slice(0, 64);
  if (sha !== m.sha256) {
    throw new DbkeepError("CHECKSUM_MISMATCH", `the .sha256 sidecar of ${m.id} disagrees with its manifest`, {
      hint: "the backup's files were changed after it was written; restore another backup",
    });
  }
  if (text !== checksumLine(m.sha256, m.key)) {
    log.warn({ backup: m.id, sidecar: m.checksum_key }, `the .sha256 sidecar of ${m.id} has the right checksum but was changed elsewhere (sha256sum -c would fail on it); dbkeep repair writes it again`);
  }
}
