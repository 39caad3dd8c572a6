import { createReadStream } from "node:fs";
import { open, readdir, rm, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { PassThrough, pipeline, type Readable, type Duplex } from "node:stream";
import { runBackup, type BackupOutcome } from "./backup.js";
import { createDecompressor, sniffCompression, type Compression } from "./compression.js";
import { DbkeepError, toDbkeepError } from "./errors.js";
import type { Logger } from "./log.js";
import { type Manifest, type ManifestImported, MANIFEST_VERSION } from "./manifest.js";
import { runRestore, type RestoreResult, type RestoreSpec } from "./restore.js";
import { ByteCounter, HashStage } from "./streams.js";
import { feedWhileReading, resolveTool, spawnTool } from "./subprocess.js";
import { makeTempDir } from "./tempdir.js";
import { VERSION } from "./version.js";
import type { Recipient } from "../crypto/age.js";
import { fernetDecryptFile } from "../crypto/fernet.js";
import type { Engine } from "../engines/engine.js";
import { ENGINES } from "../engines/registry.js";
import type { Store } from "../stores/store.js";

/**
 * Dumps made by other tools (pg_dump, mysqldump / mariadb-dump, sqlite3, redis-cli --rdb, seed 002's Fernet `.enc`
 * files), adopted as backups of a job (`dbkeep import`) or restored directly (`dbkeep restore FILE`).
 *
 * What a file is comes from its content, never from its name: the compression from its magic bytes, then the dump
 * from the first bytes of what decompresses. Before anything is written anywhere, the whole file is read once and
 * checked as its engine would (the completion line of a SQL dump, every block of a pg_dump archive, SQLite's
 * integrity_check, the RDB checksum): a truncated file is refused. Its SHA-256 is taken on the way; the second read,
 * which streams it into the store or the target, must give the same digest, so a file that changes in between is
 * refused too.
 *
 * An adopted dump goes through the same pipe and commit as a backup (core/backup.ts: pending marker, data, sidecar,
 * manifest last, written only where none exists), in the job's own compression and encryption: it is then a backup
 * like any other, and an encrypted job never holds a plain copy.
 */

export type DumpEngine = "postgres" | "mysql" | "sqlite" | "redis";

export interface DetectedDump {
  /** The file or directory given. */
  path: string;
  engine: DumpEngine;
  /** The manifest format, as the engine names it: plain, custom, directory, dumpall, plain-databases, file, rdb. */
  format: string;
  /** The extension of a dump in that format, before compression. */
  extension: string;
  /** How the dump was packed, outermost first: fernet, gzip, zstd, lz4, tar, directory. */
  layers: string[];
  /** In words, for messages: "pg_dump custom archive (zstd)". */
  what: string;
  /** The database the dump says it was taken of, when it says. */
  database?: string;
  tool?: { name: string; version: string };
  serverVersion?: string;
}

/** A dump made ready to be read: the bytes that go into the pipe, and what they are. */
export interface DumpSource {
  detected: DetectedDump;
  /** The compression of the bytes `open()` gives (a directory's tar and a Fernet token's plaintext are read as such). */
  compression: Compression;
  open(): Readable;
  /** The file as given: its size and SHA-256 (of a directory: of its tar). Set by checkSource. */
  original?: { bytes: number; sha256: string };
  /** What `open()` gives: size and SHA-256, set by checkSource and required of every later read. */
  stored?: { bytes: number; sha256: string };
  /** What the check found, in words. */
  checked?: string;
  /** A pg_dump directory dump: the directory (given, or unpacked from a tar). */
  dir?: string;
  /** The file's modification time (a directory's: its toc.dat's). */
  mtime: Date;
  /** A Fernet `.enc` file: the token's timestamp, when it was encrypted (authenticated by its HMAC). */
  encryptedAt?: Date;
  /** Removes the temporary files made for it. */
  close(): Promise<void>;
}

const HEAD = 64 * 1024;
const EXT: Record<string, string> = { plain: ".sql", custom: ".dump", directory: ".tar", dumpall: ".sql", "plain-databases": ".sql", file: ".db", rdb: ".rdb" };
const SANDBOX_LINE = /^\/\*M!999999\\- enable the sandbox mode \*\/ ?\r?\n/;
const NAMED_COMPRESSION: [RegExp, Compression][] = [[/\.(gz|tgz)$/i, "gzip"], [/\.(zst|zstd)$/i, "zstd"], [/\.lz4$/i, "lz4"]];
const FERNET_RE = /^gAAAAA[A-Za-z0-9_-]{20}/;

export const IMPORTABLE = "pg_dump plain, custom and directory dumps (as a directory or a tar), pg_dumpall scripts, mysqldump / mariadb-dump SQL, SQLite database files and Redis RDB snapshots, raw or compressed with gzip, zstd or lz4, or in seed 002's Fernet .enc files";

export interface OpenOptions {
  signal: AbortSignal;
  log: Logger;
  /** The Fernet key of a seed 002 `.enc` file; asked for only when the file is one. */
  fernetKey?: () => Promise<string> | string;
}

/** Looks at a file (or a pg_dump directory) and makes it ready to be checked and read. */
export async function openDumpSource(path: string, o: OpenOptions): Promise<DumpSource> {
  const st = await stat(path).catch((err: unknown) => {
    throw new DbkeepError("USAGE", `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { hint: "check the path" });
  });
  const temps: string[] = [];
  const close = async () => {
    await Promise.all(temps.map((d) => rm(d, { recursive: true, force: true })));
  };
  try {
    if (st.isDirectory()) {
      const dir = await findDumpDir(path);
      if (!dir) {
        throw new DbkeepError("USAGE", `${path} is a directory but not a pg_dump directory-format dump (it holds no toc.dat)`, {
          hint: `give the dump files themselves; dbkeep import reads ${IMPORTABLE}`,
        });
      }
      const detected = withInfo({ path, engine: "postgres", format: "directory", extension: ".tar", layers: ["directory"], what: "pg_dump directory dump" }, await pgListInfo(["--list", dir], undefined, o.signal));
      return dirSource(detected, dir, (await stat(join(dir, "toc.dat"))).mtime, close);
    }
    if (!st.isFile()) throw new DbkeepError("USAGE", `${path} is neither a file nor a directory`);
    const layers: string[] = [];
    let file = path;
    let head = await readHead(file);
    let encryptedAt: Date | undefined;
    if (FERNET_RE.test(head.toString("latin1", 0, 32))) {
      if (!o.fernetKey) {
        throw new DbkeepError("USAGE", `${path} is a Fernet token (an encrypted .enc file of seed 002): it needs its key`, { hint: "pass --key-env NAME or --key-file PATH" });
      }
      const key = await o.fernetKey();
      // Decrypted into a private temporary directory (0700, the file 0600), removed by close(): the HMAC is checked
      // over the whole file before a byte is decrypted, so a wrong key or a changed byte stops here.
      const dir = await makeTempDir("import");
      temps.push(dir);
      file = join(dir, "decrypted");
      try {
        encryptedAt = (await fernetDecryptFile(path, file, key)).timestamp;
      } catch (err) {
        const e = toDbkeepError(err, "CORRUPT_BACKUP");
        if (e.code === "ABORTED") throw e;
        const hint = e.code === "DECRYPT_FAILED" ? "check --key-env / --key-file: it must hold the Fernet key the file was encrypted with (the one DBVault printed, or saved with `dbvault keygen --save`); nothing was imported or restored" : e.hint;
        throw new DbkeepError(e.code, `${path}: ${e.message}`, { ...(hint ? { hint } : {}), cause: err });
      }
      layers.push("fernet");
      head = await readHead(file);
    }
    const compression = sniffCompression(head) ?? "none";
    if (compression !== "none") layers.push(compression);
    const named = NAMED_COMPRESSION.find(([re]) => re.test(path))?.[1];
    if (named && named !== compression && layers[0] !== "fernet") {
      o.log.warn({ file: path, compression }, `${path}: the name says ${named}, the content is ${compression === "none" ? "not compressed" : compression}; going by the content`);
    }
    const content = compression === "none" ? head : await decodedHead(file, compression, o.signal).catch((err: unknown) => {
      throw unreadable(path, err);
    });
    if (content.length === 0) throw new DbkeepError("USAGE", `${path} is empty${compression !== "none" ? ` once decompressed (${compression})` : ""}`);
    const kind = classify(content);
    if (!kind) {
      throw new DbkeepError("USAGE", `${path} is not a dump dbkeep recognizes${compression !== "none" ? ` (${compression}-compressed)` : ""}`, {
        hint: `dbkeep import reads ${IMPORTABLE}`,
      });
    }
    if (kind === "tar") {
      // A pg_dump directory dump packed with tar, with toc.dat at the top or in one folder: unpacked into a private
      // temporary directory (pg_restore needs the files anyway), then read as the directory it is.
      const dir = await makeTempDir("import");
      temps.push(dir);
      await untar(file, compression, dir, path, o.signal);
      const found = await findDumpDir(dir);
      if (!found) {
        const mydumper = await hasFileNamed(dir, "metadata");
        throw new DbkeepError("USAGE", `${path} is a tar archive but not of a pg_dump directory dump (it holds no toc.dat)${mydumper ? "; it looks like a mydumper directory, which import does not read yet" : ""}`, {
          hint: `dbkeep import reads ${IMPORTABLE}`,
        });
      }
      layers.push("tar");
      const detected = withInfo({ path, engine: "postgres", format: "directory", extension: ".tar", layers, what: `pg_dump directory dump in a tar${packing(layers)}` }, await pgListInfo(["--list", found], undefined, o.signal));
      return { ...dirSource(detected, found, st.mtime, close), ...(encryptedAt ? { encryptedAt } : {}) };
    }
    let detected: DetectedDump = { path, ...kind, extension: EXT[kind.format]!, layers, what: kind.what + packing(layers) };
    if (kind.format === "custom") detected = withInfo(detected, await pgListInfo(["--list"], content, o.signal));
    const from = file;
    return { detected, compression, open: () => createReadStream(from), mtime: st.mtime, ...(encryptedAt ? { encryptedAt } : {}), close };
  } catch (err) {
    await close();
    throw err;
  }
}

function packing(layers: string[]): string {
  const outer = layers.filter((l) => l !== "tar" && l !== "directory");
  return outer.length ? ` (${outer.join(" + ")})` : "";
}

function dirSource(detected: DetectedDump, dir: string, mtime: Date, close: () => Promise<void>): DumpSource {
  return {
    detected,
    dir,
    compression: "none",
    // The same bytes on every read (names sorted), so that the second read can be held to the first one's digest.
    open: () => {
      const t = spawnTool("tar", ["--sort=name", "-C", dir, "-cf", "-", "."], { stdio: ["ignore", "pipe", "pipe"], errorCode: "IO_FAILED", context: `reading ${dir}` });
      const out = t.child.stdout as Readable;
      t.done.catch((err: unknown) => out.destroy(err as Error));
      return out;
    },
    mtime,
    close,
  };
}

async function readHead(file: string): Promise<Buffer> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(HEAD);
    const { bytesRead } = await fh.read(buf, 0, HEAD, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The first bytes of a compressed file, decompressed; a file shorter than that gives what there is. */
async function decodedHead(file: string, compression: Compression, signal: AbortSignal): Promise<Buffer> {
  const src = createReadStream(file);
  const dec = await createDecompressor(compression, signal);
  src.on("error", () => undefined);
  dec.on("error", () => undefined);
  src.pipe(dec);
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of dec) {
      chunks.push(c as Buffer);
      n += (c as Buffer).length;
      if (n >= HEAD) break;
    }
  } catch (err) {
    // A damaged or short file: what decompressed may be enough to say what it is (the check reads it all); nothing
    // at all means it cannot be read.
    if (n === 0) throw err;
  } finally {
    src.destroy();
    dec.destroy();
  }
  return Buffer.concat(chunks).subarray(0, HEAD);
}

type Kind = Pick<DetectedDump, "engine" | "format" | "what" | "database" | "tool" | "serverVersion">;

/** What a dump is, from its first (decompressed) bytes. */
export function classify(head: Buffer): Kind | "tar" | undefined {
  const latin = head.toString("latin1", 0, Math.min(head.length, 16));
  if (latin.startsWith("PGDMP")) return { engine: "postgres", format: "custom", what: "pg_dump custom archive" };
  if (latin === "SQLite format 3\0") return { engine: "sqlite", format: "file", what: "SQLite database" };
  if (/^REDIS\d{4}/.test(latin)) return { engine: "redis", format: "rdb", what: `Redis RDB snapshot (version ${Number(latin.slice(5, 9))})` };
  if (head.length >= 262 && head.toString("latin1", 257, 262) === "ustar") return "tar";
  const text = head.toString("utf8").replace(/^\uFEFF/, "").replace(SANDBOX_LINE, "");
  const top = text.slice(0, 2048);
  if (/^-- PostgreSQL database cluster dump\s*$/m.test(top)) {
    return { engine: "postgres", format: "dumpall", what: "pg_dumpall script", ...pgHeader(text, "pg_dumpall") };
  }
  if (/^-- PostgreSQL database dump\s*$/m.test(top)) return { engine: "postgres", format: "plain", what: "pg_dump plain SQL dump", ...pgHeader(text, "pg_dump") };
  const my = /^-- (MySQL|MariaDB) dump (\S+)\s+Distrib (\S+?),?\s/m.exec(top);
  if (my) {
    const database = /^-- Host: .*?Database: (\S+)/m.exec(top)?.[1];
    const server = /^-- Server version\s+(\S+)/m.exec(top)?.[1];
    // --databases / --all-databases dumps create and USE their databases before any table.
    const firstDb = text.search(/^(CREATE DATABASE |USE `)/m);
    const firstTable = text.search(/^(DROP TABLE|CREATE TABLE|INSERT INTO|LOCK TABLES|\/\*!50001 CREATE)/m);
    const databases = firstDb >= 0 && (firstTable < 0 || firstDb < firstTable);
    return {
      engine: "mysql",
      format: databases ? "plain-databases" : "plain",
      what: `${my[1] === "MariaDB" ? "mariadb-dump" : "mysqldump"} SQL dump${databases ? " of whole databases" : ""}`,
      ...(database && !databases ? { database } : {}),
      tool: { name: my[1] === "MariaDB" ? "mariadb-dump" : "mysqldump", version: my[3]! },
      ...(server ? { serverVersion: server } : {}),
    };
  }
  return undefined;
}

function pgHeader(text: string, tool: string): Pick<DetectedDump, "tool" | "serverVersion"> {
  const by = /^-- Dumped by \S+ version (\S+)/m.exec(text)?.[1];
  const from = /^-- Dumped from database version (\S+)/m.exec(text)?.[1];
  return { ...(by ? { tool: { name: tool, version: by } } : {}), ...(from ? { serverVersion: from } : {}) };
}

function withInfo(d: DetectedDump, info: Pick<DetectedDump, "database" | "tool" | "serverVersion">): DetectedDump {
  return { ...d, ...info };
}

/** What `pg_restore --list` says of an archive (its header): database, versions. Best effort: {} if it cannot. */
async function pgListInfo(args: string[], input: Buffer | undefined, signal: AbortSignal): Promise<Pick<DetectedDump, "database" | "tool" | "serverVersion">> {
  try {
    const t = spawnTool(await resolveTool("pg_restore"), args, { signal, stdio: [input ? "pipe" : "ignore", "pipe", "pipe"] });
    let out = "";
    t.child.stdout?.setEncoding("utf8");
    t.child.stdout?.on("data", (c: string) => (out.length < 65536 ? (out += c) : undefined));
    t.child.stdin?.on("error", () => undefined);
    t.child.stdin?.end(input);
    await t.done.catch(() => undefined);
    const database = /^;\s+dbname: (.+)$/m.exec(out)?.[1]?.trim();
    const by = /^;\s+Dumped by pg_dump version: (\S+)/m.exec(out)?.[1];
    const from = /^;\s+Dumped from database version: (\S+)/m.exec(out)?.[1];
    return { ...(database ? { database } : {}), ...(by ? { tool: { name: "pg_dump", version: by } } : {}), ...(from ? { serverVersion: from } : {}) };
  } catch {
    return {};
  }
}

/** The directory holding toc.dat: `dir` itself or its only subdirectory (how `tar cf x.tar dumpdir` packs it). */
async function findDumpDir(dir: string): Promise<string | undefined> {
  const entries = await readdir(dir, { withFileTypes: true });
  if (entries.some((e) => e.isFile() && e.name === "toc.dat")) return dir;
  const subdirs = entries.filter((e) => e.isDirectory());
  if (subdirs.length === 1 && entries.length === 1) return findDumpDir(join(dir, subdirs[0]!.name));
  return undefined;
}

async function hasFileNamed(dir: string, name: string, depth = 2): Promise<boolean> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isFile() && e.name === name) return true;
    if (e.isDirectory() && depth > 0 && (await hasFileNamed(join(dir, e.name), name, depth - 1))) return true;
  }
  return false;
}

async function untar(file: string, compression: Compression, into: string, shown: string, signal: AbortSignal): Promise<void> {
  const t = spawnTool(await resolveTool("tar"), ["-C", into, "--no-same-owner", "-xf", "-"], { signal, stdio: ["pipe", "ignore", "pipe"], errorCode: "CORRUPT_BACKUP", context: `unpacking ${shown}` });
  const { stream, done } = decodePipe(createReadStream(file), undefined, await createDecompressor(compression, signal));
  try {
    await feedWhileReading(stream, t);
    await Promise.all([t.done, done]);
  } catch (err) {
    throw unreadable(shown, err);
  }
}

/** source -> [hash] -> decompressor, as one readable, and a promise of the whole pipe's end. */
function decodePipe(source: Readable, hash: HashStage | undefined, decompressor: Duplex): { stream: Readable; done: Promise<void>; raw: ByteCounter } {
  const raw = new ByteCounter();
  let stream!: Readable;
  const done = new Promise<void>((res, rej) => {
    stream = pipeline([source, ...(hash ? [hash] : []), decompressor, raw] as unknown as [Readable, Duplex], (err) => (err ? rej(err) : res())) as unknown as Readable;
  });
  done.catch(() => undefined);
  return { stream, done, raw };
}

function unreadable(path: string, err: unknown): DbkeepError {
  const e = toDbkeepError(err, "CORRUPT_BACKUP");
  if (e.code === "ABORTED" || e.code === "TOOL_NOT_FOUND" || e.code === "CHECKSUM_MISMATCH") return e;
  const why = (e.details ?? e.message).split("\n").filter(Boolean).slice(-1)[0] ?? e.message;
  return new DbkeepError("CORRUPT_BACKUP", `${path} cannot be read to its end: ${why}`, {
    hint: "the file is truncated or damaged; nothing was imported or restored from it",
    cause: err,
  });
}

/**
 * Reads the whole source once and checks it as its engine would; records its size and SHA-256 (and the file's
 * own). Rejects with CORRUPT_BACKUP when it cannot be read to its end.
 */
export async function checkSource(src: DumpSource, signal: AbortSignal): Promise<string> {
  const d = src.detected;
  const hash = new HashStage();
  const { stream, done, raw } = decodePipe(src.open(), hash, await createDecompressor(src.compression, signal));
  let summary: string;
  try {
    const check = checkContent(d, stream, signal, () => raw.bytes);
    const [s] = await Promise.all([check.catch((err: unknown) => (stream.destroy(), Promise.reject(err))), done]);
    summary = s;
    if (d.format === "directory") summary = await checkPgDirectory(src.dir!, signal);
  } catch (err) {
    throw unreadable(d.path, err);
  }
  src.stored = { bytes: hash.bytes, sha256: hash.sha256 };
  src.original = d.layers[0] === "fernet" || d.layers.includes("tar") ? await hashFile(d.path) : src.stored;
  src.checked = summary;
  return summary;
}

async function hashFile(path: string): Promise<{ bytes: number; sha256: string }> {
  const h = new HashStage();
  await new Promise<void>((res, rej) => pipeline(createReadStream(path), h, (e) => (e ? rej(e) : res())).resume());
  return { bytes: h.bytes, sha256: h.sha256 };
}

async function tail(input: Readable): Promise<string> {
  let t = "";
  for await (const chunk of input) t = (t + (chunk as Buffer).toString("latin1")).slice(-4096);
  return t;
}

async function checkContent(d: DetectedDump, input: Readable, signal: AbortSignal, rawBytes: () => number): Promise<string> {
  switch (d.format) {
    case "plain":
    case "dumpall":
    case "plain-databases": {
      const t = await tail(input);
      if (d.engine === "postgres") {
        const line = d.format === "plain" ? "PostgreSQL database dump complete" : "PostgreSQL database cluster dump complete";
        if (!t.includes(line)) throw new DbkeepError("CORRUPT_BACKUP", `the dump does not end with "-- ${line}": it was cut short`);
      } else if (!/-- Dump completed( on [^\n]*)?\s*$/.test(t)) {
        throw new DbkeepError("CORRUPT_BACKUP", `the dump does not end with "-- Dump completed": it was cut short`);
      }
      return `${d.what} ends with its completion line`;
    }
    case "custom": {
      // --list reads only the table of contents; writing the script out reads every data block to the end.
      const t = spawnTool(await resolveTool("pg_restore"), ["--file=/dev/null"], { signal, stdio: ["pipe", "ignore", "pipe"], errorCode: "CORRUPT_BACKUP" });
      await feedWhileReading(input, t);
      await t.done;
      return "pg_restore reads every block of the archive";
    }
    case "directory": {
      for await (const _ of input) {
        // the tar of the directory is hashed here; pg_restore reads the directory itself afterwards
      }
      return "";
    }
    case "file":
    case "rdb": {
      const engine = await ENGINES[d.engine]!.create(d.engine === "sqlite" ? { engine: "sqlite", path: d.path } : { engine: d.engine }, { secret: () => undefined });
      return engine.checkDump!(input, { format: d.format, rawBytes: Math.max(rawBytes(), 1), signal });
    }
  }
  throw new DbkeepError("INTERNAL", `no check for ${d.format} dumps`);
}

/** pg_restore writes the directory out as a script: every data file is read (and decompressed) to its end. */
async function checkPgDirectory(dir: string, signal: AbortSignal): Promise<string> {
  await spawnTool(await resolveTool("pg_restore"), ["--format=directory", "--file=/dev/null", dir], { signal, stdio: ["ignore", "ignore", "pipe"], errorCode: "CORRUPT_BACKUP" }).done;
  return "pg_restore reads every file of the directory";
}

/**
 * Where the time a backup was taken comes from: --taken-at, else a date and time in the file's name, else (a Fernet
 * `.enc` file) the token's timestamp, which seed 002 set when it encrypted the dump, else the file's mtime.
 */
export function takenAt(src: DumpSource, given: string | undefined): { at: Date; from: ManifestImported["taken_from"] } {
  if (given) return { at: new Date(given), from: "--taken-at" };
  const named = timeInName(basename(src.detected.path));
  if (named) return { at: named, from: "file name" };
  if (src.encryptedAt) return { at: src.encryptedAt, from: "fernet timestamp" };
  return { at: src.mtime, from: "file mtime" };
}

/**
 * `20260101-020000`, `20260101_020000`, `2026-01-01T02:00:00`, `2026-01-01_02-00-00` in a file name, read as UTC;
 * the last one in the name, and only a real date and time no later than tomorrow.
 */
export function timeInName(name: string): Date | undefined {
  const re = /(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[T_ -]?(\d{2})[:-]?(\d{2})[:-]?(\d{2})(?!\d)/g;
  let found: Date | undefined;
  for (const m of name.matchAll(re)) {
    const [y, mo, d, h, mi, s] = m.slice(1).map(Number) as [number, number, number, number, number, number];
    const at = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
    if (at.getUTCMonth() !== mo - 1 || at.getUTCDate() !== d || h > 23 || mi > 59 || s > 59 || y < 1990) continue;
    if (at.getTime() > Date.now() + 86_400_000) continue;
    found = at;
  }
  return found;
}

/** Refuses a dump that the target engine (a job's datasource, a restore target) cannot take. */
export function checkFits(d: DetectedDump, engine: Pick<Engine, "name" | "canRestore" | "database" | "format">, target: string): void {
  if (engine.name !== d.engine) {
    throw new DbkeepError("USAGE", `${d.path} is a ${d.what}; ${target} is a ${engine.name} database`, { hint: `import it into a job (or restore it into a datasource) of engine ${d.engine}` });
  }
  if (!engine.canRestore(d.format)) {
    const why = d.format === "dumpall" ? "a pg_dumpall script goes with a datasource with all_databases: true" : engine.format === "dumpall" ? "that datasource dumps all databases with pg_dumpall; only pg_dumpall scripts go with it" : `${engine.name} does not restore ${d.format} dumps`;
    throw new DbkeepError("USAGE", `${d.path} is a ${d.what}, which ${target} cannot hold: ${why}`);
  }
}

export interface AdoptSpec {
  source: DumpSource;
  /** The job's engine (its database names the backup; its checkDump serves verify), or one made for a store URL. */
  engine: Engine;
  job?: string;
  type?: string;
  stores: Store[];
  prefix?: string;
  /** The job's basename (seed 001's BACKUP_BASE_NAME): names the backups instead of the database, as for its own. */
  basename?: string;
  compression: Compression;
  level?: number;
  encryption?: Recipient[];
  verify: boolean;
  taken: { at: Date; from: ManifestImported["taken_from"] };
  log: Logger;
  signal: AbortSignal;
  now?: () => Date;
}

/**
 * Writes a checked dump into the stores as a backup taken at `taken.at`, through runBackup: the same reservation,
 * pipe and commit as every backup, with the manifest marked `imported`.
 */
export async function adoptDump(spec: AdoptSpec): Promise<BackupOutcome> {
  const { source: src, engine } = spec;
  const d = src.detected;
  if (!src.stored || !src.original) throw new DbkeepError("INTERNAL", "adoptDump before checkSource");
  const stored = src.stored;
  const info = { ...(d.tool ? { tool: d.tool } : {}), ...(d.serverVersion ? { serverVersion: d.serverVersion } : {}) };
  const refuse = (what: string) => () => Promise.reject(new DbkeepError("INTERNAL", `an imported dump cannot ${what}`));
  const adopted: Engine = {
    name: d.engine,
    tools: [],
    format: d.format,
    extension: d.extension,
    database: engine.database,
    source: () => ({ engine: d.engine, database: engine.database, path: resolve(d.path) }),
    check: refuse("be checked"),
    dump: ({ signal }) => {
      const p = createDecompressor(src.compression, signal).then((dec) => decodePipe(src.open(), new HashStage({ ...stored, what: d.path }), dec));
      const out = new PassThrough();
      p.then(({ stream, done }) => {
        stream.on("error", (e) => out.destroy(e));
        done.catch((e: unknown) => out.destroy(e as Error));
        stream.pipe(out);
      }, (e: unknown) => out.destroy(e as Error));
      const done = p.then(async (x) => {
        await x.done;
        return info;
      });
      done.catch(() => undefined);
      return { stream: out, done };
    },
    inspectTarget: refuse("be a target"),
    restore: refuse("be a target"),
    canRestore: () => false,
    ...(engine.checkDump ? { checkDump: engine.checkDump.bind(engine) } : {}),
  };
  const imported: ManifestImported = { file: basename(d.path), bytes: src.original.bytes, sha256: src.original.sha256, layers: d.layers, taken_from: spec.taken.from, at: (spec.now?.() ?? new Date()).toISOString() };
  return runBackup({
    ...(spec.job ? { job: spec.job } : {}),
    ...(spec.type ? { type: spec.type } : {}),
    engine: adopted,
    stores: spec.stores,
    ...(spec.prefix ? { prefix: spec.prefix } : {}),
    ...(spec.basename ? { basename: spec.basename } : {}),
    compression: spec.compression,
    ...(spec.level !== undefined ? { level: spec.level } : {}),
    verify: spec.verify,
    ...(spec.encryption ? { encryption: spec.encryption } : {}),
    log: spec.log,
    signal: spec.signal,
    now: () => spec.taken.at,
    imported,
  });
}

/**
 * A backup in `backups` that already holds this file: one adopted from a file with this content, or one whose stored
 * object is this very file (a backup copied out of the store, e.g. by seed 001's `download`, and given back).
 */
export function alreadyImported(backups: Manifest[], src: DumpSource): Manifest | undefined {
  const sha = src.original?.sha256;
  return backups.find((m) => m.imported?.sha256 === sha) ?? backups.find((m) => m.sha256 === sha);
}

/**
 * Restores a checked dump file straight into a target, through runRestore: the file is read as a store holding one
 * object, whose manifest says what the check found, so that the target is inspected, confirmed and swapped as for
 * any backup, and the read is held to the check's digest.
 */
export async function restoreSource(src: DumpSource, spec: Omit<RestoreSpec, "manifest" | "store">): Promise<RestoreResult> {
  const d = src.detected;
  if (!src.stored) throw new DbkeepError("INTERNAL", "restoreSource before checkSource");
  const key = basename(d.path);
  const store: Store = {
    name: `file:${d.path}`,
    put: () => Promise.reject(new DbkeepError("INTERNAL", "a dump file is read-only")),
    get: async (k) => {
      if (k !== key) throw new DbkeepError("STORE_NOT_FOUND", `${k} not found`);
      return src.open();
    },
    stat: async (k) => (k === key ? { key, size: src.stored!.bytes, modified: src.mtime } : undefined),
    list: async function* () {
      yield { key, size: src.stored!.bytes, modified: src.mtime };
    },
    delete: async () => undefined,
    close: async () => undefined,
  };
  const at = src.mtime.toISOString();
  const manifest: Manifest = {
    manifest_version: MANIFEST_VERSION,
    id: key,
    engine: d.engine,
    database: d.database ?? spec.engine.database,
    format: d.format,
    compression: src.compression,
    encryption: null,
    key,
    checksum_key: `${key}.sha256`,
    raw_bytes: src.stored.bytes,
    stored_bytes: src.stored.bytes,
    sha256: src.stored.sha256,
    started_at: at,
    finished_at: at,
    duration_seconds: 0,
    dbkeep_version: VERSION,
  };
  return runRestore({ ...spec, manifest, store });
}

/** A name for a store's key layout from a dump: the database it names, else the file's name without extensions. */
export function databaseName(d: DetectedDump): string {
  const raw = d.database ?? basename(d.path).replace(/\..*$/, "");
  const clean = raw.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[-.]+|-+$/g, "");
  return clean || d.engine;
}
