import pg from "pg";
import { DbkeepError } from "../../core/errors.js";
import type { PgTls } from "./tls.js";

/**
 * Opens a connection the way libpq would with these TLS settings: the attempts of `tls` in order (allow: plain text,
 * then TLS; prefer: TLS, then plain text), the next one only when the server was reached and refused or the TLS
 * handshake failed. An unreachable server is not tried twice. Rejects with the last attempt's error, as it came.
 */
export async function connectPg(config: Omit<pg.ClientConfig, "ssl">, tls: PgTls): Promise<pg.Client> {
  for (let i = 0; ; i++) {
    const ssl = tls.attempts[i] ?? false;
    // ssl is always given: left undefined, the driver would read PGSSLMODE from dbkeep's own environment.
    const c = new pg.Client({ ...config, ssl });
    c.on("error", () => undefined);
    try {
      await c.connect();
      return c;
    } catch (err) {
      await c.end().catch(() => undefined);
      if (i + 1 >= tls.attempts.length || unreachable(err)) throw err;
    }
  }
}

const UNREACHABLE = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "ENOENT", "EACCES"]);

/** The server was never reached: no other attempt could fare better. */
function unreachable(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  return UNREACHABLE.has(e.code ?? "") || /timeout expired|connection timeout/i.test(e.message ?? "");
}

/** Node's TLS verification failures (codes of the X509_V_ERR family, and the host name mismatch). */
function tlsRejected(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException;
  return /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|ERR_SSL|ERR_TLS/.test(e.code ?? "") || /certificate|self[- ]signed/i.test(e.message ?? "");
}

export interface PgFailure {
  hint?: string;
  retryable?: boolean;
  code?: "CONNECTION_FAILED";
}

const HINT_AUTH = "check the datasource's user and password (password_env / password_file)";
const HINT_REACH = "is the server running and reachable at that host and port?";
const HINT_TLS =
  "set sslrootcert to the CA that signed the server's certificate; verify-full also needs the certificate to name the host (sslmode require encrypts without checking)";

/**
 * What an error of libpq (a tool's stderr) or of the driver means for a user and for retries: an unreachable, busy,
 * starting or restarting server is worth another attempt; a refused login, a missing database or a certificate that
 * does not check out is not.
 */
export function explainPgError(text: string, sqlstate?: string): PgFailure | undefined {
  if (sqlstate === "28P01" || /password authentication failed|no password supplied|authentication failed|password is required/i.test(text)) {
    return { code: "CONNECTION_FAILED", hint: HINT_AUTH };
  }
  if (sqlstate === "3D000" || /database ".*" does not exist/i.test(text)) return { code: "CONNECTION_FAILED", hint: "check the datasource's database name" };
  if (sqlstate === "28000" || /no pg_hba\.conf entry|pg_hba\.conf rejects/i.test(text)) {
    const ssl = /no encryption|SSL off|not encrypted/i.test(text);
    return {
      code: "CONNECTION_FAILED",
      hint: ssl ? "the server accepts this user only over TLS: set sslmode (prefer, require or stricter)" : "the server's pg_hba.conf does not let this user in from here",
    };
  }
  if (/certificate verify failed|does not match host name|certificate|self[- ]signed|root certificate file/i.test(text)) {
    return { code: "CONNECTION_FAILED", hint: HINT_TLS };
  }
  if (/server does not support SSL|SSL is not enabled on the server|does not support SSL connections/i.test(text)) {
    return { code: "CONNECTION_FAILED", hint: "the server offers no TLS: enable ssl on the server, or lower sslmode (prefer)" };
  }
  if (
    (sqlstate !== undefined && (/^08/.test(sqlstate) || sqlstate === "57P03" || /^53/.test(sqlstate))) ||
    /Connection refused|could not connect|Is the server running|connect ENOENT|timeout expired|Name or service not known|could not translate host name|ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|connection timeout/i.test(text)
  ) {
    return { code: "CONNECTION_FAILED", hint: HINT_REACH, retryable: true };
  }
  if (/the database system is (starting up|shutting down|in recovery mode|not yet accepting connections)|too many (connections|clients)|remaining connection slots are reserved/i.test(text)) {
    return { code: "CONNECTION_FAILED", hint: "the server is starting, stopping or full; run it again later", retryable: true };
  }
  if (/server closed the connection unexpectedly|Connection reset by peer|ECONNRESET|EPIPE|Connection terminated unexpectedly|terminating connection due to administrator command/i.test(text)) {
    return { hint: "the connection was lost (server restart, network, or an idle timeout); run it again", retryable: true };
  }
  if (/server version mismatch/i.test(text)) return { hint: "set pg_version or bin_dir to a pg_dump at least as new as the server" };
  if (/permission denied/i.test(text)) return { hint: "the user lacks privileges on some objects; dump as the owner or a superuser" };
  return undefined;
}

/** A failed connection of dbkeep's own, as the one error users see, retryable when another attempt may work. */
export function pgConnectionError(err: unknown, where: { host: string; port: number; database: string }, fallbackHint = "check host, port, user and password of the datasource"): DbkeepError {
  if (err instanceof DbkeepError) return err;
  const e = err as NodeJS.ErrnoException & { code?: string };
  const msg = e.message ?? String(err);
  const sqlstate = err instanceof pg.DatabaseError ? e.code : undefined;
  const explained = tlsRejected(err) && !sqlstate ? { code: "CONNECTION_FAILED" as const, hint: HINT_TLS } : explainPgError(`${msg} ${sqlstate ? "" : (e.code ?? "")}`, sqlstate);
  return new DbkeepError("CONNECTION_FAILED", `cannot connect to PostgreSQL (host ${where.host}, port ${where.port}, database ${where.database})`, {
    details: msg,
    hint: explained?.hint ?? fallbackHint,
    retryable: explained?.retryable ?? false,
    cause: err,
  });
}
