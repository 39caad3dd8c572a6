import { DbkeepError } from "../core/errors.js";
import type * as z from "zod";
import { maskUrlCredentials } from "../core/redact.js";
import { describeIssues } from "./problems.js";
import { ENGINES } from "../engines/registry.js";
import { STORES } from "../stores/registry.js";
import { databaseNameProblem, type Section } from "./load.js";

/** True for what looks like a URL or a path rather than a job name. */
export function isLocation(arg: string): boolean {
  return /^[a-z][a-z0-9+.-]*:/i.test(arg) || arg.startsWith(".") || arg.startsWith("/") || arg.startsWith("~");
}

function usage(message: string, hint: string): DbkeepError {
  return new DbkeepError("USAGE", message, { hint });
}

const SOURCE_EXAMPLES = "postgres://user@host:5432/app, mysql://user@host:3306/app, mongodb://user@host:27017/app or sqlite:./app.db";

/**
 * A datasource from a URL: `postgres://user[:password]@host[:port]/db?format=custom&compression=zstd&sslmode=require`
 * (a socket directory goes in `?host=/var/run/postgresql`), `mysql://` or `mariadb://user@host[:port]/db?socket=...`, or
 * `sqlite:PATH`.
 * Query parameters are the datasource's keys (format, compression, compression_level, jobs, ...).
 */
export function sourceFromUrl(url: string): Section & { engine: string; warnings: string[] } {
  const warnings: string[] = [];
  if (/^sqlite:/i.test(url)) {
    const rest = url.replace(/^sqlite:(\/\/)?/i, "");
    const [path = "", query = ""] = rest.split("?", 2);
    if (!path) throw usage(`no path in ${url}`, "write sqlite:./app.db or sqlite:///abs/path/app.db");
    return finish("sqlite", { engine: "sqlite", path, ...params(new URLSearchParams(query)) }, warnings);
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    let u: URL;
    try {
      // libpq accepts an empty host (postgres:///db, postgres://user@/db): the socket, or ?host=.
      u = new URL(url.replace(/^(postgres(?:ql)?:\/\/)([^/?#]*@)?(?=\/)/i, (_m, scheme: string, auth?: string) => `${scheme}${auth ?? ""}localhost`));
    } catch {
      throw usage(`not a valid URL: ${redactUrl(url)}`, `write ${SOURCE_EXAMPLES}`);
    }
    const database = decodeURIComponent(u.pathname.replace(/^\//, ""));
    if (!database) throw usage(`no database in ${redactUrl(url)}`, "write postgres://user@host:5432/DATABASE");
    const q = params(u.searchParams);
    const opts: Record<string, unknown> = {
      engine: "postgres",
      host: (q.host as string | undefined) ?? (u.hostname ? decodeURIComponent(u.hostname) : "localhost"),
      ...(u.port ? { port: Number(u.port) } : {}),
      ...(u.username ? { user: decodeURIComponent(u.username) } : {}),
      database,
      ...q,
    };
    if (u.password) {
      opts.password = decodeURIComponent(u.password);
      warnings.push("a password in a URL is visible to other users in the process list; use PGPASSWORD or ~/.pgpass instead");
    }
    return finish("postgres", opts, warnings);
  }
  if (/^(mysql|mariadb):\/\//i.test(url)) {
    const engine = url.slice(0, url.indexOf(":")).toLowerCase();
    let u: URL;
    try {
      // As for postgres: an empty host (mysql:///db, mysql://user@/db) is localhost, which the client reaches by socket.
      u = new URL(url.replace(/^((?:mysql|mariadb):\/\/)([^/?#]*@)?(?=\/)/i, (_m, scheme: string, auth?: string) => `${scheme}${auth ?? ""}localhost`));
    } catch {
      throw usage(`not a valid URL: ${redactUrl(url)}`, "write mysql://user@host:3306/app or mariadb://user@host/app");
    }
    const database = decodeURIComponent(u.pathname.replace(/^\//, ""));
    const q = params(u.searchParams);
    if (!database && q.databases === undefined && q.all_databases === undefined) {
      throw usage(`no database in ${redactUrl(url)}`, `write ${engine}://user@host:3306/DATABASE, or ?databases=a,b or ?all_databases=true`);
    }
    const opts: Record<string, unknown> = {
      engine,
      host: u.hostname ? decodeURIComponent(u.hostname) : "localhost",
      ...(u.port ? { port: Number(u.port) } : {}),
      ...(u.username ? { user: decodeURIComponent(u.username) } : {}),
      ...(database ? { database } : {}),
      ...q,
    };
    if (u.password) {
      opts.password = decodeURIComponent(u.password);
      warnings.push("a password in a URL is visible to other users in the process list; use MYSQL_PWD or ~/.my.cnf instead");
    }
    return finish(engine, opts, warnings);
  }
  if (/^rediss?:\/\//i.test(url)) {
    // redis://[user[:password]@]host[:port][/db]?mode=logical; rediss:// is the same over TLS.
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw usage(`not a valid URL: ${redactUrl(url)}`, "write redis://host:6379 or redis://user@host:6379/0?mode=logical");
    }
    const db = decodeURIComponent(u.pathname.replace(/^\//, ""));
    if (db && !/^\d+$/.test(db)) throw usage(`the path of a redis URL is a database number, not "${db}"`, "write redis://host:6379/0?mode=logical");
    const opts: Record<string, unknown> = {
      engine: "redis",
      ...(u.hostname ? { host: decodeURIComponent(u.hostname).replace(/^\[(.*)\]$/, "$1") } : {}),
      ...(u.port ? { port: Number(u.port) } : {}),
      ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
      ...(db ? { db: Number(db) } : {}),
      ...(/^rediss:/i.test(url) ? { tls: true } : {}),
      ...params(u.searchParams),
    };
    if (u.password) {
      opts.password = decodeURIComponent(u.password);
      warnings.push("a password in a URL is visible to other users in the process list; use REDISCLI_AUTH instead");
    }
    return finish("redis", opts, warnings);
  }
  if (/^mongodb(\+srv)?:\/\//i.test(url)) {
    // The connection string itself is the datasource's uri (hosts, replicaSet, authSource, tls stay in it); only
    // dbkeep's own keys are taken out of its query. Parsed by hand: a seed list (host1,host2) is no WHATWG URL.
    const m = /^(mongodb(?:\+srv)?:\/\/)([^/?#]+)(\/[^?#]*)?(?:\?([^#]*))?$/i.exec(url);
    if (!m) throw usage(`not a valid URL: ${redactUrl(url)}`, "write mongodb://user@host:27017/app or mongodb+srv://user@cluster.example.net/app");
    const [, scheme = "", authority = "", path = "", query = ""] = m;
    const q = new URLSearchParams(query);
    const own: Record<string, unknown> = {};
    for (const key of [...q.keys()]) {
      if (MONGO_KEYS.has(key)) {
        Object.assign(own, params(new URLSearchParams([[key, q.get(key) ?? ""]])));
        q.delete(key);
      }
    }
    const rest = q.toString();
    const database = decodeURIComponent(path.replace(/^\//, ""));
    const opts: Record<string, unknown> = { engine: "mongodb", uri: `${scheme}${authority}${path || (rest ? "/" : "")}${rest ? `?${rest}` : ""}`, ...(database ? { database } : {}), ...own };
    if (/^[^@]*:[^@]*@/.test(authority)) warnings.push("a password in a URL is visible to other users in the process list; use uri_env or uri_file in a config instead");
    return finish("mongodb", opts, warnings);
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  throw usage(`unsupported source ${scheme ? `"${scheme}:" ` : ""}${redactUrl(url)}`, `write ${SOURCE_EXAMPLES}`);
}

/** Query parameters of a mongodb:// URL that are dbkeep's keys; every other one belongs to the connection string. */
const MONGO_KEYS = new Set(["compression", "level", "compression_level", "oplog", "bin_dir", "timeout", "database"]);

/**
 * A store from a URL or path, for one-off mode and sidecar containers:
 * - `./backups`, `/var/backups`, `~/backups`, `file:///var/backups`, `local:./backups`
 * - `s3://bucket/prefix?endpoint=https://...&region=...` (credentials: the AWS chain, e.g. AWS_ACCESS_KEY_ID)
 * - `sftp://user@host:port/path?key_file=...&known_hosts=...` (also `ssh://`)
 * - `azure://container/prefix?account=NAME` (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN)
 * - `gs://bucket/prefix` (application default credentials, GOOGLE_APPLICATION_CREDENTIALS)
 * - `restic:REPOSITORY` (RESTIC_PASSWORD or RESTIC_PASSWORD_FILE), `rclone:REMOTE:PATH`
 * Query parameters are the store's own keys (docs/stores/<type>.md). Credentials never go in the URL.
 */
export function storeFromUrl(url: string): Section & { type: string } {
  let path: string | undefined;
  if (/^file:\/\//i.test(url)) path = decodeURIComponent(new URL(url).pathname);
  else if (/^local:/i.test(url)) path = url.slice("local:".length);
  else if (!/^[a-z][a-z0-9+.-]*:/i.test(url)) path = url.startsWith("~") ? url.replace(/^~/, process.env.HOME ?? "~") : url;
  if (path) return storeSection({ type: "local", path }, url);
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase() ?? "";
  const env = process.env;
  if (scheme === "restic") {
    const repository = url.slice("restic:".length);
    return storeSection({ type: "restic", repository, ...(env.RESTIC_PASSWORD ? { password_env: "RESTIC_PASSWORD" } : env.RESTIC_PASSWORD_FILE ? { password_file: env.RESTIC_PASSWORD_FILE } : {}) }, url);
  }
  if (scheme === "rclone") return storeSection({ type: "rclone", remote: url.slice("rclone:".length) }, url);
  if (!["s3", "sftp", "ssh", "azure", "gs", "gcs"].includes(scheme)) {
    throw usage(`unsupported store URL scheme "${scheme}:"`, "give a directory (./backups), s3://bucket/prefix, sftp://user@host/path, azure://container/prefix, gs://bucket/prefix, restic:REPO or rclone:REMOTE:PATH");
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw usage(`invalid store URL ${redactUrl(url)}`, "e.g. s3://bucket/prefix?endpoint=https://s3.example.com");
  }
  if (u.password) throw usage("a password in a store URL would be visible in the process list", "use a config file with password_env / key_file, or the service's own environment variables");
  const prefix = decodeURIComponent(u.pathname.replace(/^\/+/, ""));
  const q = params(u.searchParams);
  const host = decodeURIComponent(u.hostname);
  if (!host) {
    const what = scheme === "azure" ? "container" : scheme === "sftp" || scheme === "ssh" ? "host" : "bucket";
    throw usage(`missing ${what} name in ${redactUrl(url)}`, scheme === "azure" ? "e.g. azure://CONTAINER/prefix" : scheme === "sftp" || scheme === "ssh" ? "e.g. sftp://user@HOST/path" : `e.g. ${scheme}://BUCKET/prefix`);
  }
  switch (scheme) {
    case "s3":
      return storeSection({ type: "s3", bucket: host, ...(prefix ? { prefix } : {}), ...q }, url);
    case "gs":
    case "gcs":
      return storeSection({ type: "gcs", bucket: host, ...(prefix ? { prefix } : {}), ...q }, url);
    case "azure": {
      const creds = env.AZURE_STORAGE_CONNECTION_STRING ? { connection_string_env: "AZURE_STORAGE_CONNECTION_STRING" } : env.AZURE_STORAGE_KEY ? { account_key_env: "AZURE_STORAGE_KEY" } : env.AZURE_STORAGE_SAS_TOKEN ? { sas_token_env: "AZURE_STORAGE_SAS_TOKEN" } : {};
      const account = env.AZURE_STORAGE_ACCOUNT && !q.account && !creds.connection_string_env ? { account: env.AZURE_STORAGE_ACCOUNT } : {};
      return storeSection({ type: "azure", container: host, ...(prefix ? { prefix } : {}), ...creds, ...account, ...q }, url);
    }
    default:
      return storeSection({ type: "ssh", host, ...(u.port ? { port: Number(u.port) } : {}), ...(u.username ? { user: decodeURIComponent(u.username) } : {}), path: decodeURIComponent(u.pathname) || ".", ...q }, url);
  }
}

function storeSection(options: Record<string, unknown>, url: string): Section & { type: string } {
  const type = options.type as string;
  const plugin = STORES[type]!;
  const parsed = plugin.schema.safeParse(options);
  if (!parsed.success) {
    throw usage(`invalid ${type} store URL ${redactUrl(url)}: ${urlProblems(plugin.schema, options, parsed.error.issues, plugin.secrets)}`, `parameters are the store's keys: see docs/stores/${type}.md`);
  }
  return { type, options: parsed.data, secretFields: plugin.secrets };
}

/** Parameters whose values are text even when they are all digits (a socket directory, an AWS account id). */
const TEXT_PARAMS = new Set(["host", "expected_bucket_owner"]);

function params(q: URLSearchParams): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of q) out[k] = /^\d+$/.test(v) && !TEXT_PARAMS.has(k) ? Number(v) : v === "true" ? true : v === "false" ? false : v;
  if (out.level !== undefined) {
    out.compression_level = out.level;
    delete out.level;
  }
  return out;
}

function finish(engine: string, options: Record<string, unknown>, warnings: string[]): Section & { engine: string; warnings: string[] } {
  const plugin = ENGINES[engine]!;
  const long = databaseNameProblem(engine, options.database);
  if (long) throw usage(long, "choose a shorter name: PostgreSQL keeps at most 63 bytes of a name, MySQL and MariaDB allow 64 characters");
  const parsed = plugin.schema.safeParse(options);
  if (!parsed.success) {
    throw usage(`invalid ${engine} URL: ${urlProblems(plugin.schema, options, parsed.error.issues, plugin.secrets)}`, "parameters are the datasource's keys, e.g. ?format=custom&compression=zstd");
  }
  return { engine, options: parsed.data, secretFields: plugin.secrets, warnings };
}

/** What is wrong with a URL's parameters, in the words of a config problem ("unknown parameter" for a key). */
function urlProblems(schema: z.ZodType, options: Record<string, unknown>, issues: readonly z.core.$ZodIssue[], secrets: readonly string[]): string {
  return describeIssues(issues, { schema, raw: options, prefix: [], secrets })
    .map((p) => `${p.path ? `${p.path}: ` : ""}${p.message.replace(/^unknown (top-level )?key /, "unknown parameter ")}`)
    .join("; ");
}

export function redactUrl(url: string): string {
  return maskUrlCredentials(url);
}
