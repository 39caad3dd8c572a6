import { createWriteStream } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DbkeepError, type ErrorCode } from "../../core/errors.js";
import type { Secret } from "../../core/redact.js";
import { endAfter } from "../../core/streams.js";
import { minimalEnv, resolveTool, runTool, spawnTool } from "../../core/subprocess.js";
import { startDump } from "../dump.js";
import type { Dump, DumpOptions, Engine, RestoreOptions, TargetState } from "../engine.js";
import type { MongodbDatasource } from "./schema.js";
import { privateDir } from "../../core/private-dir.js";

export type MongodbEngineOptions = Omit<
  MongodbDatasource,
  "engine" | "uri" | "uri_env" | "uri_file" | "password" | "password_env" | "password_file" | "compression" | "compression_level"
> & {
  /** Resolved on first use, so that listing backups needs neither secret. */
  uri?: () => Secret | undefined;
  password?: () => Secret | undefined;
};

/** mongodump --archive: one self-describing stream of every collection dumped. */
const FORMAT = "archive";
const ALL = "all-databases";

interface Session {
  dir: string;
  /** The tools' --config file (0600): the only place the password and the URI are written. */
  config: string;
  close(): Promise<void>;
}

export function createMongodbEngine(opts: MongodbEngineOptions): Engine {
  const binDir = opts.bin_dir;
  const layoutName = opts.database ?? ALL;
  const timeoutMs = opts.timeout ? opts.timeout * 1000 : undefined;
  const server = opts.host ? `host ${opts.host}${opts.port ? `, port ${opts.port}` : ""}` : "the deployment of the datasource's uri";
  const explain = (stderr: string) => explainMongoError(stderr);

  /** A private directory (0700) with the config file (0600); close() removes both, and anything put beside them. */
  async function openSession(): Promise<Session> {
    const lines: string[] = [];
    const uri = opts.uri?.();
    const pw = opts.password?.();
    if (uri) lines.push(`uri: ${yamlString(uri.reveal())}`);
    if (pw) lines.push(`password: ${yamlString(pw.reveal())}`);
    const priv = await privateDir("dbkeep-mongo-", { "tool.yaml": lines.join("\n") + "\n" });
    return { ...priv, config: join(priv.dir, "tool.yaml") };
  }

  async function withSession<T>(fn: (s: Session) => Promise<T>): Promise<T> {
    const s = await openSession();
    try {
      return await fn(s);
    } finally {
      await s.close();
    }
  }

  function connArgs(s: Session): string[] {
    return [
      `--config=${s.config}`,
      ...(opts.host ? [`--host=${opts.host}`] : []),
      ...(opts.port ? [`--port=${opts.port}`] : []),
      ...(opts.user ? [`--username=${opts.user}`] : []),
      ...(opts.auth_db ? [`--authenticationDatabase=${opts.auth_db}`] : []),
    ];
  }

  async function toolVersion(path: string): Promise<string> {
    const out = await runTool(path, ["--version"], { env: minimalEnv() });
    return /version:?\s*v?([0-9][^\s]*)/i.exec(out)?.[1] ?? out.trim().split("\n")[0] ?? "";
  }

  function dump(dopts: DumpOptions): Dump {
    return startDump(async (out) => {
      const mongodump = await resolveTool("mongodump", binDir);
      const version = await toolVersion(mongodump);
      await withSession(async (s) => {
        // No --gzip: dbkeep compresses the stream itself, with the datasource's compression.
        const args = dumpArgs(connArgs(s), opts);
        const { child, done } = spawnTool(mongodump, args, {
          env: minimalEnv(), signal: dopts.signal, timeoutMs, context: `${server}, database ${layoutName}`, explain,
          stdio: ["ignore", "pipe", "pipe"],
        });
        endAfter(child.stdout as Readable, done, out);
        await done;
      });
      return { tool: { name: "mongodump", version } };
    });
  }

  /**
   * Without a MongoDB driver or mongosh dbkeep cannot list the target's collections. mongorestore --drop replaces
   * the collections the archive holds (others stay), so the restore is always confirmed first: --drop must never
   * run without a yes.
   */
  async function inspectTarget(): Promise<TargetState> {
    const where = opts.database ?? "the databases in the backup";
    return { exists: true, objects: [`${where}: every collection in the backup is dropped and replaced (the target's collections are not listed)`] };
  }

  /**
   * The verified stream is materialised into a private temp file first: mongorestore reading from stdin would
   * already have dropped and rewritten collections when a damaged byte at the end fails the checksum.
   */
  async function restore(input: Readable, ropts: RestoreOptions): Promise<void> {
    if (ropts.format !== FORMAT) throw new DbkeepError("USAGE", `the mongodb engine cannot restore a ${ropts.format} backup`);
    const mongorestore = await resolveTool("mongorestore", binDir);
    await withSession(async (s) => {
      const archive = join(s.dir, "dump.archive");
      await pipeline(input, createWriteStream(archive, { mode: 0o600, flags: "wx" }), { signal: ropts.signal });
      const src = ropts.sourceDatabase && ropts.sourceDatabase !== ALL ? ropts.sourceDatabase : undefined;
      const target = opts.database;
      let rename: string[] = [];
      if (src && target && src !== target) rename = [`--nsFrom=${src}.*`, `--nsTo=${target}.*`];
      else if (!src && target) ropts.log.warn({ target }, "the backup holds every database; they are restored under their own names");
      const args = [...connArgs(s), `--archive=${archive}`, ...rename, "--drop"];
      await spawnTool(mongorestore, args, {
        env: minimalEnv(), signal: ropts.signal, timeoutMs, context: `${server}, database ${target ?? src ?? ALL}`, explain,
        stdio: ["ignore", "ignore", "pipe"],
      }).done;
    });
  }

  return {
    name: "mongodb",
    tools: ["mongodump", "mongorestore"],
    format: FORMAT,
    extension: ".archive",
    database: layoutName,
    source: () => ({
      engine: "mongodb",
      database: layoutName,
      ...(opts.host ? { host: opts.host } : {}),
      ...(opts.port ? { port: opts.port } : {}),
      ...(opts.user ? { user: opts.user } : {}),
    }),
    async check() {
      const tools: Record<string, string> = {};
      for (const t of ["mongodump", "mongorestore"]) tools[t] = await toolVersion(await resolveTool(t, binDir));
      return { tools };
    },
    dump,
    inspectTarget,
    restore,
    canRestore: (f) => f === FORMAT,
  };
}

/** A YAML double-quoted scalar: JSON's escapes are a subset of YAML's. */
function yamlString(value: string): string {
  return JSON.stringify(value);
}

export function explainMongoError(stderr: string): { hint?: string; retryable?: boolean; code?: ErrorCode } | undefined {
  if (/Authentication failed|auth error|AuthenticationFailed/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "check the datasource's password (password_env / password_file), user and auth_db, or the credentials in its uri" };
  }
  if (/server selection error|connection refused|no reachable servers|connection\(\S*\) .*closed|i\/o timeout/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "is the MongoDB server running and reachable at that host and port (or the uri's hosts)?", retryable: true };
  }
  if (/not authorized|Unauthorized/i.test(stderr)) {
    return { code: "CONNECTION_FAILED", hint: "the user lacks a role the tool needs (backup for mongodump, restore for mongorestore)" };
  }
  return undefined;
}

export default createMongodbEngine;

/** mongodump's arguments after the connection's: what is dumped, as one archive on stdout. */
export function dumpArgs(conn: string[], o: Pick<MongodbEngineOptions, "database" | "oplog" | "parallel_collections">): string[] {
  return [
    ...conn,
    ...(o.database ? [`--db=${o.database}`] : []),
    ...(o.oplog ? ["--oplog"] : []),
    ...(o.parallel_collections !== undefined ? [`--numParallelCollections=${o.parallel_collections}`] : []),
    "--archive",
  ];
}
