import { spawn } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DbkeepError } from "../../core/errors.js";
import { minimalEnv, resolveTool, runTool } from "../../core/subprocess.js";
import type { Catalog, EngineVerifier, ScratchOptions, ScratchTarget } from "../../verify/engine.js";
import type { CheckResult } from "../../verify/report.js";
import { killLeftoverServer, markDirKept, removeDeadScratchDirs, scratchDirName } from "../../verify/scratch.js";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

interface TempServer {
  port: number;
  stop(): Promise<void>;
}

/**
 * A private redis-server on a free loopback port, its files in the scratch dir: no persistence of its own, no
 * password (it listens on 127.0.0.1 only, and only for the verification). Not a child that dies with dbkeep:
 * a killed run's server is found by the pid file in its directory and stopped by the next run.
 */
async function startServer(dir: string, o: { binDir?: string | undefined; databases: number; signal: AbortSignal }): Promise<TempServer> {
  const bin = await resolveTool("redis-server", o.binDir);
  const cli = await resolveTool("redis-cli", o.binDir);
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--daemonize", "no", "--pidfile", join(dir, "redis.pid"), "--databases", String(o.databases), "--loglevel", "warning", "--logfile", join(dir, "redis.log")];
  const child = spawn(bin, args, { stdio: "ignore", env: minimalEnv(), detached: true });
  child.unref();
  let exited = false;
  child.once("exit", () => (exited = true));
  for (let i = 0; ; i++) {
    o.signal.throwIfAborted();
    if (exited) {
      const { readFile } = await import("node:fs/promises");
      const log = await readFile(join(dir, "redis.log"), "utf8").catch(() => "");
      throw new DbkeepError("ENGINE_FAILED", "the scratch redis-server did not start (it could not load the backup?)", { details: log.trim().split("\n").slice(-5).join("\n") });
    }
    try {
      const pong = await runTool(cli, ["-h", "127.0.0.1", "-p", String(port), "PING"], { env: minimalEnv() });
      if (/PONG/.test(pong)) break;
      // LOADING: the server is still reading the RDB.
    } catch {
      // not listening yet
    }
    if (i > 600) throw new DbkeepError("TIMEOUT", "the scratch redis-server did not answer within 60 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    async stop() {
      if (!exited) {
        child.kill("SIGKILL");
        for (let i = 0; i < 50 && !exited; i++) await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

function keyspace(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^db(\d+):keys=(\d+)/.exec(line);
    if (m) out.set(Number(m[1]), Number(m[2]));
  }
  return out;
}

export const redisVerifier: EngineVerifier = {
  async prepare(o: ScratchOptions): Promise<ScratchTarget> {
    if (o.cluster) throw new DbkeepError("USAGE", "scratch_cluster is for PostgreSQL; Redis backups are verified in a temporary redis-server");
    const dir = join(tmpdir(), scratchDirName("redis"));
    await mkdir(dir, { mode: 0o700 });
    const binDir = o.options.bin_dir as string | undefined;
    const maxDb = Math.max(15, ...(o.manifest.tables ?? []).map((t) => Number(/^db(\d+)$/.exec(t.name)?.[1] ?? 0)));
    const start = () => startServer(dir, { binDir, databases: maxDb + 1, signal: o.signal });
    let server: TempServer | undefined;
    const rdb = o.manifest.format === "rdb";
    // An RDB is loaded by a server that starts on it; a logical backup is replayed into a running, empty one.
    if (!rdb) server = await start();
    const cli = async (...args: string[]) => {
      if (!server) throw new DbkeepError("INTERNAL", "the scratch redis-server is not running");
      return runTool(await resolveTool("redis-cli", binDir), ["-h", "127.0.0.1", "-p", String(server.port), ...args], { env: minimalEnv() });
    };
    const base = { engine: "redis", host: "127.0.0.1", name: o.manifest.database, ...(binDir ? { bin_dir: binDir } : {}) };
    return {
      kind: "server",
      name: dir,
      get where() {
        return `temporary redis-server${server ? ` on 127.0.0.1:${server.port}` : ""} (${dir})`;
      },
      datasource: rdb ? { ...base, port: 1, mode: "rdb", rdb_path: join(dir, "dump.rdb") } : { ...base, port: server!.port, mode: "logical" },
      async afterRestore() {
        if (rdb) server = await start();
      },
      async catalog(): Promise<Catalog> {
        const ks = keyspace(await cli("INFO", "keyspace"));
        return { tables: [...ks].sort(([a], [b]) => a - b).map(([db, keys]) => ({ name: `db${db}`, rows: keys })), objects: {} };
      },
      async integrity(): Promise<CheckResult> {
        const ks = keyspace(await cli("INFO", "keyspace"));
        const differ: string[] = [];
        for (const [db, keys] of ks) {
          const n = Number((await cli("-n", String(db), "DBSIZE")).trim());
          if (n !== keys) differ.push(`db${db}: DBSIZE ${n}, keyspace ${keys}`);
        }
        if (differ.length) return { name: "integrity", status: "FAIL", detail: differ.join("; ") };
        const total = [...ks.values()].reduce((a, b) => a + b, 0);
        return { name: "integrity", status: "PASS", detail: `${rdb ? "the RDB loaded (CRC-64 checked by the server); " : ""}${total} key(s) in ${ks.size} database(s)` };
      },
      env: (): Record<string, string> => (server ? { REDIS_URL: `redis://127.0.0.1:${server.port}`, REDIS_HOST: "127.0.0.1", REDIS_PORT: String(server.port) } : {}),
      async drop() {
        await server?.stop();
        await rm(dir, { recursive: true, force: true });
      },
      keep: () => markDirKept(dir),
    };
  },
  async cleanupLeftovers() {
    return removeDeadScratchDirs("redis", (dir) => killLeftoverServer(join(dir, "redis.pid"), /redis-server/));
  },
};
