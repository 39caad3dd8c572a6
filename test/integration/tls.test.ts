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
import { dbkeep, IN_CI, tempDir } from "../helpers/env.js";
import { runWatchingChildren } from "../helpers/proc.js";
import { makeTestPki, type CertPair, type TestPki } from "../helpers/tls-certs.js";
import { pgServerBin, startScratchPg, type ScratchPg } from "../helpers/tls-servers.js";

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
