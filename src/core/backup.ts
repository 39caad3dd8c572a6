import { COMPRESSION_EXT, compressesNatively, type Compression } from "./compression.js";
import { DbkeepError, toDbkeepError } from "./errors.js";
import type { Logger } from "./log.js";
import { checksumLine, ENCRYPTED_EXT, putText, serializeManifest, MANIFEST_VERSION, MANIFEST_VERSION_SELECTIVE, type Manifest } from "./manifest.js";
import { streamFromStore, streamToStore, type Progress, type ToStoreOptions } from "./pipeline.js";
import { redact } from "./redact.js";
import { VERSION } from "./version.js";
import { openPipe } from "./os-pipe.js";
import { reserveBackupId } from "./reserve.js";
import { createAgeDecryptStream, createAgeEncryptStream, type Identity, type Recipient } from "../crypto/age.js";
import type { Engine } from "../engines/engine.js";
import type { Store, StoreSnapshot } from "../stores/store.js";

export interface BackupSpec {
  job?: string;
  /** A label of the backup's kind (seed 001: daily, weekly, manual); "manual" backups are never pruned. */
  type?: string;
  engine: Engine;
  /** Where the backup goes: one store, or several written at once from the same stream. */
  stores: Store[];
  prefix?: string;
  /** Names the backup's objects and their directory instead of the database's name. */
  basename?: string;
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
  /** A dump made by another tool (core/import.ts): recorded in the manifest as `imported`. */
  imported?: Manifest["imported"];
}

/** What one store of a backup ended with. */
export interface StoreResult {
  store: Store;
  ok: boolean;
  error?: DbkeepError;
  /** The snapshot holding the backup's data, in a store that keeps snapshots (restic). */
  snapshot?: StoreSnapshot;
}

export interface BackupOutcome {
  manifest: Manifest;
  /** One per store, in the spec's order: which hold the complete backup and why the others do not. */
  stores: StoreResult[];
}

/**
 * One backup of one datasource to one or several stores: a pending marker that reserves the backup's id
 * (core/reserve.ts), data, the .sha256 sidecar, then the manifest, last, in each store, written only where no
 * manifest of that id exists; then the marker goes. If anything fails before a store's manifest is written, what was
 * written there is removed again; what a killed run leaves behind has a marker and no manifest, so it is never
 * listed as a backup, and prune removes it. With several stores the dump is read once and streamed to all of them; a
 * store that fails is dropped and reported, the others complete. Rejects only when no store holds the complete
 * backup.
 */
export async function runBackup(spec: BackupSpec): Promise<BackupOutcome> {
  const now = spec.now ?? (() => new Date());
  const started = now();
  const { engine, log } = spec;
  const { keys, markers, unreachable } = await reserveBackupId(spec.stores, {
    ...(spec.prefix ? { prefix: spec.prefix } : {}),
    database: spec.basename ?? engine.database,
    at: started,
    extension: engine.extension,
    compression: spec.compression,
    suffix: spec.encryption ? ENCRYPTED_EXT : "",
    ...(spec.job ? { job: spec.job } : {}),
    signal: spec.signal,
  });
  const names = spec.stores.map((s) => s.name).join(", ");
  log.info({ store: names, key: keys.data }, spec.imported ? `importing ${spec.imported.file} as a backup of ${engine.name} database ${engine.database}` : `backing up ${engine.name} database ${engine.database}`);
  const results: StoreResult[] = spec.stores.map((store) => ({ store, ok: true }));
  // What this run wrote in each store, the marker first: removed again, newest first, if the store fails.
  const written = new Map<Store, string[]>(spec.stores.map((s) => [s, markers.has(s) ? [markers.get(s)!] : []]));
  const live = () => results.filter((r) => r.ok).map((r) => r.store);
  const cleanup = async (store: Store) => {
    // Newest first and the marker last, so that nothing half-deleted looks like anything but a leftover.
    await store.delete([...written.get(store)!].reverse()).catch((e: unknown) =>
      log.warn({ store: store.name, err: (e as Error).message }, "could not remove the partial backup; the next prune removes it"),
    );
  };
  const drop = async (store: Store, err: unknown) => {
    const r = results.find((x) => x.store === store)!;
    if (!r.ok) return;
    r.ok = false;
    r.error = toDbkeepError(err, "STORE_FAILED");
    log.error({ store: store.name, err: redact(r.error.message) }, `store ${store.name} failed; the backup goes on in the others`);
    await cleanup(store);
  };
  /** Streams to every live store; the stores that fail are dropped. */
  const upload = async (o: Omit<ToStoreOptions, "stores">) => {
    for (const s of live()) written.get(s)!.push(o.key);
    const r = await streamToStore({ ...o, stores: live() });
    for (const x of r.outcomes) if (!x.ok) await drop(x.store, x.error);
    return r;
  };
  /** Runs `fn` for each live store at once; a store whose step fails is dropped. */
  const each = async (fn: (store: Store) => Promise<void>) => {
    await Promise.all(live().map((store) => fn(store).catch((err: unknown) => drop(store, err))));
    if (live().length === 0) throw results.find((r) => r.error)!.error!;
  };
  for (const [store, err] of unreachable) await drop(store, err);
  try {
    // With a process compressor, an engine whose dump is one tool's stdout writes it into a pipe that the
    // compressor reads (the dump's bytes never pass through node). The pipe is made while the engine connects.
    const piping = engine.dumpsToPipe && compressesNatively(spec.compression) ? openPipe() : undefined;
    // Whether the engine took the pipe it was offered: a dump that ignored it wrote nowhere the compressor reads.
    let pipeTaken = false;
    const dump = engine.dump({
      signal: spec.signal,
      log,
      ...(piping
        ? {
            output: piping.then((p) =>
              p
                ? {
                    fd: p.write,
                    started: () => {
                      pipeTaken = true;
                      p.closeWrite();
                    },
                  }
                : undefined,
            ),
          }
        : {}),
    });
    // If the dump fails before its tool starts, the compressor must still see the end of its input.
    if (piping) void dump.done.finally(() => piping.then((p) => p?.closeWrite())).catch(() => undefined);
    const encryptor = spec.encryption ? createAgeEncryptStream(spec.encryption) : undefined;
    const result = await upload({
      source: dump.stream,
      ...(piping ? { native: { pipe: piping, done: dump.done } } : {}),
      compression: spec.compression,
      level: spec.level,
      ...(encryptor ? { stages: [encryptor] } : {}),
      key: keys.data,
      signal: spec.signal,
      onProgress: spec.onProgress,
    });
    for (const x of result.outcomes) if (x.snapshot) results.find((r) => r.store === x.store)!.snapshot = x.snapshot;
    const info = await dump.done;
    if (piping && (await piping) && !pipeTaken) {
      throw new DbkeepError("INTERNAL", `the ${engine.name} dump did not write into the pipe it was given: nothing of it reached the backup`, {
        hint: "this is a bug in dbkeep; use compression: gzip for this datasource until it is fixed",
      });
    }
    // Every engine's dump has at least a header: an empty one means the dump's bytes went somewhere else.
    if (result.rawBytes === 0) {
      throw new DbkeepError("ENGINE_FAILED", `the ${engine.name} dump of ${engine.database} produced no data, so no backup was made`, {
        hint: "check the datasource's settings (database, tables, format); an empty database still dumps a header",
      });
    }
    const extras: NonNullable<Manifest["extras"]> = [];
    for (const extra of engine.extras?.() ?? []) {
      const key = keys.data.slice(0, keys.data.lastIndexOf("/") + 1) + `${keys.id}.${extra.name}${extra.extension}${COMPRESSION_EXT[spec.compression]}${spec.encryption ? ENCRYPTED_EXT : ""}`;
      const x = extra.dump({ signal: spec.signal, log });
      const r = await upload({ source: x.stream, compression: spec.compression, level: spec.level, ...(spec.encryption ? { stages: [createAgeEncryptStream(spec.encryption)] } : {}), key, signal: spec.signal });
      await x.done;
      extras.push({ name: extra.name, key, sha256: r.sha256, raw_bytes: r.rawBytes, stored_bytes: r.storedBytes });
      log.info({ key, bytes: r.storedBytes }, `stored ${extra.name}`);
    }
    // The file key is still in memory: read-back decrypts with it, so verify needs no secret key on this machine.
    const fileKey = encryptor?.fileKeyIdentity();
    await each(async (store) => {
      written.get(store)!.push(keys.checksum);
      await putText(store, keys.checksum, checksumLine(result.sha256, keys.data), spec.signal);
      if (spec.verify) await verifyStored(store, keys.data, result, spec, fileKey);
    });

    const finished = now();
    const manifest: Manifest = {
      // Partial and differential backups get version 2, which a dbkeep that predates them refuses to restore.
      manifest_version: info.selection || info.differential ? MANIFEST_VERSION_SELECTIVE : MANIFEST_VERSION,
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
      ...(info.objects ? { objects: info.objects } : {}),
      ...(extras.length ? { extras } : {}),
      ...(info.selection ? { selection: info.selection } : {}),
      ...(info.differential ? { differential: info.differential } : {}),
      ...(spec.imported ? { imported: spec.imported } : {}),
      dbkeep_version: VERSION,
    };
    await each(async (store) => {
      // Written only where no manifest of this id exists: a commit never replaces another backup.
      await putText(store, keys.manifest, serializeManifest(manifest), spec.signal, { ifAbsent: true });
      written.get(store)!.push(keys.manifest);
    });
    // Committed: the markers go. One left behind by a failure here is a harmless leftover that prune removes.
    await Promise.all(live().map((store) => (markers.has(store) ? store.delete([markers.get(store)!]).catch(() => undefined) : undefined)));
    return { manifest, stores: results };
  } catch (err) {
    await Promise.all(live().map(cleanup));
    throw toDbkeepError(err, "ENGINE_FAILED");
  }
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
