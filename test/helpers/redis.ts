import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, RESP_TYPES } from "@redis/client";
import { IN_CI } from "./env.js";

/** Whether redis-server and redis-cli are installed; under CI their absence is a failure, not a skip. */
export function redisAvailable(): boolean {
  const ok = ["redis-server", "redis-cli"].every((t) => spawnSync(t, ["--version"]).status === 0);
  if (!ok && IN_CI) throw new Error("redis-server / redis-cli are not installed under CI (scripts/test-env.sh installs them)");
  return ok;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

export interface TestRedis {
  port: number;
  dir: string;
  password?: string;
  stop(): Promise<void>;
}

/**
 * A private redis-server on a free port with its own directory: no persistence unless a test loads a file, and no
 * delay before a diskless snapshot (the default 5 s would slow every rdb backup).
 */
export async function startRedis(o: { dir?: string; password?: string; args?: string[] } = {}): Promise<TestRedis> {
  const port = await freePort();
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), "dbkeep-redis-"));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no", "--daemonize", "no", "--repl-diskless-sync-delay", "0", "--loglevel", "warning"];
  if (o.password) args.push("--requirepass", o.password);
  args.push(...(o.args ?? []));
  const child: ChildProcess = spawn("redis-server", args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${stderr}`);
    try {
      await withRedis({ port, ...(o.password ? { password: o.password } : {}) }, (c) => c.sendCommand(["PING"]));
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    port,
    dir,
    ...(o.password ? { password: o.password } : {}),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
      if (!o.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Client = ReturnType<typeof makeClient>;

function makeClient(port: number, password?: string) {
  return createClient({
    RESP: 2,
    socket: { host: "127.0.0.1", port, reconnectStrategy: false, connectTimeout: 2000 },
    ...(password ? { password } : {}),
    commandOptions: { timeout: 0 },
    maintNotifications: "disabled",
  }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
}

export async function withRedis<T>(s: { port: number; password?: string }, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = makeClient(s.port, s.password);
  c.on("error", () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    c.destroy();
  }
}

const buf = (x: unknown) => x as Buffer;
const hex = (b: Buffer) => b.toString("hex");

/** Sends commands pipelined and returns their replies in order. */
async function all(c: Client, cmds: (string | Buffer)[][]): Promise<unknown[]> {
  return Promise.all(cmds.map((a) => c.sendCommand(a)));
}

async function scanAll(c: Client): Promise<Buffer[]> {
  const keys: Buffer[] = [];
  const seen = new Set<string>();
  let cursor = "0";
  do {
    const [next, batch] = (await c.sendCommand(["SCAN", cursor, "COUNT", "2000"])) as [Buffer, Buffer[]];
    cursor = next.toString();
    for (const k of batch) {
      if (seen.has(hex(k))) continue;
      seen.add(hex(k));
      keys.push(k);
    }
  } while (cursor !== "0");
  return keys.sort(Buffer.compare);
}

/** A canonical, DUMP-independent serialisation of one key's value. */
async function content(c: Client, key: Buffer, type: string): Promise<unknown> {
  switch (type) {
    case "string":
      return hex(buf(await c.sendCommand(["GET", key])));
    case "list":
      return ((await c.sendCommand(["LRANGE", key, "0", "-1"])) as Buffer[]).map(hex);
    case "set":
      return ((await c.sendCommand(["SMEMBERS", key])) as Buffer[]).sort(Buffer.compare).map(hex);
    case "zset":
      return ((await c.sendCommand(["ZRANGE", key, "0", "-1", "WITHSCORES"])) as Buffer[]).map(hex);
    case "hash": {
      const flat = (await c.sendCommand(["HGETALL", key])) as Buffer[];
      const pairs: [string, string][] = [];
      for (let i = 0; i < flat.length; i += 2) pairs.push([hex(flat[i]!), hex(flat[i + 1]!)]);
      return pairs.sort(([a], [b]) => a.localeCompare(b));
    }
    case "stream": {
      const entries = (await c.sendCommand(["XRANGE", key, "-", "+"])) as unknown[];
      const info = (await c.sendCommand(["XINFO", "STREAM", key])) as unknown[];
      const field = (arr: unknown[], name: string) => arr[arr.findIndex((x) => Buffer.isBuffer(x) && x.toString() === name) + 1];
      const groups = (await c.sendCommand(["XINFO", "GROUPS", key])) as unknown[][];
      const g = [];
      for (const grp of groups) {
        const name = buf(field(grp, "name"));
        const consumers = ((await c.sendCommand(["XINFO", "CONSUMERS", key, name])) as unknown[][]).map((x) => [String(field(x, "name")), field(x, "pending")]);
        g.push({ name: name.toString(), lastDelivered: String(field(grp, "last-delivered-id")), pending: field(grp, "pending"), consumers });
      }
      // Buffers serialise as their bytes in JSON, which is all the comparison needs.
      return { entries, lastId: String(field(info, "last-generated-id")), groups: g };
    }
    default:
      throw new Error(`no canonical form for type ${type}`);
  }
}

/**
 * What a user compares after a restore: per database, each key's type, a hash of its canonical content and whether
 * it has a TTL; a database with more than 1000 keys is folded into one entry. Function libraries too.
 */
export async function snapshotRedis(s: { port: number; password?: string }, o: { dbs?: number[]; functions?: boolean } = {}): Promise<Record<string, string>> {
  return withRedis(s, async (c) => {
    const out: Record<string, string> = {};
    const keyspace = String(await c.sendCommand(["INFO", "keyspace"]));
    const dbs = [...keyspace.matchAll(/^db(\d+):/gm)].map((m) => Number(m[1])).filter((db) => !o.dbs || o.dbs.includes(db));
    for (const db of dbs) {
      await c.sendCommand(["SELECT", String(db)]);
      const keys = await scanAll(c);
      const types = (await all(c, keys.map((k) => ["TYPE", k]))).map((t) => String(t));
      const ttls = (await all(c, keys.map((k) => ["PTTL", k]))).map((t) => (Number(t) > 0 ? "ttl" : Number(t) === -1 ? "persistent" : `pttl ${String(t)}`));
      const contents = await Promise.all(keys.map((k, i) => content(c, k, types[i]!)));
      const entries = keys.map((k, i) => [`db${db} ${hex(k)}`, `${types[i]} ${createHash("sha256").update(JSON.stringify(contents[i])).digest("hex").slice(0, 16)} ${ttls[i]}`] as const);
      if (entries.length > 1000) {
        const h = createHash("sha256");
        for (const [k, v] of entries) h.update(`${k}=${v}\n`);
        out[`db${db} (${entries.length} keys)`] = h.digest("hex");
      } else {
        for (const [k, v] of entries) out[k] = v;
      }
    }
    const libs = o.functions === false ? [] : ((await c.sendCommand(["FUNCTION", "LIST", "WITHCODE"])) as unknown[][]);
    for (const lib of libs) {
      const name = String(lib[lib.findIndex((x) => String(x) === "library_name") + 1]);
      const code = String(lib[lib.findIndex((x) => String(x) === "library_code") + 1]);
      out[`function library ${name}`] = createHash("sha256").update(code).digest("hex").slice(0, 16);
    }
    return out;
  });
}

/**
 * Every data type and encoding, binary keys and values (0x00, 0xff, CR LF), a 1 MB value, TTLs, a stream with a
 * consumer group and a pending entry, databases 0, 1 and 5, and a function library.
 */
export async function loadFixture(s: { port: number; password?: string }): Promise<void> {
  await withRedis(s, async (c) => {
    const bin = Buffer.from([0x00, 0xff, 0x0d, 0x0a, 0x24, 0x2a, 0x7f, 0x80]);
    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
    await c.sendCommand(["SELECT", "0"]);
    await all(c, [
      ["SET", "str", "hello world"],
      ["SET", "int", "12345"],
      ["SET", "bin:value", bin],
      ["SET", bin, "value of a binary key"],
      ["SET", "big:1mb", big],
      ["SET", "unicode:ключ", "значение ✓"],
      ["RPUSH", "list:small", "a", "b", bin, "12"],
      ["RPUSH", "list:big", ...Array.from({ length: 1000 }, (_, i) => `item-${i}-${"x".repeat(i % 50)}`)],
      ["SADD", "set:ints", "1", "2", "3", "1000000"],
      ["SADD", "set:strings", "apple", "banana", bin],
      ["SADD", "set:big", ...Array.from({ length: 600 }, (_, i) => `member-${i}`)],
      ["ZADD", "zset:small", "1.5", "one-and-a-half", "-2", "minus-two", "1e10", "huge", "0", bin],
      ["ZADD", "zset:big", ...Array.from({ length: 200 }, (_, i) => [String(i / 7), `m${i}`]).flat()],
      ["HSET", "hash:small", "f1", "v1", "f2", bin, "n", "42"],
      ["HSET", "hash:big", ...Array.from({ length: 600 }, (_, i) => [`field-${i}`, `value-${i}`]).flat()],
      ["XADD", "stream", "1-1", "temp", "20.5", "unit", "C"],
      ["XADD", "stream", "1-2", "temp", "21.0", "bin", bin],
      ["XADD", "stream", "5-0", "temp", "19.9"],
      ["XGROUP", "CREATE", "stream", "readers", "0"],
      ["PFADD", "hll", "a", "b", "c", "d", "e", "a"],
      ["SETBIT", "bitmap", "7", "1"],
      ["SETBIT", "bitmap", "1000", "1"],
      ["GEOADD", "geo", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"],
      ["SET", "ttl:string", "expires", "PX", "600000"],
      ["HSET", "ttl:hash", "f", "v"],
      ["PEXPIRE", "ttl:hash", "900000"],
    ]);
    await c.sendCommand(["XREADGROUP", "GROUP", "readers", "alice", "COUNT", "2", "STREAMS", "stream", ">"]);
    await c.sendCommand(["SELECT", "1"]);
    await all(c, [
      ["SET", "str", "the same name as in db0, another value"],
      ["LPUSH", "queue", "job-3", "job-2", "job-1"],
      ["SET", "ttl:db1", "x", "EX", "3600"],
    ]);
    await c.sendCommand(["SELECT", "5"]);
    await all(c, [
      ["SET", Buffer.from([0xff, 0xfe, 0x00]), Buffer.from([0x00])],
      ["SET", Buffer.from("\r\n*1\r\n$4\r\nPING\r\n"), "a key that looks like RESP"],
      ["HSET", Buffer.from([0x00]), Buffer.from([0xff]), Buffer.from([0x00, 0x00])],
    ]);
    await c.sendCommand(["FUNCTION", "LOAD", "REPLACE", "#!lua name=dbkeeplib\nredis.register_function('dbkeep_echo', function(keys, args) return args[1] end)"]);
  });
}

/** Many small keys in one database, inserted in pipelined batches. */
export async function loadFiller(s: { port: number; password?: string }, db: number, n: number): Promise<void> {
  await withRedis(s, async (c) => {
    await c.sendCommand(["SELECT", String(db)]);
    for (let i = 0; i < n; i += 10_000) {
      const cmds: string[][] = [];
      for (let j = i; j < Math.min(n, i + 10_000); j++) cmds.push(["SET", `filler:${j}`, `value-${j}-${(j * 7919) % 100_000}`]);
      await all(c, cmds);
    }
  });
}
