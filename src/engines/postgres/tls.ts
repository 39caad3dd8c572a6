import { readFileSync, statSync, type Stats } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { checkServerIdentity, type ConnectionOptions } from "node:tls";
import { DbkeepError } from "../../core/errors.js";

/**
 * libpq's TLS settings, mapped in this one place for every connection dbkeep makes to PostgreSQL: its own (catalog,
 * row counts, restore checks, verify, query) and the tools' (pg_dump, pg_dumpall, psql, pg_restore, which get the
 * same settings as PGSSL* variables in their environment). The semantics are libpq's
 * (https://www.postgresql.org/docs/current/libpq-ssl.html):
 *
 * - disable: plain text only. allow: plain text, and TLS when the server refuses that. prefer (libpq's default): TLS,
 *   and plain text when the server offers no TLS or the TLS attempt fails. require, verify-ca, verify-full: TLS only.
 * - The server's certificate chain is checked whenever a root certificate file is in use, in every mode: `sslrootcert`,
 *   or else `~/.postgresql/root.crt` if that file exists. So `require` with a root certificate behaves as `verify-ca`.
 *   verify-ca and verify-full refuse to connect without one. Only verify-full checks the host name as well.
 * - A client certificate is sent when `sslcert` (or else `~/.postgresql/postgresql.crt`) exists, with the key from
 *   `sslkey` (or else `~/.postgresql/postgresql.key`), which must not be readable by group or others.
 * - Unix-domain socket connections never use TLS (libpq ignores sslmode there).
 *
 * Stricter than libpq in one point: a file named in the configuration must exist. libpq quietly skips the check when
 * the `sslrootcert` it was given is missing (sslmode require): a typo in that path would turn the check off unseen.
 */

export const SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] as const;
export type SslMode = (typeof SSL_MODES)[number];

export interface PgTlsSettings {
  sslmode?: SslMode | undefined;
  sslrootcert?: string | undefined;
  sslcert?: string | undefined;
  sslkey?: string | undefined;
}

/** One way to connect: plain text (`false`) or TLS with these options for tls.connect. */
export type PgAttempt = false | ConnectionOptions;

export interface PgTls {
  mode: SslMode;
  /** The root certificate file that checks the server, when one is in use. */
  rootcert?: string;
  /** The client certificate and key files, when a client certificate is sent. */
  cert?: string;
  key?: string;
  /** libpq's connection attempts in its order; a later one is made only when the earlier one failed after reaching the server. */
  attempts: PgAttempt[];
  /** The same settings for a libpq tool's environment (never its arguments). */
  env: Record<string, string>;
}

/** libpq's variables, for where dbkeep takes libpq's environment (a source URL; sidecar mode reads them into the config). */
export function pgTlsFromEnv(env: NodeJS.ProcessEnv): PgTlsSettings {
  const mode = env.PGSSLMODE;
  if (mode !== undefined && mode !== "" && !(SSL_MODES as readonly string[]).includes(mode)) {
    throw new DbkeepError("CONFIG_INVALID", `PGSSLMODE is "${mode}", which is not an sslmode`, { hint: `use one of ${SSL_MODES.join(", ")}` });
  }
  return {
    ...(mode ? { sslmode: mode as SslMode } : {}),
    ...(env.PGSSLROOTCERT ? { sslrootcert: env.PGSSLROOTCERT } : {}),
    ...(env.PGSSLCERT ? { sslcert: env.PGSSLCERT } : {}),
    ...(env.PGSSLKEY ? { sslkey: env.PGSSLKEY } : {}),
  };
}

/** `base` overridden by the settings `over` gives (an unset key of `over` keeps `base`'s). */
export function mergePgTls(base: PgTlsSettings, over: PgTlsSettings): PgTlsSettings {
  const out: PgTlsSettings = { ...base };
  for (const k of ["sslmode", "sslrootcert", "sslcert", "sslkey"] as const) if (over[k] !== undefined) (out as Record<string, unknown>)[k] = over[k];
  return out;
}

/** The TLS keys of a datasource's options. */
export function pgTlsOf(options: Record<string, unknown>): PgTlsSettings {
  const s = (k: string) => (typeof options[k] === "string" && options[k] !== "" ? (options[k] as string) : undefined);
  return { sslmode: s("sslmode") as SslMode | undefined, sslrootcert: s("sslrootcert"), sslcert: s("sslcert"), sslkey: s("sslkey") };
}

function tlsError(message: string, hint: string): DbkeepError {
  return new DbkeepError("CONFIG_INVALID", message, { hint });
}

function statOf(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ENOTDIR") return undefined;
    throw tlsError(`cannot read ${path}: ${(err as Error).message}`, "check the file's permissions");
  }
}

function read(path: string, what: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw tlsError(`cannot read the ${what} ${path}: ${(err as Error).message}`, `check the datasource's ${key} and the file's permissions`);
  }
}

/** libpq refuses a private key that group or others can read (unless root owns it, then group may read it). */
function checkKeyFile(path: string, st: Stats): void {
  if (!st.isFile()) throw tlsError(`the private key ${path} is not a regular file`, "set sslkey to the client certificate's key file");
  const uid = process.geteuid?.();
  const tooOpen = (st.uid === uid && (st.mode & 0o077) !== 0) || (st.uid === 0 && (st.mode & 0o037) !== 0);
  if (tooOpen) {
    throw tlsError(
      `the private key ${path} can be read by group or others (mode ${(st.mode & 0o777).toString(8)}); libpq refuses it`,
      `chmod 600 ${path} (or 640 if root owns it)`,
    );
  }
}

/**
 * The effective settings for a server at `host`, with the files resolved and read. Throws CONFIG_INVALID for a
 * missing or unreadable file, or for verify-ca / verify-full without a root certificate (as libpq does).
 */
export function resolvePgTls(settings: PgTlsSettings, host: string, home: string = homedir()): PgTls {
  const mode: SslMode = settings.sslmode ?? "prefer";
  const env: Record<string, string> = { PGSSLMODE: mode };
  // Unix-domain sockets: libpq never uses TLS there, whatever sslmode says.
  if (mode === "disable" || host.startsWith("/")) return { mode, attempts: [false], env };

  const dir = join(home, ".postgresql");
  const options: ConnectionOptions = {};
  const out: PgTls = { mode, attempts: [], env };

  const rootcert = settings.sslrootcert ?? join(dir, "root.crt");
  if (statOf(rootcert)) {
    options.ca = read(rootcert, "root certificate file", "sslrootcert");
    out.rootcert = rootcert;
    env.PGSSLROOTCERT = rootcert;
  } else if (settings.sslrootcert !== undefined) {
    throw tlsError(`the root certificate file ${rootcert} does not exist`, "set sslrootcert to the PEM file of the CA that signed the server's certificate");
  } else if (mode === "verify-ca" || mode === "verify-full") {
    throw tlsError(
      `sslmode ${mode} needs a root certificate file to check the server with, and ${rootcert} does not exist`,
      "set sslrootcert to the PEM file of the CA that signed the server's certificate (or sslmode: require, which does not check it)",
    );
  }

  const cert = settings.sslcert ?? join(dir, "postgresql.crt");
  if (statOf(cert)) {
    const key = settings.sslkey ?? join(dir, "postgresql.key");
    const st = statOf(key);
    if (!st) throw tlsError(`the client certificate ${cert} is there, but not its private key ${key}`, "set sslkey to the client certificate's key file");
    checkKeyFile(key, st);
    options.cert = read(cert, "client certificate", "sslcert");
    options.key = read(key, "private key", "sslkey");
    out.cert = cert;
    out.key = key;
    env.PGSSLCERT = cert;
    env.PGSSLKEY = key;
  } else if (settings.sslcert !== undefined) {
    throw tlsError(`the client certificate ${cert} does not exist`, "set sslcert to the client certificate's PEM file");
  } else if (settings.sslkey !== undefined) {
    // libpq reads the key only with a certificate; saying so beats ignoring the setting.
    throw tlsError(`sslkey is set, but there is no client certificate (${cert} does not exist)`, "set sslcert to the client certificate's PEM file");
  }

  // The chain is checked whenever a root certificate is in use (libpq sets SSL_VERIFY_PEER then, in every mode);
  // the host name only in verify-full.
  options.rejectUnauthorized = out.rootcert !== undefined;
  options.checkServerIdentity = mode === "verify-full" ? checkServerIdentity : () => undefined;

  out.attempts = mode === "allow" ? [false, options] : mode === "prefer" ? [options, false] : [options];
  return out;
}
