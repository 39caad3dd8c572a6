import { closeSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { hostname, homedir } from "node:os";
import { join } from "node:path";
import { DbkeepError } from "./errors.js";
import type { Logger } from "./log.js";

/** Where dbkeep keeps machine-local state (locks): $DBKEEP_STATE_DIR, else $XDG_STATE_HOME/dbkeep, else ~/.local/state/dbkeep. */
export function stateDir(): string {
  return process.env.DBKEEP_STATE_DIR ?? join(process.env.XDG_STATE_HOME ?? join(homedir(), ".local", "state"), "dbkeep");
}

interface Holder {
  pid: number;
  host: string;
  since: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A lock file per job, so that a job never runs twice at the same time on one machine. Created with O_EXCL; the
 * lock of a process that died is taken over, with a line that says so. Returns the release function.
 */
export function acquireJobLock(job: string, log: Logger, dir = join(stateDir(), "locks")): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${job.replace(/[^A-Za-z0-9._-]/g, "_")}.lock`);
  const me: Holder = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(file, "wx", 0o600);
      writeSync(fd, JSON.stringify(me) + "\n");
      closeSync(fd);
      return () => {
        try {
          const holder = JSON.parse(readFileSync(file, "utf8")) as Holder;
          if (holder.pid === me.pid) unlinkSync(file);
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw new DbkeepError("INTERNAL", `cannot create lock ${file}: ${(err as Error).message}`);
    }
    let holder: Holder | undefined;
    try {
      holder = JSON.parse(readFileSync(file, "utf8")) as Holder;
    } catch {
      holder = undefined; // half-written or unreadable: treat as stale
    }
    if (holder && holder.host === me.host && alive(holder.pid)) {
      throw new DbkeepError("LOCKED", `job ${job} is already running (pid ${holder.pid}, since ${holder.since})`, {
        hint: `wait for it to finish; its lock is ${file}`,
      });
    }
    log.warn({ job, lock: file, pid: holder?.pid }, `took over the stale lock of job ${job}${holder ? ` (pid ${holder.pid} is gone)` : ""}`);
    try {
      unlinkSync(file);
    } catch {
      // another process took it over first; the next O_EXCL attempt decides
    }
  }
  throw new DbkeepError("INTERNAL", `could not take the lock of job ${job}`);
}
