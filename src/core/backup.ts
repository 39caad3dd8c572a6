import { COMPRESSION_EXT, type Compression } from "./compression.js";
import { DbkeepError, toDbkeepError } from "./errors.js";
import type { Logger } from "./log.js";
import { backupKeys, checksumLine, ENCRYPTED_EXT, putText, serializeManifest, MANIFEST_VERSION, type Manifest, type BackupKeys } from "./manifest.js";
import { streamFromStore, streamToStore, type Progress } from "./pipeline.js";
import { VERSION } from "./version.js";
import { createAgeDecryptStream, createAgeEncryptStream, type Identity, type Recipient } from "../crypto/age.js";
import type { Engine } from "../engines/engine.js";
import type { Store } from "../stores/store.js";

export interface BackupSpec {
  job?: string;
  /** A label of the backup's kind (seed 001: daily, weekly, manual); "manual" backups are never pruned. */
  type?: string;
  engine: Engine;
  store: Store;
  prefix?: string;
  compression: Compression;
  level?: number;
  /** Read the backup back from the store and check size, SHA-256 and the compression frames (seed 000's verify). */
  verify?: boolean;
  log: Logger;
  signal: AbortSignal;
  now?: () => Date;
  onProgress?: (p: Progress) => void;
  /** age recipients: the dump and its extras are encrypted after compression, and their names get `.age`. */
  encryption?: Recipient[];
}

/**
 * One backup of one datasource to one store: data, then the .sha256 sidecar, then the manifest, last. If anything
 * fails before the manifest is written, what was written is removed again; what a killed run leaves behind has no
 * manifest, so it is never listed as a backup, and prune removes it.
 */
export async function runBackup(spec: BackupSpec): Promise<Manifest> {
  const now = spec.now ?? (() => new Date());
  const started = now();
  const { engine, store, log } = spec;
  const keys = await freeKeys(spec, started);
  log.info({ store: store.name, key: keys.data }, `backing up ${engine.name} database ${engine.database}`);
  const written: string[] = [];
  try {
    const dump = engine.dump({ signal: spec.signal, log });
    written.push(keys.data);
    const encryptor = spec.encryption ? createAgeEncryptStream(spec.encryption) : undefined;
    const result = await streamToStore({
      source: dump.stream,
      compression: spec.compression,
      level: spec.level,
      ...(encryptor ? { stages: [encryptor] } : {}),
      store,
      key: keys.data,
      signal: spec.signal,
      onProgress: spec.onProgress,
    });
    const info = await dump.done;
    const extras: NonNullable<Manifest["extras"]> = [];
    for (const extra of engine.extras?.() ?? []) {
      const key = keys.data.slice(0, keys.data.lastIndexOf("/") + 1) + `${keys.id}.${extra.name}${extra.extension}${COMPRESSION_EXT[spec.compression]}${spec.encryption ? ENCRYPTED_EXT : ""}`;
      written.push(key);
      const x = extra.dump({ signal: spec.signal, log });
      const r = await streamToStore({ source: x.stream, compression: spec.compression, level: spec.level, ...(spec.encryption ? { stages: [createAgeEncryptStream(spec.encryption)] } : {}), store, key, signal: spec.signal });
      await x.done;
      extras.push({ name: extra.name, key, sha256: r.sha256, raw_bytes: r.rawBytes, stored_bytes: r.storedBytes });
      log.info({ key, bytes: r.storedBytes }, `stored ${extra.name}`);
    }
    written.push(keys.checksum);
    await putText(store, keys.checksum, checksumLine(result.sha256, keys.data), spec.signal);

    // The file key is still in memory: read-back decrypts with it, so verify needs no secret key on this machine.
    if (spec.verify) await verifyStored(store, keys.data, result, spec, encryptor?.fileKeyIdentity());

    const finished = now();
    const manifest: Manifest = {
      manifest_version: MANIFEST_VERSION,
      id: keys.id,
      ...(spec.job ? { job: spec.job } : {}),
      ...(spec.type ? { type: spec.type } : {}),
      engine: engine.name,
      database: engine.database,
      source: engine.source() as unknown as Record<string, string | number>,
      format: engine.format,
      compression: spec.compression,
      ...(spec.level !== undefined ? { compression_level: spec.level } : {}),
      encryption: spec.encryption ? { format: "age", recipients: spec.encryption.map((r) => r.info) } : null,
      key: keys.data,
      checksum_key: keys.checksum,
      raw_bytes: result.rawBytes,
      stored_bytes: result.storedBytes,
      sha256: result.sha256,
      started_at: started.toISOString(),
      finished_at: finished.toISOString(),
      duration_seconds: Math.round((finished.getTime() - started.getTime()) / 10) / 100,
      ...(info.tool ? { tool: info.tool } : {}),
      ...(info.serverVersion ? { server_version: info.serverVersion } : {}),
      ...(info.tables ? { tables: info.tables } : {}),
      ...(extras.length ? { extras } : {}),
      dbkeep_version: VERSION,
    };
    written.push(keys.manifest);
    await putText(store, keys.manifest, serializeManifest(manifest), spec.signal);
    return manifest;
  } catch (err) {
    // Remove what this run wrote; the manifest goes first so that nothing half-deleted looks like a backup.
    await store.delete([...written].reverse()).catch((e: unknown) =>
      log.warn({ err: (e as Error).message }, "could not remove the partial backup; the next prune removes it"),
    );
    throw toDbkeepError(err, "ENGINE_FAILED");
  }
}

/** The keys for a backup at `at`, with a -2, -3 ... suffix if another backup of the same second exists. */
async function freeKeys(spec: BackupSpec, at: Date): Promise<BackupKeys> {
  for (let n = 1; n < 100; n++) {
    const keys = backupKeys(spec.prefix, spec.engine.database, at, spec.engine.extension, spec.compression, n, spec.encryption ? ENCRYPTED_EXT : "");
    const [m, d] = await Promise.all([spec.store.stat(keys.manifest), spec.store.stat(keys.data)]);
    if (!m && !d) return keys;
  }
  throw new DbkeepError("STORE_FAILED", "too many backups in the same second");
}

async function drain(stream: NodeJS.ReadableStream): Promise<void> {
  for await (const _ of stream) {
    // reading is the check: every frame is decompressed
  }
}

async function verifyStored(store: Store, key: string, result: { storedBytes: number; rawBytes: number; sha256: string }, spec: BackupSpec, decryptWith?: Identity): Promise<void> {
  const st = await store.stat(key);
  if (!st || st.size !== result.storedBytes) {
    throw new DbkeepError("STORE_FAILED", `verify: ${key} in ${store.name} is ${st?.size ?? "missing"} bytes, ${result.storedBytes} were sent`, {
      retryable: true,
    });
  }
  const { stream, done } = await streamFromStore({
    store,
    key,
    expected: { sha256: result.sha256, bytes: result.storedBytes, what: key },
    compression: spec.compression,
    ...(decryptWith ? { stages: [createAgeDecryptStream([decryptWith], { what: key })] } : {}),
    signal: spec.signal,
  });
  const check = spec.engine.checkDump
    ? spec.engine.checkDump(stream, { format: spec.engine.format, rawBytes: result.rawBytes, signal: spec.signal })
    : drain(stream).then(() => "");
  const [checked] = await Promise.all([check, done]);
  spec.log.info({ key, ...(checked ? { check: checked } : {}) }, "verified: size, SHA-256 and compression frames match" + (checked ? `; ${checked}` : ""));
}
