import { writeFile } from "node:fs/promises";
import { join, posix } from "node:path";
import { Readable } from "node:stream";
import { DbkeepError, isDbkeepError } from "../../core/errors.js";
import { privateDir } from "../../core/private-dir.js";
import { redact, type Secret } from "../../core/redact.js";
import { minimalEnv, resolveTool, spawnTool } from "../../core/subprocess.js";
import { resolveEnvMap } from "../child-env.js";
import type { PutOptions, Store, StoreObject, StoreSnapshot } from "../store.js";
import { capture, collectStderr, feedStdin, stdoutStream, stopTool, type Captured } from "../tool-io.js";
import type { ResticStoreOptions } from "./plugin.js";

export type { ResticStoreOptions } from "./plugin.js";

export interface ResticStoreContext {
  name: string;
  /** Dotted config path for messages ("stores.offsite"). */
  configPath?: string;
  repository?: string | undefined;
  password?: Secret | undefined;
  warn?: (message: string) => void;
}

/** The tag every snapshot dbkeep writes carries; list looks only at these. */
const DBKEEP_TAG = "dbkeep";
const KEY_TAG = "key=";

interface Snapshot {
  id: string;
  time: string;
  paths?: string[];
  tags?: string[];
  hostname?: string;
}

interface Entry {
  key: string;
  id: string;
  path: string;
  time: Date;
}

/**
 * restic's tags are split on commas and trimmed, so the key is stored percent-encoded where that would change it:
 * "%", ",", control characters and whitespace at either end. Everything else (spaces inside, "/", unicode) stays
 * readable in `restic snapshots`.
 */
export function encodeKeyTag(key: string): string {
  const chars = [...key];
  const out = chars.map((ch, i) => {
    const edge = i === 0 || i === chars.length - 1;
    // eslint-disable-next-line no-control-regex
    if (ch === "%" || ch === "," || /[\u0000-\u001f\u007f]/.test(ch) || (edge && /\s/u.test(ch))) return encodeURIComponent(ch);
    return ch;
  });
  return KEY_TAG + out.join("");
}

export function decodeKeyTag(tag: string): string | undefined {
  if (!tag.startsWith(KEY_TAG)) return undefined;
  try {
    return decodeURIComponent(tag.slice(KEY_TAG.length));
  } catch {
    return undefined;
  }
}

/** The file name inside the snapshot: the key's last part, so that `restic dump latest /<name>` reads naturally. */
function fileNameOf(key: string): string {
  const base = posix.basename(key);
  // eslint-disable-next-line no-control-regex
  return base === "" || base === "." || base === ".." || /[\u0000-\u001f]/.test(base) ? "data" : base;
}

/** The last line of `restic backup --json`. */
interface ResticSummary {
  message_type?: string;
  snapshot_id?: string;
  files_new?: number;
  files_changed?: number;
  files_unmodified?: number;
  data_added?: number;
  total_bytes_processed?: number;
  total_duration?: number;
}

function snapshotOf(s: ResticSummary & { snapshot_id: string }): StoreSnapshot {
  return {
    id: s.snapshot_id,
    dataAddedBytes: s.data_added ?? 0,
    totalBytesProcessed: s.total_bytes_processed ?? 0,
    totalDurationSeconds: s.total_duration ?? 0,
    filesNew: s.files_new ?? 0,
    filesChanged: s.files_changed ?? 0,
    filesUnmodified: s.files_unmodified ?? 0,
  };
}

const LOCKED = /repository is already locked|unable to create lock/;
const NO_REPO = /Is there a repository at the following location\?|unable to open config file/;
const WRONG_PASSWORD = /wrong password or no key found/;

/**
 * A restic repository. Each key is one snapshot made by `restic backup --stdin`, tagged `dbkeep` and `key=<key>`
 * and written under the configured --host: restic's content-defined chunking deduplicates repeated full dumps.
 * A snapshot exists only once restic read the whole body (it writes the snapshot last), so an interrupted put
 * leaves no object, only unreferenced data that `restic prune` removes. A key put again gets a new snapshot; the
 * older ones are forgotten once the new one is complete (and list shows only the newest either way). With ifAbsent
 * the key's snapshots are looked up before and after the backup, and the new snapshot forgotten if another one
 * appeared meanwhile: not atomic (restic has no conditional write), so no atomicCreate.
 */
export function createResticStore(opts: ResticStoreOptions, ctx: ResticStoreContext): Store {
  const name = ctx.name;
  const path = ctx.configPath ?? `stores.${name}`;
  const baseEnv: Record<string, string> = resolveEnvMap(opts.env, `${path}.env`, ctx.warn);
  if (ctx.repository !== undefined) baseEnv.RESTIC_REPOSITORY = ctx.repository;
  if (opts.password_file !== undefined) baseEnv.RESTIC_PASSWORD_FILE = opts.password_file;
  else if (ctx.password !== undefined) baseEnv.RESTIC_PASSWORD = ctx.password.reveal();
  const repoLabel = redact(baseEnv.RESTIC_REPOSITORY ?? "(from env)");
  const passwordHint =
    opts.password_env !== undefined
      ? `check password_env ${opts.password_env}`
      : opts.password_file !== undefined
        ? `check password_file ${opts.password_file}`
        : "check the repository password";

  /**
   * Short snapshot id -> file size. restic 0.14's snapshot JSON has no size; one `restic find` over the snapshots
   * not seen yet fills this, and a snapshot's size never changes.
   */
  const sizes = new Map<string, number>();
  const short = (id: string) => id.slice(0, 8);
  let bin: string | undefined;
  let initialised = false;

  async function tool(): Promise<string> {
    return (bin ??= await resolveTool(opts.bin ?? "restic"));
  }

  function env(): NodeJS.ProcessEnv {
    // No RESTIC_* variable of dbkeep's own environment leaks in: minimalEnv starts from nothing.
    return minimalEnv(baseEnv);
  }

  function lastLine(stderr: string): string {
    const lines = stderr
      .split(/\r?\n|\r/)
      // eslint-disable-next-line no-control-regex
      .map((l) => l.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").trim())
      .filter((l) => l !== "" && !/^(Ignoring filters|signal interrupt|the `unlock` command|lock was created|storage ID)/.test(l));
    return redact((lines.at(-1) ?? "").replace(/^Fatal: /, ""));
  }

  function failure(action: string, r: Pick<Captured, "code" | "signal" | "stderr">): DbkeepError {
    const err = r.stderr;
    if (WRONG_PASSWORD.test(err)) {
      return new DbkeepError("STORE_FAILED", `[store:${name}] wrong password for restic repository ${repoLabel}`, { hint: passwordHint });
    }
    if (NO_REPO.test(err)) {
      return new DbkeepError("STORE_FAILED", `[store:${name}] no restic repository at ${repoLabel}`, {
        hint: "set init: true on the store to create it on the first backup, or run `restic init`",
      });
    }
    const how = r.code === null ? `was killed by ${r.signal}` : `failed (exit code ${r.code})`;
    const line = lastLine(err);
    // Lock conflicts and backend hiccups are worth another attempt; a wrong option is not.
    const retryable = LOCKED.test(err) || /timeout|connection (refused|reset)|temporar|unavailable|5\d\d /i.test(err);
    return new DbkeepError("STORE_FAILED", `[store:${name}] restic ${action} ${how}${line ? `: ${line}` : ""}`, {
      retryable,
      ...(LOCKED.test(err) ? { hint: "another restic process holds the repository's lock; `restic unlock` removes stale locks" } : {}),
    });
  }

  /**
   * Runs a restic command; a lock held by a dead process (a killed dbkeep) is removed with `restic unlock`, and a
   * lock held by a live one is waited for a while (restic 0.14 has no --retry-lock).
   */
  async function run(action: string, args: string[], o: { signal?: AbortSignal; allowMissingRepo?: boolean } = {}): Promise<Captured> {
    const path = await tool();
    for (let attempt = 0; ; attempt++) {
      const r = await capture(path, args, { env: env(), ...(o.signal ? { signal: o.signal } : {}), context: name });
      if (r.code === 0) return r;
      if (LOCKED.test(r.stderr) && attempt < 20) {
        await capture(path, ["unlock"], { env: env() }).catch(() => undefined);
        await new Promise((res) => setTimeout(res, Math.min(250 * 2 ** attempt, 3000)));
        continue;
      }
      if (o.allowMissingRepo && NO_REPO.test(r.stderr) && !WRONG_PASSWORD.test(r.stderr)) return r;
      throw failure(action, r);
    }
  }

  async function ensureRepository(): Promise<void> {
    if (initialised) return;
    const probe = await run("cat config", ["cat", "config", "--no-lock"], { allowMissingRepo: true });
    if (probe.code !== 0) {
      if (!opts.init) throw failure("cat config", probe);
      const r = await capture(await tool(), ["init"], { env: env(), context: name });
      // Another process may have initialised it at the same time: fine if it is there now.
      if (r.code !== 0 && !/already (exists|initialized)|config file already exists/.test(r.stderr)) throw failure("init", r);
    }
    initialised = true;
  }

  /** Every dbkeep snapshot of this host, newest per key. Missing repository = empty. */
  async function snapshots(keyFilter?: string): Promise<{ latest: Map<string, Entry>; all: Map<string, Entry[]> }> {
    const tagFilter = keyFilter === undefined ? DBKEEP_TAG : `${DBKEEP_TAG},${encodeKeyTag(keyFilter)}`;
    const r = await run("snapshots", ["snapshots", "--json", "--no-lock", "--host", opts.host, "--tag", tagFilter], {
      allowMissingRepo: opts.init,
    });
    const latest = new Map<string, Entry>();
    const all = new Map<string, Entry[]>();
    if (r.code !== 0) return { latest, all };
    let parsed: Snapshot[];
    try {
      parsed = (JSON.parse(r.stdout || "[]") as Snapshot[] | null) ?? [];
    } catch (err) {
      throw new DbkeepError("STORE_FAILED", `[store:${name}] restic snapshots printed output that is not JSON`, { cause: err });
    }
    for (const s of parsed) {
      const key = (s.tags ?? []).map(decodeKeyTag).find((k) => k !== undefined);
      if (key === undefined) continue;
      // The file sits at the tree's root: "/<name>" (a --stdin snapshot's path, or an empty file's base name).
      const e: Entry = { key, id: s.id, path: `/${s.paths?.[0] ? posix.basename(s.paths[0]) : fileNameOf(key)}`, time: new Date(s.time) };
      all.set(key, [...(all.get(key) ?? []), e]);
      const prev = latest.get(key);
      if (!prev || e.time.getTime() > prev.time.getTime() || (e.time.getTime() === prev.time.getTime() && e.id > prev.id)) latest.set(key, e);
    }
    return { latest, all };
  }

  /** Fills the size cache for these snapshots with one `restic find` (a snapshot holds exactly one file). */
  async function fillSizes(entries: Entry[]): Promise<void> {
    const missing = entries.filter((e) => !sizes.has(short(e.id)));
    for (let i = 0; i < missing.length; i += 500) {
      const batch = missing.slice(i, i + 500);
      const r = await run("find", ["find", "--json", "--no-lock", ...batch.flatMap((e) => ["--snapshot", e.id]), "*"]);
      let found: { snapshot: string; matches?: { path: string; type: string; size?: number }[] }[];
      try {
        found = (JSON.parse(r.stdout || "[]") as typeof found | null) ?? [];
      } catch (err) {
        throw new DbkeepError("STORE_FAILED", `[store:${name}] restic find printed output that is not JSON`, { cause: err });
      }
      for (const f of found) {
        const entry = batch.find((e) => e.id === f.snapshot);
        const m = f.matches?.find((x) => x.type === "file" && (entry === undefined || x.path === entry.path)) ?? f.matches?.find((x) => x.type === "file");
        // find's JSON leaves out a zero size.
        if (m) sizes.set(short(f.snapshot), m.size ?? 0);
      }
    }
  }

  async function toObject(e: Entry): Promise<StoreObject> {
    await fillSizes([e]);
    return { key: e.key, size: sizes.get(short(e.id)) ?? 0, modified: e.time };
  }

  /** Snapshots were forgotten since the last prune: with `prune: true`, close() prunes once for all of them. */
  let forgotten = false;

  async function forget(ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    for (let i = 0; i < ids.length; i += 200) await run("forget", ["forget", ...ids.slice(i, i + 200)]);
    forgotten = true;
    for (const id of ids) sizes.delete(short(id));
  }

  interface BackupResult {
    /** restic's (short) id of the new snapshot. */
    id: string;
    bytes: number;
    /** restic's summary of the backup. */
    snapshot?: StoreSnapshot;
    /** restic refused the snapshot because stdin was empty; nothing was written. */
    emptyRefused?: boolean;
  }

  /** One `restic backup` fed from `body`; the snapshot exists afterwards only when every byte reached restic. */
  async function backup(args: string[], body: Readable, signal: AbortSignal | undefined, cancelled: (cause?: unknown) => DbkeepError, cwd?: string): Promise<BackupResult> {
    const proc = spawnTool(await tool(), args, { env: env(), errorCode: "STORE_FAILED", context: name, ...(cwd ? { cwd } : {}) });
    const stderr = collectStderr(proc.child);
    let stdout = "";
    proc.child.stdout?.setEncoding("utf8");
    proc.child.stdout?.on("data", (c: string) => (stdout += c));
    let fed: { bytes: number; complete: boolean };
    try {
      fed = await feedStdin(body, proc.child, signal);
    } catch (err) {
      // SIGINT: restic stops without writing the snapshot and removes its lock.
      await stopTool(proc, "SIGINT");
      if ((err as Error).name === "AbortError" || signal?.aborted) throw cancelled(err);
      throw err;
    }
    // An abort while restic is still writing stops it; one that comes after it wrote the snapshot removes it below.
    const onAbort = () => void stopTool(proc, "SIGINT");
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await proc.done;
    } catch (err) {
      if (isDbkeepError(err, "TOOL_NOT_FOUND")) throw err;
      if (signal?.aborted) throw cancelled(err);
      if (fed.complete && fed.bytes === 0 && /snapshot is empty/.test(stderr())) return { id: "", bytes: 0, emptyRefused: true };
      throw failure("backup", { code: proc.child.exitCode, signal: proc.child.signalCode, stderr: stderr() });
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    const summary = stdout
      .split("\n")
      .map((l) => {
        try {
          return JSON.parse(l) as ResticSummary;
        } catch {
          return undefined;
        }
      })
      .find((m) => m?.message_type === "summary");
    if (signal?.aborted) {
      if (summary?.snapshot_id) await forget([summary.snapshot_id]).catch(() => undefined);
      throw cancelled();
    }
    if (!fed.complete || !summary?.snapshot_id || summary.total_bytes_processed !== fed.bytes) {
      if (summary?.snapshot_id) await forget([summary.snapshot_id]).catch(() => undefined);
      throw new DbkeepError("STORE_FAILED", `[store:${name}] restic backup stored ${summary?.total_bytes_processed ?? "no"} bytes of ${fed.bytes}`, { retryable: true });
    }
    return { id: summary.snapshot_id, bytes: fed.bytes, snapshot: snapshotOf({ ...summary, snapshot_id: summary.snapshot_id }) };
  }

  function checkKey(key: string): void {
    if (key === "" || key.endsWith("/")) throw new DbkeepError("STORE_FAILED", `[store:${name}] invalid key "${key}"`);
  }

  return {
    name,
    location: repoLabel,
    atomicCreate: false,

    async put(key: string, body: Readable, putOpts: PutOptions = {}) {
      checkKey(key);
      body.on("error", () => undefined);
      await ensureRepository();
      const tagArgs = ["--host", opts.host, "--json", "--quiet", ...[DBKEEP_TAG, encodeKeyTag(key), ...opts.tags].flatMap((t) => ["--tag", t])];
      const cancelled = (cause?: unknown) => new DbkeepError("ABORTED", `[store:${name}] upload of ${key} was cancelled`, cause === undefined ? {} : { cause });
      // The key's existing snapshots are looked up while restic writes the new one (they are the older ones).
      const existing = snapshots(key).then(
        (r) => r.all.get(key) ?? [],
        (err: unknown) => err as Error,
      );
      const alreadyExists = () => new DbkeepError("ALREADY_EXISTS", `[store:${name}] ${key} already exists`);
      if (putOpts.ifAbsent) {
        // restic publishes the snapshot itself when it has read everything: the key is looked at before, and
        // again after (below).
        const before = await existing;
        if (before instanceof Error) throw before;
        if (before.length > 0) throw alreadyExists();
      }
      let result = await backup(["backup", "--stdin", "--stdin-filename", fileNameOf(key), ...tagArgs], body, putOpts.signal, cancelled);
      if (result.emptyRefused) {
        // restic refuses a snapshot of an empty stdin ("snapshot is empty") but takes an empty file.
        const dir = await privateDir("dbkeep-restic-");
        try {
          await writeFile(join(dir.dir, fileNameOf(key)), "", { mode: 0o600 });
          result = await backup(["backup", ...tagArgs, fileNameOf(key)], Readable.from([]), putOpts.signal, cancelled, dir.dir);
        } finally {
          await dir.close();
        }
      }
      const { id, bytes, snapshot } = result;
      sizes.set(short(id), bytes);
      if (putOpts.ifAbsent) {
        // Another writer's snapshot of the key appeared while ours was written: ours is forgotten and this put lost.
        // Of two such writers at least one sees the other, so they never both succeed (both may fail).
        const now = (await snapshots(key)).all.get(key) ?? [];
        if (now.some((e) => !e.id.startsWith(id))) {
          await forget([id]).catch((err: unknown) => ctx.warn?.(`[store:${name}] could not forget snapshot ${id} of ${key}: ${(err as Error).message}`));
          throw alreadyExists();
        }
        return { bytes, ...(snapshot ? { snapshot } : {}) };
      }
      // The new snapshot is complete: the older ones of the key go now (list shows only the newest meanwhile).
      const older = await existing;
      try {
        if (older instanceof Error) throw older;
        await forget(older.map((e) => e.id).filter((x) => !x.startsWith(id)));
      } catch (err) {
        ctx.warn?.(`[store:${name}] could not forget older snapshots of ${key}: ${(err as Error).message}`);
      }
      return { bytes, ...(snapshot ? { snapshot } : {}) };
    },

    async get(key: string, getOpts: { signal?: AbortSignal } = {}) {
      // `dump latest` with the key's tag picks the newest snapshot of the key, as list does: one restic run.
      const args = ["dump", "--host", opts.host, "--tag", `${DBKEEP_TAG},${encodeKeyTag(key)}`, "latest", `/${fileNameOf(key)}`];
      const proc = spawnTool(await tool(), args, { env: env(), errorCode: "STORE_FAILED", context: name, ...(getOpts.signal ? { signal: getOpts.signal } : {}) });
      const stderr = collectStderr(proc.child);
      const mapError = (err: unknown): Error => {
        if (isDbkeepError(err, "ABORTED") || isDbkeepError(err, "TOOL_NOT_FOUND")) return err;
        const r = { code: proc.child.exitCode, signal: proc.child.signalCode, stderr: stderr() };
        if (/no snapshot found|not found in snapshot/.test(r.stderr) || (opts.init && NO_REPO.test(r.stderr) && !WRONG_PASSWORD.test(r.stderr))) {
          return new DbkeepError("STORE_NOT_FOUND", `[store:${name}] ${key} not found`);
        }
        return failure("dump", r);
      };
      const out = stdoutStream(proc, mapError);
      // Until the stream is handed out, its error is the one thrown here.
      const quiet = () => undefined;
      out.on("error", quiet);
      // A missing key must reject here, not later in the stream: wait for the first byte or restic's exit.
      const stdout = proc.child.stdout!;
      const first = await new Promise<"data" | "end">((resolve) => {
        stdout.once("data", () => resolve("data"));
        stdout.once("end", () => resolve("end"));
      });
      if (first === "end") {
        try {
          await proc.done;
        } catch (err) {
          out.destroy();
          throw mapError(err);
        }
      }
      out.removeListener("error", quiet);
      return out;
    },

    async stat(key: string) {
      const e = (await snapshots(key)).latest.get(key);
      return e ? toObject(e) : undefined;
    },

    async *list(prefix: string): AsyncIterable<StoreObject> {
      const entries = [...(await snapshots()).latest.values()].filter((e) => e.key.startsWith(prefix));
      await fillSizes(entries);
      for (const e of entries) yield { key: e.key, size: sizes.get(short(e.id)) ?? 0, modified: e.time };
    },

    async delete(keys: string[]) {
      if (keys.length === 0) return;
      const { all } = await snapshots();
      await forget(keys.flatMap((k) => (all.get(k) ?? []).map((e) => e.id)));
    },

    async initialise() {
      const probe = await run("cat config", ["cat", "config", "--no-lock"], { allowMissingRepo: true });
      if (probe.code === 0) return (initialised = true), false;
      const r = await capture(await tool(), ["init"], { env: env(), context: name });
      if (r.code !== 0 && !/already (exists|initialized)|config file already exists/.test(r.stderr)) throw failure("init", r);
      initialised = true;
      return r.code === 0;
    },

    async reclaim() {
      await run("prune", ["prune"]);
      forgotten = false;
    },

    async close() {
      // One `restic prune` for everything forgotten while the store was open (a retention pass deletes many keys).
      if (opts.prune && forgotten) {
        forgotten = false;
        await run("prune", ["prune"]).catch((err: unknown) => ctx.warn?.(`[store:${name}] restic prune failed: ${(err as Error).message}`));
      }
    },
  };
}

export default createResticStore;
