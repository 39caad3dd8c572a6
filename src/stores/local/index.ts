import { randomBytes } from "node:crypto";
import { closeSync, createReadStream, createWriteStream, fstatSync, openSync, readdirSync, readSync, statSync, type Stats } from "node:fs";
import { link, lstat, mkdir, open, rename, stat, unlink, rmdir } from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setImmediate as nextTurn } from "node:timers/promises";
import { DbkeepError } from "../../core/errors.js";
import type { PutOptions, StagedFile, Store, StoreObject } from "../store.js";
import { fsyncPath } from "../../core/fsync.js";
import { ownerTag } from "../../core/owner.js";

import type { LocalStoreOptions } from "./schema.js";
export { localStoreSchema, type LocalStoreOptions } from "./schema.js";

const PARTIAL_MARK = ".dbkeep-partial-";
/** link(2) failures of file systems without hard links (vfat, exfat, some network shares). */
const NO_HARD_LINKS = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"]);

/**
 * A hidden temporary name beside `final`, which list() reports as an interrupted upload of it. It names its writer
 * (ownerTag), so that what a killed process left can be removed by the next run at once (core/reserve.ts).
 */
function partialPathOf(final: string): string {
  return join(dirname(final), `.${basename(final)}${PARTIAL_MARK}${ownerTag()}-${randomBytes(6).toString("hex")}`);
}

/**
 * A directory. put() writes to a hidden temporary file beside the final name, fsyncs it, renames it into place and
 * fsyncs the directory, so a crash never leaves a half file under the final name. Files are created 0600.
 * With ifAbsent the temporary file is published with link(2) instead of rename(2): the kernel refuses it (EEXIST)
 * when the name exists, so of two writers exactly one succeeds. A file system without hard links falls back to a
 * check just before the rename, and the store then no longer claims atomicCreate.
 */
export function createLocalStore(opts: Pick<LocalStoreOptions, "path">, name = `local:${opts.path}`): Store {
  const root = resolve(opts.path);

  function pathOf(key: string): string {
    const p = resolve(root, key);
    if (key === "" || (p !== root && !p.startsWith(root + sep))) {
      throw new DbkeepError("STORE_FAILED", `[store:${name}] invalid key "${key}"`);
    }
    return p;
  }

  function fail(action: string, key: string, err: unknown): DbkeepError {
    const e = err as NodeJS.ErrnoException;
    const hint =
      e.code === "EACCES" || e.code === "EPERM"
        ? `check that dbkeep may write to ${root}`
        : e.code === "ENOSPC"
          ? `the disk holding ${root} is full`
          : undefined;
    return new DbkeepError("STORE_FAILED", `[store:${name}] ${action} ${key} failed: ${e.message}`, { cause: err, hint });
  }

  let hardLinks = true;

  /** Publishes `tmp` as `final` only if nothing is there; `tmp` is gone afterwards unless this throws. */
  async function publishNew(tmp: string, final: string, key: string): Promise<void> {
    const exists = () => new DbkeepError("ALREADY_EXISTS", `[store:${name}] ${key} already exists`);
    if (hardLinks) {
      try {
        await link(tmp, final);
        await unlink(tmp);
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? "";
        if (code === "EEXIST") throw exists();
        if (!NO_HARD_LINKS.has(code)) throw err;
        hardLinks = false;
      }
    }
    const there = await lstat(final).then(
      () => true,
      (err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return false;
        throw err;
      },
    );
    if (there) throw exists();
    await rename(tmp, final);
  }

  return {
    name,

    get atomicCreate() {
      return hardLinks;
    },

    async put(key: string, body: Readable, putOpts: PutOptions = {}) {
      const final = pathOf(key);
      const dir = dirname(final);
      const tmp = partialPathOf(final);
      let bytes = 0;
      // The body may fail before it is piped anywhere; that failure is reported by pipeline() below, not thrown.
      body.on("error", () => undefined);
      try {
        await mkdirs(dir);
        if (body.errored) throw body.errored;
        const out = createWriteStream(tmp, { flags: "wx", mode: 0o600 });
        body.on("data", (c: Buffer) => (bytes += c.length));
        await pipeline(body, out, { signal: putOpts.signal });
        await fsyncPath(tmp, "r+");
        if (putOpts.ifAbsent) await publishNew(tmp, final, key);
        else await rename(tmp, final);
        await fsyncPath(dir);
        return { bytes };
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        if (err instanceof DbkeepError) throw err;
        if ((err as Error).name === "AbortError") throw new DbkeepError("ABORTED", `[store:${name}] upload of ${key} was cancelled`, { cause: err });
        // An error of the body (e.g. the dump failed) is not the store's fault: pass it through as it is.
        if (body.errored) throw body.errored;
        throw fail("write", key, err);
      }
    },

    async stage(key: string): Promise<StagedFile> {
      const final = pathOf(key);
      const dir = dirname(final);
      const tmp = partialPathOf(final);
      let handle;
      try {
        await mkdirs(dir);
        handle = await open(tmp, "wx", 0o600);
      } catch (err) {
        throw fail("write", key, err);
      }
      const fh = handle;
      let closed = false;
      const close = async () => {
        if (!closed) {
          closed = true;
          await fh.close();
        }
      };
      return {
        fd: fh.fd,
        path: tmp,
        async commit(commitOpts: { ifAbsent?: boolean } = {}) {
          try {
            await fh.sync();
            await close();
            if (commitOpts.ifAbsent) await publishNew(tmp, final, key);
            else await rename(tmp, final);
            await fsyncPath(dir);
          } catch (err) {
            await close().catch(() => undefined);
            await unlink(tmp).catch(() => undefined);
            if (err instanceof DbkeepError) throw err;
            throw fail("write", key, err);
          }
        },
        async abort() {
          await close().catch(() => undefined);
          await unlink(tmp).catch(() => undefined);
        },
      };
    },

    async get(key: string) {
      const p = pathOf(key);
      try {
        const st = await stat(p);
        if (!st.isFile()) throw Object.assign(new Error("not a file"), { code: "ENOENT" });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") {
          throw new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`);
        }
        throw fail("read", key, err);
      }
      return createReadStream(p);
    },

    async stat(key: string) {
      try {
        const st = await stat(pathOf(key));
        return st.isFile() ? { key, size: st.size, modified: st.mtime } : undefined;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw fail("stat", key, err);
      }
    },

    async getBytes(key: string, limit: number) {
      const p = pathOf(key);
      let fd: number | undefined;
      try {
        fd = openSync(p, "r");
        const st = fstatSync(fd);
        if (!st.isFile()) throw Object.assign(new Error("not a file"), { code: "ENOENT" });
        const tooLarge = () => new DbkeepError("CORRUPT_BACKUP", `object larger than ${limit} bytes where a small file was expected`);
        if (st.size > limit) throw tooLarge();
        // One byte more than the size says: a file that grew since the fstat is read to its new end, up to the limit.
        const buf = Buffer.allocUnsafe(Math.min(limit, st.size) + 1);
        let n = 0;
        for (let r; n < buf.length && (r = readSync(fd, buf, n, buf.length - n, n)) > 0; ) n += r;
        if (n > limit) throw tooLarge();
        return buf.subarray(0, n);
      } catch (err) {
        if (err instanceof DbkeepError) throw err;
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "EISDIR") throw new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`);
        throw fail("read", key, err);
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    },

    /**
     * Depth first. A directory is read whole with its entries' types, and its files are stat'ed with synchronous
     * calls, yielding to the event loop every WALK_BATCH files: a stat of a local file takes microseconds, and an
     * await per file (a thread-pool round trip each) made listing 10,000 backups take seconds, most of it idle.
     * Keys are made by concatenation (path.join and path.relative per file cost more than the stat). Files that
     * vanish between the readdir and the stat are skipped.
     */
    async *list(prefix: string): AsyncIterable<StoreObject> {
      // Walk only the deepest directory the prefix names, then filter by the full prefix.
      const slash = prefix.lastIndexOf("/");
      const start = slash >= 0 ? join(root, prefix.slice(0, slash)) : root;
      const todo = [{ dir: start, key: relative(root, start).split(sep).join("/") }];
      let n = 0;
      for (let next; (next = todo.pop()); ) {
        const { dir, key } = next;
        let entries;
        try {
          entries = readdirSync(dir, { withFileTypes: true });
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === "ENOENT" || code === "ENOTDIR") continue;
          throw fail("list", key || ".", err);
        }
        for (const entry of entries) {
          const base = entry.name;
          const rel = key ? `${key}/${base}` : base;
          if (entry.isDirectory()) {
            todo.push({ dir: dir + sep + base, key: rel });
            continue;
          }
          if (!entry.isFile()) continue;
          const partial = base.startsWith(".") && base.includes(PARTIAL_MARK);
          const logical = partial ? rel.slice(0, rel.length - base.length) + base.slice(1, base.indexOf(PARTIAL_MARK)) : rel;
          if (!logical.startsWith(prefix)) continue;
          if (++n % WALK_BATCH === 0) await nextTurn();
          let st: Stats | undefined;
          try {
            st = statSync(dir + sep + base, { throwIfNoEntry: false });
          } catch {
            continue; // unreadable now: as if gone
          }
          if (st?.isFile()) yield { key: rel, size: st.size, modified: st.mtime, etag: etagOf(st), ...(partial ? { partial: true } : {}) };
        }
      }
    },

    async delete(keys: string[]) {
      const dirs = new Set<string>();
      for (const key of keys) {
        const p = pathOf(key);
        try {
          await unlink(p);
          dirs.add(dirname(p));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw fail("delete", key, err);
        }
      }
      // Remove directories the deletes left empty, up to the root (rmdir fails on non-empty ones, which is fine).
      for (let dir of dirs) {
        while (dir !== root && dir.startsWith(root + sep)) {
          try {
            await rmdir(dir);
          } catch {
            break;
          }
          dir = dirname(dir);
        }
      }
    },

    async close() {},
  };
}

/**
 * mkdir -p, one level at a time: Node's own recursive mkdir can spin for ever on some file systems (e.g. under
 * /proc), where this fails at once with the level that cannot be created.
 */
async function mkdirs(dir: string): Promise<void> {
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return;
    if (code !== "ENOENT" || dirname(dir) === dir) throw err;
    await mkdirs(dirname(dir));
    await mkdir(dir, { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e;
    });
  }
}

/**
 * A file's change token: its inode and change time. Any write, truncation or rename into place changes one of them,
 * and neither can be set back by a user (touch sets the modification time only).
 */
function etagOf(st: Stats): string {
  return `${st.ino.toString(36)}-${st.ctimeMs}`;
}

/** Files stat'ed between two turns of the event loop (see list). */
const WALK_BATCH = 512;

export default createLocalStore;
