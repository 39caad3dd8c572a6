import { readdirSync, realpathSync } from "node:fs";
import { basename, join } from "node:path";
import { resolveTool } from "../../core/subprocess.js";

const PG_LIB = "/usr/lib/postgresql";
const found = new Map<string, Promise<string>>();

/**
 * A PostgreSQL client binary. With bin_dir (or pg_version) it comes from there. Otherwise from PATH, except that
 * Debian's pg_wrapper (what /usr/bin/pg_dump and friends link to) is skipped for the newest versioned binary it
 * would run for a server given by host and port: the same program without a Perl start on every call.
 */
export function pgTool(name: string, binDir?: string): Promise<string> {
  const key = `${binDir ?? ""}\0${name}`;
  let p = found.get(key);
  if (!p) {
    p = locate(name, binDir);
    p.catch(() => found.delete(key));
    found.set(key, p);
  }
  return p;
}

async function locate(name: string, binDir?: string): Promise<string> {
  const path = await resolveTool(name, binDir);
  if (binDir) return path;
  // Synchronous for the reason resolveTool is: these are a few system calls on the way to starting pg_dump.
  const real = attempt(() => realpathSync(path)) ?? path;
  if (basename(real) !== "pg_wrapper") return path;
  const versions = (attempt(() => readdirSync(PG_LIB)) ?? [])
    .filter((v) => /^\d+(\.\d+)?$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const direct = await resolveTool(name, join(PG_LIB, v, "bin")).catch(() => undefined);
    if (direct) return direct;
  }
  return path;
}

function attempt<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}
