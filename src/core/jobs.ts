import { checkLevel, type Compression } from "./compression.js";
import { keepBasesOfDifferentials, prepareDifferential, type DifferentialPlan } from "./differential.js";
import { runBackup, type BackupOutcome } from "./backup.js";
import { copyBackup } from "./sync.js";
import { DbkeepError, isDbkeepError, toDbkeepError } from "./errors.js";
import { runHook, type HookContext } from "./hooks.js";
import { acquireJobLock } from "./lock.js";
import type { Logger } from "./log.js";
import { joinKey, LAST_RUN, manifestKeyOf, objectKeysOf, putText, verifyKeyOf, type Manifest } from "./manifest.js";
import { listBackups, markerProcessGone, type DamagedBackup, type Leftover } from "./listing.js";
import { deleteGroup, sweepDeadRuns } from "./reserve.js";
import { sweepTempDirs } from "./tempdir.js";
import { redact } from "./redact.js";
import { readAll } from "./streams.js";
import type { Progress } from "./pipeline.js";
import { applyRetention, hasRules, type RetentionPolicy } from "./retention.js";
import { configError, resolveSecret, type Config, type Section } from "../config/load.js";
import { durationSeconds, type RetentionConfig } from "../config/schema.js";
import { recipientsFor, type EncryptionPlan } from "../crypto/settings.js";
import { ENGINES } from "../engines/registry.js";
import { DEFAULT_VERIFICATION, type VerificationConfig } from "../verify/settings.js";
import { verifiedIds, verifyAfterBackup, type JobVerification } from "../verify/job.js";
import type { Engine } from "../engines/engine.js";
import { STORES } from "../stores/registry.js";
import { createNotifier } from "../notifiers/registry.js";
import type { Notifier, RunEvent } from "../notifiers/notifier.js";
import { hostname } from "node:os";
import type { Store, StoreObject, StoreSnapshot } from "../stores/store.js";

export interface StoreRef {
  name: string;
  section: Section & { type: string };
}

export interface RetryPolicy {
  maxAttempts: number;
  delaySeconds: number;
  multiplier: number;
  maxDelaySeconds?: number;
}

/** Everything needed to run, list, restore or prune one job, from the config or from URLs. */
export interface JobPlan {
  name: string;
  datasource: { path: string; section: Section & { engine: string } };
  /** The first of the job's stores: the one list, restore and prune use unless told otherwise. */
  store: StoreRef;
  /** Every store the job writes to, in the config's order (the first is `store`). */
  stores: StoreRef[];
  /** With several stores: whether the job fails when one of them failed ("all", the default) or only when all did. */
  require: "all" | "any";
  prefix?: string;
  /** The start of the backups' names and their directory, instead of the database's name. */
  basename?: string;
  compression: Compression;
  level?: number;
  verify: boolean;
  /** `verify: restore`: after each backup, verify it by a restore into a scratch target (src/verify/). */
  verifyRestore?: boolean;
  /** How `dbkeep verify` and verify: restore restore and check: the job's verification block and verify_datasource. */
  verification?: { settings: VerificationConfig; datasource?: { path: string; section: Section & { engine: string } } };
  retry: RetryPolicy;
  retention?: RetentionConfig;
  /** prune_after_backup: apply the retention after each successful backup. */
  pruneAfterBackup?: boolean;
  timezone: string;
  oneOff: boolean;
  /** Seconds after which the whole run is stopped. */
  timeoutSeconds?: number;
  hooks?: { before?: string; after?: string; on_failure?: string; timeoutSeconds: number };
  /** Notifiers of the job, created on first use. */
  notify?: { name: string; on: "failure" | "success" | "always"; create: (warn: (m: string) => void) => Promise<Notifier> }[];
  /** Take a per-job lock file so that the job never runs twice at once on this machine (config mode). */
  lock?: boolean;
  /** age encryption of the backups, and the identity that decrypts them on restore. */
  encryption?: EncryptionPlan;
  /** `encryption: false` on the job: new backups are not encrypted; `encryption` only decrypts older ones. */
  unencrypted?: boolean;
  /** mode: differential (see core/differential.ts). */
  differential?: DifferentialPlan;
}

export function planJob(config: Config, name: string): JobPlan {
  const job = config.jobs[name];
  if (!job) {
    const names = Object.keys(config.jobs);
    throw new DbkeepError("USAGE", `unknown job "${name}"${config.file ? ` in ${config.file}` : ""}`, {
      hint: names.length ? `jobs: ${names.join(", ")}` : "the config defines no jobs",
    });
  }
  const ds = config.datasources[job.datasource]!;
  const selection = Object.fromEntries((["tables", "exclude_tables", "schemas", "exclude_schemas"] as const).flatMap((k) => (job[k] ? [[k, job[k]]] : [])));
  const options = { ...ds.options, ...(job.format ? { format: job.format } : {}), ...selection };
  const compression = (job.compression ?? ds.options.compression ?? "gzip") as Compression;
  const level = job.compression_level ?? (ds.options.compression_level as number | undefined);
  const bad = checkLevel(compression, level);
  if (bad) throw configError(config.file, [{ path: `jobs.${name}`, message: bad }]);
  return {
    name,
    datasource: { path: `datasources.${job.datasource}`, section: { ...ds, options } },
    store: { name: job.stores[0]!, section: config.stores[job.stores[0]!]! },
    stores: job.stores.map((n) => ({ name: n, section: config.stores[n]! })),
    require: job.require,
    ...(job.prefix ? { prefix: job.prefix } : {}),
    ...(job.basename ? { basename: job.basename } : {}),
    compression,
    ...(level !== undefined ? { level } : {}),
    verify: job.verify === true,
    ...(job.verify === "restore" ? { verifyRestore: true } : {}),
    verification: {
      settings: job.verification ?? DEFAULT_VERIFICATION,
      ...(job.verify_datasource ? { datasource: { path: `datasources.${job.verify_datasource}`, section: config.datasources[job.verify_datasource]! } } : {}),
    },
    retry: {
      maxAttempts: job.retry?.max_attempts ?? 1,
      delaySeconds: durationSeconds(job.retry?.delay) ?? 30,
      multiplier: job.retry?.backoff_multiplier ?? 2,
      ...(job.retry?.max_delay !== undefined ? { maxDelaySeconds: durationSeconds(job.retry.max_delay)! } : {}),
    },
    ...(job.retention ? { retention: job.retention } : {}),
    ...(job.prune_after_backup ? { pruneAfterBackup: true } : {}),
    timezone: job.retention?.timezone ?? config.timezone,
    oneOff: false,
    ...(job.timeout !== undefined ? { timeoutSeconds: durationSeconds(job.timeout)! } : {}),
    ...(job.hooks
      ? { hooks: { ...(job.hooks.before ? { before: job.hooks.before } : {}), ...(job.hooks.after ? { after: job.hooks.after } : {}), ...(job.hooks.on_failure ? { on_failure: job.hooks.on_failure } : {}), timeoutSeconds: durationSeconds(job.hooks.timeout) ?? 300 } }
      : {}),
    notify: (job.notify ?? []).map((n) => ({ name: n.notifier, on: n.on, create: (warn: (m: string) => void) => createNotifier(config, n.notifier, warn) })),
    lock: true,
    ...(job.encryption
      ? { encryption: { path: `jobs.${name}.encryption`, config: job.encryption } }
      : config.encryption
        ? { encryption: { path: "encryption", config: config.encryption }, ...(job.encryption === false ? { unencrypted: true } : {}) }
        : {}),
    ...(job.mode === "differential"
      ? {
          differential: {
            basisColumn: job.basis_column ?? "updated_at",
            basisColumns: job.basis_columns ?? {},
            trackDeletes: job.track_deletes ?? false,
            maxChain: job.max_chain ?? 7,
            fullEverySeconds: durationSeconds(job.full_every ?? "7d")!,
            marginSeconds: durationSeconds(job.cutoff_margin ?? "1m")!,
          },
        }
      : {}),
  };
}

export async function openEngine(plan: Pick<JobPlan, "datasource" | "oneOff">, warn: (m: string) => void = () => undefined): Promise<Engine> {
  const { section, path } = plan.datasource;
  const plugin = ENGINES[section.engine]!;
  return plugin.create(section.options, { secret: (f) => resolveSecret(section, f, path, warn), oneOff: plan.oneOff });
}

export async function openStore(plan: Pick<JobPlan, "store">, warn: (m: string) => void = () => undefined): Promise<Store> {
  return openStoreRef(plan.store, warn);
}

export async function openStoreRef(ref: StoreRef, warn: (m: string) => void = () => undefined): Promise<Store> {
  const { section, name } = ref;
  return STORES[section.type]!.create(name, section.options, { secret: (f) => resolveSecret(section, f, `stores.${name}`, warn), warn });
}

/** Opens every store of the job; if one cannot be opened, those already open are closed again. */
export async function openStores(plan: Pick<JobPlan, "stores">, warn: (m: string) => void = () => undefined): Promise<Store[]> {
  const out: Store[] = [];
  try {
    for (const ref of plan.stores) out.push(await openStoreRef(ref, warn));
    return out;
  } catch (err) {
    await Promise.all(out.map((s) => s.close().catch(() => undefined)));
    throw err;
  }
}

/**
 * The plan narrowed to one of its stores (`--store NAME`), so that list, restore, prune and the like work on it.
 * Without a name, the plan as it is.
 */
export function withStore<T extends Pick<JobPlan, "store" | "stores" | "name">>(plan: T, name: string | undefined): T {
  if (!name) return plan;
  const ref = plan.stores.find((s) => s.name === name);
  if (!ref) {
    throw new DbkeepError("USAGE", `job ${plan.name} does not write to store "${name}"`, { hint: `its stores: ${plan.stores.map((s) => s.name).join(", ")}` });
  }
  return { ...plan, store: ref, stores: [ref] };
}

/** Where a datasource's backups live in its store: `<prefix>/<database>/` (`<prefix>/<basename>/` with a basename). */
export function backupPrefix(plan: Pick<JobPlan, "prefix" | "basename">, engine: Pick<Engine, "database">): string {
  return joinKey(plan.prefix, plan.basename ?? engine.database) + "/";
}

export interface JobRunOptions {
  log: Logger;
  signal: AbortSignal;
  now?: () => Date;
  onProgress?: (p: Progress) => void;
  /** Waits between attempts; injectable so tests need not sleep. */
  sleep?: (seconds: number, signal: AbortSignal) => Promise<void>;
  /** The kind of backup, recorded in its manifest ("manual" backups are never pruned). */
  type?: string;
  /** Wraps the job's store (the place for store wrappers such as fault injection or dry-run). */
  wrapStore?: (store: Store) => Store;
}

export interface JobResult {
  job: string;
  ok: boolean;
  attempts: number;
  seconds: number;
  manifest?: Manifest;
  error?: DbkeepError;
  /** The job's stores, comma-separated, for reports. */
  store: string;
  /** Each store's outcome, when the backup reached at least one. */
  stores?: { name: string; ok: boolean; error?: string }[];
  /** verify: restore: how the verification of the new backup went, with its measured restore time. */
  verification?: JobVerification;
  /** The snapshot holding the backup's data in the first store that keeps snapshots (restic), with its summary. */
  snapshot?: StoreSnapshot;
}

/**
 * Runs one job: lock, before hook, attempts with seed 000's retry (only retryable errors are retried, each attempt
 * logged with its reason), after / on_failure hooks, notifications. With several stores, a store that failed while
 * the others got the backup is retried by copying the backup from one that has it. Never throws: the result says
 * what happened.
 */
export async function runJob(plan: JobPlan, opts: JobRunOptions): Promise<JobResult> {
  const log = opts.log.child({ job: plan.name });
  const started = Date.now();
  const startedAt = (opts.now?.() ?? new Date()).toISOString();
  const warn = (m: string) => log.warn(m);
  let attempts = 0;
  let stores: Store[] = [];
  let engine: Engine | undefined;
  let release: (() => void) | undefined;
  const ac = new AbortController();
  const onAbort = () => ac.abort(opts.signal.reason);
  opts.signal.addEventListener("abort", onAbort, { once: true });
  const timer = plan.timeoutSeconds ? setTimeout(() => ac.abort(new DbkeepError("TIMEOUT", `job ${plan.name} timed out after ${plan.timeoutSeconds}s`)), plan.timeoutSeconds * 1000) : undefined;
  const signal = ac.signal;
  const names = () => (stores.length ? stores.map((s) => s.name) : plan.stores.map((s) => s.name)).join(", ");
  // Where the stores keep the backups, for notifications (seed 003's `repository`: the restic location, no credentials).
  const locations = () => (stores.length ? stores.map((s) => s.location ?? s.name).join(", ") : names());
  let result: JobResult;
  try {
    if (plan.lock) release = acquireJobLock(plan.name, log);
    // Temporary directories of runs that were killed on this machine (a SQLite snapshot, a staging copy) go first.
    await sweepTempDirs();
    engine = await openEngine(plan, warn);
    stores = await openStores(plan, warn);
    if (opts.wrapStore) stores = stores.map(opts.wrapStore);
    await dispatch(plan, { kind: "start", ...eventBase(plan, engine, names(), startedAt, locations()) }, log);
    if (plan.hooks?.before) await runHook("before", plan.hooks.before, hookContext(plan, engine, names(), "pending"), { timeoutSeconds: plan.hooks.timeoutSeconds, log, signal });
    const { outcome, attempts: n } = await attemptBackups(plan, engine, stores, { ...opts, signal }, log, (k) => (attempts = k));
    const { manifest } = outcome;
    await retryFailedStores(plan, outcome, { ...opts, signal }, log);
    const prefix = backupPrefix(plan, engine);
    // What killed runs of this job on this machine left behind goes now, not only once prune's grace is over.
    for (const r of outcome.stores.filter((x) => x.ok)) {
      const swept = await sweepDeadRuns(r.store, prefix, plan.oneOff ? undefined : plan.name).catch(() => []);
      if (swept.length) log.info({ store: r.store.name, objects: swept.length }, "removed what killed runs of this job left behind");
    }
    for (const r of outcome.stores) {
      await writeLastRun(r.store, prefix, plan.oneOff ? undefined : plan.name, r.ok ? { ok: true, at: manifest.finished_at, backup: manifest.id } : { ok: false, at: new Date().toISOString(), error: redact(r.error?.message ?? "") }, log);
    }
    const failed = outcome.stores.filter((r) => !r.ok);
    const perStore = outcome.stores.map((r) => ({ name: r.store.name, ok: r.ok, ...(r.error ? { error: redact(r.error.message) } : {}) }));
    const good = outcome.stores.filter((r) => r.ok).map((r) => r.store.name);
    // `store` names where the backup is; `stores` says, with several, what happened in each.
    const snapshot = outcome.stores.find((r) => r.ok && r.snapshot)?.snapshot;
    result = { job: plan.name, ok: true, attempts: n, seconds: (Date.now() - started) / 1000, manifest, store: good.join(", "), ...(stores.length > 1 ? { stores: perStore } : {}), ...(snapshot ? { snapshot } : {}) };
    if (failed.length > 0) {
      const msg = `backup ${manifest.id} is in ${good.join(", ")} but not in ${failed.map((r) => `${r.store.name} (${redact(r.error?.message ?? "failed")})`).join(", ")}`;
      const own = failed.map((r) => r.error?.hint).filter(Boolean).join("; ");
      const next = plan.oneOff
        ? "run the backup again once the store works, or copy the backup there with dbkeep download"
        : `then dbkeep sync ${plan.name} copies it there; dbkeep status ${plan.name} shows the gaps`;
      const hint = own ? `${own}; ${next}` : next;
      if (plan.require === "all") result = { ...result, ok: false, error: new DbkeepError("STORE_FAILED", msg, { hint }) };
      else log.warn({ hint }, msg);
    }
    const verifyFrom = outcome.stores.find((r) => r.ok)?.store;
    if (plan.verifyRestore && result.ok && verifyFrom) result = await verifyAfterBackup(plan, result, verifyFrom, { log, signal });
    // A failed retention pass is logged by pruneJob; the backup it follows stays what it is.
    if (plan.pruneAfterBackup && plan.retention && result.ok) await pruneJob(plan, { log, warn });
  } catch (err) {
    let error = toDbkeepError(err);
    if (error.code === "ABORTED" && isDbkeepError(signal.reason, "TIMEOUT")) error = signal.reason;
    result = { job: plan.name, ok: false, attempts: Math.max(attempts, 1), seconds: (Date.now() - started) / 1000, error, store: names() };
    // Recorded in the stores so that prune can refuse to eat the history of a broken job.
    if (engine && error.code !== "ABORTED" && error.code !== "LOCKED") {
      for (const store of stores) {
        await writeLastRun(store, backupPrefix(plan, engine), plan.oneOff ? undefined : plan.name, { ok: false, at: (opts.now?.() ?? new Date()).toISOString(), error: redact(error.message) }, log);
      }
    }
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal.removeEventListener("abort", onAbort);
  }
  try {
    if (engine && stores.length > 0 && result.error?.code !== "LOCKED") {
      const status = result.ok ? "success" : "failure";
      const ctx = hookContext(plan, engine, names(), status, result);
      const hookOpts = { timeoutSeconds: plan.hooks?.timeoutSeconds ?? 300, log, signal: opts.signal };
      for (const [which, command] of [["after", plan.hooks?.after], ["on_failure", result.ok ? undefined : plan.hooks?.on_failure]] as const) {
        if (!command) continue;
        // A failing after-hook is reported, but the backup it follows stays what it is.
        await runHook(which, command, ctx, hookOpts).catch((e: unknown) => log.warn({ hook: which, err: redact((e as Error).message) }, `${which} hook failed`));
      }
      await dispatch(plan, eventFor(plan, engine, names(), startedAt, result, locations()), log);
    }
  } finally {
    release?.();
    await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
  }
  return result;
}

async function attemptBackups(plan: JobPlan, engine: Engine, stores: Store[], opts: JobRunOptions, log: Logger, count: (n: number) => void): Promise<{ outcome: BackupOutcome; attempts: number }> {
  const sleep = opts.sleep ?? abortableSleep;
  let delay = plan.retry.delaySeconds;
  for (let attempt = 1; ; attempt++) {
    count(attempt);
    try {
      // mode: differential decides per attempt, from the backups in the first store, between a full and a differential.
      const dumping = plan.differential ? await prepareDifferential(plan, engine, stores[0]!, log, opts.now?.() ?? new Date()) : engine;
      const outcome = await runBackup({
        job: plan.oneOff ? undefined : plan.name,
        ...(opts.type ? { type: opts.type } : {}),
        engine: dumping,
        stores,
        prefix: plan.prefix,
        ...(plan.basename ? { basename: plan.basename } : {}),
        compression: plan.compression,
        level: plan.level,
        verify: plan.verify,
        ...(plan.encryption && !plan.unencrypted ? { encryption: recipientsFor(plan.encryption, (m) => log.warn(m)) } : {}),
        log,
        signal: opts.signal,
        now: opts.now,
        onProgress: opts.onProgress,
      });
      const manifest = outcome.manifest;
      log.info({ key: manifest.key, bytes: manifest.stored_bytes, sha256: manifest.sha256, seconds: manifest.duration_seconds, attempt }, `backup ${manifest.id} complete`);
      return { outcome, attempts: attempt };
    } catch (err) {
      const e = toDbkeepError(err);
      if (!e.retryable || attempt >= plan.retry.maxAttempts || opts.signal.aborted) throw e;
      log.warn({ attempt, of: plan.retry.maxAttempts, retry_in: delay, reason: redact(e.message) }, "attempt failed, retrying");
      await sleep(delay, opts.signal);
      delay = Math.min(delay * plan.retry.multiplier, plan.retry.maxDelaySeconds ?? Number.POSITIVE_INFINITY);
    }
  }
}

/**
 * A store that failed while others got the backup is retried (retryable errors, the job's retry policy) by copying
 * the backup from a store that has it, checksum-verified: the same backup, not a second dump.
 */
async function retryFailedStores(plan: JobPlan, outcome: BackupOutcome, opts: JobRunOptions, log: Logger): Promise<void> {
  const sleep = opts.sleep ?? abortableSleep;
  const source = outcome.stores.find((r) => r.ok)?.store;
  if (!source) return;
  for (const r of outcome.stores) {
    let delay = plan.retry.delaySeconds;
    for (let attempt = 2; !r.ok && r.error?.retryable && attempt <= plan.retry.maxAttempts && !opts.signal.aborted; attempt++) {
      log.warn({ store: r.store.name, attempt, of: plan.retry.maxAttempts, retry_in: delay, reason: redact(r.error.message) }, `copying backup ${outcome.manifest.id} to ${r.store.name} again`);
      await sleep(delay, opts.signal);
      delay = Math.min(delay * plan.retry.multiplier, plan.retry.maxDelaySeconds ?? Number.POSITIVE_INFINITY);
      try {
        await copyBackup(outcome.manifest, source, r.store, { signal: opts.signal, log });
        r.ok = true;
        delete r.error;
      } catch (err) {
        r.error = toDbkeepError(err, "STORE_FAILED");
      }
    }
  }
}

function hookContext(plan: JobPlan, engine: Engine, store: string, status: HookContext["status"], r?: JobResult): HookContext {
  return {
    job: plan.name,
    status,
    store,
    database: engine.database,
    ...(r?.manifest ? { backup: r.manifest.id, key: r.manifest.key, bytes: r.manifest.stored_bytes } : {}),
    ...(r?.error ? { error: redact(r.error.message) } : {}),
  };
}

function eventBase(plan: JobPlan, engine: Engine, store: string, startedAt: string, repository = store): Omit<RunEvent, "kind" | "status" | "message"> & { status: RunEvent["status"]; message: string } {
  const src = engine.source();
  return {
    status: "started",
    message: `${plan.name} started`,
    job: plan.name,
    startedAt,
    store,
    repository,
    dbType: engine.name,
    database: engine.database,
    host: src.host ?? src.path ?? hostname(),
    tags: [plan.name, engine.database],
  };
}

function eventFor(plan: JobPlan, engine: Engine, store: string, startedAt: string, r: JobResult, repository = store): RunEvent {
  const base = eventBase(plan, engine, store, startedAt, repository);
  const finishedAt = new Date(Date.parse(startedAt) + r.seconds * 1000).toISOString();
  const m = r.manifest;
  return {
    ...base,
    kind: r.ok ? "success" : "failure",
    status: r.ok ? "success" : "failed",
    message: r.ok ? `backup ${m?.id} of ${engine.database} complete` : `backup of ${engine.database} failed: ${redact(r.error?.message ?? "")}`,
    finishedAt,
    durationSeconds: Math.round(r.seconds * 100) / 100,
    attempts: r.attempts,
    ...(m ? { backup: m.id, key: m.key, snapshot: r.snapshot?.id ?? m.key, bytes: m.stored_bytes, ...writeSummary(m, r.snapshot) } : {}),
    ...(r.error ? { error: redact(r.error.message), ...(r.error.hint ? { hint: r.error.hint } : {}) } : {}),
  };
}

/**
 * seed 003's numbers of the write: restic's own summary of the snapshot holding the data, else (a store of plain
 * objects) what dbkeep wrote: one new object of stored_bytes, in the backup's duration.
 */
function writeSummary(m: Manifest, s: StoreSnapshot | undefined): Pick<RunEvent, "dataAddedBytes" | "totalBytesProcessed" | "totalDurationSeconds" | "filesNew" | "filesChanged" | "filesUnmodified"> {
  if (s) {
    const { id: _id, ...numbers } = s;
    return numbers;
  }
  return { dataAddedBytes: m.stored_bytes, totalBytesProcessed: m.stored_bytes, totalDurationSeconds: m.duration_seconds, filesNew: 1, filesChanged: 0, filesUnmodified: 0 };
}

/**
 * Sends an event to the job's notifiers whose `on` matches, retrying a little; a notifier that fails is logged
 * and never changes the job's result.
 */
async function dispatch(plan: JobPlan, event: RunEvent, log: Logger): Promise<void> {
  const wanted = (on: "failure" | "success" | "always") => event.kind === "start" || on === "always" || on === event.kind;
  await Promise.all(
    (plan.notify ?? [])
      .filter((n) => wanted(n.on))
      .map(async (n) => {
        for (let attempt = 1; ; attempt++) {
          try {
            const notifier = await n.create((m) => log.warn(m));
            await notifier.notify(event, { signal: AbortSignal.timeout(30_000) });
            if (event.kind !== "start") log.info({ notifier: n.name, event: event.kind }, "notification sent");
            return;
          } catch (err) {
            const e = toDbkeepError(err);
            if (!e.retryable || attempt >= 3) {
              log.warn({ notifier: n.name, err: redact(e.message) }, "notification failed; the backup's result stands");
              return;
            }
            await new Promise((r) => setTimeout(r, 500 * attempt));
          }
        }
      }),
  );
}

/** The outcome of a job's last run, kept beside its backups: `<prefix>/<database>/.dbkeep-last-run.json`. */
export interface LastRun {
  ok: boolean;
  at: string;
  backup?: string;
  error?: string;
}

/** Each job has its own record: two jobs that share a directory must not block each other's prune. */
export function lastRunKey(prefix: string, job: string | undefined): string {
  return job === undefined ? prefix + LAST_RUN : `${prefix}${LAST_RUN.replace(/\.json$/, "")}.${encodeURIComponent(job)}.json`;
}

async function writeLastRun(store: Store, prefix: string, job: string | undefined, run: LastRun, log: Logger): Promise<void> {
  try {
    await putText(store, lastRunKey(prefix, job), JSON.stringify(run) + "\n");
  } catch (err) {
    log.warn({ err: (err as Error).message }, "could not record the run's outcome in the store");
  }
}

async function readLastRun(store: Store, prefix: string, job: string | undefined): Promise<LastRun | undefined> {
  // A job's own record, else the one all jobs of the directory shared before each had its own.
  for (const key of job === undefined ? [lastRunKey(prefix, undefined)] : [lastRunKey(prefix, job), lastRunKey(prefix, undefined)]) {
    try {
      return JSON.parse((await readAll(await store.get(key), 65536)).toString("utf8")) as LastRun;
    } catch {
      // none, or unreadable: the next one
    }
  }
  return undefined;
}

function abortableSleep(seconds: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(done, seconds * 1000);
    function done() {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }
    function onAbort() {
      clearTimeout(t);
      reject(new DbkeepError("ABORTED", "cancelled while waiting to retry"));
    }
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export interface PruneEntry {
  id: string;
  at: string;
  action: "keep" | "delete";
  reasons: string[];
  keys: string[];
  /** The job whose backup it is (from its manifest). */
  job?: string;
}

/** A damaged backup as prune sees it: kept, unless --force. */
export interface PruneDamaged {
  id: string;
  at: string;
  action: "keep" | "delete";
  problems: string[];
  repairable: boolean;
  keys: string[];
}

export interface PruneResult {
  entries: PruneEntry[];
  damaged: PruneDamaged[];
  /** Leftovers of killed or failed runs that are removed (or would be, in a dry run). */
  leftovers: Leftover[];
  /** Every object of `leftovers`, flat. */
  orphans: StoreObject[];
  deleted: string[];
  dryRun: boolean;
  /** Why nothing was deleted although the policy would delete something. */
  blocked?: string;
}

export interface PruneOptions {
  dryRun: boolean;
  timezone?: string;
  now?: Date;
  orphanGraceSeconds?: number;
  /** Prune even when the job's last run failed, and delete damaged backups too. */
  force?: boolean;
  /**
   * The job whose backups these are: only backups whose manifest names it are counted and deleted, and only its own
   * leftovers removed. Undefined (a store given by URL): every backup, with the policy applied to each job and
   * database on its own.
   */
  job?: string;
  /**
   * A dry run takes the manifests the store lists unchanged from this machine's catalog (core/catalog.ts), or
   * "rebuild"s it. A run that deletes always reads every manifest from the store.
   */
  catalog?: "use" | "rebuild";
  log: Logger;
}
/** The policy for one store of a job: the store's own if the job gives one, else the job's. */
export function policyFor(plan: Pick<JobPlan, "retention" | "store">): RetentionPolicy {
  const r = plan.retention;
  if (!r) return {};
  const own = r.stores?.[plan.store.name];
  if (own) return own;
  const { timezone: _tz, orphan_grace: _grace, stores: _stores, ...policy } = r;
  return policy;
}

/** The policy of the job's `index`-th store (its own, else the job's). */
export function storePolicy(plan: Pick<JobPlan, "retention" | "stores">, index: number): RetentionPolicy {
  return policyFor({ ...plan, store: plan.stores[index]! });
}

/**
 * Applies a retention policy to the backups under a prefix. Only complete backups count, and only the job's own
 * (see PruneOptions.job); the newest is never deleted; no rules means nothing is deleted; when the job's last run
 * failed nothing is deleted (a broken job must not eat its history) unless forced. A backup is deleted behind a
 * pending marker, manifest first (core/reserve.ts), so an interrupted prune leaves a leftover, never a manifest
 * without data nor data that looks damaged. Damaged backups are never deleted without `force`. Leftovers (groups
 * that provably never committed) are removed once older than the grace period, or at once when their marker names
 * a process of this host that is gone; younger ones may belong to a backup being written.
 */
export async function prune(store: Store, prefix: string, policy: RetentionPolicy, o: PruneOptions): Promise<PruneResult> {
  const listing = await listBackups(store, prefix, o.dryRun && o.catalog ? { catalog: o.catalog } : {});
  const mine = listing.backups.filter((m) => o.job === undefined || m.job === o.job);
  const verified = policy.keep_verified ? await verifiedIds(store, mine) : new Set<string>();
  const now = o.now ?? new Date();
  // Without a job (a store given by URL), each job and database is its own series.
  const series = new Map<string, Manifest[]>();
  for (const m of mine) {
    const k = `${m.job ?? ""}\u0000${m.database}`;
    if (!series.has(k)) series.set(k, []);
    series.get(k)!.push(m);
  }
  const keep: { item: { id: string; m: Manifest }; reasons: string[] }[] = [];
  const remove: { id: string; m: Manifest }[] = [];
  for (const group of series.values()) {
    const items = group.map((m) => ({ id: m.id, at: new Date(m.started_at), pinned: m.type === "manual", ...(m.type ? { type: m.type } : {}), verified: verified.has(m.id), m }));
    const result = applyRetention(items, policy, { timeZone: o.timezone ?? "UTC", now });
    keepBasesOfDifferentials(result);
    keep.push(...result.keep);
    remove.push(...result.remove);
  }
  const withJob = (m: Manifest) => (m.job ? { job: m.job } : {});
  const entries: PruneEntry[] = [
    ...keep.map((d) => ({ id: d.item.id, at: d.item.m.started_at, action: "keep" as const, reasons: d.reasons, keys: objectKeysOf(d.item.m), ...withJob(d.item.m) })),
    ...remove.map((b) => ({ id: b.id, at: b.m.started_at, action: "delete" as const, reasons: [], keys: objectKeysOf(b.m), ...withJob(b.m) })),
  ].sort((a, b) => (a.at < b.at ? 1 : -1));
  // Damaged backups of the job, and those whose job cannot be read any more, are reported; --force deletes only
  // those known to be the job's own (on a store given by URL: all of them).
  const damagedOfJob = listing.damaged.filter((d) => o.job === undefined || d.job === o.job || d.job === undefined);
  const deletable = (d: DamagedBackup) => Boolean(o.force) && (o.job === undefined || d.job === o.job);
  const damaged: PruneDamaged[] = damagedOfJob.map((d) => ({ id: d.id, at: d.at, action: deletable(d) ? "delete" : "keep", problems: d.problems, repairable: d.repairable, keys: d.objects.map((x) => x.key) }));
  const grace = (o.orphanGraceSeconds ?? 3600) * 1000;
  const leftovers = listing.leftovers.filter(
    (l) => (o.job === undefined || l.marker?.job === undefined || l.marker.job === o.job) && (now.getTime() - l.newest.getTime() >= grace || markerProcessGone(l.marker)),
  );
  const out: PruneResult = { entries, damaged, leftovers, orphans: leftovers.flatMap((l) => l.objects), deleted: [], dryRun: o.dryRun };
  const kept = damaged.filter((d) => d.action === "keep");
  if (kept.length) {
    o.log.warn({ damaged: kept.map((d) => d.id) }, `${kept.length} damaged backup(s) kept: ${kept.map((d) => `${d.id} (${d.problems[0]})`).join("; ")}; see dbkeep repair${o.force ? "" : ", or prune --force to delete them"}`);
  }

  const last = await readLastRun(store, prefix, o.job);
  const newest = mine[0];
  if (last && !last.ok && (!newest || last.at > newest.finished_at) && !o.force) {
    out.blocked = `the last backup of this job failed (${last.at}${last.error ? `: ${last.error}` : ""}); prune deletes nothing until a backup succeeds (--force to prune anyway)`;
    o.log.warn(out.blocked);
    return out;
  }
  if (!hasRules(policy)) o.log.info("no retention rules: nothing is deleted");
  if (o.dryRun) return out;
  const dirOf = (key: string) => (key.includes("/") ? key.slice(0, key.lastIndexOf("/")) : "");
  for (const b of remove) {
    const keys = [...objectKeysOf(b.m), verifyKeyOf(b.m)].filter((k) => listing.keys.has(k));
    await deleteGroup(store, dirOf(b.m.key), b.id, manifestKeyOf(b.m), keys, { purpose: "delete", ...withJob(b.m) });
    out.deleted.push(...keys);
    o.log.info({ backup: b.id }, "deleted");
  }
  if (o.force) {
    for (const d of damagedOfJob.filter(deletable)) {
      const keys = d.objects.map((x) => x.key);
      await deleteGroup(store, d.dir, d.id, d.manifest ? d.manifestKey : keys.find((k) => k === d.manifestKey), keys, { purpose: "delete", ...(d.job ? { job: d.job } : {}) });
      out.deleted.push(...keys);
      o.log.warn({ backup: d.id }, `deleted damaged backup ${d.id} (--force)`);
    }
  }
  for (const l of leftovers) {
    // Markers last: a removal cut short still shows the group as never committed.
    const keys = l.objects.map((x) => x.key);
    const isMarker = (k: string) => /\.pending-[0-9a-f]+\.json$/.test(k);
    await store.delete(keys.filter((k) => !isMarker(k)));
    await store.delete(keys.filter(isMarker));
    out.deleted.push(...keys);
  }
  if (leftovers.length > 0) o.log.info({ count: out.orphans.length }, "removed leftovers of failed or killed runs");
  return out;
}

/**
 * Applies a job's retention to each of its stores, each with its own policy (retention.stores.NAME, else the
 * job's), and with `reclaim` gives back the space stores such as restic keep after a delete. A store that cannot be
 * pruned is logged and does not stop the others; resolves false if one failed.
 */
export async function pruneJob(plan: JobPlan, o: { log: Logger; warn?: (m: string) => void; reclaim?: boolean }): Promise<boolean> {
  const engine = await openEngine(plan, o.warn);
  const grace = durationSeconds(plan.retention?.orphan_grace ?? "1h");
  let ok = true;
  for (const ref of plan.stores) {
    const log = o.log.child({ job: plan.name, store: ref.name });
    try {
      const store = await openStoreRef(ref, o.warn);
      try {
        await prune(store, backupPrefix(plan, engine), policyFor({ ...plan, store: ref }), { dryRun: false, timezone: plan.timezone, ...(grace !== undefined ? { orphanGraceSeconds: grace } : {}), ...(plan.oneOff ? {} : { job: plan.name }), log });
        // reclaim: also give back the space of what was deleted (restic prune, seed 003's forget --prune).
        if (o.reclaim && store.reclaim) {
          await store.reclaim();
          log.info("reclaimed the space of deleted backups");
        }
      } finally {
        await store.close();
      }
    } catch (err) {
      ok = false;
      log.error({ err: redact(toDbkeepError(err).message) }, `prune of ${ref.name} failed`);
    }
  }
  return ok;
}
