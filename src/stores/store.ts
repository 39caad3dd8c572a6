import type { Readable } from "node:stream";

export interface StoreObject {
  key: string;
  size: number;
  modified: Date;
  /**
   * True for what an interrupted put left behind (a temporary name, never the final key). Such objects are listed
   * only so that `list --all` can report them and prune can remove them; they are never read as backups.
   */
  partial?: boolean;
  /**
   * A token that changes whenever the object is written again (the service's ETag, the local store's inode and
   * change time), for stores that can tell. With `size` and `modified` it tells a cache (core/catalog.ts) whether
   * what it read earlier is still what the store holds.
   */
  etag?: string;
}

export interface PutOptions {
  signal?: AbortSignal;
  /** Expected size in bytes when known in advance (lets some backends pick an upload strategy). */
  size?: number;
  /**
   * Create only: if an object already exists under the key, put() rejects with code ALREADY_EXISTS and the object
   * stays as it was. Stores with `atomicCreate` decide this atomically in the service (of two concurrent puts of one
   * key with ifAbsent, exactly one succeeds); the others check just before they publish, which narrows the race
   * but cannot close it.
   */
  ifAbsent?: boolean;
}

/**
 * What a store that keeps snapshots (restic) tells about the one a put() made: its id and the tool's own summary of
 * the write, for notifications (seed 003's webhook fields). Stores that write plain objects return none.
 */
export interface StoreSnapshot {
  /** The snapshot's id as the tool prints it (restic: the short id of `restic snapshots`). */
  id: string;
  /** New data the repository took after deduplication and compression (restic's data_added). */
  dataAddedBytes: number;
  /** Bytes read from the body (restic's total_bytes_processed). */
  totalBytesProcessed: number;
  /** How long the tool took, as it measured it (restic's total_duration). */
  totalDurationSeconds: number;
  filesNew: number;
  filesChanged: number;
  filesUnmodified: number;
}

export interface PutResult {
  bytes: number;
  snapshot?: StoreSnapshot;
}

/**
 * A file being written for a key, which another process (a compressor) may write to directly through `fd`.
 * Nothing is visible under the key until commit(), which makes the file durable and publishes it; abort() removes it.
 */
export interface StagedFile {
  fd: number;
  path: string;
  /** With `ifAbsent`, as put(): an existing object under the key stays, commit() rejects with ALREADY_EXISTS and removes the file. */
  commit(opts?: { ifAbsent?: boolean }): Promise<void>;
  abort(): Promise<void>;
}

/**
 * Where backups are kept. Keys are "/"-separated relative paths; the store maps them onto its own namespace.
 *
 * Contract (enforced by test/conformance/store.suite.ts):
 * - put() consumes `body` to its end and makes the object visible under `key` only when every byte was written
 *   durably. If the body errors, the signal aborts or writing fails, put() rejects and nothing is visible under `key`
 *   (a previous object under that key, if any, is left as it was).
 * - get() of a missing key rejects with code STORE_NOT_FOUND.
 * - stat() of a missing key resolves to undefined.
 * - list(prefix) yields every complete object whose key starts with `prefix` exactly once, at any depth, in no
 *   particular order, and the leftovers of interrupted puts flagged `partial: true`.
 * - put() with `ifAbsent` never replaces an existing object: it rejects with code ALREADY_EXISTS instead.
 * - delete() is idempotent: deleting missing keys succeeds.
 * - Failures are DbkeepErrors; `retryable` is set by the store for errors worth retrying (network, 5xx).
 */
export interface Store {
  /** "local:backups", used in logs and errors. */
  readonly name: string;
  /**
   * put() with `ifAbsent` is decided atomically by the service (see PutOptions.ifAbsent). A store that finds this out
   * from the service (s3, ssh) says false until it knows, which is at the latest after its first put with ifAbsent.
   */
  readonly atomicCreate?: boolean;
  /** Where the store keeps its objects, for people and notifications: no credentials (restic: the repository). */
  readonly location?: string;
  put(key: string, body: Readable, opts?: PutOptions): Promise<PutResult>;
  /**
   * Optional, for stores on the local file system: a file the caller fills itself, published under `key` by
   * commit() with the same guarantees as put(). Lets a compressor process write the object without a copy
   * through node.
   */
  stage?(key: string): Promise<StagedFile>;
  get(key: string, opts?: { signal?: AbortSignal }): Promise<Readable>;
  /**
   * Optional: a small object whole, in one call instead of a stream (a manifest, a marker). Rejects as get() does
   * for a missing key, and with CORRUPT_BACKUP when the object is larger than `limit` bytes (as readAll does).
   */
  getBytes?(key: string, limit: number): Promise<Buffer>;
  stat(key: string): Promise<StoreObject | undefined>;
  list(prefix: string): AsyncIterable<StoreObject>;
  delete(keys: string[]): Promise<void>;
  /** Optional: create the store's repository when it does not exist yet; resolves false when it existed (restic init). */
  initialise?(): Promise<boolean>;
  /** Optional: give back the space of deleted objects that deletion alone leaves in place (restic prune). */
  reclaim?(): Promise<void>;
  close(): Promise<void>;
}
