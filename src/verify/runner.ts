import { spawn } from "node:child_process";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DbkeepError, toDbkeepError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { putText, verifyKeyOf, type Manifest } from "../core/manifest.js";
import type { Progress } from "../core/pipeline.js";
import { redact, type Secret } from "../core/redact.js";
import { runRestore } from "../core/restore.js";
import { HashStage } from "../core/streams.js";
import { minimalEnv } from "../core/subprocess.js";
import type { Identity } from "../crypto/age.js";
import { durationSeconds } from "../config/schema.js";
import { ENGINES } from "../engines/registry.js";
import type { Store } from "../stores/store.js";
import { checkObjects, checkRowCounts, checkTables } from "./compare.js";
import { verifierFor, type ScratchTarget } from "./engine.js";
import { REPORT_VERSION, summarize, type CheckResult, type VerifyReport } from "./report.js";
import { DEFAULT_VERIFICATION, type VerificationConfig } from "./settings.js";

export interface VerifySpec {
  manifest: Manifest;
  store: Store;
  job?: string;
  /**
   * The datasource whose server holds the scratch database: verify_datasource, else the job's own. Its options
   * give host, port, user and tools; `secret` resolves its password.
   */
  server: { engine: string; options: Record<string, unknown>; secret: (field: string) => Secret | undefined; oneOff: boolean };
  settings?: VerificationConfig;
  /** Leave the scratch target in place (its name is in the report). */
  keep?: boolean;
  /** Store the report beside the backup (`<id>.verify.json`): what retention's keep_verified reads. */
  record?: boolean;
  identities?: () => Identity[];
  log: Logger;
  signal: AbortSignal;
  onProgress?: (p: Progress) => void;
}

const ALIASES: Record<string, string> = { postgresql: "postgres", mariadb: "mysql" };
const kindOf = (e: string) => ALIASES[e] ?? e;

/**
 * Verifies a backup by restoring it: checksum of the stored object first (nothing is restored from a damaged
 * one), then the restore into a scratch target through the same path as `dbkeep restore`, timed, then the checks,
 * then the scratch target is dropped. Check failures are in the report (ok: false); only problems that prevent a
 * verification (a store that cannot be read, a server that cannot be reached) throw.
 */
export async function runVerify(spec: VerifySpec): Promise<VerifyReport> {
  const { manifest: m, store, log } = spec;
  const settings = spec.settings ?? DEFAULT_VERIFICATION;
  const started = new Date();
  const checks: CheckResult[] = [];
  const verifier = await verifierFor(m.engine);
  if (!verifier) {
    throw new DbkeepError("USAGE", `verification by restore is not available for ${m.engine} backups`, { hint: "verify: true reads the backup back and checks its checksum and structure" });
  }
  if (kindOf(spec.server.engine) !== kindOf(m.engine)) {
    throw new DbkeepError("USAGE", `backup ${m.id} is a ${m.engine} backup; the verify datasource is ${spec.server.engine}`, { hint: "set verify_datasource to a datasource of the same engine" });
  }
  const refused = verifier.refuse?.(m, settings.scratch_cluster);
  if (refused) throw new DbkeepError("USAGE", `cannot verify ${m.id}: ${refused}`);
  const password = spec.server.secret("password");
  const common = { job: spec.job, options: spec.server.options, password, cluster: settings.scratch_cluster, log, signal: spec.signal };

  let leftovers: string[] = [];
  try {
    leftovers = await verifier.cleanupLeftovers(common);
  } catch (err) {
    log.warn({ err: redact((err as Error).message) }, "could not look for leftovers of killed verify runs");
  }

  const report = (target: VerifyReport["target"], restore: VerifyReport["restore"]): VerifyReport => {
    const finished = new Date();
    return {
      report_version: REPORT_VERSION,
      ok: !checks.some((c) => c.status === "FAIL"),
      job: spec.job ?? m.job ?? null,
      backup: { id: m.id, key: m.key, store: store.name, engine: m.engine, format: m.format, taken_at: m.started_at, raw_bytes: m.raw_bytes, stored_bytes: m.stored_bytes, encrypted: m.encryption !== null },
      target,
      started_at: started.toISOString(),
      finished_at: finished.toISOString(),
      seconds: round((finished.getTime() - started.getTime()) / 1000),
      restore,
      checks,
      summary: summarize(checks),
      leftovers_removed: leftovers,
    };
  };
  const skipRest = (why: string) => {
    for (const name of ["tables", "row_counts", "integrity"]) checks.push({ name, status: "SKIP", detail: `not run: ${why}` });
  };

  // 1. The stored bytes, before anything is restored.
  const sum = await checksum(store, m, spec.signal);
  checks.push(sum);
  if (sum.status === "FAIL") {
    checks.push({ name: "restore", status: "SKIP", detail: "not run: the backup failed its checksum" });
    skipRest("the backup failed its checksum");
    return finish(spec, report({ kind: "database", name: "", where: "nothing was restored", kept: false }, null));
  }

  // 2. The restore into a scratch target, timed.
  const target = await verifier.prepare({ ...common, manifest: m });
  let restoreInfo: VerifyReport["restore"];
  let kept = false;
  try {
    log.info({ backup: m.id, target: target.where }, `verifying ${m.id}: restoring into ${target.where}`);
    try {
      const engine = await ENGINES[kindOf(m.engine)]!.create(target.datasource, {
        secret: (f) => (target.kind === "database" ? spec.server.secret(f) : undefined),
        oneOff: spec.server.oneOff && target.kind === "database",
      });
      const r = await runRestore({
        manifest: m,
        store,
        engine,
        log,
        signal: spec.signal,
        confirm: async () => false,
        ...(target.kind === "cluster" && m.extras?.length ? { extras: true } : {}),
        ...(spec.identities ? { identities: spec.identities } : {}),
        ...(spec.onProgress ? { onProgress: spec.onProgress } : {}),
      });
      await target.afterRestore?.();
      const secs = Math.max(r.seconds, 0.001);
      restoreInfo = { seconds: round(r.seconds), bytes_per_second: Math.round(m.stored_bytes / secs), raw_bytes_per_second: Math.round(m.raw_bytes / secs) };
      checks.push({ name: "restore", status: "PASS", detail: `restored in ${round(r.seconds)}s into ${target.where}` });
    } catch (err) {
      const e = toDbkeepError(err);
      if (spec.signal.aborted) throw e;
      if (e.code === "CHECKSUM_MISMATCH") checks[0] = { name: "checksum", status: "FAIL", detail: redact(e.message) };
      checks.push({ name: "restore", status: "FAIL", detail: redact(`${e.message}${e.details ? `: ${e.details.split("\n").slice(-2).join(" ")}` : ""}`) });
      skipRest("the restore failed");
      return finish(spec, report({ kind: target.kind, name: target.name, where: target.where, kept: false }, null));
    }

    // 3. The checks.
    await runChecks(spec, settings, target, checks);
    kept = spec.keep ?? false;
    if (kept) await target.keep();
    return finish(spec, report({ kind: target.kind, name: target.name, where: target.where, kept }, restoreInfo));
  } finally {
    if (!kept) {
      await target.drop().catch((err: unknown) => log.warn({ target: target.where, err: redact((err as Error).message) }, "could not drop the scratch target; the next verify run drops it"));
    }
  }
}

async function runChecks(spec: VerifySpec, settings: VerificationConfig, target: ScratchTarget, checks: CheckResult[]): Promise<void> {
  const m = spec.manifest;
  const guard = async (name: string, fn: () => Promise<CheckResult | CheckResult[]>) => {
    try {
      const r = await fn();
      checks.push(...(Array.isArray(r) ? r : [r]));
    } catch (err) {
      if (spec.signal.aborted) throw err;
      checks.push({ name, status: "FAIL", detail: redact((err as Error).message) });
    }
  };
  const catalog = await target.catalog();
  checks.push(checkTables(m, catalog), checkRowCounts(m, catalog), ...checkObjects(m, catalog));
  const query = target.query?.bind(target);
  if (settings.migrations) {
    await guard("migrations", async () => {
      if (!query) return { name: "migrations", status: "SKIP", detail: `${m.engine} has no migration table` };
      const mg = settings.migrations!;
      const version = await query(`SELECT ${mg.version_column} FROM ${mg.table} ORDER BY ${mg.version_column} DESC LIMIT 1`);
      if (version === undefined || version === null) return { name: "migrations", status: "FAIL", detail: `${mg.table} holds no version` };
      const dirty = mg.dirty_column ? Number(await query(`SELECT count(*) FROM ${mg.table} WHERE ${mg.dirty_column}`)) > 0 : false;
      if (dirty) return { name: "migrations", status: "FAIL", detail: `version ${version} is dirty (a migration failed half-way)`, data: { version, dirty } };
      if (mg.expect_version !== undefined && String(mg.expect_version) !== version) {
        return { name: "migrations", status: "FAIL", detail: `version ${version}, expected ${mg.expect_version}`, data: { version, dirty } };
      }
      return { name: "migrations", status: "PASS", detail: `version ${version}${mg.dirty_column ? ", clean" : ""}`, data: { version, dirty } };
    });
  }
  if (target.orphans) await guard("orphans", () => target.orphans!(settings.orphan_sample_rows));
  await guard("integrity", () => target.integrity());
  for (const a of settings.assertions ?? []) {
    const name = `assertion:${a.name}`;
    await guard(name, async () => {
      if (!query) return { name, status: "SKIP", detail: `${m.engine} takes no SQL` };
      const got = await query(a.query);
      const want = a.expect === null ? null : typeof a.expect === "boolean" ? a.expect : String(a.expect);
      const same = want === null ? got === null : typeof want === "boolean" ? ["t", "true", "1"].includes(String(got).toLowerCase()) === want : got === want;
      return same ? { name, status: "PASS", detail: `= ${String(got)}` } : { name, status: "FAIL", detail: `got ${got === undefined ? "no row" : String(got)}, expected ${String(want)}` };
    });
  }
  if (settings.health_check) await guard("health_check", () => healthCheck(settings.health_check!, target, spec.signal));
}

/** Starts the application (if a command is given) pointed at the scratch copy and waits for its health URL. */
async function healthCheck(h: NonNullable<VerificationConfig["health_check"]>, target: ScratchTarget, signal: AbortSignal): Promise<CheckResult> {
  const timeoutMs = (durationSeconds(h.timeout) ?? 60) * 1000;
  const child = h.command
    ? spawn("/bin/sh", ["-c", h.command], { env: minimalEnv({ ...target.env(), DBKEEP_VERIFY_TARGET: target.name }), stdio: "ignore", detached: true })
    : undefined;
  child?.on("error", () => undefined);
  const deadline = Date.now() + timeoutMs;
  let last = "no answer";
  try {
    while (Date.now() < deadline) {
      signal.throwIfAborted();
      if (child && child.exitCode !== null) return { name: "health_check", status: "FAIL", detail: `the application exited with code ${child.exitCode} before ${h.url} answered` };
      try {
        const res = await fetch(h.url, { signal: AbortSignal.timeout(5000), redirect: "manual" });
        await res.arrayBuffer().catch(() => undefined);
        if (res.status === h.expect_status) return { name: "health_check", status: "PASS", detail: `${h.url} answered ${res.status}` };
        last = `status ${res.status}`;
      } catch (err) {
        last = (err as Error).message;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    return { name: "health_check", status: "FAIL", detail: `${h.url} did not answer ${h.expect_status} within ${timeoutMs / 1000}s (last: ${last})` };
  } finally {
    if (child?.pid && child.exitCode === null) {
      try {
        process.kill(-child.pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
  }
}

/** Hashes the stored object against the manifest: a damaged backup fails here, before anything is restored. */
async function checksum(store: Store, m: Manifest, signal: AbortSignal): Promise<CheckResult> {
  try {
    const body = await store.get(m.key, { signal });
    await pipeline(body, new HashStage({ sha256: m.sha256, bytes: m.stored_bytes, what: m.key }), new Writable({ write: (_c, _e, cb) => cb() }));
  } catch (err) {
    if (err instanceof DbkeepError && err.code === "CHECKSUM_MISMATCH") return { name: "checksum", status: "FAIL", detail: redact(err.message) };
    throw err;
  }
  return { name: "checksum", status: "PASS", detail: `SHA-256 and size (${m.stored_bytes} bytes) match the manifest` };
}

async function finish(spec: VerifySpec, r: VerifyReport): Promise<VerifyReport> {
  const s = r.summary;
  spec.log[r.ok ? "info" : "warn"]({ backup: r.backup.id, ok: r.ok, pass: s.pass, fail: s.fail, skip: s.skip, restore_seconds: r.restore?.seconds }, r.ok ? `verified ${r.backup.id}` : `verification of ${r.backup.id} failed`);
  if (spec.record) {
    await putText(spec.store, verifyKeyOf(spec.manifest), JSON.stringify(r, null, 2) + "\n").catch((err: unknown) =>
      spec.log.warn({ err: redact((err as Error).message) }, "could not store the verification report beside the backup"),
    );
  }
  return r;
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}
