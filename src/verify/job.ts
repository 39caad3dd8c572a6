import { DbkeepError, toDbkeepError } from "../core/errors.js";
import type { JobPlan, JobResult } from "../core/jobs.js";
import type { Logger } from "../core/log.js";
import { readAll } from "../core/streams.js";
import { verifyKeyOf, type Manifest } from "../core/manifest.js";
import { redact } from "../core/redact.js";
import { identitiesFor } from "../crypto/settings.js";
import type { Store } from "../stores/store.js";
import { scratchServerFor, settingsOf } from "./plan.js";
import type { VerifyReport } from "./report.js";
import { runVerify } from "./runner.js";

/** What a job run records of its verification: in the result, the run history and the daemon's metrics. */
export interface JobVerification {
  ok: boolean;
  backup: string;
  /** The restore alone: the RTO measured on this backup. */
  restoreSeconds: number | null;
  bytesPerSecond: number | null;
  failed: string[];
}

export function summaryOf(r: VerifyReport): JobVerification {
  return {
    ok: r.ok,
    backup: r.backup.id,
    restoreSeconds: r.restore?.seconds ?? null,
    bytesPerSecond: r.restore?.raw_bytes_per_second ?? null,
    failed: r.checks.filter((c) => c.status === "FAIL").map((c) => `${c.name}: ${c.detail}`),
  };
}

/**
 * Verifies a job's backup by restoring it (`verify: restore`, or the daemon's verification schedule). The
 * report goes beside the backup; a failed check becomes a VERIFY_FAILED error that names the checks.
 */
export async function verifyJobBackup(plan: JobPlan, m: Manifest, store: Store, o: { log: Logger; signal: AbortSignal }): Promise<{ verification: JobVerification; error?: DbkeepError }> {
  const report = await runVerify({
    manifest: m,
    store,
    job: plan.name,
    server: scratchServerFor(plan, m.engine, (w) => o.log.warn(w)),
    settings: settingsOf(plan),
    record: true,
    log: o.log,
    signal: o.signal,
    identities: () => (plan.encryption ? identitiesFor(plan.encryption, (w) => o.log.warn(w)) : []),
  });
  const verification = summaryOf(report);
  if (report.ok) return { verification };
  const shown = verification.failed.slice(0, 3).join("; ");
  return {
    verification,
    error: new DbkeepError("VERIFY_FAILED", `verification of ${m.id} by restore failed: ${redact(shown)}${verification.failed.length > 3 ? "; ..." : ""}`, {
      hint: `dbkeep verify ${plan.name} ${m.id} shows every check; the backup is kept, but do not count on it`,
    }),
  };
}

/** After a successful backup with verify: restore: the same result, failed when the verification failed. */
export async function verifyAfterBackup(plan: JobPlan, result: JobResult, store: Store, o: { log: Logger; signal: AbortSignal }): Promise<JobResult> {
  if (!result.manifest) return result;
  try {
    const { verification, error } = await verifyJobBackup(plan, result.manifest, store, o);
    return { ...result, verification, ...(error ? { ok: false, error } : {}) };
  } catch (err) {
    const e = toDbkeepError(err);
    if (o.signal.aborted) throw e;
    return { ...result, ok: false, error: new DbkeepError("VERIFY_FAILED", `verification of ${result.manifest.id} by restore could not run: ${redact(e.message)}`, { hint: e.hint ?? "see dbkeep verify --help", cause: e }) };
  }
}

/** The ids of the backups whose stored verification report says they passed (for retention's keep_verified). */
export async function verifiedIds(store: Store, backups: Manifest[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const m of backups) {
    try {
      const r = JSON.parse((await readAll(await store.get(verifyKeyOf(m)), 4 * 1024 * 1024)).toString("utf8")) as { ok?: unknown; backup?: { id?: unknown } };
      if (r.ok === true && r.backup?.id === m.id) out.add(m.id);
    } catch {
      // no report, or an unreadable one: not verified
    }
  }
  return out;
}

/**
 * The daemon's verification schedule: verifies the job's latest backup (in its first store) and returns a run
 * result for the history and the metrics. A failed verification is notified like a failed backup.
 */
export async function verifyLatest(plan: JobPlan, o: { log: Logger; signal: AbortSignal }): Promise<JobResult> {
  const started = Date.now();
  const { openEngine, openStore, backupPrefix } = await import("../core/jobs.js");
  const { listFor } = await import("../core/listing.js");
  const store = await openStore(plan);
  let result: JobResult;
  try {
    const engine = await openEngine(plan);
    const latest = (await listFor(store, backupPrefix(plan, engine), plan.oneOff ? undefined : plan.name)).backups[0];
    if (!latest) throw new DbkeepError("BACKUP_NOT_FOUND", `no backups of ${plan.name} in ${store.name} to verify`);
    const { verification, error } = await verifyJobBackup(plan, latest, store, o);
    result = { job: plan.name, ok: !error, attempts: 1, seconds: (Date.now() - started) / 1000, manifest: latest, store: store.name, verification, ...(error ? { error } : {}) };
  } catch (err) {
    result = { job: plan.name, ok: false, attempts: 1, seconds: (Date.now() - started) / 1000, store: store.name, error: toDbkeepError(err) };
  } finally {
    await store.close();
  }
  if (!result.ok) await notifyFailure(plan, result, started, o.log);
  return result;
}

async function notifyFailure(plan: JobPlan, r: JobResult, started: number, log: Logger): Promise<void> {
  const { hostname } = await import("node:os");
  for (const n of (plan.notify ?? []).filter((x) => x.on !== "success")) {
    try {
      const notifier = await n.create((m) => log.warn(m));
      await notifier.notify(
        {
          kind: "failure",
          status: "failed",
          job: plan.name,
          message: `verification of ${plan.name} failed: ${redact(r.error?.message ?? "")}`,
          startedAt: new Date(started).toISOString(),
          finishedAt: new Date().toISOString(),
          durationSeconds: Math.round(r.seconds * 100) / 100,
          store: r.store,
          repository: r.store,
          dbType: String(plan.datasource.section.engine),
          database: r.manifest?.database ?? "",
          host: hostname(),
          tags: [plan.name, "verify"],
          ...(r.manifest ? { backup: r.manifest.id, key: r.manifest.key, snapshot: r.manifest.key } : {}),
          ...(r.error ? { error: redact(r.error.message), ...(r.error.hint ? { hint: r.error.hint } : {}) } : {}),
        },
        { signal: AbortSignal.timeout(30_000) },
      );
    } catch (err) {
      log.warn({ notifier: n.name, err: redact((err as Error).message) }, "notification failed");
    }
  }
}
