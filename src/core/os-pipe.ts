import { closeSync, constants, openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveTool, runTool } from "./subprocess.js";

/** Both ends of a kernel pipe, as descriptors to hand to child processes. Each close is idempotent. */
export interface OsPipe {
  readonly read: number;
  readonly write: number;
  closeRead(): void;
  closeWrite(): void;
}

/**
 * A kernel pipe for connecting two child processes (a dump tool and a compressor) directly.
 *
 * Node creates the stdio pipes of child processes as Unix socket pairs, and a tool that writes its whole dump into
 * a socket spends more CPU than one writing into a pipe: measured with pg_dump into `zstd -T0` over 822 MiB,
 * pg_dump's system time went from about 1.1 to 0.9 s and zstd's from 0.6 to 0.5 s (docs/benchmarks.md). Node has
 * no pipe(2), so this makes a FIFO in a private temporary directory, opens both ends and removes it at once; only
 * the two descriptors remain (opened close-on-exec, so no other child inherits them).
 *
 * Resolves to undefined where no FIFO can be made (no mkfifo); the caller then uses a pipe through node.
 */
export async function openPipe(): Promise<OsPipe | undefined> {
  let dir: string | undefined;
  try {
    const mkfifo = await resolveTool("mkfifo");
    dir = await mkdtemp(join(tmpdir(), "dbkeep-pipe-"));
    const path = join(dir, "pipe");
    await runTool(mkfifo, ["-m", "600", path]);
    // Opening one end of a FIFO waits for the other; a descriptor open for both (Linux) lets each end open at once.
    const hold = openSync(path, constants.O_RDWR);
    let read: number | undefined;
    let write: number;
    try {
      read = openSync(path, constants.O_RDONLY);
      write = openSync(path, constants.O_WRONLY);
    } catch (err) {
      if (read !== undefined) closeSync(read);
      throw err;
    } finally {
      closeSync(hold);
    }
    let readOpen = true;
    let writeOpen = true;
    return {
      read,
      write,
      closeRead() {
        if (readOpen) closeSync(read);
        readOpen = false;
      },
      closeWrite() {
        if (writeOpen) closeSync(write);
        writeOpen = false;
      },
    };
  } catch {
    return undefined;
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}
