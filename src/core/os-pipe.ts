import { spawnSync } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { minimalEnv, resolveTool, spawnTool } from "./subprocess.js";

/** Both ends of a kernel pipe, as descriptors to hand to child processes. Each close is idempotent. */
export interface OsPipe {
  readonly read: number;
  readonly write: number;
  /** The pipe's buffer in bytes when it could be enlarged (PIPE_BYTES); undefined: the system's default (64 KiB). */
  readonly bytes?: number;
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
 * The pipe's buffer is then enlarged from 64 KiB to 1 MiB (PIPE_BYTES): the dump tool and the compressor wait for
 * each other less often (a 1 GB PostgreSQL backup with zstd took 1 to 3% less time with it, in a shell pipeline as
 * in dbkeep; docs/benchmarks.md).
 *
 * The rest is synchronous: it runs while the dump tool's connection is being made, and mkfifo takes a few
 * milliseconds where the same steps through the thread pool and an asynchronous child took longer than connecting.
 *
 * Resolves to undefined where no FIFO can be made (no mkfifo); the caller then uses a pipe through node.
 */
export async function openPipe(): Promise<OsPipe | undefined> {
  let dir: string | undefined;
  try {
    const mkfifo = await resolveTool("mkfifo");
    dir = mkdtempSync(join(tmpdir(), "dbkeep-pipe-"));
    const path = join(dir, "pipe");
    const made = spawnSync(mkfifo, ["-m", "600", path], { stdio: "ignore", env: minimalEnv(), timeout: 10_000 });
    if (made.status !== 0) return undefined;
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
    const bytes = await enlarge(read).catch(() => undefined);
    return {
      read,
      write,
      ...(bytes ? { bytes } : {}),
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
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}

/** The buffer asked for: Linux's default pipe-max-size, the most an unprivileged process may set. */
export const PIPE_BYTES = 1 << 20;

/**
 * Sets a pipe's buffer size (fcntl F_SETPIPE_SZ, Linux only). Node has no fcntl(), so a one-line Perl program does
 * it on the descriptor it inherits as stdin (perl-base is part of every Debian and Ubuntu system); the size belongs
 * to the pipe, not to the descriptor, so it stays when Perl exits. Resolves to the new size, or undefined where it
 * cannot be done (no perl, another system, a lower pipe-max-size): the pipe then keeps the default, which works
 * just as well, only a little slower.
 */
async function enlarge(fd: number): Promise<number | undefined> {
  if (process.platform !== "linux") return undefined;
  let perl: string;
  try {
    perl = await resolveTool("perl");
  } catch {
    return undefined;
  }
  // F_SETPIPE_SZ is 1031 on Linux; fcntl returns the size the kernel set (at least the size asked for). The size
  // is made a number ("0 +"): given a string, Perl would pass its address.
  const { child, done } = spawnTool(perl, ["-e", "my $r = fcntl(STDIN, 1031, 0 + $ARGV[0]); defined $r or exit 1; print $r + 0", String(PIPE_BYTES)], {
    stdio: [fd, "pipe", "pipe"],
    timeoutMs: 10_000,
  });
  let out = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (c: string) => (out += c));
  try {
    await done;
  } catch {
    return undefined;
  }
  const n = Number(out.trim());
  return Number.isInteger(n) && n >= PIPE_BYTES ? n : undefined;
}
