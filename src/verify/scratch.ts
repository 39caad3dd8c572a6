import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { hostTag, pidAlive } from "../core/owner.js";
import { join } from "node:path";

/**
 * Scratch targets are recognised by name alone, so that a run killed with SIGKILL (which runs no cleanup) is
 * cleaned up by the next one: `dbkeep_verify_<job>_<host>_<pid>_<random>`. The host tag (4 hex digits of the
 * host name) keeps a run from judging the process ids of another machine that shares the server; a leftover is
 * dropped only when it was made on this host by a process that no longer exists.
 *
 * At most 40 characters, so that the engines' staging names (`<name>_dbkeep_restore_<8 hex>`) are not cut.
 */
export const SCRATCH_PREFIX = "dbkeep_verify_";
const SCRATCH_RE = /^dbkeep_verify_([a-z0-9]*)_([0-9a-f]{4})_(\d+)_([0-9a-f]{4})(?:_dbkeep_restore_[0-9a-f]{8}|_dbkeep_old_[0-9a-f]{8})?$/;

export { hostTag, pidAlive };

export function scratchName(job: string | undefined): string {
  const j = (job ?? "").toLowerCase().replace(/[^a-z0-9]/g, "").slice(0, 8);
  return `${SCRATCH_PREFIX}${j}_${hostTag()}_${process.pid}_${randomBytes(2).toString("hex")}`;
}

/** Whether a database name is a scratch target (or its restore staging) whose run is gone. */
export function isDeadScratch(name: string): boolean {
  const m = SCRATCH_RE.exec(name);
  if (!m) return false;
  return m[2] === hostTag() && !pidAlive(Number(m[3]));
}

/**
 * What marks a target left in place with --keep, so that later runs never take it for a leftover: the comment of
 * a scratch database, a file of this name in a scratch directory. The user drops those by hand.
 */
export const KEPT_MARK = "dbkeep verify --keep";
const KEPT_FILE = "KEPT";

export async function markDirKept(dir: string): Promise<void> {
  await writeFile(join(dir, KEPT_FILE), `${KEPT_MARK}\n`);
}


/** A private temp directory of a scratch target: `dbkeep-verify-<kind>-<pid>-<random>` in the temp dir. */
export function scratchDirName(kind: string): string {
  return `dbkeep-verify-${kind}-${process.pid}-${randomBytes(4).toString("hex")}`;
}

/**
 * Removes the scratch directories of `kind` whose process is dead. `before` runs first for each one, e.g. to stop
 * a server that still runs from it. Returns what was removed.
 */
export async function removeDeadScratchDirs(kind: string, before?: (dir: string) => Promise<void>): Promise<string[]> {
  const re = new RegExp(`^dbkeep-verify-${kind}-(\\d+)-[0-9a-f]{8}$`);
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return removed;
  }
  for (const n of names) {
    const m = re.exec(n);
    if (!m || pidAlive(Number(m[1]))) continue;
    const dir = join(tmpdir(), n);
    if (existsSync(join(dir, KEPT_FILE))) continue;
    if (before) await before(dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

/**
 * Stops a server process that a killed run left behind, given its pid file. The process is killed only when its
 * command line names `expect` (a recycled pid may belong to something else by now).
 */
export async function killLeftoverServer(pidFile: string, expect: RegExp): Promise<void> {
  const text = await readFile(pidFile, "utf8").catch(() => "");
  const pid = Number.parseInt(text.split("\n")[0] ?? "", 10);
  if (!pidAlive(pid)) return;
  const cmd = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).replace(/\0/g, " ");
  if (!expect.test(cmd)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  for (let i = 0; i < 50 && pidAlive(pid) && !(await zombie(pid)); i++) await new Promise((r) => setTimeout(r, 100));
}

/** A killed process its parent has not reaped yet: gone for every purpose here. */
async function zombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return / Z /.test(stat.slice(stat.lastIndexOf(")")));
}
