import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { explainMysqlError } from "../../src/engines/mysql/index.js";
import { mysql2Failure, withTlsAttempts } from "../../src/engines/mysql/tls.js";
import { connectPg, explainPgError, pgConnectionError } from "../../src/engines/postgres/connection.js";
import { resolvePgTls } from "../../src/engines/postgres/tls.js";
import { createDb, dbkeepAsync, dropDb, IN_CI, pgAvailable, tempDir } from "../helpers/env.js";
import { myAvailable, myQuery } from "../helpers/mysql.js";
import { redisAvailable, startRedis, type TestRedis } from "../helpers/redis.js";
import { makeTestPki } from "../helpers/tls-certs.js";
import { pgServerBin, startScratchPg, type ScratchPg } from "../helpers/tls-servers.js";

const run = promisify(execFile);

const PGDB = "dbkeep_retry_it";
const MYDB = "dbkeep_retry_it";
const MYUSER = "dbkeep_retry_u";
const PASSWORD = "retry-drill-pw-3Kz";

/** A port where a listener accepts each connection and answers it with a TCP reset. */
async function resettingListener(): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
  let n = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    n++;
    sockets.add(s);
    s.on("error", () => undefined);
    s.resetAndDestroy();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as { port: number }).port, accepted: () => n, close: () => new Promise((r) => server.close(() => r())) };
}

/** A port where a listener accepts connections and never says a word: a connection that times out. */
async function silentListener(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** A port nobody listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

interface JobOutcome {
  code: number;
  attempts: number;
  retried: number[];
  error: string;
  hint: string;
  stderr: string;
}

/**
 * Runs one job of `datasource` with retry (3 attempts, 100 ms apart) and reads what happened from the result and the
 * log. Asynchronously: the listeners of this process must answer while it runs.
 */
async function backupWithRetry(dir: string, name: string, datasource: string, env: Record<string, string> = {}, jobExtra = ""): Promise<JobOutcome> {
  const cfg = join(dir, `${name}.yaml`);
  writeFileSync(
    cfg,
    `datasources:
  db: ${datasource}
stores:
  local: { type: local, path: ${join(dir, "backups")} }
jobs:
  ${name}: { datasource: db, store: local, ${jobExtra}retry: { max_attempts: 3, delay: 100ms, backoff_multiplier: 1 } }
`,
    { mode: 0o600 },
  );
  const r = await dbkeepAsync(["-c", cfg, "--log-format", "json", "backup", name, "--json"], env, 120_000);
  const doc = JSON.parse(r.stdout) as { jobs: { attempts: number; error?: string; hint?: string }[] };
  const retried = r.stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { msg?: string; attempt?: number })
    .filter((l) => l.msg === "attempt failed, retrying")
    .map((l) => l.attempt!);
  return { code: r.code, attempts: doc.jobs[0]!.attempts, retried, error: doc.jobs[0]!.error ?? "", hint: doc.jobs[0]!.hint ?? "", stderr: r.stderr };
}

const pgUp = await pgAvailable();
const myUp = await myAvailable();
const redisUp = redisAvailable();
const pgBin = pgServerBin();
if (!pgBin && IN_CI) throw new Error("PostgreSQL server binaries (initdb) are missing under CI");

describe("retry: connection refused, resets and timeouts are retried; a refused login or a missing database is not", () => {
  const dir = tempDir("dbkeep-it-retry-");
  let reset: Awaited<ReturnType<typeof resettingListener>>;
  let refused: number;

  beforeAll(async () => {
    reset = await resettingListener();
    refused = await closedPort();
  });
  afterAll(async () => {
    await reset?.close();
  });

  it.skipIf(!pgUp || !myUp || !redisUp)("a server that accepts and never answers: each engine gives up in bounded time and tries again", async () => {
    const silent = await silentListener();
    try {
      const datasources = {
        postgres: `{ engine: postgres, host: 127.0.0.1, port: ${silent.port}, user: postgres, database: x }`,
        mariadb: `{ engine: mariadb, host: 127.0.0.1, port: ${silent.port}, user: root, database: x }`,
        redis: `{ engine: redis, host: 127.0.0.1, port: ${silent.port} }`,
      };
      const started = Date.now();
      const results = await Promise.all(Object.entries(datasources).map(async ([engine, ds]) => {
        const cfg = join(dir, `silent-${engine}.yaml`);
        writeFileSync(cfg, `datasources:\n  db: ${ds}\nstores:\n  local: { type: local, path: ${join(dir, "backups")} }\njobs:\n  silent-${engine}: { datasource: db, store: local, retry: { max_attempts: 2, delay: 100ms } }\n`);
        const r = await dbkeepAsync(["-c", cfg, "--log-format", "json", "backup", `silent-${engine}`, "--json"], {}, 120_000);
        return [engine, (JSON.parse(r.stdout) as { jobs: { attempts: number }[] }).jobs[0]!.attempts] as const;
      }));
      expect(Object.fromEntries(results)).toEqual({ postgres: 2, mariadb: 2, redis: 2 });
      // 15 s (PostgreSQL, MariaDB) or 10 s (Redis) per attempt, not forever.
      expect(Date.now() - started).toBeLessThan(90_000);
    } finally {
      await silent.close();
    }
  });

  describe.skipIf(!pgUp)("PostgreSQL", () => {
    let scratch: ScratchPg | undefined;
    beforeAll(async () => {
      await createDb(PGDB);
      if (pgBin) {
        const pki = makeTestPki(dir);
        scratch = await startScratchPg({ cert: pki.server, clientCa: pki.ca, hba: ["host all all 127.0.0.1/32 scram-sha-256"] });
        await scratch.admin(`CREATE ROLE app LOGIN PASSWORD '${PASSWORD}'`);
      }
    });
    afterAll(async () => {
      await dropDb(PGDB);
      await scratch?.stop();
    });

    it("a port nobody listens on: three attempts, for a full and for a differential job", async () => {
      for (const mode of ["full", "differential"]) {
        const r = await backupWithRetry(dir, `pg-refused-${mode}`, `{ engine: postgres, host: 127.0.0.1, port: ${refused}, user: postgres, database: ${PGDB} }`, {}, mode === "differential" ? "mode: differential, " : "");
        expect(r.code).toBe(1);
        expect([r.attempts, r.retried], r.stderr).toEqual([3, [1, 2]]);
        expect(r.error).toContain("cannot connect to PostgreSQL");
      }
    });

    it("a server that resets the connection: three attempts, each one reaching the server", async () => {
      const before = reset.accepted();
      const r = await backupWithRetry(dir, "pg-reset", `{ engine: postgres, host: 127.0.0.1, port: ${reset.port}, user: postgres, database: ${PGDB} }`);
      expect([r.attempts, r.retried], r.stderr).toEqual([3, [1, 2]]);
      expect(reset.accepted() - before).toBeGreaterThanOrEqual(3);
    });

    it("a database that does not exist: one attempt", async () => {
      const r = await backupWithRetry(dir, "pg-nodb", `{ engine: postgres, host: 127.0.0.1, user: postgres, database: ${PGDB}_missing }`);
      expect(r.code).toBe(1);
      expect([r.attempts, r.retried], r.stderr).toEqual([1, []]);
      expect(r.hint).toContain("check the datasource's database name");
    });

    it.skipIf(!pgBin)("a wrong password: one attempt", async () => {
      const r = await backupWithRetry(dir, "pg-auth", `{ engine: postgres, host: 127.0.0.1, port: ${scratch!.port}, user: app, password_env: RETRY_PW, database: postgres, sslmode: disable }`, { RETRY_PW: "wrong-password" });
      expect(r.code).toBe(1);
      expect([r.attempts, r.retried], r.stderr).toEqual([1, []]);
      expect(r.hint).toContain("check the datasource's user and password");
      expect(r.stderr + r.error + r.hint).not.toContain("wrong-password");
      // The right one works: the failure above was the password, not the server.
      const ok = await backupWithRetry(dir, "pg-auth-ok", `{ engine: postgres, host: 127.0.0.1, port: ${scratch!.port}, user: app, password_env: RETRY_PW, database: postgres, sslmode: disable }`, { RETRY_PW: PASSWORD });
      expect([ok.code, ok.attempts], ok.stderr).toEqual([0, 1]);
    });

    it("timeouts are retryable, from dbkeep's own connection and from libpq's tools alike", async () => {
      const silent = await silentListener();
      try {
        const err = await connectPg(
          { host: "127.0.0.1", port: silent.port, user: "postgres", database: "postgres", connectionTimeoutMillis: 300 },
          resolvePgTls({ sslmode: "disable" }, "127.0.0.1"),
        ).then(() => undefined, (e: unknown) => e);
        expect(err).toBeDefined();
        expect(pgConnectionError(err, { host: "127.0.0.1", port: silent.port, database: "postgres" }).retryable).toBe(true);
        const psql = await run("psql", ["-X", "--no-password", "-c", "SELECT 1"], {
          env: { PATH: process.env.PATH ?? "", PGHOST: "127.0.0.1", PGPORT: String(silent.port), PGUSER: "postgres", PGSSLMODE: "disable", PGCONNECT_TIMEOUT: "2" },
        }).then(() => undefined, (e: { stderr: string }) => e.stderr);
        expect(psql).toMatch(/timeout expired/);
        expect(explainPgError(psql!)?.retryable).toBe(true);
      } finally {
        await silent.close();
      }
    });
  });

  describe.skipIf(!myUp)("MySQL/MariaDB", () => {
    beforeAll(async () => {
      await myQuery(`DROP DATABASE IF EXISTS ${MYDB}`);
      await myQuery(`CREATE DATABASE ${MYDB}`);
      await myQuery(`DROP USER IF EXISTS '${MYUSER}'@'%'`);
      await myQuery(`CREATE USER '${MYUSER}'@'%' IDENTIFIED BY '${PASSWORD}'`);
      await myQuery(`GRANT ALL ON ${MYDB}.* TO '${MYUSER}'@'%'`);
    });
    afterAll(async () => {
      await myQuery(`DROP DATABASE IF EXISTS ${MYDB}`);
      await myQuery(`DROP USER IF EXISTS '${MYUSER}'@'%'`);
    });

    it("a port nobody listens on, and a server that resets the connection: three attempts", async () => {
      for (const port of [refused, reset.port]) {
        const r = await backupWithRetry(dir, `my-${port}`, `{ engine: mariadb, host: 127.0.0.1, port: ${port}, user: root, database: ${MYDB} }`);
        expect(r.code).toBe(1);
        expect([r.attempts, r.retried], r.stderr).toEqual([3, [1, 2]]);
      }
    });

    it("a wrong password and a database that does not exist: one attempt", async () => {
      const auth = await backupWithRetry(dir, "my-auth", `{ engine: mariadb, host: 127.0.0.1, user: ${MYUSER}, password_env: RETRY_PW, database: ${MYDB} }`, { RETRY_PW: "wrong-password" });
      expect([auth.code, auth.attempts, auth.retried], auth.stderr).toEqual([1, 1, []]);
      expect(auth.hint).toContain("check the datasource's user and password");
      const nodb = await backupWithRetry(dir, "my-nodb", `{ engine: mariadb, host: 127.0.0.1, user: root, database: ${MYDB}_missing }`);
      expect([nodb.code, nodb.attempts, nodb.retried], nodb.stderr).toEqual([1, 1, []]);
      expect(nodb.error).toContain("does not exist");
      const ok = await backupWithRetry(dir, "my-ok", `{ engine: mariadb, host: 127.0.0.1, user: ${MYUSER}, password_env: RETRY_PW, database: ${MYDB} }`, { RETRY_PW: PASSWORD });
      expect([ok.code, ok.attempts], ok.stderr).toEqual([0, 1]);
    });

    it("timeouts are retryable, from dbkeep's own connection and from the client tools alike", async () => {
      const silent = await silentListener();
      try {
        const mysql = (await import("mysql2")).default;
        const err = await withTlsAttempts({ ssl_mode: "disabled" }, () =>
          new Promise((resolve, reject) => {
            const c = mysql.createConnection({ host: "127.0.0.1", port: silent.port, user: "root", connectTimeout: 300 });
            c.on("error", () => undefined);
            c.connect((e) => (e ? reject(e) : resolve(c)));
          })).then(() => undefined, (e: unknown) => e);
        expect(mysql2Failure(err).retryable).toBe(true);
        const cli = await run("mariadb", ["--no-defaults", "-h", "127.0.0.1", "-P", String(silent.port), "-u", "root", "--connect-timeout=1", "-e", "SELECT 1"]).then(
          () => undefined,
          (e: { stderr: string }) => e.stderr,
        );
        expect(cli).toBeDefined();
        expect(explainMysqlError(cli!)?.retryable).toBe(true);
      } finally {
        await silent.close();
      }
    });
  });

  describe.skipIf(!redisUp)("Redis", () => {
    let redis: TestRedis;
    beforeAll(async () => {
      redis = await startRedis({ password: PASSWORD });
    });
    afterAll(async () => {
      await redis?.stop();
    });

    it("a port nobody listens on, and a server that resets the connection: three attempts", async () => {
      for (const port of [refused, reset.port]) {
        const r = await backupWithRetry(dir, `redis-${port}`, `{ engine: redis, host: 127.0.0.1, port: ${port} }`);
        expect(r.code).toBe(1);
        expect([r.attempts, r.retried], r.stderr).toEqual([3, [1, 2]]);
      }
    });

    it("a wrong password and a database that does not exist: one attempt", async () => {
      const auth = await backupWithRetry(dir, "redis-auth", `{ engine: redis, host: 127.0.0.1, port: ${redis.port}, password_env: RETRY_PW }`, { RETRY_PW: "wrong-password" });
      expect([auth.code, auth.attempts, auth.retried], auth.stderr).toEqual([1, 1, []]);
      const nodb = await backupWithRetry(dir, "redis-nodb", `{ engine: redis, host: 127.0.0.1, port: ${redis.port}, password_env: RETRY_PW, mode: logical, db: 4242 }`, { RETRY_PW: PASSWORD });
      expect([nodb.code, nodb.attempts, nodb.retried], nodb.stderr).toEqual([1, 1, []]);
      const ok = await backupWithRetry(dir, "redis-ok", `{ engine: redis, host: 127.0.0.1, port: ${redis.port}, password_env: RETRY_PW, mode: logical }`, { RETRY_PW: PASSWORD });
      expect([ok.code, ok.attempts], ok.stderr).toEqual([0, 1]);
    });
  });
});
