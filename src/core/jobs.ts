import { checkLevel, type Compression } from "./compression.js";
import { runBackup } from "./backup.js";
import { DbkeepError, isDbkeepError, toDbkeepError } from "./errors.js";
import { runHook, type HookContext } from "./hooks.js";
import { acquireJobLock } from "./lock.js";
import type { Logger } from "./log.js";
import { joinKey, LAST_RUN, listBackups, objectKeysOf, putText, type Manifest } from "./manifest.js";
import { redact } from "./redact.js";
import { readAll } from "./streams.js";
import type { Progress } from "./pipeline.js";
import { applyRetention, hasRules, type RetentionPolicy } from "./retention.js";
import { configError, resolveSecret, type Config, type Section } from "../config/load.js";
import { durationSeconds, type RetentionConfig } from "../config/schema.js";
import { recipientsFor, type EncryptionPlan } from "../crypto/settings.js";
import { ENGINES } from "../engines/registry.js";
import type { Engine } from "../engines/engine.js";
import { STORES } from "../stores/registry.js";
import { createNotifier } from "../notifiers/registry.js";
import type { Notifier, RunEvent } from "../notifiers/notifier.js";
import { hostname } from "node:os";
import type { Store, StoreObject } from "../stores/store.js";

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
  store: { name: string; section: Section & { type: string } };
  prefix?: string;
  compression: Compression;
  level?: number;
  verify: boolean;
  retry: RetryPolicy;
  retention?: RetentionConfig;
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
  const storeName = job.stores[0]!;
  const options = { ...ds.options, ...(job.format ? { format: job.format } : {}) };
  const compression = (job.compression ?? ds.options.compression ?? "gzip") as Compression;
  const level = job.compression_level ?? (ds.options.compression_level as number | undefined);
  const bad = checkLevel(compression, level);
  if (bad) throw configError(config.file, [{ path: `jobs.${name}`, message: bad }]);
  return {
    name,
    datasource: { path: `datasources.${job.datasource}`, section: { ...ds, options } },
    store: { name: storeName, section: config.stores[storeName]! },
    ...(job.prefix ? { prefix: job.prefix } : {}),
    compression,
    ...(level !== undefined ? { level } : {}),
    verify: job.verify,
    retry: {
      maxAttempts: job.retry?.max_attempts ?? 1,
      delaySeconds: durationSeconds(job.retry?.delay) ?? 30,
      multiplier: job.retry?.backoff_multiplier ?? 2,
      ...(job.retry?.max_delay !== undefined ? { maxDelaySeconds: durationSeconds(job.retry.max_delay)! } : {}),
    },
    ...(job.retention ? { retention: job.retention } : {}),
    timezone: job.retention?.timezone ?? config.timezone,
    oneOff: false,
    ...(job.timeout !== undefined ? { timeoutSeconds: durationSeconds(job.timeout)! } : {}),
    ...(job.hooks
      ? { hooks: { ...(job.hooks.before ? { before: job.hooks.before } : {}), ...(job.hooks.after ? { after: job.hooks.after } : {}), ...(job.hooks.on_failure ? { on_failure: job.hooks.on_failure } : {}), timeoutSeconds: durationSeconds(job.hooks.timeout) ?? 300 } }
      : {}),
    notify: (job.notify ?? []).map((n) => ({ name: n.notifier, on: n.on, create: (warn: (m: string) => void) => createNotifier(config, n.notifier, warn) })),
    lock: true,
    ...(job.encryption ? { encryption: { path: `jobs.${name}.encryption`, config: job.encryption } } : config.encryption ? { encryption: { path: "encryption", config: config.encryption } } : {}),
  };
}

export async function openEngine(plan: Pick<JobPlan, "datasource" | "oneOff">, warn: (m: string) => void = () => undefined): Promise<Engine> {
  const { section, path } = plan.datasource;
  const plugin = ENGINES[section.engine]!;
  return plugin.create(section.options, { secret: (f) => resolveSecret(section, f, path, warn), oneOff: plan.oneOff });
}

export async function openStore(plan: Pick<JobPlan, "store">, warn: (m: string) => void = () => undefined): Promise<Store> {
  const { section, name } = plan.store;
  return STORES[section.type]!.create(name, section.options, { secret: (f) => resolveSecret(section, f, `stores.${name}`, warn) });
}

/** Where a datasource's backups live in its store: `<prefix>/<database>/`. */
export function backupPrefix(plan: Pick<JobPlan, "prefix">, engine: Pick<Engine, "database">): string {
  return joinKey(plan.prefix, engine.database) + "/";
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
  store: string;
}

/**
 * Runs one job: lock, before hook, attempts with seed 000's retry (only retryable errors are retried, each attempt
 * logged with its reason), after / on_failure hooks, notifications. Never throws: the result says what happened.
 */
export async function runJob(plan: JobPlan, opts: JobRunOptions): Promise<JobResult> {
  const log = opts.log.child({ job: plan.name });
  const started = Date.now();
  const startedAt = (opts.now?.() ?? new Date()).toISOString();
  const warn = (m: string) => log.warn(m);
  let attempts = 0;
  let store: Store | undefined;
  let engine: Engine | undefined;
  let release: (() => void) | undefined;
  const ac = new AbortController();
  const onAbort = () => ac.abort(opts.signal.reason);
  opts.signal.addEventListener("abort", onAbort, { once: true });
  const timer = plan.timeoutSeconds ? setTimeout(() => ac.abort(new DbkeepError("TIMEOUT", `job ${plan.name} timed out after ${plan.timeoutSeconds}s`)), plan.timeoutSeconds * 1000) : undefined;
  const signal = ac.signal;
  let result: JobResult;
  try {
    if (plan.lock) release = acquireJobLock(plan.name, log);
    engine = await openEngine(plan, warn);
    store = await openStore(plan, warn);
    if (opts.wrapStore) store = opts.wrapStore(store);
    await dispatch(plan, { kind: "start", ...eventBase(plan, engine, store, startedAt) }, log);
    if (plan.hooks?.before) await runHook("before", plan.hooks.before, hookContext(plan, engine, store, "pending"), { timeoutSeconds: plan.hooks.timeoutSeconds, log, signal });
    const { manifest, attempts: n } = await attemptBackups(plan, engine, store, { ...opts, signal }, log, (k) => (attempts = k));
    result = { job: plan.name, ok: true, attempts: n, seconds: (Date.now() - started) / 1000, manifest, store: store.name };
    await writeLastRun(store, backupPrefix(plan, engine), { ok: true, at: manifest.finished_at, backup: manifest.id }, log);
  } catch (err) {
    let error = toDbkeepError(err);
    if (error.code === "ABORTED" && isDbkeepError(signal.reason, "TIMEOUT")) error = signal.reason;
    result = { job: plan.name, ok: false, attempts: Math.max(attempts, 1), seconds: (Date.now() - started) / 1000, error, store: store?.name ?? plan.store.name };
    // Recorded in the store so that prune can refuse to eat the history of a broken job.
    if (store && engine && error.code !== "ABORTED" && error.code !== "LOCKED") {
      await writeLastRun(store, backupPrefix(plan, engine), { ok: false, at: (opts.now?.() ?? new Date()).toISOString(), error: redact(error.message) }, log);
    }
  } finally {
    if (timer) clearTimeout(timer);
    opts.signal.removeEventListener("abort", onAbort);
  }
  try {
    if (engine && store && result.error?.code !== "LOCKED") {
      const status = result.ok ? "success" : "failure";
      const ctx = hookContext(plan, engine, store, status, result);
      const hookOpts = { timeoutSeconds: plan.hooks?.timeoutSeconds ?? 300, log, signal: opts.signal };
      for (const [which, command] of [["after", plan.hooks?.after], ["on_failure", result.ok ? undefined : plan.hooks?.on_failure]] as const) {
        if (!command) continue;
        // A failing after-hook is reported, but the backup it follows stays what it is.
        await runHook(which, command, ctx, hookOpts).catch((e: unknown) => log.warn({ hook: which, err: redact((e as Error).message) }, `${which} hook failed`));
      }
      await dispatch(plan, eventFor(plan, engine, store, startedAt, result), log);
    }
  } finally {
    release?.();
    await store?.close();
  }
  return result;
}

async function attemptBackups(plan: JobPlan, engine: Engine, store: Store, opts: JobRunOptions, log: Logger, count: (n: number) => void): Promise<{ manifest: Manifest; attempts: number }> {
  const sleep = opts.sleep ?? abortableSleep;
  let delay = plan.retry.delaySeconds;
  for (let attempt = 1; ; attempt++) {
    count(attempt);
    try {
      const manifest = await runBackup({
        job: plan.oneOff ? undefined : plan.name,
        ...(opts.type ? { type: opts.type } : {}),
        engine,
        store,
        prefix: plan.prefix,
        compression: plan.compression,
        level: plan.level,
        verify: plan.verify,
        ...(plan.encryption ? { encryption: recipientsFor(plan.encryption, (m) => log.warn(m)) } : {}),
        log,
        signal: opts.signal,
        now: opts.now,
        onProgress: opts.onProgress,
      });
      log.info({ key: manifest.key, bytes: manifest.stored_bytes, sha256: manifest.sha256, seconds: manifest.duration_seconds, attempt }, `backup ${manifest.id} complete`);
      return { manifest, attempts: attempt };
    } catch (err) {
      const e = toDbkeepError(err);
      if (!e.retryable || attempt >= plan.retry.maxAttempts || opts.signal.aborted) throw e;
      log.warn({ attempt, of: plan.retry.maxAttempts, retry_in: delay, reason: redact(e.message) }, "attempt failed, retrying");
      await sleep(delay, opts.signal);
      delay = Math.min(delay * plan.retry.multiplier, plan.retry.maxDelaySeconds ?? Number.POSITIVE_INFINITY);
    }
  }
}

function hookContext(plan: JobPlan, engine: Engine, store: Store, status: HookContext["status"], r?: JobResult): HookContext {
  return {
    job: plan.name,
    status,
    store: store.name,
    database: engine.database,
    ...(r?.manifest ? { backup: r.manifest.id, key: r.manifest.key, bytes: r.manifest.stored_bytes } : {}),
    ...(r?.error ? { error: redact(r.error.message) } : {}),
  };
}

function eventBase(plan: JobPlan, engine: Engine, store: Store, startedAt: string): Omit<RunEvent, "kind" | "status" | "message"> & { status: RunEvent["status"]; message: string } {
  const src = engine.source();
  return {
    status: "started",
    message: `${plan.name} started`,
    job: plan.name,
    startedAt,
    store: store.name,
    repository: store.name,
    dbType: engine.name,
    database: engine.database,
    host: src.host ?? src.path ?? hostname(),
    tags: [plan.name, engine.database],
  };
}

function eventFor(plan: JobPlan, engine: Engine, store: Store, startedAt: string, r: JobResult): RunEvent {
  const base = eventBase(plan, engine, store, startedAt);
  const finishedAt = new Date(Date.parse(startedAt) + r.seconds * 1000).toISOString();
  const m = r.manifest;
  return {
    ...base,
    kind: r.ok ? "success" : "failure",
    status: r.ok ? "success" : "failure",
    message: r.ok ? `backup ${m?.id} of ${engine.database} complete` : `backup of ${engine.database} failed: ${redact(r.error?.message ?? "")}`,
    finishedAt,
    durationSeconds: Math.round(r.seconds * 100) / 100,
    attempts: r.attempts,
    ...(m ? { backup: m.id, key: m.key, snapshot: m.key, bytes: m.stored_bytes } : {}),
    ...(r.error ? { error: redact(r.error.message), ...(r.error.hint ? { hint: r.error.hint } : {}) } : {}),
  };
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

async function writeLastRun(store: Store, prefix: string, run: LastRun, log: Logger): Promise<void> {
  try {
    await putText(store, prefix + LAST_RUN, JSON.stringify(run) + "\n");
  } catch (err) {
    log.warn({ err: (err as Error).message }, "could not record the run's outcome in the store");
  }
}

async function readLastRun(store: Store, prefix: string): Promise<LastRun | undefined> {
  try {
    return JSON.parse((await readAll(await store.get(prefix + LAST_RUN), 65536)).toString("utf8")) as LastRun;
  } catch {
    return undefined;
  }
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
}

export interface PruneResult {
  entries: PruneEntry[];
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
  /** Prune even when the job's last run failed. */
  force?: boolean;
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

/**
 * Applies a retention policy to the backups under a prefix. Only manifested backups count; the newest is never
 * deleted; no rules means nothing is deleted; when the job's last run failed nothing is deleted (a broken job must
 * not eat its history) unless forced. A backup's manifest is deleted first, then its other objects, so an
 * interrupted prune leaves orphans (removed next time), never a manifest without data. Orphans older than the grace
 * period (leftovers of killed runs) are removed too; younger ones may belong to a backup being written.
 */
export async function prune(store: Store, prefix: string, policy: RetentionPolicy, o: PruneOptions): Promise<PruneResult> {
  const listing = await listBackups(store, prefix);
  const items = listing.backups.map((m) => ({ id: m.id, at: new Date(m.started_at), pinned: m.type === "manual", m }));
  const now = o.now ?? new Date();
  const result = applyRetention(items, policy, { timeZone: o.timezone ?? "UTC", now });
  const entries: PruneEntry[] = [
    ...result.keep.map((d) => ({ id: d.item.id, at: d.item.m.started_at, action: "keep" as const, reasons: d.reasons, keys: objectKeysOf(d.item.m) })),
    ...result.remove.map((b) => ({ id: b.id, at: b.m.started_at, action: "delete" as const, reasons: [], keys: objectKeysOf(b.m) })),
  ].sort((a, b) => (a.at < b.at ? 1 : -1));
  const grace = (o.orphanGraceSeconds ?? 3600) * 1000;
  const orphans = listing.orphans.filter((x) => now.getTime() - x.modified.getTime() >= grace);
  const out: PruneResult = { entries, orphans, deleted: [], dryRun: o.dryRun };

  const last = await readLastRun(store, prefix);
  const newest = listing.backups[0];
  if (last && !last.ok && (!newest || last.at > newest.finished_at) && !o.force) {
    out.blocked = `the last backup of this job failed (${last.at}${last.error ? `: ${last.error}` : ""}); prune deletes nothing until a backup succeeds (--force to prune anyway)`;
    o.log.warn(out.blocked);
    return out;
  }
  if (!hasRules(policy)) o.log.info("no retention rules: nothing is deleted");
  if (o.dryRun) return out;
  for (const b of result.remove) {
    const keys = objectKeysOf(b.m);
    await store.delete(keys);
    out.deleted.push(...keys);
    o.log.info({ backup: b.id }, "deleted");
  }
  if (orphans.length > 0) {
    await store.delete(orphans.map((x) => x.key));
    out.deleted.push(...orphans.map((x) => x.key));
    o.log.info({ count: orphans.length }, "removed leftovers of failed or killed runs");
  }
  return out;
}
