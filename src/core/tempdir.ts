import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ownerGone, ownerTag } from "./owner.js";

/**
 * dbkeep's temporary directories: `<tmp>/dbkeep-<kind>-<hostTag>-<pid>-<random>`, private (mkdtemp: 0700). A process
 * killed with SIGKILL runs no cleanup; its name says whose it was, so the next run removes it (sweepTempDirs).
 */
export async function makeTempDir(kind: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `dbkeep-${kind}-${ownerTag()}-`));
}

const TEMP_RE = /^dbkeep-[a-z0-9-]+?-([0-9a-f]{4}-\d+)-[A-Za-z0-9]{6}$/;

/**
 * Removes the temporary directories of dbkeep processes of this host that are gone and that belong to this user.
 * Never fails: a directory that cannot be removed stays for the next run. Resolves to what was removed.
 */
export async function sweepTempDirs(): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return removed;
  }
  const uid = process.getuid?.();
  for (const n of names) {
    const m = TEMP_RE.exec(n);
    if (!m || !ownerGone(m[1]!)) continue;
    const dir = join(tmpdir(), n);
    try {
      const st = await stat(dir);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    } catch {
      // gone already, or not ours to remove
    }
  }
  return removed;
}
