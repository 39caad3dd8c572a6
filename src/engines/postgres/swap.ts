import { randomInt } from "node:crypto";
import { hostname } from "node:os";
import type pg from "pg";
import { DbkeepError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { copyDatabaseProperties } from "./database-props.js";
import { pauseForTest } from "./test-hooks.js";

/**
 * How a full restore replaces a database, and how a killed one is finished or undone.
 *
 * The backup is restored into a staging database `<target>_dbkeep_restore_<id>` beside the target. The swap is
 * one transaction on the maintenance database: carry the target's privileges and settings over to the staging
 * database, rename the target to `<target>_dbkeep_old_<id>` and the staging database to the target, COMMIT.
 * PostgreSQL runs ALTER DATABASE ... RENAME inside a transaction block (only CREATE DATABASE, DROP DATABASE and
 * ALTER DATABASE ... SET TABLESPACE refuse one), so a kill anywhere before the COMMIT leaves the target exactly
 * as it was, and one after it leaves the restored database in place: there is no state in between to repair.
 * Only DROP DATABASE of the replaced database comes after the COMMIT, as it cannot run in a transaction.
 *
 * What a killed restore leaves is therefore a staging database (killed before its swap) or a replaced database
 * (killed after it). They are found by name, and each carries a comment naming the target. Whose they are is
 * an advisory lock: the restore takes pg_advisory_lock(DBKEEP_LOCK, <id>) on its own connection before it creates
 * the staging database and holds it until the replaced database is dropped. The server releases the lock when that
 * connection ends, however the process ended (a SIGKILL, a lost machine), so a leftover whose lock is free has no
 * living owner, on any host; a live concurrent restore's databases are never touched. The next restore and
 * `dbkeep doctor` drop such leftovers (a replaced database only while its target exists).
 *
 * Before this design a restore renamed outside a transaction and could leave the target renamed away or refusing
 * connections. Leftovers of that kind (no comment, no lock) are repaired the same way: the replaced database is
 * renamed back when the target is missing, and a target left refusing connections is opened again.
 */
const STAGING = "_dbkeep_restore_";
const OLD = "_dbkeep_old_";
const LEFTOVER = /^([\s\S]*)_dbkeep_(restore|old)_([0-9a-f]{7,8})$/;
const MARK = /^dbkeep restore ([0-9a-f]{8}) into ("(?:[^"\\]|\\.)*")/;
/** The first key of the advisory locks of restores: "dbkp". */
const DBKEEP_LOCK = 0x64626b70;
/** PostgreSQL's identifiers are at most 63 bytes; longer ones are cut, which would change a leftover's name. */
const NAME_BYTES = 63;

export function stagingName(target: string, id: string): string {
  return cut(target, NAME_BYTES - STAGING.length - id.length) + STAGING + id;
}
export function oldName(target: string, id: string): string {
  return cut(target, NAME_BYTES - OLD.length - id.length) + OLD + id;
}

/** The longest prefix of `s` that fits in `bytes` bytes of UTF-8 without splitting a character. */
function cut(s: string, bytes: number): string {
  let out = "";
  for (const ch of s) {
    if (Buffer.byteLength(out + ch) > bytes) break;
    out += ch;
  }
  return out;
}

function lockKey(id: string): number | undefined {
  if (!/^[0-9a-f]{8}$/.test(id)) return undefined;
  const n = Number.parseInt(id, 16);
  return n <= 0x7fffffff ? n : undefined;
}

/**
 * Takes the advisory lock of a new restore on `c` and returns its id. The lock lives as long as `c`; the caller
 * keeps `c` open for the whole restore and runs the swap on it.
 */
export async function claimRestore(c: pg.Client): Promise<string> {
  for (;;) {
    const id = randomInt(0, 0x7fffffff).toString(16).padStart(8, "0");
    if (await tryLock(c, id)) return id;
  }
}

/** Locks `id` on `c`; false when another session holds it, in this database or (seen in pg_locks) in another. */
async function tryLock(c: pg.Client, id: string): Promise<boolean> {
  const key = lockKey(id);
  if (key === undefined) return true;
  const r = await c.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1, $2) AS ok", [DBKEEP_LOCK, key]);
  if (!r.rows[0]?.ok) return false;
  const elsewhere = await c.query(
    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 2 AND pid <> pg_backend_pid()",
    [DBKEEP_LOCK, key],
  );
  if (elsewhere.rowCount) {
    await unlock(c, id);
    return false;
  }
  return true;
}

export async function unlock(c: pg.Client, id: string): Promise<void> {
  const key = lockKey(id);
  if (key !== undefined) await c.query("SELECT pg_advisory_unlock($1, $2)", [DBKEEP_LOCK, key]);
}

/** The comment that marks a staging database: which restore made it, for which target, from where. */
export function stagingComment(id: string, target: string): string {
  return `dbkeep restore ${id} into ${JSON.stringify(target)}: staging database (pid ${process.pid} on ${hostname()}, started ${new Date().toISOString()})`;
}
function oldComment(id: string, target: string): string {
  return `dbkeep restore ${id} into ${JSON.stringify(target)}: the database it replaced, to be dropped`;
}

export interface SwapOptions {
  staging: string;
  target: string;
  id: string;
  signal: AbortSignal;
  log: Logger;
}

/**
 * Swaps the staging database in for the target in one transaction on `c` (the connection holding the restore's
 * lock), then drops the replaced database. Cancelled (SIGTERM) before the COMMIT, it rolls back and throws
 * ABORTED with the target untouched; after the COMMIT the restore is complete and a cancel no longer undoes it.
 */
export async function swapIn(c: pg.Client, o: SwapOptions): Promise<void> {
  const { staging, target, id, log } = o;
  const old = oldName(target, id);
  let replaced: boolean | undefined;
  for (let attempt = 1; ; attempt++) {
    if (o.signal.aborted) throw cancelled(target);
    await c.query("BEGIN");
    try {
      // The staging database's own mark must not become the target's comment.
      await c.query(`COMMENT ON DATABASE ${ident(staging)} IS NULL`);
      replaced = ((await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [target])).rowCount ?? 0) > 0;
      if (replaced) {
        // Privileges, settings, connection limit and comment of the database itself are not in the dump.
        const props = await copyDatabaseProperties(c, target, staging, { inTransaction: true });
        if (props.copied.length) log.info({ database: target, copied: props.copied }, `kept the ${props.copied.join(", ")} of database ${target}`);
        for (const f of props.failed) log.warn({ database: target }, `could not carry over to the restored database: ${f}`);
        // The rename takes an exclusive lock on the target (new connections wait for the COMMIT) and fails if a
        // session is still connected, which is why they are ended first; one that slips in between is retried.
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [target]);
        await c.query(`ALTER DATABASE ${ident(target)} RENAME TO ${ident(old)}`);
        await c.query(`COMMENT ON DATABASE ${ident(old)} IS ${lit(oldComment(id, target))}`);
      }
      await c.query(`ALTER DATABASE ${ident(staging)} RENAME TO ${ident(target)}`);
      await pauseForTest("swap:before-commit", o.signal);
      if (o.signal.aborted) throw cancelled(target);
      await c.query("COMMIT");
      break;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => undefined);
      const busy = (err as { code?: string }).code === "55006";
      if (busy && attempt < 5 && !o.signal.aborted) {
        await new Promise((r) => setTimeout(r, 200 * attempt));
        continue;
      }
      if (busy) {
        throw new DbkeepError("ENGINE_FAILED", `could not replace database ${target}: ${(err as Error).message}`, {
          hint: "stop the applications that keep reconnecting to it and run the restore again",
          cause: err,
        });
      }
      throw err;
    }
  }
  log.debug({ database: target, replaced: replaced ? old : undefined }, "swapped the restored database in");
  if (!replaced) return;
  await pauseForTest("swap:after-commit", o.signal);
  await c.query(`DROP DATABASE IF EXISTS ${ident(old)} WITH (FORCE)`).catch((err: unknown) =>
    log.warn({ database: old, err: (err as Error).message }, "the replaced database could not be dropped; the next restore or dbkeep doctor drops it"),
  );
}

function cancelled(target: string): DbkeepError {
  return new DbkeepError("ABORTED", `restore into ${target} was cancelled before its swap; the database was not changed`);
}

/** One thing the sweep found or did, as `dbkeep doctor` reports it. */
export interface SweepFinding {
  level: "ok" | "warn" | "error";
  message: string;
  hint?: string;
}

export interface SweepResult {
  findings: SweepFinding[];
  /** Targets renamed back from a replaced database (a swap of an earlier dbkeep that was killed in between). */
  putBack: string[];
}

interface Leftover {
  name: string;
  role: "staging" | "old";
  id: string;
  /** The target's exact name, when known (from the comment, or from a name that was not cut). */
  target: string | undefined;
  marked: boolean;
  invalid: boolean;
}

/**
 * Finds the leftovers of restores on the server (see the top of this file) and finishes or undoes those whose
 * restore is gone: drops staging databases, drops replaced databases whose target exists, renames a replaced
 * database back when its target is missing after an earlier dbkeep's non-atomic swap. Live restores' databases
 * are reported and left alone. `c` is a connection to the maintenance database, outside any transaction.
 */
export async function sweepLeftovers(c: pg.Client, log?: Logger): Promise<SweepResult> {
  const out: SweepResult = { findings: [], putBack: [] };
  const all = await c.query<{ datname: string; allow: boolean; connlimit: number; comment: string | null }>(
    "SELECT datname, datallowconn AS allow, datconnlimit AS connlimit, shobj_description(oid, 'pg_database') AS comment FROM pg_database",
  );
  const byName = new Map(all.rows.map((r) => [r.datname, r]));
  const leftovers: Leftover[] = [];
  for (const r of all.rows) {
    const m = LEFTOVER.exec(r.datname);
    if (!m) continue;
    const mark = r.comment ? MARK.exec(r.comment) : null;
    let target: string | undefined;
    if (mark && mark[1] === m[3]) target = JSON.parse(mark[2]!) as string;
    // An earlier dbkeep named them `target.slice(0, 40)` + suffix: exact below 40 characters, a prefix at 40.
    else if (m[1]!.length < 40 && m[3]!.length === 8) target = m[1];
    leftovers.push({ name: r.datname, role: m[2] === "restore" ? "staging" : "old", id: m[3]!, target, marked: !!mark, invalid: r.connlimit === -2 });
  }
  const say = (f: SweepFinding) => {
    out.findings.push(f);
    if (f.level !== "ok") log?.warn(f.message);
  };
  const reopen = new Set<string>();
  for (const l of leftovers) {
    if (!(await tryLock(c, l.id))) {
      say({ level: "ok", message: `a restore into ${l.target ?? "?"} is running (its ${l.role === "staging" ? "staging" : "replaced"} database ${l.name})` });
      continue;
    }
    try {
      const of = l.target === undefined ? "" : ` into ${l.target}`;
      if (l.role === "staging" || l.invalid) {
        await c.query(`DROP DATABASE IF EXISTS ${ident(l.name)} WITH (FORCE)`);
        say({ level: "warn", message: `dropped ${l.name}, the ${l.role === "staging" ? "staging" : "half-dropped replaced"} database of a restore${of} that was killed` });
      } else if (l.target !== undefined && byName.has(l.target)) {
        await c.query(`DROP DATABASE IF EXISTS ${ident(l.name)} WITH (FORCE)`);
        say({ level: "warn", message: `dropped ${l.name}, the database that a killed restore had replaced with ${l.target} (its swap was complete)` });
      } else if (l.target !== undefined && !l.marked && (await putBack(c, l.name, l.target))) {
        out.putBack.push(l.target);
        byName.set(l.target, { datname: l.target, allow: true, connlimit: -1, comment: null });
        say({
          level: "warn",
          message: `database ${l.target} was missing: an earlier dbkeep's restore was killed between its two renames; renamed ${l.name} back to ${l.target}`,
          hint: "its content is what it was before that restore; run the restore again if it is still wanted",
        });
      } else {
        say({
          level: "error",
          message: `${l.name} holds the content that a killed restore replaced, and ${l.target ?? "its target"} does not exist`,
          hint: `rename it back (ALTER DATABASE ${ident(l.name)} RENAME TO ...) or drop it; dbkeep leaves it alone`,
        });
        continue;
      }
      // An earlier dbkeep closed the target to connections before its renames.
      if (!l.marked && l.target !== undefined && byName.get(l.target)?.allow === false) reopen.add(l.target);
    } catch (err) {
      say({ level: "warn", message: `could not clean up ${l.name}, left by a killed restore: ${(err as Error).message}`, hint: "drop it by hand (as its owner) once no restore runs" });
    } finally {
      await unlock(c, l.id).catch(() => undefined);
    }
  }
  for (const t of reopen) {
    try {
      await c.query(`ALTER DATABASE ${ident(t)} ALLOW_CONNECTIONS true`);
      say({ level: "warn", message: `database ${t} refused connections after an earlier dbkeep's restore was killed in its swap; it accepts them again` });
    } catch (err) {
      say({ level: "error", message: `database ${t} refuses connections (a killed restore left it so): ${(err as Error).message}`, hint: `ALTER DATABASE ${ident(t)} ALLOW_CONNECTIONS true` });
    }
  }
  return out;
}

/** Renames a replaced database back to its target, in one transaction, only if the target is still missing. */
async function putBack(c: pg.Client, old: string, target: string): Promise<boolean> {
  await c.query("BEGIN");
  try {
    if ((await c.query("SELECT 1 FROM pg_database WHERE datname = $1", [target])).rowCount) {
      await c.query("ROLLBACK");
      return false;
    }
    await c.query(`ALTER DATABASE ${ident(old)} RENAME TO ${ident(target)}`);
    await c.query(`ALTER DATABASE ${ident(target)} ALLOW_CONNECTIONS true`);
    await c.query("COMMIT");
    return true;
  } catch (err) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
export function lit(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
