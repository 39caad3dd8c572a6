/**
 * What a notifier is told about a job run. The field names follow the webhook payload of the sidecar tool dbkeep
 * replaces (status, message, startedAt, finishedAt, durationSeconds, repository, dbType, host, tags, snapshot, bytes)
 * plus dbkeep's own (job, store, backup, key, attempts, error, hint). Never holds a secret: error texts are redacted
 * before they get here.
 */
export interface RunEvent {
  /** "start" is sent when a job begins (for dead man's switches); "test" by `dbkeep notify test`. */
  kind: "start" | "success" | "failure" | "test";
  /** seed 003's values: a receiver written for that tool checks `status == "failed"`. */
  status: "started" | "success" | "failed" | "test";
  job: string;
  message: string;
  startedAt: string;
  finishedAt?: string;
  durationSeconds?: number;
  /** The store's name, e.g. "local:nightly". */
  store: string;
  /** Where the backups are (seed 003: the restic repository's location, credentials masked), else the store's name. */
  repository: string;
  dbType: string;
  database: string;
  host: string;
  tags: string[];
  backup?: string;
  key?: string;
  /** The backup's identifier in its store: in a restic store the id of the snapshot holding its data, else its key. */
  snapshot?: string;
  bytes?: number;
  /** seed 003's summary of the write: restic's own numbers in a restic store (see StoreSnapshot), else dbkeep's. */
  dataAddedBytes?: number;
  totalBytesProcessed?: number;
  totalDurationSeconds?: number;
  filesNew?: number;
  filesChanged?: number;
  filesUnmodified?: number;
  attempts?: number;
  error?: string;
  hint?: string;
}

export interface NotifyOptions {
  signal?: AbortSignal;
}

/**
 * A notification target, made by its plug-in's factory from validated options. notify() rejects with a DbkeepError
 * (retryable for network failures and 5xx answers); the dispatcher retries a little and logs, and a notifier's
 * failure never changes a job's result. Kinds a notifier has no use for (e.g. "start" for email) resolve at once.
 */
export interface Notifier {
  readonly name: string;
  readonly type: string;
  notify(event: RunEvent, opts?: NotifyOptions): Promise<void>;
}
