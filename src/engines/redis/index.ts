import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, readFileSync } from "node:fs";
import { chmod, chown, rename, rm, stat, unlink } from "node:fs/promises";
import { makeTempDir } from "../../core/tempdir.js";
import { isIP } from "node:net";
import { basename, dirname, join, resolve } from "node:path";
import { PassThrough, Transform, Writable, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createClient, RESP_TYPES } from "@redis/client";
import { DbkeepError } from "../../core/errors.js";
import { Secret } from "../../core/redact.js";
import { endAfter } from "../../core/streams.js";
import { minimalEnv, resolveTool, runTool, spawnTool } from "../../core/subprocess.js";
import type { DoctorFinding, Dump, DumpOptions, DumpResult, Engine, RestoreOptions, TableInfo, TargetState } from "../engine.js";
import { RdbCheck } from "./rdb.js";
import { encodeCommand, LOGICAL_HEADER, LOGICAL_TRAILER, LogicalCheck, printable, RespReader, type LogicalSummary } from "./resp.js";
import type { RedisDatasource } from "./schema.js";
import { fsyncPath } from "../../core/fsync.js";
import { startDump } from "../dump.js";

export type RedisEngineOptions = Omit<RedisDatasource, "password" | "password_env" | "password_file" | "compression" | "compression_level" | "engine"> & {
  /** The password, resolved when a connection is first made (an unset *_env variable fails there, not earlier). */
  password?: () => Secret | undefined;
  /** One-off mode: without a configured password, use REDISCLI_AUTH from dbkeep's own environment. */
  inheritAuthEnv?: boolean;
};

const EXT: Record<string, string> = { rdb: ".rdb", logical: ".resp" };
const AUTH_HINT = "check the datasource's username and password (password_env / password_file); without username the password is the default user's (requirepass)";
const REACH_HINT = "is the server running and reachable at that host and port (or socket)?";
const TLS_HINT = "set tls_ca to the CA that signed the server's certificate (tls_insecure: true skips the check), or check tls";
const ACL_HINT = "the ACL user needs +info +select +scan +dump +pttl +multi +exec to back up and +restore +select to restore, on every key (~*)";
/** Keys per MULTI/EXEC of DUMP + PTTL: one round trip returns a consistent value and TTL for each. */
const BATCH = 64;
/** Logical restore: commands sent before the oldest reply is awaited, and their payload bytes. */
const WINDOW_COMMANDS = 1000;
const WINDOW_BYTES = 32 * 1024 * 1024;

interface Conn {
  send(args: (string | Buffer)[]): Promise<unknown>;
  close(): void;
}

export function createRedisEngine(opts: RedisEngineOptions): Engine {
  const mode = opts.mode ?? "rdb";
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? 6379;
  const where = opts.socket ? `socket ${opts.socket}` : `${host}:${port}`;
  const useTls = Boolean(opts.tls || opts.tls_ca || opts.tls_cert || opts.tls_key || opts.tls_insecure);
  const database = opts.name ?? defaultName(opts, mode);
  const timeoutMs = opts.timeout ? opts.timeout * 1000 : undefined;

  let resolved: { value: Secret | undefined } | undefined;
  const password = (): Secret | undefined =>
    (resolved ??= { value: opts.password?.() ?? (opts.inheritAuthEnv && process.env.REDISCLI_AUTH ? new Secret(process.env.REDISCLI_AUTH) : undefined) }).value;

  function readTlsFile(key: "tls_ca" | "tls_cert" | "tls_key"): Buffer | undefined {
    const file = opts[key];
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new DbkeepError("USAGE", `cannot read ${key} ${file}: ${(err as Error).message}`, { hint: `check the datasource's ${key}` });
    }
  }

  async function connect(o: { connectTimeoutMs?: number } = {}): Promise<Conn> {
    const limit = o.connectTimeoutMs ?? 10_000;
    const common = { reconnectStrategy: false as const, connectTimeout: limit };
    const socket = opts.socket
      ? { ...common, path: opts.socket, tls: false as const }
      : useTls
        ? {
            ...common, host, port, tls: true as const,
            ca: readTlsFile("tls_ca"), cert: readTlsFile("tls_cert"), key: readTlsFile("tls_key"),
            rejectUnauthorized: !opts.tls_insecure,
            ...(isIP(host) ? {} : { servername: host }),
          }
        : { ...common, host, port };
    const secret = password();
    const client = createClient({
      RESP: 2,
      socket,
      ...(opts.username ? { username: opts.username } : {}),
      ...(secret ? { password: secret.reveal() } : {}),
      // A command on a broken connection must fail, not wait for a reconnect that re-selects nothing.
      disableOfflineQueue: true,
      // The client's default 5 s per command would fail a DUMP or RESTORE of a large value, or a command queued
      // behind a full pipeline window; the datasource's timeout bounds the whole dump or restore instead.
      commandOptions: { timeout: 0 },
      maintNotifications: "disabled",
    }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
    client.on("error", () => undefined);
    // connectTimeout covers the TCP (and TLS) connection only: a server that accepts and never answers would make
    // the first command wait forever. The whole handshake gets the same limit, and a timeout is worth a retry.
    let timer: NodeJS.Timeout | undefined;
    const handshake = (async () => {
      await client.connect();
      // A server with a password answers the first command with NOAUTH when none was sent.
      await client.sendCommand(["PING"]);
    })();
    handshake.catch(() => undefined);
    try {
      await Promise.race([
        handshake,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${limit / 1000} s`), { code: "ETIMEDOUT" })), limit);
        }),
      ]);
    } catch (err) {
      client.destroy();
      throw connectionError(err);
    } finally {
      clearTimeout(timer);
    }
    // Shows the connection as dbkeep's in CLIENT LIST; an ACL user without CLIENT SETNAME works all the same.
    await client.sendCommand(["CLIENT", "SETNAME", "dbkeep"]).catch(() => undefined);
    return {
      send: (args) => client.sendCommand(args),
      close: () => {
        if (client.isOpen) client.destroy();
      },
    };
  }

  function connectionError(err: unknown): DbkeepError {
    if (err instanceof DbkeepError) return err;
    const e = err as NodeJS.ErrnoException;
    const msg = e.message ?? String(err);
    const what = `cannot connect to Redis at ${where}: ${msg}`;
    if (/WRONGPASS|NOAUTH|invalid password|invalid username-password|AUTH failed/i.test(msg)) {
      const hint = /NOAUTH/.test(msg) && !password() ? "the server requires a password: set password_env (or password_file) on the datasource" : AUTH_HINT;
      return new DbkeepError("CONNECTION_FAILED", what, { hint, cause: err });
    }
    if (/NOPERM/.test(msg)) return new DbkeepError("CONNECTION_FAILED", what, { hint: ACL_HINT, cause: err });
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ALTNAME|SSL|TLS|certificate/i.test(`${e.code ?? ""} ${msg}`)) {
      return new DbkeepError("CONNECTION_FAILED", what, { hint: TLS_HINT, cause: err });
    }
    if (e.code === "ENOENT" || e.code === "EACCES") {
      return new DbkeepError("CONNECTION_FAILED", what, { hint: "check the datasource's socket path and its permissions", cause: err });
    }
    if (e.code === "ENOTFOUND") return new DbkeepError("CONNECTION_FAILED", what, { hint: "check the datasource's host", cause: err });
    const closed = /closed unexpectedly|ECONNRESET/i.test(`${e.code ?? ""} ${msg}`);
    return new DbkeepError("CONNECTION_FAILED", what, {
      hint: closed && !useTls ? `${REACH_HINT} A server that only speaks TLS closes plain connections: set tls: true` : REACH_HINT,
      retryable: true,
      cause: err,
    });
  }

  /** An error of a command on an open connection, with what the server said. */
  function commandError(err: unknown, doing: string): DbkeepError {
    if (err instanceof DbkeepError) return err;
    const msg = (err as Error).message ?? String(err);
    if (/closed unexpectedly|ECONNRESET|EPIPE|socket closed|client is closed/i.test(msg)) {
      return new DbkeepError("CONNECTION_FAILED", `lost the connection to Redis at ${where} during ${doing}: ${msg}`, { hint: REACH_HINT, retryable: true, cause: err });
    }
    if (/NOPERM/.test(msg)) return new DbkeepError("ENGINE_FAILED", `Redis at ${where} refused ${doing}: ${msg}`, { hint: ACL_HINT, cause: err });
    if (/NOAUTH|WRONGPASS/.test(msg)) return new DbkeepError("CONNECTION_FAILED", `Redis at ${where} refused ${doing}: ${msg}`, { hint: AUTH_HINT, cause: err });
    return new DbkeepError("ENGINE_FAILED", `${doing} failed on Redis at ${where}: ${msg}`, { cause: err });
  }

  async function withConn<T>(fn: (c: Conn) => Promise<T>, o: { connectTimeoutMs?: number } = {}): Promise<T> {
    const c = await connect(o);
    try {
      return await fn(c);
    } finally {
      c.close();
    }
  }

  async function info(c: Conn, section: string): Promise<string> {
    try {
      return String(await c.send(["INFO", section]));
    } catch (err) {
      throw commandError(err, `INFO ${section}`);
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // rdb mode: the server's own snapshot, as a replica would receive it.

  function cliArgs(): string[] {
    const a = opts.socket ? ["-s", opts.socket] : ["-h", host, "-p", String(port)];
    if (opts.username) a.push("--user", opts.username);
    if (useTls) {
      a.push("--tls");
      if (opts.tls_ca) a.push("--cacert", opts.tls_ca);
      if (opts.tls_cert) a.push("--cert", opts.tls_cert);
      if (opts.tls_key) a.push("--key", opts.tls_key);
      if (opts.tls_insecure) a.push("--insecure");
      if (!opts.socket && !isIP(host)) a.push("--sni", host);
    }
    return a;
  }

  const explainCli = (stderr: string): { hint?: string; retryable?: boolean; code?: "CONNECTION_FAILED" } | undefined => {
    if (/WRONGPASS|NOAUTH|AUTH failed|invalid password/i.test(stderr)) return { code: "CONNECTION_FAILED", hint: AUTH_HINT };
    if (/NOPERM/.test(stderr)) return { code: "CONNECTION_FAILED", hint: "an rdb backup needs the ACL user to run SYNC and REPLCONF (+sync +replconf), or use mode: logical" };
    if (/SSL|TLS|certificate/i.test(stderr)) return { code: "CONNECTION_FAILED", hint: TLS_HINT };
    if (/Connection refused|Could not connect|Name or service not known|timed out|Connection reset|I\/O error|Error reading/i.test(stderr)) {
      return { code: "CONNECTION_FAILED", hint: REACH_HINT, retryable: true };
    }
    return undefined;
  };

  async function cliVersion(cli: string): Promise<string> {
    return (await runTool(cli, ["--version"])).trim().replace(/^redis-cli\s+/, "");
  }

  async function dumpRdb(out: PassThrough, dopts: DumpOptions): Promise<DumpResult> {
    const cli = await resolveTool("redis-cli", opts.bin_dir);
    const version = await cliVersion(cli);
    if (opts.db !== undefined) dopts.log.warn({ db: opts.db }, "db is ignored in rdb mode: the snapshot holds every database (use mode: logical for one)");
    const { serverVersion, tables } = await withConn(async (c) => {
      const server = parseInfo(await info(c, "server"));
      return { serverVersion: server.get("redis_version") ?? "", tables: keyspaceTables(await info(c, "keyspace")) };
    });
    const secret = password();
    const t = spawnTool(cli, [...cliArgs(), "--rdb", "-"], {
      env: minimalEnv({ REDISCLI_AUTH: secret?.reveal() }),
      signal: dopts.signal, timeoutMs, context: where, explain: explainCli,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const check = new RdbCheck({ eofMark: true, code: "ENGINE_FAILED", what: `the snapshot from ${where}` });
    // pipeline() destroys redis-cli's stdout when the check fails, so that redis-cli stops instead of blocking.
    const checked = pipeline(t.child.stdout as Readable, check);
    const verdict = Promise.allSettled([checked, t.done]).then(([piping, tool]) => {
      // redis-cli's own failure (lost connection, auth, a kill) explains a truncated snapshot better than the
      // check does; a SIGPIPE after the check rejected the data explains nothing.
      if (tool.status === "rejected" && !/killed by SIGPIPE/.test((tool.reason as Error).message)) throw tool.reason;
      if (piping.status === "rejected") throw piping.reason;
      if (tool.status === "rejected") throw tool.reason;
    });
    verdict.catch(() => undefined);
    // pipe() does not forward the check's error: the stream fails once, with the verdict's error.
    const body = new PassThrough();
    check.pipe(body);
    // A reader that goes away early (a failed store) must stop redis-cli, which would otherwise block on its pipe.
    body.once("close", () => {
      if (!check.readableEnded) (t.child.stdout as Readable).destroy();
    });
    const gated = endAfter(body, verdict);
    gated.on("error", (e) => out.destroy(e));
    gated.pipe(out);
    await verdict;
    dopts.log.debug({ rdb_version: check.info?.version, bytes: check.info?.bytes }, "RDB snapshot checked");
    if (check.info && !check.info.checksummed) dopts.log.warn("the server writes RDB files without a checksum (rdbchecksum no): only the snapshot's framing was checked");
    return { tool: { name: "redis-cli", version }, serverVersion, tables };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // logical mode: DUMP + PTTL of every key, written as RESTORE commands.

  async function dumpLogical(out: PassThrough, dopts: DumpOptions): Promise<DumpResult> {
    const stop = new AbortController();
    let timedOut = false;
    const timer = timeoutMs ? setTimeout(() => ((timedOut = true), stop.abort()), timeoutMs) : undefined;
    timer?.unref();
    const onAbort = () => stop.abort();
    dopts.signal.addEventListener("abort", onAbort, { once: true });
    const write = writer(out);
    let c: Conn | undefined;
    try {
      c = await connect();
      const conn = c;
      stop.signal.addEventListener("abort", () => conn.close(), { once: true });
      const server = parseInfo(await info(c, "server"));
      const serverVersion = server.get("redis_version") ?? "";
      const keyspace = parseKeyspace(await info(c, "keyspace"));
      const dbs = opts.db !== undefined ? [opts.db] : [...keyspace.keys()].sort((a, b) => a - b);
      await write(encodeCommand(["ECHO", LOGICAL_HEADER]));
      if (opts.db === undefined && Number.parseInt(serverVersion, 10) >= 7) {
        // Function libraries belong to the server, not to a database: only a dump of every database carries them.
        const libs = await c.send(["FUNCTION", "LIST"]).catch((err: unknown) => {
          dopts.log.warn({ err: (err as Error).message }, "function libraries are not backed up: FUNCTION LIST failed");
          return [];
        });
        if (Array.isArray(libs) && libs.length > 0) {
          const payload = await c.send(["FUNCTION", "DUMP"]).catch((err: unknown) => {
            throw commandError(err, "FUNCTION DUMP");
          });
          await write(encodeCommand(["FUNCTION", "RESTORE", payload as Buffer]));
        }
      }
      const tables: TableInfo[] = [];
      let total = 0;
      for (const db of dbs) {
        await c.send(["SELECT", String(db)]).catch((err: unknown) => {
          const e = commandError(err, `SELECT ${db}`);
          throw /out of range/i.test(e.message) ? new DbkeepError("USAGE", `database ${db} does not exist on the Redis server at ${where}`, { hint: "check the datasource's db (the server's `databases` setting limits it)" }) : e;
        });
        await write(encodeCommand(["SELECT", String(db)]));
        const n = await dumpDatabase(c, write, stop.signal);
        tables.push({ name: `db${db}`, rows: n });
        total += n;
        dopts.log.debug({ db, keys: n }, "database dumped");
      }
      await write(encodeCommand(["ECHO", `${LOGICAL_TRAILER}${total}`]));
      out.end();
      return { tool: { name: "dbkeep-redis-logical", version: "1" }, serverVersion, tables };
    } catch (err) {
      if (timedOut) {
        throw new DbkeepError("TIMEOUT", `the logical dump of Redis at ${where} timed out after ${opts.timeout}s`, { hint: "raise the datasource's timeout (seconds)", retryable: true });
      }
      if (dopts.signal.aborted) throw new DbkeepError("ABORTED", `the logical dump of Redis at ${where} was stopped`);
      throw commandError(err, "the logical dump");
    } finally {
      if (timer) clearTimeout(timer);
      dopts.signal.removeEventListener("abort", onAbort);
      c?.close();
    }
  }

  /** Every key of the selected database; returns how many were written. */
  async function dumpDatabase(c: Conn, write: (b: Buffer) => Promise<void>, signal: AbortSignal): Promise<number> {
    // SCAN may return a key twice while the server resizes its table. Up to a million keys per database they are
    // remembered so that the dump holds each once; beyond that memory would grow with the database, so a rare
    // duplicate is written twice instead (a restore's REPLACE makes the later copy win).
    const seen = new Set<string>();
    const SEEN_MAX = 1_000_000;
    let cursor = "0";
    let written = 0;
    let inFlight = 4;
    const pending: Promise<Buffer[]>[] = [];
    const flush = async (keep: number) => {
      while (pending.length > keep) {
        const parts = await pending.shift()!;
        const size = parts.reduce((s, p) => s + p.length, 0);
        // Large values: fewer batches in flight, so memory stays near one batch.
        inFlight = size > 16 * 1024 * 1024 ? 1 : 4;
        if (parts.length) await write(Buffer.concat(parts));
      }
    };
    do {
      signal.throwIfAborted();
      const reply = (await c.send(["SCAN", cursor, "COUNT", "1000"])) as [Buffer, Buffer[]];
      cursor = reply[0].toString("latin1");
      const keys: Buffer[] = [];
      for (const k of reply[1]) {
        if (seen.size < SEEN_MAX) {
          const id = k.toString("latin1");
          if (seen.has(id)) continue;
          seen.add(id);
        }
        keys.push(k);
      }
      for (let i = 0; i < keys.length; i += BATCH) {
        const batch = keys.slice(i, i + BATCH);
        const sent = [c.send(["MULTI"])];
        for (const k of batch) sent.push(c.send(["DUMP", k]), c.send(["PTTL", k]));
        const exec = c.send(["EXEC"]);
        pending.push(
          Promise.all([...sent, exec]).then(([, ...replies]) => {
            const results = replies[replies.length - 1] as unknown[];
            const parts: Buffer[] = [];
            batch.forEach((k, j) => {
              const payload = results[2 * j];
              const pttl = Number(results[2 * j + 1]);
              if (payload instanceof Error) throw payload;
              // Gone (expired or deleted) since SCAN saw it, or expiring this very millisecond: not in the dump.
              if (!Buffer.isBuffer(payload) || pttl === -2 || pttl === 0) return;
              parts.push(encodeCommand(["RESTORE", k, String(pttl > 0 ? pttl : 0), payload]));
              written++;
            });
            return parts;
          }),
        );
        pending[pending.length - 1]!.catch(() => undefined);
        await flush(inFlight);
      }
    } while (cursor !== "0");
    await flush(0);
    return written;
  }

  function dump(dopts: DumpOptions): Dump {
    return startDump((out) => (mode === "rdb" ? dumpRdb(out, dopts) : dumpLogical(out, dopts)));
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Target side.

  async function inspectTarget(): Promise<TargetState> {
    let c: Conn;
    try {
      c = await connect({ connectTimeoutMs: opts.rdb_path ? 3000 : 10_000 });
    } catch (err) {
      // A stopped server is the usual state for an RDB restore: then the file is what gets replaced.
      if (opts.rdb_path && err instanceof DbkeepError && err.retryable) {
        const st = await stat(resolve(opts.rdb_path)).catch(() => undefined);
        return st ? { exists: true, objects: [`RDB file ${resolve(opts.rdb_path)} (${st.size} bytes)`] } : { exists: false, objects: [] };
      }
      throw err;
    }
    try {
      const keyspace = parseKeyspace(await info(c, "keyspace"));
      const dbs = opts.db !== undefined ? [opts.db] : [...keyspace.keys()].sort((a, b) => a - b);
      const objects: string[] = [];
      for (const db of dbs) {
        const n = keyspace.get(db) ?? 0;
        if (n === 0) continue;
        await c.send(["SELECT", String(db)]);
        const [, keys] = (await c.send(["SCAN", "0", "COUNT", "50"])) as [Buffer, Buffer[]];
        const names = keys.slice(0, 5).map((k) => printable(k, 40));
        objects.push(`db${db}: ${n} key${n === 1 ? "" : "s"}${names.length ? ` (${names.join(", ")}${n > names.length ? ", ..." : ""})` : ""}`);
      }
      return { exists: true, objects };
    } catch (err) {
      throw commandError(err, "the inspection of the target");
    } finally {
      c.close();
    }
  }

  async function restore(input: Readable, ropts: RestoreOptions): Promise<void> {
    if (ropts.format === "rdb") return restoreRdb(input, ropts);
    if (ropts.format === "logical") return restoreLogical(input, ropts);
    throw new DbkeepError("USAGE", `redis cannot restore a backup in format "${ropts.format}"`);
  }

  /**
   * An RDB snapshot is loaded by a server only when it starts: the verified file is written beside rdb_path,
   * fsynced and renamed over it, and the user is told to restart the server.
   */
  async function restoreRdb(input: Readable, ropts: RestoreOptions): Promise<void> {
    if (!opts.rdb_path) {
      input.destroy();
      throw new DbkeepError("USAGE", `this backup is an RDB snapshot, and the target datasource (${where}) has no rdb_path`, {
        hint: "rdb backups are restored by a server restart: set rdb_path, or back up with mode: logical for online restore",
      });
    }
    const path = resolve(opts.rdb_path);
    const dir = dirname(path);
    const dirStat = await stat(dir).catch(() => undefined);
    if (!dirStat?.isDirectory()) {
      input.destroy();
      throw new DbkeepError("USAGE", `the directory of rdb_path ${path} does not exist`, { hint: "set rdb_path to the server's dir and dbfilename (CONFIG GET dir, CONFIG GET dbfilename)" });
    }
    const server = await serverFiles();
    if (server?.file && server.file !== path) {
      ropts.log.warn({ rdb_path: path, server_file: server.file }, `the server at ${where} loads ${server.file} at start, not ${path}`);
    }
    if (server?.aof) {
      ropts.log.warn(`the server at ${where} has appendonly yes: at start it loads its AOF, not the RDB; turn appendonly off for the restart that loads the snapshot`);
    }
    const tmp = join(dir, `.${basename(path)}.dbkeep-partial-${randomBytes(6).toString("hex")}`);
    try {
      const check = new RdbCheck({ code: "CORRUPT_BACKUP", what: "the backup" });
      await pipeline(input, check, createWriteStream(tmp, { flags: "wx", mode: 0o600 }), { signal: ropts.signal });
      await fsyncPath(tmp, "r+");
      await matchOwner(tmp, path, dir);
      await rename(tmp, path);
      await fsyncPath(dir);
      ropts.log.info(
        { rdb_path: path, bytes: check.info?.bytes, rdb_version: check.info?.version },
        `wrote the RDB snapshot to ${path}; the server loads it only when it starts: stop it without saving (redis-cli SHUTDOWN NOSAVE, so that it does not overwrite the file) and start it again`,
      );
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  /** Where a reachable target server reads its RDB from, and whether it loads an AOF instead; undefined if unknown. */
  async function serverFiles(): Promise<{ file?: string; aof: boolean } | undefined> {
    try {
      return await withConn(async (c) => {
        const get = async (name: string) => {
          const r = (await c.send(["CONFIG", "GET", name])) as Buffer[];
          return r[1]?.toString("utf8");
        };
        const [dir, file, aof] = [await get("dir"), await get("dbfilename"), await get("appendonly")];
        return { ...(dir && file ? { file: resolve(dir, file) } : {}), aof: aof === "yes" };
      }, { connectTimeoutMs: 3000 });
    } catch {
      return undefined;
    }
  }

  /**
   * A logical restore replays commands into a live server, and Redis has no transaction that could undo a
   * half-applied restore. So the backup is first written to a private temporary file while it is checked (RESP
   * framing, every payload's CRC-64, the end marker); the stream's clean end means its SHA-256 matched too. Only
   * then is the file replayed, with pipelining: a damaged backup never reaches the target, and memory holds at most
   * a window of commands, never the backup.
   */
  async function restoreLogical(input: Readable, ropts: RestoreOptions): Promise<void> {
    const scratch = await makeTempDir("redis-restore");
    try {
      const file = join(scratch, "dump.resp");
      const reader = new RespReader();
      const check = new LogicalCheck();
      const validate = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          try {
            for (const cmd of reader.push(chunk)) check.command(cmd);
            cb(null, chunk);
          } catch (err) {
            cb(err as Error);
          }
        },
        flush(cb) {
          try {
            reader.end();
            check.end();
            cb();
          } catch (err) {
            cb(err as Error);
          }
        },
      });
      await pipeline(input, validate, createWriteStream(file, { mode: 0o600 }), { signal: ropts.signal });
      const summary = check.summary;
      const target = dbMapping(summary);
      await replay(file, summary, target, ropts);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }

  /** Which database each of the backup's databases goes to: the same number, or the target's db for a one-database backup. */
  function dbMapping(summary: LogicalSummary): (db: number) => number {
    if (opts.db === undefined) return (db) => db;
    const dbs = [...summary.databases.keys()];
    if (dbs.length > 1) {
      throw new DbkeepError("USAGE", `the backup holds databases ${dbs.join(", ")}; the target datasource's db: ${opts.db} takes a backup of one database only`, {
        hint: "remove db from the target datasource to restore every database under its own number",
      });
    }
    const target = opts.db;
    return () => target;
  }

  async function replay(file: string, summary: LogicalSummary, mapDb: (db: number) => number, ropts: RestoreOptions): Promise<void> {
    const stop = new AbortController();
    let timedOut = false;
    const timer = timeoutMs ? setTimeout(() => ((timedOut = true), stop.abort()), timeoutMs) : undefined;
    timer?.unref();
    const onAbort = () => stop.abort();
    ropts.signal.addEventListener("abort", onAbort, { once: true });
    let restored = 0;
    let current: number | undefined;
    let conn: Conn | undefined;
    try {
      const c = (conn = await connect());
      stop.signal.addEventListener("abort", () => c.close(), { once: true });
      // Every target database is selected once before the first write, so that a missing one fails the restore
      // while the target is still untouched.
      for (const db of summary.databases.keys()) {
        await c.send(["SELECT", String(mapDb(db))]).catch((err: unknown) => {
          const e = commandError(err, `SELECT ${mapDb(db)}`);
          throw /out of range/i.test(e.message)
            ? new DbkeepError("USAGE", `the target Redis at ${where} has no database ${mapDb(db)}`, { hint: "raise the target server's `databases` setting, or set db on the target datasource for a one-database backup" })
            : e;
        });
      }
      const reader = new RespReader();
      const pending: { done: Promise<void>; bytes: number }[] = [];
      let inFlightBytes = 0;
      let failure: DbkeepError | undefined;
      const send = (args: (string | Buffer)[], what: string) => {
        const bytes = args.reduce((s, a) => s + a.length, 0);
        const done = c.send(args).then(
          () => undefined,
          (err: unknown) => {
            failure ??= restoreError(err, what, restored);
          },
        );
        pending.push({ done, bytes });
        inFlightBytes += bytes;
      };
      const drainTo = async (commands: number, bytes: number) => {
        while (pending.length > commands || (pending.length > 0 && inFlightBytes > bytes)) {
          const p = pending.shift()!;
          await p.done;
          inFlightBytes -= p.bytes;
          if (failure) throw failure;
        }
      };
      for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
        for (const cmd of reader.push(chunk as Buffer)) {
          const name = cmd[0]!.toString("latin1").toUpperCase();
          if (name === "ECHO") continue;
          if (name === "SELECT") {
            current = mapDb(Number(cmd[1]!.toString("latin1")));
            send(["SELECT", String(current)], `SELECT ${current}`);
          } else if (name === "RESTORE") {
            // Confirmed (or nothing to replace): keys the target already has are replaced by the backup's.
            send([...cmd, "REPLACE"], `RESTORE of key ${printable(cmd[1]!)} in db${current}`);
            restored++;
          } else if (name === "FUNCTION") {
            send(["FUNCTION", "RESTORE", cmd[2]!, "REPLACE"], "FUNCTION RESTORE of the function libraries");
          }
          await drainTo(WINDOW_COMMANDS, WINDOW_BYTES);
        }
        if (stop.signal.aborted) break;
      }
      await drainTo(0, 0);
      if (stop.signal.aborted) throw new Error("stopped");
      const dbs = [...summary.databases.keys()].map(mapDb);
      ropts.log.info({ keys: restored, databases: dbs }, `restored ${restored} keys into database${dbs.length === 1 ? "" : "s"} ${dbs.join(", ") || "(none)"} of ${where}`);
    } catch (err) {
      if (timedOut) {
        throw new DbkeepError("TIMEOUT", `the restore into Redis at ${where} timed out after ${opts.timeout}s, after ${restored} of ${summary.keys} keys`, { hint: "raise the datasource's timeout (seconds)" });
      }
      if (ropts.signal.aborted) throw new DbkeepError("ABORTED", `the restore into Redis at ${where} was stopped after ${restored} of ${summary.keys} keys`);
      throw err instanceof DbkeepError ? err : restoreError(err, "the restore", restored);
    } finally {
      if (timer) clearTimeout(timer);
      ropts.signal.removeEventListener("abort", onAbort);
      conn?.close();
    }

    function restoreError(err: unknown, what: string, done: number): DbkeepError {
      const e = commandError(err, what);
      const partial = done > 0 ? ` (${done} of ${summary.keys} keys were sent before it; the target holds them)` : "";
      let hint = e.hint;
      if (/payload version or checksum/i.test(e.message)) hint = "the target Redis is older than the source: DUMP payloads restore only into the same or a newer version (see server_version in the backup's manifest)";
      else if (/OOM/.test(e.message)) hint = "the target server reached maxmemory; raise it or free memory, then restore again";
      return new DbkeepError(e.code, `${e.message}${partial}`, { ...(hint ? { hint } : {}), retryable: false, cause: err });
    }
  }

  /** verify: true's structural check of a dump read back from the store. */
  async function checkDump(input: Readable, o: { format: string; signal: AbortSignal }): Promise<string> {
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    if (o.format === "rdb") {
      const check = new RdbCheck({ code: "CORRUPT_BACKUP", what: "the stored snapshot" });
      await pipeline(input, check, sink, { signal: o.signal });
      const i = check.info!;
      return `RDB version ${i.version}, ${i.bytes} bytes${i.checksummed ? ", CRC-64 ok" : " (written without a checksum)"}`;
    }
    const reader = new RespReader();
    const check = new LogicalCheck();
    for await (const chunk of input) for (const cmd of reader.push(chunk as Buffer)) check.command(cmd);
    reader.end();
    const s = check.end();
    return `logical dump of ${s.keys} keys in ${s.databases.size} database${s.databases.size === 1 ? "" : "s"}, every payload's CRC-64 ok`;
  }

  /** Tools, server version and whether the ACL lets this user run what a dump needs. */
  async function doctor(): Promise<DoctorFinding[]> {
    const out: DoctorFinding[] = [];
    if (mode === "rdb") {
      try {
        const cli = await resolveTool("redis-cli", opts.bin_dir);
        out.push({ level: "ok", message: `redis-cli ${await cliVersion(cli)} (${cli})` });
      } catch (err) {
        const e = err as DbkeepError;
        out.push({ level: "error", message: e.message, ...(e.hint ? { hint: e.hint } : {}) });
      }
    }
    try {
      await withConn(async (c) => {
        const version = parseInfo(await info(c, "server")).get("redis_version") ?? "?";
        out.push({ level: "ok", message: `server Redis ${version} at ${where}` });
        const denied = async (args: string[]): Promise<string | undefined> => {
          try {
            await c.send(args);
            return undefined;
          } catch (err) {
            const msg = (err as Error).message;
            return /NOPERM|no permissions/i.test(msg) ? msg : undefined;
          }
        };
        // Harmless probes: SCAN one step, DUMP of a key that does not exist.
        for (const [cmd, args] of [["SCAN", ["SCAN", "0", "COUNT", "1"]], ["DUMP", ["DUMP", "dbkeep:doctor:probe"]]] as const) {
          const no = await denied([...args]);
          if (no) out.push({ level: mode === "logical" ? "error" : "warn", message: `the ACL user cannot run ${cmd}: ${no}`, hint: `${mode === "logical" ? "a logical backup" : "mode: logical"} needs +${cmd.toLowerCase()} (and ~* keys)` });
          else out.push({ level: "ok", message: `${cmd} allowed` });
        }
        if (mode === "rdb") {
          // SYNC cannot be probed without starting a transfer: ask the ACL instead (Redis 7+).
          let user = opts.username ?? "default";
          try {
            user = String(await c.send(["ACL", "WHOAMI"]));
          } catch {
            // servers before Redis 6 have no ACL; the configured name is as good
          }
          for (const cmd of ["SYNC", "PSYNC"]) {
            try {
              const r = String(await c.send(["ACL", "DRYRUN", user, cmd, ...(cmd === "PSYNC" ? ["?", "-1"] : [])]));
              if (r === "OK") out.push({ level: "ok", message: `${cmd} allowed` });
              else out.push({ level: "error", message: `the ACL user ${user} cannot run ${cmd}: ${r}`, hint: "an rdb backup needs +sync +psync +replconf, or use mode: logical" });
            } catch (err) {
              out.push({ level: "warn", message: `cannot check ${cmd} permission: ${(err as Error).message}`, hint: "ACL DRYRUN needs Redis 7 and +acl; an rdb backup needs +sync +replconf" });
            }
          }
        }
      });
    } catch (err) {
      const e = err as DbkeepError;
      out.push({ level: "error", message: e.message, ...(e.hint ? { hint: e.hint } : {}) });
    }
    return out;
  }

  return {
    name: "redis",
    tools: mode === "rdb" ? ["redis-cli"] : [],
    format: mode,
    extension: EXT[mode]!,
    database,
    source: () => ({
      engine: "redis",
      database,
      ...(opts.socket ? { path: opts.socket } : { host, port }),
      ...(opts.username ? { user: opts.username } : {}),
    }),
    doctor,
    async check() {
      const tools: Record<string, string> = {};
      if (mode === "rdb") tools["redis-cli"] = await cliVersion(await resolveTool("redis-cli", opts.bin_dir));
      const version = await withConn(async (c) => parseInfo(await info(c, "server")).get("redis_version"));
      return { tools, ...(version ? { server: `Redis ${version}` } : {}) };
    },
    dump,
    inspectTarget,
    restore,
    canRestore: (f) => f in EXT,
    checkDump,
  };
}

/** `redis-<host>-<port>` (or `redis-<socket path>`), with `-db<n>` for a logical dump of one database. */
function defaultName(opts: RedisEngineOptions, mode: string): string {
  const clean = (s: string) => s.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^-+|-+$/g, "");
  const name = opts.socket ? `redis-${clean(opts.socket)}` : `redis-${clean(opts.host ?? "127.0.0.1")}-${opts.port ?? 6379}`;
  return mode === "logical" && opts.db !== undefined ? `${name}-db${opts.db}` : name;
}

function parseInfo(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) out.set(line.slice(0, i), line.slice(i + 1));
  }
  return out;
}

/** INFO keyspace: `db0:keys=12,expires=1,avg_ttl=0` -> 0 => 12. */
function parseKeyspace(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const [k, v] of parseInfo(text)) {
    const db = /^db(\d+)$/.exec(k)?.[1];
    const keys = /(?:^|,)keys=(\d+)/.exec(v)?.[1];
    if (db !== undefined && keys !== undefined) out.set(Number(db), Number(keys));
  }
  return out;
}

function keyspaceTables(text: string): TableInfo[] {
  return [...parseKeyspace(text)].sort(([a], [b]) => a - b).map(([db, keys]) => ({ name: `db${db}`, rows: keys }));
}

/** Writes with backpressure; rejects when the reader went away. */
function writer(out: PassThrough): (buf: Buffer) => Promise<void> {
  return (buf) => {
    if (out.destroyed) return Promise.reject(out.errored ?? new DbkeepError("ABORTED", "the dump's reader went away"));
    if (out.write(buf)) return Promise.resolve();
    return new Promise<void>((resolveWrite, reject) => {
      const done = (err?: Error) => {
        out.off("drain", onDrain);
        out.off("close", onClose);
        if (err) reject(err);
        else resolveWrite();
      };
      const onDrain = () => done();
      const onClose = () => done(out.errored ?? new DbkeepError("ABORTED", "the dump's reader went away"));
      out.on("drain", onDrain);
      out.on("close", onClose);
    });
  };
}

/**
 * Gives a restored file the owner and mode of the file it replaces (or the directory's owner for a new file), so
 * that a server running as its own user (redis) can read what a restore run as root wrote.
 */
async function matchOwner(tmp: string, path: string, dir: string): Promise<void> {
  const old = await stat(path).catch(() => undefined);
  const ref = old ?? (await stat(dir));
  if (old) await chmod(tmp, old.mode & 0o777);
  if (process.getuid?.() === 0 && (ref.uid !== 0 || ref.gid !== 0)) await chown(tmp, ref.uid, ref.gid);
}

export default createRedisEngine;
