import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir } from "./tempdir.js";

export interface PrivateDir {
  dir: string;
  /** Removes the directory and everything in it. */
  close: () => Promise<void>;
}

/**
 * A private temp directory (mkdtemp: 0700) holding files of secrets (0600, created exclusively), for tools that
 * take credentials from a file instead of their argument list.
 */
export async function privateDir(prefix: string, files: Record<string, string> = {}): Promise<PrivateDir> {
  const dir = await makeTempDir(prefix.replace(/^dbkeep-/, "").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "private");
  const close = () => rm(dir, { recursive: true, force: true });
  try {
    for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content, { mode: 0o600, flag: "wx" });
  } catch (err) {
    await close();
    throw err;
  }
  return { dir, close };
}
