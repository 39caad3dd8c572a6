import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { appendFileSync, chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import type { CertPair } from "./tls-certs.js";
import { freePort } from "./redis.js";

/** The newest PostgreSQL server binaries installed (initdb, pg_ctl), or undefined. */
export function pgServerBin(): string | undefined {
  const versions = existsSync("/usr/lib/postgresql") ? execFileSync("ls", ["/usr/lib/postgresql"], { encoding: "utf8" }).split("\n").filter((v) => /^\d+$/.test(v)) : [];
  for (const v of versions.sort((a, b) => Number(b) - Number(a))) if (existsSync(`/usr/lib/postgresql/${v}/bin/initdb`)) return `/usr/lib/postgresql/${v}/bin`;
  return undefined;
}

function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  return { uid: Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" })), gid: Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" })) };
}

function asServer(tool: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", tool, ...args]] : [tool, args];
}

export interface ScratchPg {
  port: number;
  dir: string;
  /** Serves this certificate from now on (a configuration reload, seen by every new connection). */
  useCert(pair: CertPair): Promise<void>;
  /** ssl = on or off from now on. */
  setSsl(on: boolean): Promise<void>;
  /** Runs SQL as the superuser over the server's Unix socket. */
  admin(sql: string): Promise<pg.QueryResult>;
  stop(): Promise<void>;
}

/**
 * A scratch PostgreSQL cluster (initdb + pg_ctl in a temp dir) on a free 127.0.0.1 port with ssl = on, the given
 * server certificate, `clientCa` to check client certificates with, and `hba` as its pg_hba.conf (the superuser
 * always gets in over the socket). As root, the server runs as the system user postgres.
 */
export async function startScratchPg(o: { cert: CertPair; clientCa: string; hba: string[] }): Promise<ScratchPg> {
  const bin = pgServerBin();
  if (!bin) throw new Error("no PostgreSQL server binaries (initdb) under /usr/lib/postgresql");
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-tlspg-"));
  const owner = serverUser();
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const data = join(dir, "data");
  const run = (tool: string, args: string[]) => {
    const [cmd, a] = asServer(join(bin, tool), args);
    const r = spawnSync(cmd, a, { encoding: "utf8", env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C.UTF-8" } });
    if (r.status !== 0) throw new Error(`${tool} failed: ${r.stderr}${r.stdout}`);
  };
  run("initdb", ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]);
  // The server's files live in its data directory, owned by it: it refuses a key that others can read.
  let n = 0;
  const install = (pair: CertPair): { cert: string; key: string } => {
    n++;
    const cert = join(data, `tls-${n}.crt`);
    const key = join(data, `tls-${n}.key`);
    copyFileSync(pair.cert, cert);
    copyFileSync(pair.key, key);
    chmodSync(key, 0o600);
    if (owner) {
      chownSync(cert, owner.uid, owner.gid);
      chownSync(key, owner.uid, owner.gid);
    }
    return { cert, key };
  };
  const first = install(o.cert);
  const ca = join(data, "client-ca.crt");
  copyFileSync(o.clientCa, ca);
  if (owner) chownSync(ca, owner.uid, owner.gid);
  appendFileSync(join(data, "postgresql.conf"), `\nssl = on\nssl_cert_file = '${first.cert}'\nssl_key_file = '${first.key}'\nssl_ca_file = '${ca}'\nfsync = off\n`);
  writeFileSync(join(data, "pg_hba.conf"), ["local all postgres trust", ...o.hba].join("\n") + "\n");
  if (owner) chownSync(join(data, "pg_hba.conf"), owner.uid, owner.gid);
  const port = await freePort();
  run("pg_ctl", ["-D", data, "-o", `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`, "-l", join(dir, "server.log"), "-w", "-t", "60", "start"]);

  const admin = async (sql: string): Promise<pg.QueryResult> => {
    const c = new pg.Client({ host: dir, port, user: "postgres", database: "postgres", ssl: false });
    await c.connect();
    try {
      return await c.query(sql);
    } finally {
      await c.end();
    }
  };
  /** Sets a parameter and waits until new connections see it. */
  const setting = async (name: string, value: string) => {
    await admin(`ALTER SYSTEM SET ${name} = '${value}'`);
    await admin("SELECT pg_reload_conf()");
    for (let i = 0; ; i++) {
      const r = await admin(`SELECT current_setting('${name}') AS v`);
      if (r.rows[0]?.v === value) return;
      if (i > 200) throw new Error(`${name} did not change to ${value}: ${readFileSync(join(dir, "server.log"), "utf8").slice(-2000)}`);
      await new Promise((r2) => setTimeout(r2, 20));
    }
  };
  return {
    port,
    dir,
    async useCert(pair) {
      const f = install(pair);
      await admin(`ALTER SYSTEM SET ssl_key_file = '${f.key}'`);
      await setting("ssl_cert_file", f.cert);
    },
    setSsl: (on) => setting("ssl", on ? "on" : "off"),
    admin,
    async stop() {
      try {
        run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** A server process started by a test, stopped with SIGKILL. */
export interface ScratchProcess {
  port: number;
  dir: string;
  stop(): Promise<void>;
}

function watch(child: ChildProcess): { exited: Promise<void>; output: () => string } {
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  return { exited: new Promise<void>((r) => child.once("exit", () => r())), output: () => out };
}

async function waitFor(what: string, child: ChildProcess, output: () => string, ready: () => Promise<boolean>): Promise<void> {
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited: ${output()}`);
    if (await ready().catch(() => false)) return;
    if (i > 600) throw new Error(`${what} did not start: ${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether the MariaDB server binaries are installed. */
export function mariadbServerAvailable(): boolean {
  return ["mariadbd", "mariadb-install-db"].every((t) => spawnSync("sh", ["-c", `command -v ${t} || test -x /usr/sbin/${t}`]).status === 0);
}

/**
 * A scratch mariadbd in a temp dir on a free 127.0.0.1 port with TLS from `cert` (and `clientCa` for client
 * certificates); root has no password over the socket, `sql` runs once it is up (users and grants). `restart`
 * starts it again on the same data, with or without TLS; `flushSsl` makes it read its certificate files again.
 */
export async function startScratchMariadb(o: { cert: CertPair; clientCa: string; sql: string }): Promise<
  ScratchProcess & { socket: string; restart(tls: boolean): Promise<void>; flushSsl(): void; sql(q: string): string }
> {
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-tlsmy-"));
  const data = join(dir, "data");
  mkdirSync(data);
  const root = process.getuid?.() === 0;
  const user = root ? ["--user=root"] : [];
  const install = spawnSync("mariadb-install-db", ["--no-defaults", `--datadir=${data}`, "--auth-root-authentication-method=socket", "--skip-test-db", ...user], { encoding: "utf8" });
  if (install.status !== 0) throw new Error(`mariadb-install-db failed: ${install.stderr}${install.stdout}`);
  const port = await freePort();
  const socket = join(dir, "mysqld.sock");
  const client = (sql: string) => spawnSync("mariadb", ["--no-defaults", `--socket=${socket}`, "-uroot", "-N", "-B", "-e", sql], { encoding: "utf8" });
  let child: ChildProcess;
  let w: { exited: Promise<void>; output: () => string };
  const start = async (tls: boolean) => {
    child = spawn(
      existsSync("/usr/sbin/mariadbd") ? "/usr/sbin/mariadbd" : "mariadbd",
      ["--no-defaults", `--datadir=${data}`, `--socket=${socket}`, `--port=${port}`, "--bind-address=127.0.0.1", `--pid-file=${join(dir, "mysqld.pid")}`,
        ...(tls ? [`--ssl-cert=${o.cert.cert}`, `--ssl-key=${o.cert.key}`, `--ssl-ca=${o.clientCa}`] : []),
        "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--skip-name-resolve", "--performance-schema=OFF", ...user],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    w = watch(child);
    await waitFor("mariadbd", child, w.output, async () => client("SELECT 1").status === 0);
  };
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await w.exited;
    }
  };
  await start(true);
  const r = client(o.sql);
  if (r.status !== 0) throw new Error(`setup SQL failed: ${r.stderr}`);
  return {
    port,
    dir,
    socket,
    async restart(tls) {
      await stop();
      await start(tls);
    },
    flushSsl() {
      const f = client("FLUSH SSL");
      if (f.status !== 0) throw new Error(`FLUSH SSL failed: ${f.stderr}`);
    },
    sql(q) {
      const x = client(q);
      if (x.status !== 0) throw new Error(`${q}: ${x.stderr}`);
      return x.stdout;
    },
    async stop() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Whether this redis-server is built with TLS (Debian's is). A build without it rejects `tls-port` as a bad
 * directive; one with it gets past that and fails on the missing certificate files instead.
 */
export function redisTlsAvailable(): boolean {
  const r = spawnSync("redis-server", ["--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent", "--tls-key-file", "/nonexistent"], { encoding: "utf8", timeout: 10_000 });
  return /TLS/.test(`${r.stdout}${r.stderr}`) && !/Bad directive/i.test(`${r.stdout}${r.stderr}`);
}

/** A scratch redis-server that speaks TLS only, on a free port, with `cert`; `useCert` serves another one from now on. */
export async function startScratchRedisTls(o: { cert: CertPair; ca: string }): Promise<ScratchProcess & { useCert(pair: CertPair): void; cli(args: string[]): string }> {
  const dir = mkdtempSync(join(tmpdir(), "dbkeep-tlsredis-"));
  const port = await freePort();
  const args = ["--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
    "--tls-cert-file", o.cert.cert, "--tls-key-file", o.cert.key, "--tls-ca-cert-file", o.ca, "--tls-auth-clients", "optional",
    "--repl-diskless-sync-delay", "0", "--loglevel", "warning"];
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  const w = watch(child);
  // The test's own administration skips the certificate check: it talks to every certificate the test serves.
  const cli = (a: string[]) => {
    const r = spawnSync("redis-cli", ["--tls", "--insecure", "-h", "127.0.0.1", "-p", String(port), ...a], { encoding: "utf8" });
    if (r.status !== 0 || /^ERR/m.test(r.stdout)) throw new Error(`redis-cli ${a.join(" ")}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  await waitFor("redis-server", child, w.output, async () => cli(["PING"]).trim() === "PONG");
  return {
    port,
    dir,
    cli,
    useCert(pair) {
      cli(["CONFIG", "SET", "tls-cert-file", pair.cert, "tls-key-file", pair.key]);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await w.exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
