import { createWriteStream } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type pg from "pg";
import { DbkeepError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { feedWhileReading, resolveTool, spawnTool, type SpawnOptions } from "../../core/subprocess.js";
import type { DoctorFinding, RestoreOptions } from "../engine.js";
import { makeScratchDir, sweepScratchDirs } from "./scratch.js";
import { claimRestore, ident, lit, stagingComment, stagingName, swapIn, sweepLeftovers, unlock } from "./swap.js";
import { pauseForTest } from "./test-hooks.js";
import { pgTool } from "./tools.js";

/** What the engine lends the restore: its connections, its tools' environment, its settings. */
export interface RestoreContext {
  /** A connected client to `database`, with the datasource's connection settings. */
  open(database: string): Promise<pg.Client>;
  maintenanceDb(): Promise<string>;
  toolEnv(database: string): NodeJS.ProcessEnv;
  binDir: string | undefined;
  timeoutMs: number | undefined;
  /** The datasource's pg_restore -j default. */
  jobs: number | undefined;
  /** "host H, database D", for messages. */
  where: string;
  explain: SpawnOptions["explain"];
}

/**
 * Restores a whole database: into a new staging database, and swapped in (swap.ts) only after the input ended
 * cleanly (checksum verified) and the restore tool succeeded. Until the swap's COMMIT the target is untouched; on
 * any failure or cancel the staging database and the temp copy are removed here, and after a SIGKILL by the next
 * restore or `dbkeep doctor` (the restore's advisory lock tells them it is gone).
 */
export async function restoreDatabase(input: Readable, ropts: RestoreOptions, target: string, x: RestoreContext): Promise<void> {
  const admin = await x.maintenanceDb();
  // This connection holds the restore's lock from before the staging database exists until the swap is over.
  const c = await x.open(admin);
  let id: string | undefined;
  let staging: string | undefined;
  try {
    id = await claimRestore(c);
    const name = stagingName(target, id);
    const state = await c.query<{ owner: string; enc: string; collate: string; ctype: string }>(
      `SELECT pg_get_userbyid(datdba) AS owner, pg_encoding_to_char(encoding) AS enc, datcollate AS collate, datctype AS ctype
         FROM pg_database WHERE datname = $1`,
      [target],
    );
    const s = state.rows[0];
    const createSql = s
      ? `CREATE DATABASE ${ident(name)} TEMPLATE template0 OWNER ${ident(s.owner)} ENCODING ${lit(s.enc)} LC_COLLATE ${lit(s.collate)} LC_CTYPE ${lit(s.ctype)}`
      : `CREATE DATABASE ${ident(name)} TEMPLATE template0`;
    await c.query(createSql).catch((err: unknown) => {
      throw new DbkeepError("ENGINE_FAILED", `could not create the staging database for the restore (${x.where}): ${(err as Error).message}`, {
        hint: "the restoring user needs CREATEDB (dbkeep restores beside the target and swaps it in)",
        cause: err,
      });
    });
    staging = name;
    await c.query(`COMMENT ON DATABASE ${ident(staging)} IS ${lit(stagingComment(id, target))}`);
    ropts.log.debug({ staging }, "restoring into staging database");
    await pauseForTest("restore:staging-created", ropts.signal);
    await runRestoreTool(input, ropts, staging, x);
    await pauseForTest("restore:before-swap", ropts.signal);
    await swapIn(c, { staging, target, id, signal: ropts.signal, log: ropts.log });
    staging = undefined;
  } catch (err) {
    if (staging) {
      await c.query(`DROP DATABASE IF EXISTS ${ident(staging)} WITH (FORCE)`).catch((e: unknown) =>
        ropts.log.warn({ staging, err: (e as Error).message }, "could not drop the staging database; the next restore or dbkeep doctor drops it"),
      );
    }
    if (ropts.signal.aborted && !(err instanceof DbkeepError && err.code === "ABORTED")) {
      throw new DbkeepError("ABORTED", `restore into ${target} was cancelled; the database was not changed`, { cause: err });
    }
    throw err;
  } finally {
    if (id) await unlock(c, id).catch(() => undefined);
    await c.end().catch(() => undefined);
  }
}

/** Runs psql or pg_restore into `staging`. A temp copy that pg_restore -j needs is removed as soon as it is done. */
async function runRestoreTool(input: Readable, ropts: RestoreOptions, staging: string, x: RestoreContext): Promise<void> {
  const jobs = ropts.jobs ?? x.jobs ?? 1;
  const run = { env: x.toolEnv(staging), signal: ropts.signal, timeoutMs: x.timeoutMs, context: `${x.where}, staging ${staging}`, explain: x.explain };
  if (ropts.format === "plain") {
    const psql = await pgTool("psql", x.binDir);
    const args = ["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", staging];
    const t = spawnTool(psql, args, { ...run, stdio: ["pipe", "ignore", "pipe"] });
    await feed(input, t.child.stdin, t.done, ropts.signal);
    return;
  }
  const pgRestore = await pgTool("pg_restore", x.binDir);
  const base = ["--no-password", "--exit-on-error", "-d", staging];
  if (ropts.format === "custom" && jobs <= 1) {
    const t = spawnTool(pgRestore, [...base, "--single-transaction"], { ...run, stdio: ["pipe", "ignore", "pipe"] });
    await feed(input, t.child.stdin, t.done, ropts.signal);
    return;
  }
  // pg_restore -j needs a seekable file or a directory: materialise it first (verified by the clean end).
  const scratch = await makeScratchDir();
  try {
    let source: string;
    if (ropts.format === "custom") {
      source = join(scratch, "dump");
      await pipeline(input, createWriteStream(source, { mode: 0o600 }), { signal: ropts.signal });
    } else {
      source = join(scratch, "dir");
      const tar = await resolveTool("tar");
      await mkdir(source, { recursive: true, mode: 0o700 });
      const t = spawnTool(tar, ["-C", source, "-xf", "-"], { signal: ropts.signal, stdio: ["pipe", "ignore", "pipe"], errorCode: "CORRUPT_BACKUP" });
      // tar stops reading at the end-of-archive blocks; the padding after them must still pass the checksum.
      await feedWhileReading(input, t);
      await t.done;
    }
    await pauseForTest("restore:scratch-ready", ropts.signal);
    const args = [...base, `--jobs=${jobs}`, ...(ropts.format === "directory" ? ["--format=directory"] : []), source];
    await spawnTool(pgRestore, args, { ...run, stdio: ["ignore", "ignore", "pipe"] }).done;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** What a tool's stdin reports when the tool went away: a symptom, never the cause. */
const PIPE_SYMPTOMS = new Set(["EPIPE", "ERR_STREAM_PREMATURE_CLOSE", "ERR_STREAM_DESTROYED", "ECONNRESET"]);

/**
 * Writes `input` into a tool's stdin and waits for the tool; an input error kills the tool (nothing is kept).
 * The input's own error (checksum mismatch, corrupt frame, cancel) explains more than the tool's reaction to it,
 * and the tool's error explains more than the EPIPE we got when it stopped reading. pipeline() destroys `input`
 * with that EPIPE too, so an EPIPE on the input is the tool's doing, not the input's.
 */
async function feed(input: Readable, stdin: NodeJS.WritableStream | null, exited: Promise<unknown>, signal: AbortSignal): Promise<void> {
  if (!stdin) throw new DbkeepError("INTERNAL", "tool has no stdin");
  (stdin as NodeJS.WritableStream & { on(e: "error", f: () => void): void }).on("error", () => undefined);
  const fed = pipeline(input, stdin);
  const [feeding, tool] = await Promise.allSettled([fed, exited]);
  const own = input.errored && !PIPE_SYMPTOMS.has((input.errored as NodeJS.ErrnoException).code ?? "") ? input.errored : undefined;
  if (own) throw own;
  if (signal.aborted) throw new DbkeepError("ABORTED", "the restore tool was stopped");
  if (tool.status === "rejected") throw tool.reason;
  if (feeding.status === "rejected") throw feeding.reason;
}

/**
 * Leftovers of killed restores, removed before a new restore starts: staging and replaced databases whose restore
 * is gone (swap.ts), and temp directories of dead processes on this host. Live restores' are left alone. A failure
 * here is a warning: it must not stop the restore. Returns the targets put back from an earlier dbkeep's half-done
 * swap.
 */
export async function sweepBeforeRestore(x: RestoreContext, log: Logger): Promise<string[]> {
  const dirs = await sweepScratchDirs().catch(() => ({ removed: [], unowned: [] }));
  for (const d of dirs.removed) log.warn({ dir: d }, `removed ${d}, the temp directory of a restore that was killed`);
  try {
    const c = await x.open(await x.maintenanceDb());
    try {
      return (await sweepLeftovers(c, log)).putBack;
    } finally {
      await c.end().catch(() => undefined);
    }
  } catch (err) {
    log.warn({ err: (err as Error).message }, "could not look for leftovers of killed restores");
    return [];
  }
}

/** `dbkeep doctor`: the same sweep, reported as findings (what was cleaned up, what is running, what is left). */
export async function restoreLeftoverFindings(x: RestoreContext): Promise<DoctorFinding[]> {
  const out: DoctorFinding[] = [];
  const dirs = await sweepScratchDirs();
  for (const d of dirs.removed) out.push({ level: "warn", message: `removed ${d}, the temp directory of a restore that was killed` });
  for (const d of dirs.unowned) {
    out.push({
      level: "warn",
      message: `${d.path} (${d.bytes} bytes) is a temp directory of a restore by an earlier dbkeep, or of a partial restore still running`,
      hint: `remove it once no restore runs on this machine: rm -r ${d.path}`,
    });
  }
  const c = await x.open(await x.maintenanceDb());
  try {
    const r = await sweepLeftovers(c);
    out.push(...r.findings);
    if (!r.findings.some((f) => f.level !== "ok")) out.push({ level: "ok", message: "no leftovers of killed restores on the server" });
  } finally {
    await c.end().catch(() => undefined);
  }
  return out;
}
