import { open } from "node:fs/promises";

/**
 * fsyncs a file or a directory. Writing beside, fsyncing the file, renaming and fsyncing the directory is how a
 * new file replaces an old one so that a crash leaves one or the other, never a half file under the final name.
 */
export async function fsyncPath(path: string, mode: "r" | "r+" = "r"): Promise<void> {
  const fh = await open(path, mode);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
