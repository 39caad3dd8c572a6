import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { DbkeepError, isDbkeepError } from "../../core/errors.js";
import { privateDir } from "../../core/private-dir.js";
import { redact } from "../../core/redact.js";
import { minimalEnv, resolveTool, spawnTool } from "../../core/subprocess.js";
import { resolveEnvMap } from "../child-env.js";
import type { PutOptions, Store, StoreObject } from "../store.js";
import { capture, collectStderr, feedStdin, stdoutStream, stopTool, type Captured } from "../tool-io.js";
import type { RcloneStoreOptions } from "./plugin.js";

export type { RcloneStoreOptions } from "./plugin.js";

export interface RcloneStoreContext {
  name: string;
  /** Dotted config path for messages ("stores.offsite"). */
  configPath?: string;
  warn?: (message: string) => void;
}

/** Marks the temporary name a put uploads to: `<dir>/.<name>.dbkeep-partial-<random>`. */
const PARTIAL_MARK = ".dbkeep-partial-";

/** rclone's exit codes 3 and 4: directory / file not found. */
const NOT_FOUND_CODES = new Set([3, 4]);

interface LsEntry {
  Path: string;
  Size: number;
  ModTime: string;
  IsDir?: boolean;
}

/**
 * Any of rclone's 70-odd backends. put() streams the body into `rclone rcat` under a temporary name beside the
 * final one and renames it into place with `rclone moveto` once rclone reported the whole upload, so an interrupted
 * put never leaves a complete-looking object under the final key; what it leaves under the temporary name is
 * listed as `partial` (and removed right away when possible). On backends without a server-side move (some object
 * stores), moveto copies: the time of one more transfer. With ifAbsent, moveto skips an existing key
 * (--ignore-existing), which rclone checks just before it moves: not atomic, so no atomicCreate.
 */
export function createRcloneStore(opts: RcloneStoreOptions, ctx: RcloneStoreContext): Store {
  const name = ctx.name;
  const path = ctx.configPath ?? `stores.${name}`;
  const childEnv: Record<string, string> = resolveEnvMap(opts.env, `${path}.env`, ctx.warn);
  if (opts.config_file !== undefined) childEnv.RCLONE_CONFIG = opts.config_file;
  const remoteName = /^(:?[^:,/]+)/.exec(opts.remote)?.[1] ?? opts.remote;
  let bin: string | undefined;

  async function tool(): Promise<string> {
    return (bin ??= await resolveTool(opts.bin ?? "rclone"));
  }

  function env(): NodeJS.ProcessEnv {
    return minimalEnv(childEnv);
  }

  /** `remote:path` + key, without turning `name:` + key into an absolute path. */
  function target(key: string): string {
    if (key === "") return opts.remote;
    return /[:/]$/.test(opts.remote) ? opts.remote + key : `${opts.remote}/${key}`;
  }

  function lastLine(stderr: string): string {
    const lines = stderr
      .split(/\r?\n/)
      .map((l) => l.replace(/^\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d\s+/, "").trim())
      .filter((l) => l !== "");
    return redact(lines.at(-1) ?? "");
  }

  function failure(action: string, key: string, r: Pick<Captured, "code" | "signal" | "stderr">): DbkeepError {
    const err = r.stderr;
    const line = lastLine(err);
    const how = r.code === null ? `was killed by ${r.signal}` : `failed (exit code ${r.code})`;
    let hint: string | undefined;
    if (/didn't find section in config file|not found in config file|Failed to create file system|couldn't find type/.test(err) && !/directory not found/.test(err)) {
      const env = remoteName.replace(/^:/, "").toUpperCase().replace(/[^A-Z0-9]/g, "_");
      hint = opts.config_file
        ? `define remote "${remoteName}" in ${opts.config_file} (rclone config --config ${opts.config_file}), or in env: as RCLONE_CONFIG_${env}_TYPE etc.`
        : `define remote "${remoteName}" with \`rclone config\`, give config_file, or set RCLONE_CONFIG_${env}_TYPE etc. in the store's env:`;
    } else if (/permission denied|access denied|403|401|unauthori[sz]ed|invalid.*(key|credential)|SignatureDoesNotMatch|unable to authenticate/i.test(err)) {
      hint = "check the remote's credentials (env: or config_file) and that they may write to this path";
    }
    // rclone's exit code 5 is its "temporary error"; network failures are worth another attempt too.
    const retryable = r.code === 5 || /timeout|connection (refused|reset)|temporar|unavailable|EOF|broken pipe|\b5\d\d\b/i.test(err);
    return new DbkeepError("STORE_FAILED", `[store:${name}] rclone ${action} ${key} ${how}${line ? `: ${line}` : ""}`, { retryable, ...(hint ? { hint } : {}) });
  }

  async function run(args: string[], signal?: AbortSignal): Promise<Captured> {
    return capture(await tool(), [...args, ...opts.flags], { env: env(), context: name, ...(signal ? { signal } : {}) });
  }

  function checkKey(key: string): void {
    if (key === "" || key.endsWith("/") || key.startsWith("/") || /[\r\n]/.test(key) || key.split("/").some((p) => p === "." || p === "..")) {
      throw new DbkeepError("STORE_FAILED", `[store:${name}] invalid key ${JSON.stringify(key)}`);
    }
  }

  async function statKey(key: string): Promise<StoreObject | undefined> {
    const r = await run(["lsjson", "--stat", "--no-mimetype", target(key)]);
    if (r.code !== 0) {
      if (r.code !== null && NOT_FOUND_CODES.has(r.code)) return undefined;
      throw failure("lsjson --stat", key, r);
    }
    const e = JSON.parse(r.stdout) as LsEntry;
    return e.IsDir ? undefined : { key, size: e.Size, modified: new Date(e.ModTime) };
  }

  async function removeQuietly(key: string): Promise<void> {
    await run(["deletefile", "--retries", "1", target(key)]).catch(() => undefined);
  }

  return {
    name,
    atomicCreate: false,

    async put(key: string, body: Readable, putOpts: PutOptions = {}) {
      checkKey(key);
      body.on("error", () => undefined);
      const dir = posix.dirname(key);
      const tmp = `${dir === "." ? "" : `${dir}/`}.${posix.basename(key)}${PARTIAL_MARK}${randomBytes(6).toString("hex")}`;
      const proc = spawnTool(await tool(), ["rcat", target(tmp), ...opts.flags], { env: env(), errorCode: "STORE_FAILED", context: name });
      const stderr = collectStderr(proc.child);
      let fed: { bytes: number; complete: boolean };
      try {
        fed = await feedStdin(body, proc.child, putOpts.signal);
      } catch (err) {
        // Killed before stdin closed: rclone never sees the end of the stream, so it cannot finish the upload.
        await stopTool(proc, "SIGKILL");
        await removeQuietly(tmp);
        if ((err as Error).name === "AbortError" || putOpts.signal?.aborted) throw new DbkeepError("ABORTED", `[store:${name}] upload of ${key} was cancelled`, { cause: err });
        throw err;
      }
      const onAbort = () => void stopTool(proc, "SIGKILL");
      putOpts.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        // rclone compares the uploaded object's size (and hash where both sides have one) with what it read, and
        // fails with "corrupted on transfer" when they differ.
        await proc.done;
      } catch (err) {
        await removeQuietly(tmp);
        if (isDbkeepError(err, "TOOL_NOT_FOUND")) throw err;
        if (putOpts.signal?.aborted) throw new DbkeepError("ABORTED", `[store:${name}] upload of ${key} was cancelled`, { cause: err });
        throw failure("rcat", key, { code: proc.child.exitCode, signal: proc.child.signalCode, stderr: stderr() });
      } finally {
        putOpts.signal?.removeEventListener("abort", onAbort);
      }
      try {
        if (!fed.complete) throw failure("rcat", key, { code: proc.child.exitCode, signal: null, stderr: `${stderr()}\nrclone stopped reading after ${fed.bytes} bytes` });
        if (putOpts.signal?.aborted) throw new DbkeepError("ABORTED", `[store:${name}] upload of ${key} was cancelled`);
        // --ignore-times: a previous object of the same size and (coarse) modification time is still replaced.
        // With ifAbsent, --ignore-existing instead: rclone looks at the key just before it moves, and skips the move
        // (leaving the temporary object) if something is there. Not atomic: a move by another writer between its
        // look and its move still replaces.
        const moved = await run(["moveto", putOpts.ifAbsent ? "--ignore-existing" : "--ignore-times", "--retries", "1", target(tmp), target(key)]);
        if (moved.code !== 0) {
          // A writer that moved its object to the key between rclone's look and its move wins; a backend that cannot
          // rename onto an existing file (SFTP) then fails the move: the key is taken, as with the skip below.
          if (putOpts.ifAbsent && (await statKey(key))) throw new DbkeepError("ALREADY_EXISTS", `[store:${name}] ${key} already exists`);
          throw failure("moveto", key, moved);
        }
        if (putOpts.ifAbsent && (await statKey(tmp))) throw new DbkeepError("ALREADY_EXISTS", `[store:${name}] ${key} already exists`);
      } catch (err) {
        await removeQuietly(tmp);
        throw err;
      }
      return { bytes: fed.bytes };
    },

    async get(key: string, getOpts: { signal?: AbortSignal } = {}) {
      checkKey(key);
      if (!(await statKey(key))) throw new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`);
      const proc = spawnTool(await tool(), ["cat", target(key), ...opts.flags], {
        env: env(),
        errorCode: "STORE_FAILED",
        context: name,
        ...(getOpts.signal ? { signal: getOpts.signal } : {}),
      });
      proc.child.stdin?.end();
      const stderr = collectStderr(proc.child);
      return stdoutStream(proc, (err) => {
        if (isDbkeepError(err, "ABORTED") || isDbkeepError(err, "TOOL_NOT_FOUND")) return err;
        const r = { code: proc.child.exitCode, signal: proc.child.signalCode, stderr: stderr() };
        if (r.code !== null && NOT_FOUND_CODES.has(r.code)) return new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`);
        return failure("cat", key, r);
      });
    },

    async stat(key: string) {
      checkKey(key);
      return statKey(key);
    },

    async *list(prefix: string): AsyncIterable<StoreObject> {
      // List only the deepest directory the prefix names, then filter by the full prefix.
      const slash = prefix.lastIndexOf("/");
      const base = slash >= 0 ? prefix.slice(0, slash + 1) : "";
      const proc = spawnTool(await tool(), ["lsjson", "-R", "--files-only", "--no-mimetype", target(base), ...opts.flags], { env: env(), errorCode: "STORE_FAILED", context: name });
      proc.child.stdin?.end();
      const stderr = collectStderr(proc.child);
      // lsjson prints one object per line: parse as it comes, for listings of any size.
      const lines = createInterface({ input: proc.child.stdout!, crlfDelay: Infinity });
      let read = false;
      try {
        for await (const raw of lines) {
          const line = raw.trim().replace(/,$/, "");
          if (!line.startsWith("{")) continue;
          const e = JSON.parse(line) as LsEntry;
          if (e.IsDir) continue;
          const rel = base + e.Path;
          const file = posix.basename(rel);
          const at = file.indexOf(PARTIAL_MARK);
          const partial = file.startsWith(".") && at > 0;
          const d = posix.dirname(rel);
          const logical = partial ? `${d === "." ? "" : `${d}/`}${file.slice(1, at)}` : rel;
          if (!logical.startsWith(prefix)) continue;
          yield { key: rel, size: e.Size, modified: new Date(e.ModTime), ...(partial ? { partial: true } : {}) };
        }
        read = true;
      } finally {
        // The caller stopped early: rclone need not list the rest.
        if (!read && proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill("SIGTERM");
      }
      try {
        await proc.done;
      } catch (err) {
        if (isDbkeepError(err, "TOOL_NOT_FOUND")) throw err;
        const code = proc.child.exitCode;
        // A prefix whose directory does not exist (yet) holds nothing.
        if (code !== null && NOT_FOUND_CODES.has(code)) return;
        throw failure("lsjson", prefix, { code, signal: proc.child.signalCode, stderr: stderr() });
      }
    },

    async delete(keys: string[]) {
      if (keys.length === 0) return;
      for (const k of keys) checkKey(k);
      // One rclone run for all keys: --files-from-raw looks each one up (missing ones are no error).
      const dir = await privateDir("dbkeep-rclone-");
      try {
        const list = join(dir.dir, "keys");
        await writeFile(list, keys.join("\n") + "\n", { mode: 0o600 });
        const r = await run(["delete", "--files-from-raw", list, "--retries", "1", opts.remote]);
        if (r.code !== 0 && !(r.code !== null && NOT_FOUND_CODES.has(r.code))) throw failure("delete", keys.length === 1 ? keys[0]! : `${keys.length} keys`, r);
      } finally {
        await dir.close();
      }
    },

    async close() {},
  };
}

export default createRcloneStore;
