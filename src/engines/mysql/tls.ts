import { readFileSync } from "node:fs";
import type { SslOptions } from "mysql2";
import { DbkeepError } from "../../core/errors.js";

/**
 * MySQL's ssl_mode, mapped in this one place for the connections dbkeep makes itself (mysql2: differential backups,
 * query) and for the client tools' option file (mysqldump / mariadb-dump, mysql / mariadb, never their arguments).
 * The modes are MySQL's (--ssl-mode):
 *
 * - disabled: plain text. preferred: TLS when the server offers it, plain text when it offers none.
 * - required: TLS or no connection.
 * - verify_ca: TLS, and the server's certificate must chain to ssl_ca (or to the system's CAs without it).
 * - verify_identity: verify_ca, and the certificate must name the host connected to.
 * - Without ssl_mode, ssl_ca means verify_ca (MySQL's clients do the same); without either, preferred.
 * - A given ssl_ca is always used: under preferred and required the chain is checked too, as MariaDB's clients and
 *   libpq do (MySQL's own clients would ignore it there, with a warning). A CA in the configuration never goes unused.
 *
 * MariaDB's client tools check the chain when given ssl-ca and add the host name only with ssl-verify-server-cert;
 * verify_ca without ssl_ca can only be had with the host name check (stricter, never weaker). Under required they
 * would fall back to plain text when the server offers no TLS, which the engine refuses by checking the session.
 */

export const MYSQL_SSL_MODES = ["disabled", "preferred", "required", "verify_ca", "verify_identity"] as const;
export type MysqlSslMode = (typeof MYSQL_SSL_MODES)[number];

export interface MysqlTlsSettings {
  ssl_mode?: MysqlSslMode | undefined;
  ssl_ca?: string | undefined;
  ssl_cert?: string | undefined;
  ssl_key?: string | undefined;
}

export function mysqlTlsOf(options: Record<string, unknown>): MysqlTlsSettings {
  const s = (k: string) => (typeof options[k] === "string" && options[k] !== "" ? (options[k] as string) : undefined);
  return { ssl_mode: s("ssl_mode") as MysqlSslMode | undefined, ssl_ca: s("ssl_ca"), ssl_cert: s("ssl_cert"), ssl_key: s("ssl_key") };
}

/** The mode in effect: ssl_mode, else verify_ca when a CA is given, else preferred. */
export function effectiveSslMode(s: MysqlTlsSettings): MysqlSslMode {
  return s.ssl_mode ?? (s.ssl_ca ? "verify_ca" : "preferred");
}

function read(path: string, key: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new DbkeepError("CONFIG_INVALID", `cannot read ${key} ${path}: ${(err as Error).message}`, { hint: `check the datasource's ${key} and the file's permissions` });
  }
}

/**
 * mysql2's `ssl` option for each connection attempt in order (undefined: plain text). preferred tries TLS first and
 * plain text only when the server offers no TLS.
 */
export function mysql2Attempts(s: MysqlTlsSettings): (SslOptions | undefined)[] {
  const mode = effectiveSslMode(s);
  if (mode === "disabled") return [undefined];
  const verify = mode === "verify_ca" || mode === "verify_identity";
  const ssl: SslOptions = {
    ...(s.ssl_ca ? { ca: read(s.ssl_ca, "ssl_ca") } : {}),
    ...(s.ssl_cert ? { cert: read(s.ssl_cert, "ssl_cert") } : {}),
    ...(s.ssl_key ? { key: read(s.ssl_key, "ssl_key") } : {}),
    rejectUnauthorized: verify || s.ssl_ca !== undefined,
    verifyIdentity: mode === "verify_identity",
  };
  return mode === "preferred" ? [ssl, undefined] : [ssl];
}

/** Whether a failed attempt under preferred may be followed by a plain one: only when the server offers no TLS. */
export function offersNoTls(err: unknown): boolean {
  return (err as { code?: string }).code === "HANDSHAKE_NO_SSL_SUPPORT";
}

/** The [client] option file lines for the tools of this family. */
export function optionFileTls(s: MysqlTlsSettings, family: "mariadb" | "mysql", quote: (v: string) => string): string[] {
  const mode = effectiveSslMode(s);
  const files = [
    ...(s.ssl_ca ? [`ssl-ca=${quote(s.ssl_ca)}`] : []),
    ...(s.ssl_cert ? [`ssl-cert=${quote(s.ssl_cert)}`] : []),
    ...(s.ssl_key ? [`ssl-key=${quote(s.ssl_key)}`] : []),
  ];
  if (mode === "disabled") return [family === "mysql" ? "ssl-mode=DISABLED" : "skip-ssl"];
  if (family === "mysql") {
    // MySQL's clients check nothing under PREFERRED and REQUIRED, whatever ssl-ca says: a given CA asks for VERIFY_CA.
    const checked = (mode === "preferred" || mode === "required") && s.ssl_ca ? "verify_ca" : mode;
    return [...files, `ssl-mode=${checked.toUpperCase()}`];
  }
  // MariaDB: TLS is tried by default, ssl-ca checks the chain, ssl-verify-server-cert the chain and the host name.
  if (mode === "preferred") return files;
  const hostCheck = mode === "verify_identity" || (mode === "verify_ca" && !s.ssl_ca);
  return [...files, "ssl", ...(hostCheck ? ["ssl-verify-server-cert"] : [])];
}

/** Opens a mysql2 connection through the attempts of `s` (see mysql2Attempts); the last error is rethrown as it came. */
export async function withTlsAttempts<T>(s: MysqlTlsSettings, open: (ssl: SslOptions | undefined) => Promise<T>): Promise<T> {
  const attempts = mysql2Attempts(s);
  for (let i = 0; ; i++) {
    try {
      return await open(attempts[i]);
    } catch (err) {
      if (i + 1 >= attempts.length || !offersNoTls(err)) throw err;
    }
  }
}

/** A connection error of mysql2 as a user reads it: retryable when the server could not be reached or dropped the line. */
export function mysql2Failure(err: unknown): { retryable: boolean; hint?: string } {
  const e = err as { code?: string; message?: string; errno?: number };
  const code = e.code ?? "";
  if (/ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ECONNRESET|EPIPE|EAI_AGAIN|ENOTFOUND|PROTOCOL_CONNECTION_LOST|PROTOCOL_SEQUENCE_TIMEOUT/.test(code)) {
    return { retryable: true, hint: "is the server running and reachable at that host and port (or socket)?" };
  }
  // ER_CON_COUNT_ERROR (1040) and ER_SERVER_SHUTDOWN (1053): busy or stopping, worth another attempt.
  if (e.errno === 1040 || e.errno === 1053) return { retryable: true, hint: "the server is full or shutting down; run it again later" };
  if (code === "ER_ACCESS_DENIED_ERROR" || e.errno === 1045) return { retryable: false, hint: "check the datasource's user and password (password_env / password_file)" };
  if (code === "ER_BAD_DB_ERROR" || e.errno === 1049) return { retryable: false, hint: "check the datasource's database name" };
  if (code === "HANDSHAKE_NO_SSL_SUPPORT") return { retryable: false, hint: "the server offers no TLS: enable it on the server, or set ssl_mode: preferred" };
  if (/CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|ERR_SSL|ERR_TLS/.test(code) || /certificate|Hostname\/IP does not match/i.test(e.message ?? "")) {
    return { retryable: false, hint: "set ssl_ca to the CA that signed the server's certificate; verify_identity also needs the certificate to name the host" };
  }
  return { retryable: false };
}
