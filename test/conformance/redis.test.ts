import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeep, tempDir } from "../helpers/env.js";
import { freePort, loadFiller, loadFixture, redisAvailable, snapshotRedis, startRedis, withRedis, type TestRedis } from "../helpers/redis.js";
import { engineConformance } from "./engine.suite.js";
import { runWatchingChildren } from "../helpers/proc.js";
import { resealManifest } from "../helpers/manifest.js";

const available = redisAvailable();
const SECRET = "Redis-Secret-pw-4711";
process.env.DBKEEP_TEST_REDIS_WRONG_PW = "not-the-password";

// Servers start when the file loads, so that the suite's options can name their ports; they stop after the file.
const servers: TestRedis[] = [];
async function server(o: Parameters<typeof startRedis>[0] = {}): Promise<TestRedis> {
  const s = await startRedis(o);
  servers.push(s);
  return s;
}
afterAll(async () => {
  for (const s of servers) await s.stop();
});

const source = available ? await server() : undefined;
const target = available ? await server() : undefined;
// A one-second delay before the diskless snapshot keeps redis-cli alive long enough to be seen in /proc.
const locked = available ? await server({ password: SECRET, args: ["--repl-diskless-sync-delay", "1"] }) : undefined;

function ds(s: TestRedis, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { engine: "redis", host: "127.0.0.1", port: s.port, mode: "logical", ...extra };
}

function writeConfig(dir: string, datasources: Record<string, Record<string, unknown>>, job: Record<string, unknown> = {}, name = "dbkeep.yaml"): string {
  const file = join(dir, name);
  const jobs = Object.fromEntries(Object.keys(datasources).map((d) => [`${d}-job`, { datasource: d, store: "local", prefix: "it", ...job }]));
  writeFileSync(file, stringify({ datasources, stores: { local: { type: "local", path: join(dir, "backups") } }, jobs }), { mode: 0o600 });
  return file;
}

interface Listed {
  id: string;
  key: string;
  checksum_key: string;
  sha256: string;
  tables?: { name: string; rows?: number }[];
  database: string;
}

function latest(cfg: string, job: string): Listed {
  const r = dbkeep(["-c", cfg, "list", job, "--json"]);
  expect(r.code, r.stderr).toBe(0);
  const backups = (JSON.parse(r.stdout) as { backups: Listed[] }).backups;
  expect(backups.length).toBeGreaterThan(0);
  return backups[0]!;
}

/** Changes one byte of a stored backup; with `fixChecksum` the manifest and sidecar are made to agree with it. */
function damage(dir: string, m: Listed, at: (data: Buffer) => number, fixChecksum: boolean): void {
  const root = join(dir, "backups");
  const file = join(root, m.key);
  const data = readFileSync(file);
  const i = at(data);
  expect(i).toBeGreaterThan(0);
  data[i]! ^= 0x20;
  writeFileSync(file, data);
  if (!fixChecksum) return;
  const sha = createHash("sha256").update(data).digest("hex");
  const manifestFile = join(root, m.key.slice(0, m.key.lastIndexOf("/")), `${m.id}.manifest.json`);
  const manifest = JSON.parse(readFileSync(manifestFile, "utf8")) as { sha256: string };
  manifest.sha256 = sha;
  writeFileSync(manifestFile, resealManifest(manifest as Record<string, unknown>));
  writeFileSync(join(root, m.checksum_key), `${sha}  ${m.key.split("/").pop()}\n`);
}

if (available && source && target && locked) {
  engineConformance({
    engine: "redis",
    async setup() {
      await loadFixture(source);
      // Enough keys that a slow compression level keeps the dump running while the test cuts it.
      await loadFiller(source, 9, 200_000);
      return { source: ds(source), target: ds(target) };
    },
    snapshot: (which) => snapshotRedis(which === "source" ? source : target),
    async teardown() {
      // The servers stop after the whole file: the tests below use them too.
    },
    variants: [{ label: "logical + zstd", options: { mode: "logical", compression: "zstd" } }],
    authFailure: {
      options: ds(locked, { password_env: "DBKEEP_TEST_REDIS_WRONG_PW" }),
      message: /error: cannot connect to Redis at 127\.0\.0\.1:\d+: WRONGPASS.*\nhint: check the datasource's username and password/,
    },
    async interruptDump() {
      return withRedis(source, async (c) => {
        const clients = String(await c.sendCommand(["CLIENT", "LIST"]));
        // Only a connection that is reading keys: the cut must come in the middle of the dump, not before it.
        const ids = [...clients.matchAll(/^id=(\d+) .*\bname=dbkeep\b.*\bcmd=(scan|multi|exec|dump|pttl)\b/gm)].map((m) => m[1]!);
        for (const id of ids) await c.sendCommand(["CLIENT", "KILL", "ID", id]);
        return ids.length > 0;
      });
    },
    missingTool: { options: { mode: "rdb", bin_dir: "/nonexistent/bin" }, message: /redis-cli not found in \/nonexistent\/bin\nhint: install redis-tools or set bin_dir/ },
  });

  describe("redis: rdb mode", () => {
    let dir: string;
    let cfg: string;
    let restoreDir: string;
    const stopped = { port: 0 };

    beforeAll(async () => {
      dir = tempDir();
      restoreDir = join(dir, "restored");
      mkdirSync(restoreDir);
      stopped.port = await freePort(); // nothing listens: the target server is stopped while its file is replaced
      cfg = writeConfig(dir, {
        src: ds(source, { mode: "rdb", compression: "zstd" }),
        raw: ds(source, { mode: "rdb", compression: "none", name: "raw" }),
        dst: { engine: "redis", port: stopped.port, rdb_path: join(restoreDir, "dump.rdb") },
        online: ds(target),
      }, { verify: true });
    });

    it("backs up the server's snapshot, restores it into rdb_path, and a server started on it holds the same data", async () => {
      const b = dbkeep(["-c", cfg, "backup", "src-job"]);
      expect(b.stderr).not.toContain("error:");
      expect(b.code).toBe(0);
      expect(b.stderr).toMatch(/RDB version \d+, \d+ bytes, CRC-64 ok/);
      const m = latest(cfg, "src-job");
      expect(m.database).toBe(`redis-127.0.0.1-${source.port}`);
      expect(m.key).toMatch(/\.rdb\.zst$/);
      expect(m.tables).toEqual([{ name: "db0", rows: 21 }, { name: "db1", rows: 3 }, { name: "db5", rows: 3 }, { name: "db9", rows: 200_000 }]);

      const r = dbkeep(["-c", cfg, "restore", "src-job", "--to", "dst", "--auto-confirm"]);
      expect(r.stderr).not.toContain("error:");
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/SHUTDOWN NOSAVE/);
      expect(readdirSync(restoreDir)).toEqual(["dump.rdb"]);
      const loaded = await server({ dir: restoreDir });
      expect(await snapshotRedis(loaded)).toEqual(await snapshotRedis(source));
      await loaded.stop();
    });

    it("refuses a snapshot whose CRC-64 does not match before anything is written, and a damaged object by its SHA-256", () => {
      expect(dbkeep(["-c", cfg, "backup", "raw-job"]).code).toBe(0);
      const m = latest(cfg, "raw-job");
      const empty = join(dir, "empty");
      mkdirSync(empty);
      const cfg2 = writeConfig(dir, {
        raw: ds(source, { mode: "rdb", compression: "none", name: "raw" }),
        dst: { engine: "redis", port: stopped.port, rdb_path: join(empty, "dump.rdb") },
      }, {}, "damaged.yaml");
      damage(dir, m, (d) => Math.floor(d.length / 2), true);
      const crc = dbkeep(["-c", cfg2, "restore", "raw-job", "--to", "dst", "--auto-confirm"]);
      expect(crc.code).toBe(1);
      expect(crc.stderr).toMatch(/error: the backup is not a complete RDB snapshot: its CRC-64 checksum does not match/);
      expect(readdirSync(empty)).toEqual([]);

      damage(dir, m, (d) => Math.floor(d.length / 3), false);
      const sha = dbkeep(["-c", cfg2, "restore", "raw-job", "--to", "dst", "--auto-confirm"]);
      expect(sha.code).toBe(1);
      expect(sha.stderr).toMatch(/SHA-256 of .* does not match|manifest/);
      expect(readdirSync(empty)).toEqual([]);
    });

    it("an rdb backup into a datasource without rdb_path is a usage error that says how rdb restores work", () => {
      const r = dbkeep(["-c", cfg, "restore", "src-job", "--to", "online", "--auto-confirm"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/has no rdb_path\nhint: rdb backups are restored by a server restart: set rdb_path, or back up with mode: logical for online restore/);
    });

    it("warns when the running target server loads another file than rdb_path", () => {
      const elsewhere = join(dir, "elsewhere.rdb");
      const cfg3 = writeConfig(dir, { src: ds(source, { mode: "rdb", compression: "zstd" }), running: ds(target, { rdb_path: elsewhere }) }, {}, "running.yaml");
      const r = dbkeep(["-c", cfg3, "restore", "src-job", "--to", "running", "--auto-confirm"]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`loads ${join(target.dir, "dump.rdb")} at start, not ${elsewhere}`);
      expect(readFileSync(elsewhere).subarray(0, 5).toString()).toBe("REDIS");
    });
  });

  describe("redis: logical mode", () => {
    let dir: string;

    beforeAll(() => {
      dir = tempDir();
    });

    it("keeps TTLs (relative, within a tolerance) and restores a one-database backup into the target's db", async () => {
      const fresh = await server();
      const cfg = writeConfig(dir, { one: ds(source, { db: 0, compression: "lz4" }), dst: ds(fresh, { db: 3 }) }, { verify: true });
      const b = dbkeep(["-c", cfg, "backup", "one-job"]);
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr).toMatch(/logical dump of 21 keys in 1 database, every payload's CRC-64 ok/);
      const m = latest(cfg, "one-job");
      expect(m.database).toBe(`redis-127.0.0.1-${source.port}-db0`);
      expect(m.tables).toEqual([{ name: "db0", rows: 21 }]);
      const r = dbkeep(["-c", cfg, "restore", "one-job", "--to", "dst", "--auto-confirm"]);
      expect(r.code, r.stderr).toBe(0);
      const pttl = (s: TestRedis, db: number, key: string) => withRedis(s, async (c) => (await c.sendCommand(["SELECT", String(db)]), Number(await c.sendCommand(["PTTL", key]))));
      for (const key of ["ttl:string", "ttl:hash"]) {
        const [a, c] = [await pttl(source, 0, key), await pttl(fresh, 3, key)];
        expect(a).toBeGreaterThan(0);
        expect(Math.abs(a - c)).toBeLessThan(30_000);
      }
      expect(await pttl(fresh, 3, "str")).toBe(-1);
      const moved = Object.fromEntries(Object.entries(await snapshotRedis(fresh)).map(([k, v]) => [k.replace(/^db3 /, "db0 "), v]));
      // Function libraries belong to the whole server: a one-database dump does not carry them.
      expect(moved).toEqual(await snapshotRedis(source, { dbs: [0], functions: false }));
    });

    it("a logical dump replays with redis-cli --pipe as well", async () => {
      const fresh = await server();
      const root = tempDir();
      const cfg = writeConfig(root, { db5: ds(source, { db: 5, compression: "none" }) });
      expect(dbkeep(["-c", cfg, "backup", "db5-job"]).code).toBe(0);
      const m = latest(cfg, "db5-job");
      const r = spawnSync("redis-cli", ["-p", String(fresh.port), "--pipe"], { input: readFileSync(join(root, "backups", m.key)), encoding: "utf8" });
      expect(r.stdout).toMatch(/errors: 0, replies: 6/);
      expect(await snapshotRedis(fresh)).toEqual(await snapshotRedis(source, { dbs: [5], functions: false }));
    });

    it("a damaged backup (SHA-256, or a payload's CRC-64) leaves a target with keys exactly as it was", async () => {
      const busy = await server();
      await withRedis(busy, async (c) => {
        await c.sendCommand(["SELECT", "1"]);
        await c.sendCommand(["SET", "queue", "the target's own value"]);
        await c.sendCommand(["SET", "other", "kept"]);
      });
      const before = await snapshotRedis(busy);
      const root = tempDir();
      const cfg = writeConfig(root, { db1: ds(source, { db: 1, compression: "none" }), busy: ds(busy) });
      expect(dbkeep(["-c", cfg, "backup", "db1-job"]).code).toBe(0);
      const m = latest(cfg, "db1-job");
      damage(root, m, (d) => d.indexOf("job-2") + 2, true);
      const crc = dbkeep(["-c", cfg, "restore", "db1-job", "--to", "busy", "--auto-confirm"]);
      expect(crc.code).toBe(1);
      expect(crc.stderr).toMatch(/error: the logical Redis dump is not valid: the payload of key queue fails its CRC-64 check/);
      expect(await snapshotRedis(busy)).toEqual(before);

      damage(root, m, (d) => d.length - 10, false);
      const sha = dbkeep(["-c", cfg, "restore", "db1-job", "--to", "busy", "--auto-confirm"]);
      expect(sha.code).toBe(1);
      expect(sha.stderr).toMatch(/does not match/);
      expect(await snapshotRedis(busy)).toEqual(before);

      // Without --auto-confirm and without a terminal, existing keys make the restore refuse, naming them.
      expect(dbkeep(["-c", cfg, "backup", "db1-job"]).code).toBe(0);
      const refused = dbkeep(["-c", cfg, "restore", "db1-job", "--to", "busy"]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/db1: 2 keys \((other, queue|queue, other)\)/);
      const ok = dbkeep(["-c", cfg, "restore", "db1-job", "--to", "busy", "--auto-confirm"]);
      expect(ok.code, ok.stderr).toBe(0);
      const after = await snapshotRedis(busy);
      expect(after[`db1 ${Buffer.from("other").toString("hex")}`]).toBe(before[`db1 ${Buffer.from("other").toString("hex")}`]);
      expect(after[`db1 ${Buffer.from("queue").toString("hex")}`]).toMatch(/^list /);
    });
  });

  describe("redis: credentials", () => {
    it("the password reaches redis-cli through REDISCLI_AUTH only: never an argument list, never another child", async () => {
      await loadFiller(locked, 0, 20_000);
      const dir = tempDir();
      const cfg = writeConfig(dir, {
        rdb: ds(locked, { mode: "rdb", password_env: "DBKEEP_TEST_REDIS_PW", compression: "zstd" }),
        logical: ds(locked, { password_env: "DBKEEP_TEST_REDIS_PW", compression: "zstd" }),
      }, { verify: true });
      const { code, output, procs } = await runWatchingChildren(["-c", cfg, "backup", "rdb-job"], { DBKEEP_TEST_REDIS_PW: SECRET });
      expect(code, output).toBe(0);
      const cli = procs.find((p) => /redis-cli .*--rdb -/.test(p.cmdline) && p.environ !== "");
      expect(cli, "redis-cli should have been seen running").toBeDefined();
      expect(cli?.environ).toContain(`REDISCLI_AUTH=${SECRET}`);
      for (const p of procs) expect(p.cmdline).not.toContain(SECRET);
      for (const p of procs.filter((x) => x.cmdline.includes("zstd"))) {
        expect(p.environ).not.toContain(SECRET);
        expect(p.environ).not.toContain("DBKEEP_TEST_REDIS_PW");
      }
      expect(output).not.toContain(SECRET);
      const logical = dbkeep(["-c", cfg, "backup", "logical-job"], { env: { DBKEEP_TEST_REDIS_PW: SECRET } });
      expect(logical.code, logical.stderr).toBe(0);
      expect(logical.stderr).not.toContain(SECRET);
    });

    it.skipIf(spawnSync("openssl", ["version"]).status !== 0)("speaks TLS with a private CA, in both modes", async () => {
      const dir = tempDir();
      const ssl = (args: string[]) => expect(spawnSync("openssl", args, { cwd: dir }).status).toBe(0);
      ssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=dbkeep test CA"]);
      ssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
      writeFileSync(join(dir, "ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
      ssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext"]);
      const port = await freePort();
      const plain = await server({ args: ["--tls-port", String(port), "--tls-cert-file", join(dir, "server.crt"), "--tls-key-file", join(dir, "server.key"), "--tls-ca-cert-file", join(dir, "ca.crt"), "--tls-auth-clients", "no"] });
      await withRedis(plain, (c) => c.sendCommand(["SET", "over", "tls"]));
      const tls = { engine: "redis", host: "127.0.0.1", port, tls: true, tls_ca: join(dir, "ca.crt") };
      const cfg = writeConfig(dir, { rdb: { ...tls, mode: "rdb" }, logical: { ...tls, mode: "logical" }, untrusted: { ...tls, tls_ca: undefined, mode: "logical" } }, { verify: true });
      for (const job of ["rdb-job", "logical-job"]) {
        const r = dbkeep(["-c", cfg, "backup", job]);
        expect(r.code, r.stderr).toBe(0);
      }
      const bad = dbkeep(["-c", cfg, "backup", "untrusted-job"]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/hint: set tls_ca/);
    });
  });
}

