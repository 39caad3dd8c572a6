import { execFile } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/config/env.js";
import { DbkeepError } from "../../src/core/errors.js";
import { Secret } from "../../src/core/redact.js";
import { connectPg } from "../../src/engines/postgres/connection.js";
import { resolvePgTls, type PgTlsSettings, type SslMode } from "../../src/engines/postgres/tls.js";
import { ENGINES } from "../../src/engines/registry.js";
import { openPostgres } from "../../src/query/postgres.js";
import { openMysql } from "../../src/query/mysql.js";
import { quoteOption } from "../../src/engines/mysql/index.js";
import { mysqlTlsOf, optionFileTls } from "../../src/engines/mysql/tls.js";
import { dbkeep, IN_CI, tempDir } from "../helpers/env.js";
import { runWatchingChildren } from "../helpers/proc.js";
import { makeTestPki, type CertPair, type TestPki } from "../helpers/tls-certs.js";
import { mariadbServerAvailable, pgServerBin, redisTlsAvailable, startScratchMariadb, startScratchPg, startScratchRedisTls, type ScratchPg } from "../helpers/tls-servers.js";

const run = promisify(execFile);

/** What a connection attempt came to: encrypted, plain text, or no connection at all. */
type Outcome = "tls" | "plain" | "refused";
const VARIANTS = ["good", "wrongCa", "wrongHost", "noSsl"] as const;
type Variant = (typeof VARIANTS)[number];

const PASSWORD = "tls-drill-pw-7Qx";
const DB = "dbkeep_tls_drill";

const pgBin = pgServerBin();
if (!pgBin && IN_CI) throw new Error("PostgreSQL server binaries (initdb) are missing under CI");

/**
 * libpq's documented behaviour (libpq-ssl.html, "SSL Mode Descriptions" and "Certificate verification"), written out
 * by hand for the four servers [right certificate, certificate of another CA, certificate of the right CA for another
 * host name, no TLS at all]. `none`: no root certificate anywhere; `given`: sslrootcert names the CA; `home`: the CA is
 * ~/.postgresql/root.crt. The user `app` may log in with or without TLS.
 */
const APP: Record<`${SslMode}/${"none" | "given" | "home"}`, [Outcome, Outcome, Outcome, Outcome]> = {
  "disable/none": ["plain", "plain", "plain", "plain"],
  "disable/given": ["plain", "plain", "plain", "plain"],
  "disable/home": ["plain", "plain", "plain", "plain"],
  // allow: plain text first, which this user may use.
  "allow/none": ["plain", "plain", "plain", "plain"],
  "allow/given": ["plain", "plain", "plain", "plain"],
  "allow/home": ["plain", "plain", "plain", "plain"],
  // prefer: TLS first; with a root certificate the chain is checked, and a failed check falls back to plain text.
  "prefer/none": ["tls", "tls", "tls", "plain"],
  "prefer/given": ["tls", "plain", "tls", "plain"],
  "prefer/home": ["tls", "plain", "tls", "plain"],
  // require: TLS only; with a root certificate it is verify-ca.
  "require/none": ["tls", "tls", "tls", "refused"],
  "require/given": ["tls", "refused", "tls", "refused"],
  "require/home": ["tls", "refused", "tls", "refused"],
  "verify-ca/none": ["refused", "refused", "refused", "refused"],
  "verify-ca/given": ["tls", "refused", "tls", "refused"],
  "verify-ca/home": ["tls", "refused", "tls", "refused"],
  "verify-full/none": ["refused", "refused", "refused", "refused"],
  "verify-full/given": ["tls", "refused", "refused", "refused"],
  "verify-full/home": ["tls", "refused", "refused", "refused"],
};

/** The user `sslonly` gets in only over TLS (hostssl), `plainonly` only without (hostnossl). */
const OTHERS: { user: string; mode: SslMode; trust: "none" | "given"; expect: [Outcome, Outcome, Outcome, Outcome] }[] = [
  { user: "sslonly", mode: "disable", trust: "none", expect: ["refused", "refused", "refused", "refused"] },
  // allow: plain text is refused, so TLS is tried next.
  { user: "sslonly", mode: "allow", trust: "none", expect: ["tls", "tls", "tls", "refused"] },
  { user: "sslonly", mode: "allow", trust: "given", expect: ["tls", "refused", "tls", "refused"] },
  // prefer: the check fails, plain text is tried and refused.
  { user: "sslonly", mode: "prefer", trust: "given", expect: ["tls", "refused", "tls", "refused"] },
  // prefer: the server refuses the TLS session's login, and plain text is tried next.
  { user: "plainonly", mode: "prefer", trust: "none", expect: ["plain", "plain", "plain", "plain"] },
  { user: "plainonly", mode: "require", trust: "none", expect: ["refused", "refused", "refused", "refused"] },
];

describe.skipIf(!pgBin)("PostgreSQL TLS: sslmode as libpq has it, for dbkeep's own connections and for the tools", () => {
  const dir = tempDir("dbkeep-it-tls-pg-");
  let pki: TestPki;
  let server: ScratchPg;
  let certUser: CertPair;
  const homeNone = join(dir, "home-none");
  const homeCa = join(dir, "home-ca");

  beforeAll(async () => {
    pki = makeTestPki(dir);
    certUser = pki.client("certuser");
    mkdirSync(homeNone);
    mkdirSync(join(homeCa, ".postgresql"), { recursive: true });
    copyFileSync(pki.ca, join(homeCa, ".postgresql", "root.crt"));
    server = await startScratchPg({
      cert: pki.server,
      clientCa: pki.ca,
      hba: [
        "hostssl all certuser 127.0.0.1/32 cert",
        "hostssl all sslonly 127.0.0.1/32 trust",
        "hostnossl all plainonly 127.0.0.1/32 trust",
        "host all app 127.0.0.1/32 scram-sha-256",
        "host all postgres 127.0.0.1/32 trust",
      ],
    });
    await server.admin(`CREATE ROLE app LOGIN PASSWORD '${PASSWORD}'`);
    await server.admin("CREATE ROLE sslonly LOGIN; CREATE ROLE plainonly LOGIN; CREATE ROLE certuser LOGIN");
    await server.admin(`CREATE DATABASE ${DB}`);
    await server.admin(`GRANT ALL ON DATABASE ${DB} TO app, sslonly, plainonly, certuser`);
    const c = await connectPg({ host: server.dir, port: server.port, user: "postgres", database: DB }, resolvePgTls({ sslmode: "disable" }, server.dir));
    await c.query("CREATE TABLE drill (id int PRIMARY KEY, v text); INSERT INTO drill VALUES (1, 'tls-drill-row-marker'); GRANT SELECT ON drill TO PUBLIC");
    await c.end();
  });
  afterAll(async () => {
    await server?.stop();
  });

  async function serve(v: Variant): Promise<void> {
    if (v === "noSsl") return server.setSsl(false);
    await server.setSsl(true);
    await server.useCert(v === "good" ? pki.server : v === "wrongCa" ? pki.wrongCa : pki.wrongHost);
  }

  const settingsFor = (mode: SslMode, trust: "none" | "given" | "home"): { settings: PgTlsSettings; home: string } => ({
    settings: { sslmode: mode, ...(trust === "given" ? { sslrootcert: pki.ca } : {}) },
    home: trust === "home" ? homeCa : homeNone,
  });

  /** dbkeep's own connection: the one function every connection of the engine, verify and query goes through. */
  async function own(user: string, s: PgTlsSettings, home: string, host = "localhost"): Promise<Outcome> {
    let c;
    try {
      c = await connectPg(
        { host, port: server.port, user, password: PASSWORD, database: DB, connectionTimeoutMillis: 10_000 },
        resolvePgTls(s, host, home),
      );
    } catch {
      return "refused";
    }
    try {
      const r = await c.query<{ ssl: boolean }>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
      return r.rows[0]?.ssl ? "tls" : "plain";
    } finally {
      await c.end();
    }
  }

  const toolEnv = (user: string, home: string, host = "localhost") => ({
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: home,
    PGHOST: host,
    PGPORT: String(server.port),
    PGUSER: user,
    PGDATABASE: DB,
    PGPASSWORD: PASSWORD,
    PGCONNECT_TIMEOUT: "10",
  });

  /** libpq itself (psql) with the settings as a user would give them to it: the reference. */
  async function libpq(user: string, s: PgTlsSettings, home: string, host = "localhost"): Promise<Outcome> {
    const env = {
      ...toolEnv(user, home, host),
      ...(s.sslmode ? { PGSSLMODE: s.sslmode } : {}),
      ...(s.sslrootcert ? { PGSSLROOTCERT: s.sslrootcert } : {}),
      ...(s.sslcert ? { PGSSLCERT: s.sslcert } : {}),
      ...(s.sslkey ? { PGSSLKEY: s.sslkey } : {}),
    };
    try {
      const { stdout } = await run(join(pgBin!, "psql"), ["-X", "-A", "-t", "--no-password", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"], { env });
      return stdout.trim() === "t" ? "tls" : "plain";
    } catch {
      return "refused";
    }
  }

  /** pg_dump with the environment dbkeep gives it for these settings (refused when dbkeep refuses to start it). */
  async function pgDump(user: string, s: PgTlsSettings, home: string, host = "localhost"): Promise<"connected" | "refused"> {
    let tls;
    try {
      tls = resolvePgTls(s, host, home);
    } catch {
      return "refused";
    }
    try {
      await run(join(pgBin!, "pg_dump"), ["--no-password", "--schema-only", "-f", "/dev/null"], { env: { ...toolEnv(user, home, host), ...tls.env } });
      return "connected";
    } catch {
      return "refused";
    }
  }

  it("every sslmode, with and without a root certificate, against the right CA, another CA, another host name and no TLS", async () => {
    const seen: Record<string, { variant: Variant; libpq: Outcome; own: Outcome; pgDump: string }[]> = {};
    for (const [i, variant] of VARIANTS.entries()) {
      await serve(variant);
      const rows = [
        ...Object.entries(APP).map(([key, outcomes]) => {
          const [mode, trust] = key.split("/") as [SslMode, "none" | "given" | "home"];
          return { name: `app ${key}`, user: "app", ...settingsFor(mode, trust), expect: outcomes[i]! };
        }),
        ...OTHERS.map((o) => ({ name: `${o.user} ${o.mode}/${o.trust}`, user: o.user, ...settingsFor(o.mode, o.trust), expect: o.expect[i]! })),
      ];
      await Promise.all(rows.map(async (r) => {
        const [l, o, d] = await Promise.all([libpq(r.user, r.settings, r.home), own(r.user, r.settings, r.home), pgDump(r.user, r.settings, r.home)]);
        (seen[r.name] ??= []).push({ variant, libpq: l, own: o, pgDump: d });
      }));
    }
    await serve("good");
    // One table: the expectation, libpq's own behaviour, dbkeep's connection and pg_dump under dbkeep's settings.
    const expected: Record<string, { variant: Variant; libpq: Outcome; own: Outcome; pgDump: string }[]> = {};
    for (const [key, outcomes] of Object.entries(APP)) {
      expected[`app ${key}`] = VARIANTS.map((variant, i) => ({ variant, libpq: outcomes[i]!, own: outcomes[i]!, pgDump: outcomes[i] === "refused" ? "refused" : "connected" }));
    }
    for (const o of OTHERS) {
      expected[`${o.user} ${o.mode}/${o.trust}`] = VARIANTS.map((variant, i) => ({ variant, libpq: o.expect[i]!, own: o.expect[i]!, pgDump: o.expect[i] === "refused" ? "refused" : "connected" }));
    }
    expect(seen).toEqual(expected);
  });

  it("verify-full checks an IP address against the certificate's IP names, as libpq does", async () => {
    const s = { sslmode: "verify-full" as const, sslrootcert: pki.ca };
    expect([await own("app", s, homeNone, "127.0.0.1"), await libpq("app", s, homeNone, "127.0.0.1")]).toEqual(["tls", "tls"]);
    await serve("wrongHost");
    try {
      expect([await own("app", s, homeNone, "127.0.0.1"), await libpq("app", s, homeNone, "127.0.0.1")]).toEqual(["refused", "refused"]);
    } finally {
      await serve("good");
    }
  });

  it("client certificates: sslcert/sslkey, or ~/.postgresql/postgresql.crt and .key; a key others can read is refused", async () => {
    const given = { sslmode: "verify-full" as const, sslrootcert: pki.ca, sslcert: certUser.cert, sslkey: certUser.key };
    expect([await own("certuser", given, homeNone), await libpq("certuser", given, homeNone), await pgDump("certuser", given, homeNone)]).toEqual(["tls", "tls", "connected"]);
    const without = { sslmode: "verify-full" as const, sslrootcert: pki.ca };
    expect([await own("certuser", without, homeNone), await libpq("certuser", without, homeNone), await pgDump("certuser", without, homeNone)]).toEqual(["refused", "refused", "refused"]);

    const home = join(dir, "home-cert");
    mkdirSync(join(home, ".postgresql"), { recursive: true });
    copyFileSync(pki.ca, join(home, ".postgresql", "root.crt"));
    copyFileSync(certUser.cert, join(home, ".postgresql", "postgresql.crt"));
    copyFileSync(certUser.key, join(home, ".postgresql", "postgresql.key"));
    chmodSync(join(home, ".postgresql", "postgresql.key"), 0o600);
    const byDefault = { sslmode: "verify-full" as const };
    expect([await own("certuser", byDefault, home), await libpq("certuser", byDefault, home), await pgDump("certuser", byDefault, home)]).toEqual(["tls", "tls", "connected"]);

    chmodSync(join(home, ".postgresql", "postgresql.key"), 0o644);
    expect(await libpq("certuser", byDefault, home)).toBe("refused");
    expect(() => resolvePgTls(byDefault, "localhost", home)).toThrow(/can be read by group or others/);
  });

  it("a configured file that does not exist is a configuration error, not a quietly skipped check", () => {
    for (const s of [{ sslmode: "require" as const, sslrootcert: join(dir, "nope.crt") }, { sslcert: join(dir, "nope.crt"), sslkey: certUser.key }]) {
      let err: unknown;
      try {
        resolvePgTls(s, "localhost", homeNone);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DbkeepError);
      expect((err as DbkeepError).code).toBe("CONFIG_INVALID");
      expect((err as DbkeepError).message).toContain("nope.crt");
    }
    expect(() => resolvePgTls({ sslmode: "verify-ca" }, "localhost", homeNone)).toThrow(/needs a root certificate file/);
    // A Unix-domain socket never uses TLS, whatever sslmode says (libpq ignores it there).
    expect(resolvePgTls({ sslmode: "verify-full" }, "/run/postgresql", homeNone).attempts).toEqual([false]);
  });

  it("the engine and query connections follow the same rules, with an error that says what to fix", async () => {
    const options = { engine: "postgres", host: "localhost", port: server.port, user: "app", password: PASSWORD, database: DB, sslmode: "verify-full", sslrootcert: pki.ca };
    const engine = await ENGINES.postgres!.create(options, { secret: (f) => (f === "password" ? new Secret(PASSWORD) : undefined) });
    expect((await engine.check!()).server).toMatch(/^PostgreSQL/);
    const q = await openPostgres(options, { secret: () => new Secret(PASSWORD), oneOff: false });
    const r = await q.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", { write: false });
    expect(r.kind === "rows" ? (await r.rows.next()).value : undefined).toEqual([true]);
    await q.close();

    // The server of another CA: verify-ca must not send the password there (it used to skip the check entirely).
    await serve("wrongCa");
    try {
      for (const sslmode of ["verify-ca", "verify-full", "require"]) {
        const e = await ENGINES.postgres!.create({ ...options, sslmode }, { secret: () => new Secret(PASSWORD) });
        await expect(e.check!(), sslmode).rejects.toMatchObject({ code: "CONNECTION_FAILED", retryable: false });
        await expect(openPostgres({ ...options, sslmode }, { secret: () => new Secret(PASSWORD), oneOff: false }), sslmode).rejects.toThrow(/cannot connect/);
      }
    } finally {
      await serve("good");
    }

    await serve("wrongHost");
    try {
      const fresh = await ENGINES.postgres!.create(options, { secret: () => new Secret(PASSWORD) });
      const err = await fresh.check!().then(() => undefined, (e: unknown) => e as DbkeepError);
      expect(err?.code).toBe("CONNECTION_FAILED");
      expect(err?.retryable).toBe(false);
      expect(err?.hint).toContain("sslrootcert");
      expect(err?.details).toMatch(/Hostname\/IP does not match|altnames/i);
      await expect(openPostgres(options, { secret: () => new Secret(PASSWORD), oneOff: false })).rejects.toThrow(/cannot connect/);
      // verify-ca does not look at the name: the same server is accepted.
      const ca = await openPostgres({ ...options, sslmode: "verify-ca" }, { secret: () => new Secret(PASSWORD), oneOff: false });
      await ca.close();
    } finally {
      await serve("good");
    }
  });

  it("a backup passes the settings to pg_dump in its environment, never its arguments, and refuses an impostor before pg_dump starts", async () => {
    const cfg = join(dir, "dbkeep.yaml");
    const store = join(dir, "backups");
    writeFileSync(
      cfg,
      `datasources:
  db: { engine: postgres, host: localhost, port: ${server.port}, user: certuser, database: ${DB}, sslmode: verify-full, sslrootcert: ${pki.ca}, sslcert: ${certUser.cert}, sslkey: ${certUser.key}, compression: none }
stores:
  local: { type: local, path: ${store} }
jobs:
  tls: { datasource: db, store: local, retry: { max_attempts: 3, delay: 1s } }
`,
    );
    const env = { HOME: homeNone };
    const ok = await runWatchingChildren(["-c", cfg, "backup", "tls"], env);
    expect(ok.code, ok.output).toBe(0);
    // The dump itself, not `pg_dump --version`.
    const dump = ok.procs.find((p) => /\bpg_dump\b/.test(p.cmdline.split(" ")[0] ?? "") && p.cmdline.includes("--snapshot"));
    expect(dump, ok.output).toBeDefined();
    const environ = dump!.environ.split("\0");
    expect(environ).toEqual(expect.arrayContaining(["PGSSLMODE=verify-full", `PGSSLROOTCERT=${pki.ca}`, `PGSSLCERT=${certUser.cert}`, `PGSSLKEY=${certUser.key}`]));
    for (const p of ok.procs) expect(p.cmdline).not.toMatch(/ssl|\.crt|\.key/i);
    const files = readdirSync(join(store, DB));
    const data = files.find((f) => f.endsWith(".sql"));
    expect(readFileSync(join(store, DB, data!), "utf8")).toContain("tls-drill-row-marker");

    // verify restores it into a scratch database of a server named by URL, with the same settings in the URL.
    const on = `postgres://postgres@localhost:${server.port}/postgres?sslmode=verify-full&sslrootcert=${encodeURIComponent(pki.ca)}`;
    const verified = dbkeep(["verify", store, "latest", "--on", on, "--json"], { env });
    expect(verified.code, verified.stderr).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ ok: true, target: { kind: "database" } });

    await serve("wrongCa");
    try {
      const refused = dbkeep(["verify", store, "latest", "--on", on, "--json"], { env });
      expect(refused.code).toBe(1);
      expect(refused.stdout + refused.stderr).toContain("cannot connect to PostgreSQL");
      const bad = await runWatchingChildren(["-c", cfg, "--log-format", "text", "backup", "tls"], env);
      expect(bad.code).toBe(1);
      expect(bad.output).toContain("cannot connect to PostgreSQL");
      expect(bad.output).toContain("hint: set sslrootcert");
      // Not a connection problem that another attempt could fix, and nothing reached pg_dump.
      expect(bad.output).not.toContain("retrying");
      expect(bad.procs.filter((p) => p.cmdline.includes("--snapshot"))).toEqual([]);
      expect(readdirSync(join(store, DB)).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(1);
    } finally {
      await serve("good");
    }
  });

  it("URL mode takes PGSSLMODE, PGSSLROOTCERT, PGSSLCERT and PGSSLKEY from the environment, as libpq's tools do", () => {
    const url = `postgres://app@localhost:${server.port}/${DB}?compression=none`;
    const env = { HOME: homeNone, PGPASSWORD: PASSWORD, PGSSLMODE: "verify-full", PGSSLROOTCERT: pki.ca };
    const ok = dbkeep(["backup", url, "--to", join(dir, "url-backups")], { env });
    expect(ok.code, ok.stderr).toBe(0);
    // Without the CA, verify-full has nothing to check the server with and refuses.
    const bad = dbkeep(["backup", url, "--to", join(dir, "url-backups")], { env: { HOME: homeNone, PGPASSWORD: PASSWORD, PGSSLMODE: "verify-full" } });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("needs a root certificate file");
  });

  it("sidecar mode reads libpq's TLS variables into the datasource", () => {
    const { raw } = configFromEnv({ DB_TYPE: "postgres", PGHOST: "db", PGDATABASE: "app", PGSSLMODE: "verify-full", PGSSLROOTCERT: "/ca.pem", PGSSLCERT: "/c.pem", PGSSLKEY: "/k.pem", DBKEEP_STORE: "/backups" });
    expect((raw.datasources as Record<string, unknown>).source).toMatchObject({ sslmode: "verify-full", sslrootcert: "/ca.pem", sslcert: "/c.pem", sslkey: "/k.pem" });
    const fromUrl = configFromEnv({ DBKEEP_SOURCE: "postgres://u@db/app?sslmode=require", PGSSLMODE: "verify-full", PGSSLROOTCERT: "/ca.pem", DBKEEP_STORE: "/backups" });
    expect((fromUrl.raw.datasources as Record<string, unknown>).source).toMatchObject({ sslmode: "require", sslrootcert: "/ca.pem" });
  });
});

// ---------------------------------------------------------------------------------------------------------------
// MySQL / MariaDB

const myBin = mariadbServerAvailable();
if (!myBin && IN_CI) throw new Error("the MariaDB server (mariadbd, mariadb-install-db) is missing under CI");

type MyMode = "disabled" | "preferred" | "required" | "verify_ca" | "verify_identity" | "(unset)";
type Four = [Outcome, Outcome, Outcome, Outcome];

/**
 * MySQL's --ssl-mode, for [right certificate, certificate of another CA, certificate of the right CA for another host
 * name, no TLS], with (`ca`) and without (`none`) ssl_ca naming the private CA; a given CA is checked in every mode
 * that uses TLS. `own`: dbkeep's own connections (mysql2). `tool`: the MariaDB client with the option file dbkeep
 * writes, which falls back to plain text where the engine then refuses the session (tested below).
 */
const MY: { mode: MyMode; trust: "none" | "ca"; own: Four; tool: Four }[] = [
  { mode: "disabled", trust: "none", own: ["plain", "plain", "plain", "plain"], tool: ["plain", "plain", "plain", "plain"] },
  { mode: "disabled", trust: "ca", own: ["plain", "plain", "plain", "plain"], tool: ["plain", "plain", "plain", "plain"] },
  { mode: "preferred", trust: "none", own: ["tls", "tls", "tls", "plain"], tool: ["tls", "tls", "tls", "plain"] },
  { mode: "preferred", trust: "ca", own: ["tls", "refused", "tls", "plain"], tool: ["tls", "refused", "tls", "plain"] },
  // required: encrypted; checked only against a given CA. The tool would fall back to plain text: the engine
  // checks the session and refuses.
  { mode: "required", trust: "none", own: ["tls", "tls", "tls", "refused"], tool: ["tls", "tls", "tls", "plain"] },
  { mode: "required", trust: "ca", own: ["tls", "refused", "tls", "refused"], tool: ["tls", "refused", "tls", "plain"] },
  // verify_*: the private CA is not among the system's, so without ssl_ca nothing checks out.
  { mode: "verify_ca", trust: "none", own: ["refused", "refused", "refused", "refused"], tool: ["refused", "refused", "refused", "refused"] },
  { mode: "verify_ca", trust: "ca", own: ["tls", "refused", "tls", "refused"], tool: ["tls", "refused", "tls", "plain"] },
  { mode: "verify_identity", trust: "none", own: ["refused", "refused", "refused", "refused"], tool: ["refused", "refused", "refused", "refused"] },
  { mode: "verify_identity", trust: "ca", own: ["tls", "refused", "refused", "refused"], tool: ["tls", "refused", "refused", "refused"] },
  // No ssl_mode: ssl_ca alone means verify_ca, as in MySQL's clients; neither means preferred.
  { mode: "(unset)", trust: "ca", own: ["tls", "refused", "tls", "refused"], tool: ["tls", "refused", "tls", "plain"] },
  { mode: "(unset)", trust: "none", own: ["tls", "tls", "tls", "plain"], tool: ["tls", "tls", "tls", "plain"] },
];

describe.skipIf(!myBin)("MySQL/MariaDB TLS: ssl_mode for dbkeep's own connections and for the client tools", () => {
  const dir = tempDir("dbkeep-it-tls-my-");
  let pki: TestPki;
  let server: Awaited<ReturnType<typeof startScratchMariadb>>;
  let certUser: CertPair;
  const served = () => ({ cert: join(dir, "served.crt"), key: join(dir, "served.key") });

  beforeAll(async () => {
    pki = makeTestPki(dir);
    certUser = pki.client("certuser");
    copyFileSync(pki.server.cert, served().cert);
    copyFileSync(pki.server.key, served().key);
    server = await startScratchMariadb({
      cert: served(),
      clientCa: pki.ca,
      sql: `CREATE DATABASE ${DB};
        CREATE TABLE ${DB}.drill (id INT PRIMARY KEY, v TEXT); INSERT INTO ${DB}.drill VALUES (1, 'tls-drill-row-marker');
        CREATE USER 'app'@'%' IDENTIFIED BY '${PASSWORD}'; GRANT ALL ON ${DB}.* TO 'app'@'%';
        CREATE USER 'certuser'@'%' REQUIRE X509; GRANT ALL ON ${DB}.* TO 'certuser'@'%';`,
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  let tlsOn = true;
  async function serve(v: Variant): Promise<void> {
    if (v === "noSsl") {
      await server.restart(false);
      tlsOn = false;
      return;
    }
    const pair = v === "good" ? pki.server : v === "wrongCa" ? pki.wrongCa : pki.wrongHost;
    copyFileSync(pair.cert, served().cert);
    copyFileSync(pair.key, served().key);
    if (tlsOn) server.flushSsl();
    else await server.restart(true);
    tlsOn = true;
  }

  const settings = (mode: MyMode, trust: "none" | "ca", extra: Record<string, string> = {}): Record<string, string> => ({
    ...(mode === "(unset)" ? {} : { ssl_mode: mode }),
    ...(trust === "ca" ? { ssl_ca: pki.ca } : {}),
    ...extra,
  });

  async function own(user: string, s: Record<string, string>): Promise<Outcome> {
    let q;
    try {
      q = await openMysql({ engine: "mariadb", host: "127.0.0.1", port: server.port, user, database: DB, ...s }, { secret: () => (user === "app" ? new Secret(PASSWORD) : undefined), oneOff: false });
    } catch {
      return "refused";
    }
    try {
      const r = await q.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'", { write: false });
      const row = r.kind === "rows" ? (await r.rows.next()).value : undefined;
      if (r.kind === "rows") await r.rows.return();
      return row?.[1] ? "tls" : "plain";
    } finally {
      await q.close();
    }
  }

  /** The MariaDB client with the [client] option file the engine writes for these settings. */
  async function tool(user: string, s: Record<string, string>): Promise<Outcome> {
    const file = join(dir, `client-${Math.random().toString(36).slice(2)}.cnf`);
    const lines = ["[client]", `user=${user}`, ...(user === "app" ? [`password=${PASSWORD}`] : []), "host=127.0.0.1", `port=${server.port}`,
      ...optionFileTls(mysqlTlsOf(s), "mariadb", quoteOption)];
    writeFileSync(file, lines.join("\n") + "\n", { mode: 0o600 });
    try {
      const { stdout } = await run("mariadb", [`--defaults-extra-file=${file}`, "-N", "-B", "--connect-timeout=10", "-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'", DB]);
      return /Ssl_cipher\t\S/.test(stdout) ? "tls" : "plain";
    } catch {
      return "refused";
    }
  }

  it("every ssl_mode, with and without ssl_ca, against the right CA, another CA, another host name and no TLS", async () => {
    const seen: Record<string, { variant: Variant; own: Outcome; tool: Outcome }[]> = {};
    const expected: Record<string, { variant: Variant; own: Outcome; tool: Outcome }[]> = {};
    for (const [i, variant] of VARIANTS.entries()) {
      await serve(variant);
      for (const row of MY) {
        const s = settings(row.mode, row.trust);
        const key = `${row.mode}/${row.trust}`;
        (seen[key] ??= []).push({ variant, own: await own("app", s), tool: await tool("app", s) });
        (expected[key] ??= []).push({ variant, own: row.own[i]!, tool: row.tool[i]! });
      }
    }
    await serve("good");
    expect(seen).toEqual(expected);
  });

  it("client certificates with ssl_cert and ssl_key, for an account that REQUIREs X509", async () => {
    const withCert = settings("verify_identity", "ca", { ssl_cert: certUser.cert, ssl_key: certUser.key });
    expect([await own("certuser", withCert), await tool("certuser", withCert)]).toEqual(["tls", "tls"]);
    const without = settings("verify_identity", "ca");
    expect([await own("certuser", without), await tool("certuser", without)]).toEqual(["refused", "refused"]);
  });

  it("a backup gives the tools ssl_ca, ssl_cert and ssl_key through their option file, and fails on an impostor without retrying", async () => {
    const cfg = join(dir, "dbkeep.yaml");
    const store = join(dir, "backups");
    writeFileSync(
      cfg,
      `datasources:
  db: { engine: mariadb, host: 127.0.0.1, port: ${server.port}, user: certuser, database: ${DB}, ssl_mode: verify_identity, ssl_ca: ${pki.ca}, ssl_cert: ${certUser.cert}, ssl_key: ${certUser.key}, compression: none }
stores:
  local: { type: local, path: ${store} }
jobs:
  tls: { datasource: db, store: local, retry: { max_attempts: 3, delay: 1s } }
`,
    );
    const ok = await runWatchingChildren(["-c", cfg, "backup", "tls"], {});
    expect(ok.code, ok.output).toBe(0);
    const dumps = ok.procs.filter((p) => /mariadb-dump|mysqldump/.test(p.cmdline.split(" ")[0] ?? "") && p.cmdline.includes("--defaults-extra-file"));
    expect(dumps.length, ok.output).toBeGreaterThan(0);
    for (const p of ok.procs) expect(p.cmdline).not.toMatch(/--ssl|\.crt|\.key/i);
    const data = readdirSync(join(store, DB)).find((f) => f.endsWith(".sql"));
    expect(readFileSync(join(store, DB, data!), "utf8")).toContain("tls-drill-row-marker");

    await serve("wrongHost");
    try {
      const bad = dbkeep(["-c", cfg, "--log-format", "text", "backup", "tls"]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain("hint: set ssl_ca");
      expect(bad.stderr).not.toContain("retrying");
      expect(readdirSync(join(store, DB)).filter((f) => f.endsWith(".manifest.json"))).toHaveLength(1);
    } finally {
      await serve("good");
    }
  });

  it("the engine refuses a plain-text session under required, and an impostor under verify_identity", async () => {
    const options = { engine: "mariadb", host: "127.0.0.1", port: server.port, user: "app", password: PASSWORD, database: DB };
    const create = (extra: Record<string, string>) => ENGINES.mariadb!.create({ ...options, ...extra }, { secret: () => new Secret(PASSWORD) });
    expect((await (await create({ ssl_mode: "verify_identity", ssl_ca: pki.ca })).check!()).server).toMatch(/MariaDB/);
    await serve("noSsl");
    try {
      // The MariaDB client would fall back to plain text here; the engine looks at the session and refuses.
      for (const extra of [{ ssl_mode: "required" }, { ssl_mode: "verify_ca", ssl_ca: pki.ca }, { ssl_ca: pki.ca }] as Record<string, string>[]) {
        await expect((await create(extra)).check!(), JSON.stringify(extra)).rejects.toThrow(/is not encrypted/);
      }
      expect((await (await create({ ssl_mode: "preferred" })).check!()).server).toMatch(/MariaDB/);
      await serve("wrongCa");
      for (const extra of [{ ssl_mode: "verify_identity", ssl_ca: pki.ca }, { ssl_mode: "required", ssl_ca: pki.ca }]) {
        const err = await (await create(extra)).check!().then(() => undefined, (e: unknown) => e as DbkeepError);
        expect(err, JSON.stringify(extra)).toMatchObject({ code: "CONNECTION_FAILED", retryable: false });
        expect(err?.hint).toContain("ssl_ca");
      }
    } finally {
      await serve("good");
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Redis

const redisTls = redisTlsAvailable();
if (!redisTls && IN_CI) throw new Error("redis-server with TLS (--tls-port) is missing under CI");

describe.skipIf(!redisTls)("Redis TLS: the certificate and the host name are checked unless tls_insecure", () => {
  const dir = tempDir("dbkeep-it-tls-redis-");
  let pki: TestPki;
  let server: Awaited<ReturnType<typeof startScratchRedisTls>>;

  beforeAll(async () => {
    pki = makeTestPki(dir);
    server = await startScratchRedisTls({ cert: pki.server, ca: pki.ca });
    server.cli(["SET", "tls-drill-key-marker", "v"]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  const serve = (v: Exclude<Variant, "noSsl">) => server.useCert(v === "good" ? pki.server : v === "wrongCa" ? pki.wrongCa : pki.wrongHost);

  async function own(extra: Record<string, unknown>): Promise<"connected" | "refused"> {
    const engine = await ENGINES.redis!.create({ engine: "redis", host: "127.0.0.1", port: server.port, mode: "logical", ...extra }, { secret: () => undefined });
    return engine.check!().then(() => "connected" as const, () => "refused" as const);
  }

  it("tls_ca checks the chain and the name, tls alone trusts the system's CAs only, tls_insecure checks nothing, plain text is refused", async () => {
    const cases: Record<string, Record<string, unknown>> = {
      plain: {},
      "tls (system CAs)": { tls: true },
      tls_ca: { tls_ca: pki.ca },
      tls_insecure: { tls: true, tls_insecure: true },
    };
    const seen: Record<string, string[]> = {};
    for (const v of ["good", "wrongCa", "wrongHost"] as const) {
      serve(v);
      for (const [name, extra] of Object.entries(cases)) (seen[name] ??= []).push(await own(extra));
    }
    serve("good");
    expect(seen).toEqual({
      plain: ["refused", "refused", "refused"],
      "tls (system CAs)": ["refused", "refused", "refused"],
      tls_ca: ["connected", "refused", "refused"],
      tls_insecure: ["connected", "connected", "connected"],
    });
  });

  it("an rdb backup checks the server's name itself before redis-cli runs, since redis-cli checks only the chain", async () => {
    const store = join(dir, "backups");
    const source = `rediss://127.0.0.1:${server.port}?tls_ca=${encodeURIComponent(pki.ca)}&compression=none`;
    const ok = dbkeep(["backup", source, "--to", store]);
    expect(ok.code, ok.stderr).toBe(0);
    const sub = readdirSync(store)[0]!;
    const rdb = readdirSync(join(store, sub)).find((f) => f.endsWith(".rdb"));
    expect(readFileSync(join(store, sub, rdb!)).includes("tls-drill-key-marker")).toBe(true);

    serve("wrongHost");
    try {
      // redis-cli alone accepts a certificate of the right CA for any name.
      const cli = await run("redis-cli", ["--tls", "--cacert", pki.ca, "--sni", "localhost", "-h", "127.0.0.1", "-p", String(server.port), "PING"]);
      expect(cli.stdout.trim()).toBe("PONG");
      const bad = await runWatchingChildren(["--log-format", "text", "backup", source, "--to", store], {});
      expect(bad.code).toBe(1);
      expect(bad.output).toMatch(/cannot connect to Redis .*(Hostname\/IP does not match|altnames)/);
      expect(bad.procs.filter((p) => p.cmdline.includes("--rdb"))).toEqual([]);
    } finally {
      serve("good");
    }
  });
});
