import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Private temp directories of a restore: the archive a parallel (`-j`) restore reads, a dumpall script. They hold a
 * whole uncompressed copy of a backup, so one left by a killed run must not stay. The directory's name says whose
 * it is, set atomically by mkdtemp: `dbkeep-pgrestore-<host>-<pid>-<start>-<random>`, where host is 4 hex digits of
 * the host name and start is the process's start time (clock ticks since boot, from /proc; 0 where there is no
 * /proc), which tells a recycled pid from the process that made the directory. The next restore (or doctor) on
 * the same host removes those whose process is gone; directories of other hosts (a shared $TMPDIR) and of live
 * processes are never touched.
 */
const PREFIX = "dbkeep-pgrestore-";
const OWNED = /^dbkeep-pgrestore-([0-9a-f]{4})-(\d+)-(\d+)-[A-Za-z0-9]{6}$/;
/** Names made by dbkeep before the owner was recorded: `dbkeep-pgrestore-XXXXXX`, `dbkeep-pgdumpall-XXXXXX`. */
const UNOWNED = /^dbkeep-(pgrestore|pgdumpall)-[A-Za-z0-9]{6}$/;

export function hostTag(): string {
  return createHash("sha256").update(hostname()).digest("hex").slice(0, 4);
}

/** A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or undefined. */
export function processStart(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // Fields after the command name start at field 3 (state); starttime is field 22.
    const v = Number(fields[22 - 3]);
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the process that recorded (pid, start) still runs: same pid and, where /proc tells, the same start. */
export function ownerAlive(pid: number, start: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (start === 0) return true;
  const now = processStart(pid);
  return now === undefined || now === start;
}

/** Makes a private (0700) temp directory owned by this process, in the sense of the names above. */
export async function makeScratchDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), `${PREFIX}${hostTag()}-${process.pid}-${processStart(process.pid) ?? 0}-`));
}

export interface ScratchSweep {
  /** Directories of dead processes of this host, removed. */
  removed: string[];
  /** Directories of dbkeep versions that did not record their owner: reported, never removed (see `UNOWNED`). */
  unowned: { path: string; bytes: number }[];
}

/** Removes the temp directories of restores whose process is gone (on this host). */
export async function sweepScratchDirs(): Promise<ScratchSweep> {
  const out: ScratchSweep = { removed: [], unowned: [] };
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return out;
  }
  const host = hostTag();
  for (const n of names) {
    const path = join(tmpdir(), n);
    const m = OWNED.exec(n);
    if (m) {
      if (m[1] !== host || ownerAlive(Number(m[2]), Number(m[3]))) continue;
      await rm(path, { recursive: true, force: true });
      out.removed.push(path);
    } else if (UNOWNED.test(n)) {
      out.unowned.push({ path, bytes: await du(path) });
    }
  }
  return out;
}

async function du(path: string): Promise<number> {
  let total = 0;
  try {
    for (const e of await readdir(path, { withFileTypes: true })) {
      const p = join(path, e.name);
      if (e.isDirectory()) total += await du(p);
      else total += (await stat(p).catch(() => ({ size: 0 }))).size;
    }
  } catch {
    // unreadable: counted as what could be read
  }
  return total;
}
