import { createServer, type Server } from "node:http";
import type { Config } from "../config/load.js";
import { durationSeconds } from "../config/schema.js";
import { DbkeepError, formatError, toDbkeepError } from "../core/errors.js";
import { History } from "../core/history.js";
import { backupPrefix, openEngine, openStores, planJob, pruneJob, storePolicy, runJob, type JobResult } from "../core/jobs.js";
import { syncStores } from "../core/sync.js";
import type { Logger } from "../core/log.js";
import { redact } from "../core/redact.js";
import { Metrics } from "./metrics.js";
import { verifyLatest } from "../verify/job.js";
import { cronSchedule, intervalSchedule, type Schedule } from "./schedule.js";

export interface DaemonOptions {
  /** Loads (and on SIGHUP reloads) the config; throws on an invalid one. */
  loadConfig: () => Config;
  log: Logger;
  /** Set when the daemon should stop (SIGTERM/SIGINT): running jobs get the grace period, then are stopped. */
  shutdown: AbortSignal;
  listen?: string;
  historyPath: string;
  /**
   * Run every scheduled job once, now, whatever its schedule and the run history say, then exit
   * (BACKUP_INTERVAL_SECONDS=0 in sidecar mode, `daemon --once`).
   */
  once?: boolean;
  now?: () => Date;
}

interface Running {
  abort: AbortController;
  done: Promise<void>;
}

/** What runDaemon resolves with in once mode when a signal stopped it before every run had ended. */
export const STOPPED_EARLY = 143;

/**
 * `dbkeep daemon`: runs each job on its schedule, never two runs of one job at once (a run due while the previous
 * one still runs is skipped and logged), serves /healthz, /readyz and /metrics, keeps a run history, reloads the
 * config on SIGHUP (an invalid one is refused and the old one kept) and, on SIGTERM, lets running jobs finish up to
 * the grace period before stopping them cleanly. Resolves with the exit code.
 */
export async function runDaemon(o: DaemonOptions): Promise<number> {
  const now = o.now ?? (() => new Date());
  const log = o.log;
  const metrics = new Metrics();
  const history = new History(o.historyPath);
  const running = new Map<string, Running>();
  const timers = new Set<NodeJS.Timeout>();
  let config = o.loadConfig();
  let ready = false;
  let stopping = false;
  let failures = 0;

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, Math.max(0, ms));
    timers.add(t);
  };

  function scheduleOf(job: string): Schedule | undefined {
    const j = config.jobs[job]!;
    if (j.schedule) return cronSchedule(j.schedule, config.timezone);
    if (j.schedules) return cronSchedule(j.schedules[0]!.schedule, config.timezone);
    if (j.every !== undefined) return intervalSchedule(durationSeconds(j.every)!);
    return undefined;
  }

  /** `type`: the type a schedule of `schedules:` records in its backups. */
  async function run(job: string, trigger: string, type?: string): Promise<void> {
    const m = metrics.job(job);
    if (running.has(job)) {
      m.results.skipped++;
      log.warn({ job, trigger }, `run of ${job} skipped: the previous run is still running`);
      return;
    }
    const abort = new AbortController();
    const startedAt = now();
    const done = (async () => {
      m.running = true;
      let result: JobResult;
      try {
        const plan = planJob(config, job);
        // prune_after_backup is applied by runJob itself.
        result = await runJob(plan, { log, signal: abort.signal, now, ...(type ? { type } : {}) });
      } catch (err) {
        const e = toDbkeepError(err);
        result = { job, ok: false, attempts: 1, seconds: (now().getTime() - startedAt.getTime()) / 1000, error: e, store: "" };
      }
      m.running = false;
      if (!result.ok) failures++;
      m.results[result.ok ? "success" : "failure"]++;
      m.lastDuration = result.seconds;
      m.lastAttempts = result.attempts;
      if (result.ok && result.manifest) {
        m.lastSuccess = Date.parse(result.manifest.finished_at) / 1000;
        m.lastSize = result.manifest.stored_bytes;
        metrics.addUploaded(result.store, result.manifest.stored_bytes);
      }
      recordVerification(job, result);
      if (!result.ok && result.error) log.error({ job, code: result.error.code }, redact(formatError(result.error)));
      try {
        history.record(result, startedAt, trigger);
      } catch (err) {
        log.warn({ err: (err as Error).message }, "could not record the run in the history");
      }
    })().finally(() => running.delete(job));
    running.set(job, { abort, done });
    await done;
  }

  /** Feeds dbkeep_last_verify_timestamp and dbkeep_restore_seconds from a run that verified by restore. */
  function recordVerification(job: string, result: JobResult): void {
    const v = result.verification;
    if (!v) return;
    const m = metrics.job(job);
    if (v.ok) m.lastVerify = now().getTime() / 1000;
    if (v.restoreSeconds !== null) m.restoreSeconds = v.restoreSeconds;
  }

  /** The verification schedule: the latest backup, restored into a scratch target and checked. */
  async function runVerify(job: string): Promise<void> {
    const startedAt = now();
    const jlog = log.child({ job, task: "verify" });
    let result: JobResult;
    try {
      result = await verifyLatest(planJob(config, job), { log: jlog, signal: o.shutdown });
    } catch (err) {
      result = { job, ok: false, attempts: 1, seconds: (now().getTime() - startedAt.getTime()) / 1000, error: toDbkeepError(err), store: "" };
    }
    recordVerification(job, result);
    if (!result.ok && result.error) jlog.error({ code: result.error.code }, redact(formatError(result.error)));
    try {
      history.record(result, startedAt, "verify");
    } catch (err) {
      jlog.warn({ err: (err as Error).message }, "could not record the verification in the history");
    }
  }

  async function runPrune(job: string): Promise<void> {
    try {
      await pruneJob(planJob(config, job), { log: log.child({ task: "prune" }) });
    } catch (err) {
      log.error({ job, task: "prune" }, redact(formatError(toDbkeepError(err))));
    }
  }

  /** Copies backups missing from a store of the job (e.g. after an outage) from one that has them. */
  async function runSync(job: string): Promise<void> {
    const jlog = log.child({ job, task: "sync" });
    try {
      const plan = planJob(config, job);
      const engine = await openEngine(plan);
      const stores = await openStores(plan);
      try {
        const r = await syncStores(stores, stores, backupPrefix(plan, engine), { policyFor: (s) => storePolicy(plan, stores.indexOf(s)), timezone: plan.timezone, signal: o.shutdown, log: jlog });
        if (r.copied.length || r.failed.length) jlog.info({ copied: r.copied.length, failed: r.failed.length }, "sync done");
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    } catch (err) {
      jlog.error(redact(formatError(toDbkeepError(err))));
    }
  }

  /** (Re)arms every job's timers from the current config; runs already going are left alone. */
  function arm(initial: boolean): void {
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const job of Object.keys(config.jobs)) {
      const j = config.jobs[job]!;
      const schedule = scheduleOf(job);
      if (j.schedules) {
        // Each schedule runs the job with its own type (seed 001: daily at 02:00, weekly on Sundays at 03:00).
        for (const [i, s] of j.schedules.entries()) {
          if (o.once && i > 0) break;
          const cs = cronSchedule(s.schedule, config.timezone);
          const armTyped = (at: Date) => {
            const next = metrics.job(job).nextRun;
            if (next === undefined || next * 1000 < now().getTime() || at.getTime() < next * 1000) metrics.job(job).nextRun = Math.floor(at.getTime() / 1000);
            later(at.getTime() - now().getTime(), () => {
              if (stopping) return;
              void run(job, "schedule", s.type);
              if (!o.once) {
                const n = cs.next(new Date(Math.max(at.getTime(), now().getTime()) + 1));
                if (n) armTyped(n);
              }
            });
          };
          const first = o.once ? now() : cs.next(now());
          if (first) armTyped(first);
          log.info({ job, type: s.type, schedule: cs.description, next: first?.toISOString() }, `scheduled ${job} (${s.type})`);
        }
      } else if (schedule) {
        const last = history.lastStart(job);
        let first: Date;
        // Once means one run now: not a day after the last run the history knows of (which ran nothing and waited).
        if (o.once) first = now();
        else if (j.every !== undefined) first = last ? new Date(Math.max(now().getTime(), last.getTime() + durationSeconds(j.every)! * 1000)) : now();
        else first = schedule.next(now()) ?? new Date(8.64e15);
        if (!o.once && initial && j.catch_up && j.schedule && last && schedule.missedBetween(last, now())) {
          log.info({ job, last_run: last.toISOString() }, `${job} missed a scheduled run while the daemon was down: running it now`);
          first = now();
        }
        // A cron job re-arms at every tick (a run still going then is skipped, as it should be); an interval job
        // re-arms when its run ends, counted from the run's start.
        if (j.schedule) {
          const armCron = (at: Date) => {
            const jitter = (durationSeconds(config.jobs[job]?.jitter) ?? 0) * 1000 * Math.random();
            metrics.job(job).nextRun = Math.floor(at.getTime() / 1000);
            later(at.getTime() - now().getTime() + jitter, () => {
              if (stopping) return;
              void run(job, "schedule");
              if (!o.once) {
                const next = schedule.next(new Date(Math.max(at.getTime(), now().getTime()) + 1));
                if (next) armCron(next);
              }
            });
          };
          armCron(first);
        } else {
          const armEvery = (at: Date) => {
            metrics.job(job).nextRun = Math.floor(at.getTime() / 1000);
            later(at.getTime() - now().getTime(), () => {
              if (stopping) return;
              const started = now();
              void run(job, "schedule").then(() => {
                if (!o.once && !stopping) armEvery(new Date(started.getTime() + durationSeconds(j.every)! * 1000));
              });
            });
          };
          armEvery(first);
        }
        log.info({ job, schedule: schedule.description, next: new Date((metrics.job(job).nextRun ?? 0) * 1000).toISOString() }, `scheduled ${job}`);
      }
      if (j.prune_schedule && !o.once) {
        const ps = cronSchedule(j.prune_schedule, config.timezone);
        const armPrune = (at: Date) =>
          later(at.getTime() - now().getTime(), () => {
            if (stopping) return;
            void runPrune(job);
            const next = ps.next(new Date(at.getTime() + 1));
            if (next) armPrune(next);
          });
        const n = ps.next(now());
        if (n) armPrune(n);
      }
      if (j.verification?.schedule && !o.once) {
        const vs = cronSchedule(j.verification.schedule, config.timezone);
        const armVerify = (at: Date) =>
          later(at.getTime() - now().getTime(), () => {
            if (stopping) return;
            void runVerify(job);
            const next = vs.next(new Date(at.getTime() + 1));
            if (next) armVerify(next);
          });
        const n = vs.next(now());
        if (n) armVerify(n);
      }
      if (j.sync_every !== undefined && !o.once) {
        const seconds = durationSeconds(j.sync_every)!;
        const armSyncEvery = () =>
          later(seconds * 1000, () => {
            if (stopping) return;
            void runSync(job).then(() => {
              if (!stopping) armSyncEvery();
            });
          });
        if (seconds > 0) armSyncEvery();
      }
      if (j.sync_schedule && !o.once) {
        const ss = cronSchedule(j.sync_schedule, config.timezone);
        const armSync = (at: Date) =>
          later(at.getTime() - now().getTime(), () => {
            if (stopping) return;
            void runSync(job);
            const next = ss.next(new Date(at.getTime() + 1));
            if (next) armSync(next);
          });
        const n = ss.next(now());
        if (n) armSync(n);
      }
    }
  }

  async function checkStores(): Promise<void> {
    try {
      for (const job of Object.keys(config.jobs)) {
        const stores = await openStores(planJob(config, job));
        try {
          await Promise.all(stores.map((store) => store.stat(".dbkeep-readiness-probe")));
        } finally {
          await Promise.all(stores.map((store) => store.close().catch(() => undefined)));
        }
      }
      ready = true;
    } catch (err) {
      ready = false;
      log.warn({ err: redact((err as Error).message) }, "a store is not reachable");
    }
  }

  const server = await listen(o.listen ?? config.daemon.listen, metrics, () => ready, log);
  await checkStores();
  const storeCheck = setInterval(() => void checkStores(), 60_000);
  storeCheck.unref();

  const onHup = () => {
    try {
      const next = o.loadConfig();
      config = next;
      metrics.reloads.success++;
      for (const w of next.warnings) log.warn(w);
      log.info({ jobs: Object.keys(next.jobs).length }, "config reloaded");
      arm(false);
      void checkStores();
    } catch (err) {
      metrics.reloads.failure++;
      const e = toDbkeepError(err);
      log.error({ code: e.code }, `config reload refused, keeping the running config: ${redact(formatError(e))}`);
    }
  };
  process.on("SIGHUP", onHup);

  const scheduled = Object.keys(config.jobs).filter((j) => scheduleOf(j));
  if (scheduled.length === 0) {
    log.warn("no job has a schedule: or every: the daemon serves metrics and waits");
  }
  arm(true);
  log.info({ listen: o.listen ?? config.daemon.listen, jobs: scheduled }, "dbkeep daemon started");

  // once: wait for every first run, or for the shutdown signal, whichever comes first; otherwise for the signal.
  const shutdown = new Promise<void>((resolve) => (o.shutdown.aborted ? resolve() : o.shutdown.addEventListener("abort", () => resolve(), { once: true })));
  if (o.once) {
    while ((timers.size > 0 || running.size > 0) && !o.shutdown.aborted) await Promise.race([shutdown, new Promise((r) => setTimeout(r, 100))]);
  } else {
    await shutdown;
  }
  const stoppedEarly = o.once && (timers.size > 0 || running.size > 0);

  stopping = true;
  for (const t of timers) clearTimeout(t);
  const grace = (durationSeconds(config.daemon.shutdown_grace) ?? 60) * 1000;
  if (running.size > 0) {
    log.info({ running: [...running.keys()], grace_seconds: grace / 1000 }, "waiting for running jobs to finish");
    const all = Promise.all([...running.values()].map((r) => r.done));
    const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), grace).unref())]);
    if (timedOut) {
      log.warn({ running: [...running.keys()] }, "grace period over: stopping running jobs");
      for (const r of running.values()) r.abort.abort(new DbkeepError("ABORTED", "daemon shutting down"));
      await all;
    }
  }
  clearInterval(storeCheck);
  process.off("SIGHUP", onHup);
  await new Promise<void>((r) => server.close(() => r()));
  history.close();
  log.info("dbkeep daemon stopped");
  // A daemon stopped by SIGTERM has done its work: 0. A single run (once) reports its outcome, as `backup` does.
  if (!o.once) return 0;
  return stoppedEarly ? STOPPED_EARLY : failures > 0 ? 1 : 0;
}

async function listen(address: string, metrics: Metrics, ready: () => boolean, log: Logger): Promise<Server> {
  const m = /^(.*):(\d+)$/.exec(address);
  if (!m) throw new DbkeepError("CONFIG_INVALID", `daemon.listen: "${address}" is not host:port`, { hint: "e.g. 127.0.0.1:9187" });
  const host = m[1]!.replace(/^\[|\]$/g, "");
  const port = Number(m[2]);
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz") return void res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    if (path === "/readyz") {
      const ok = ready();
      return void res.writeHead(ok ? 200 : 503, { "content-type": "text/plain" }).end(ok ? "ready\n" : "not ready: a store is not reachable\n");
    }
    if (path === "/metrics") return void res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(metrics.render());
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new DbkeepError("USAGE", `cannot listen on ${address}: ${err.message}`, { hint: err.code === "EADDRINUSE" ? "another process uses that port; set daemon.listen or --listen" : undefined })),
    );
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  log.info({ address: typeof a === "object" && a ? `${a.address}:${a.port}` : address }, "serving /healthz, /readyz and /metrics");
  return server;
}
