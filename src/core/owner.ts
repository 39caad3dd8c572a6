import { createHash } from "node:crypto";
import { hostname } from "node:os";

/**
 * Who made a temporary thing (a scratch database, a temp file, a pending marker), so that a later run can tell
 * whether that process is gone: a process of this host that no longer exists ran no cleanup (SIGKILL), and what it
 * left may go at once; anything of another host, or of a live process, stays.
 */

/** 4 hex digits of the host name: short enough for database names, enough to tell machines of one site apart. */
export function hostTag(): string {
  return createHash("sha256").update(hostname()).digest("hex").slice(0, 4);
}

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** `<hostTag>-<pid>`: the owner part of a temporary name. */
export function ownerTag(): string {
  return `${hostTag()}-${process.pid}`;
}

/** Whether an owner part (`<hostTag>-<pid>`, as ownerTag() writes it) names a process of this host that is gone. */
export function ownerGone(tag: string): boolean {
  const m = /^([0-9a-f]{4})-(\d+)$/.exec(tag);
  return Boolean(m && m[1] === hostTag() && !pidAlive(Number(m[2])));
}
