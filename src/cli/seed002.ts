import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { Option, type Command } from "commander";
import { sourceFromUrl } from "../config/urls.js";
import { DbkeepError } from "../core/errors.js";
import type { JobPlan } from "../core/jobs.js";
import { registerSecret } from "../core/redact.js";
import { fernetDecryptFile, isFernetKey, looksLikeFernet } from "../crypto/fernet.js";
import { generateIdentityFile, keyLines } from "../crypto/keys.js";
import { encryptionFromFlags, recipientsFor, type EncryptionPlan } from "../crypto/settings.js";
import { ENGINES } from "../engines/registry.js";
import { oneOffPlan, type Context, type DumpFlags } from "./context.js";

/**
 * Seed 002 (DBVault) compatibility: its `backup --db ... --output DIR [--encrypt --key K] [--cloud ...]` flags mapped
 * onto one-off mode (a source URL and --to stores), its `keygen --save PATH`, and its `decrypt --file F --key K` for
 * the Fernet `.enc` files it wrote. The native commands stay as they are; this file only translates.
 */

/** DBVault's engine aliases and dbkeep's engines. */
const ENGINE_OF: Record<string, string> = { mysql: "mysql", postgres: "postgres", mongo: "mongodb", redis: "redis", sqlite: "sqlite", db2: "db2" };
export const DBVAULT_ENGINES = Object.keys(ENGINE_OF);
const CLOUDS = ["s3", "azure", "gcp", "minio"];

export interface DbvaultBackupFlags extends DumpFlags {
  db?: string;
  host?: string;
  port?: string;
  user?: string;
  password?: string;
  database?: string;
  output?: string;
  encrypt?: boolean;
  key?: string;
  cloud?: string;
  s3Bucket?: string;
  s3Key?: string;
  s3Owner?: string;
  azureConnStr?: string;
  azureContainer?: string;
  azureBlob?: string;
  gcpBucket?: string;
  gcpBlob?: string;
  minioEndpoint?: string;
  minioBucket?: string;
  minioObject?: string;
  asyncMode?: boolean;
  // dbkeep's own flags that combine with the DBVault form.
  to?: string[];
  recipient?: string[];
  recipientsFile?: string;
  passphraseEnv?: string;
}

/** Flags that exist only in the DBVault form: given without --db they mean nothing to dbkeep. */
const DBVAULT_ONLY: [keyof DbvaultBackupFlags, string][] = [
  ["host", "--host"],
  ["port", "--port"],
  ["user", "--user"],
  ["password", "--password"],
  ["database", "--database"],
  ["output", "--output"],
  ["encrypt", "--encrypt"],
  ["key", "--key"],
  ["cloud", "--cloud"],
  ["s3Bucket", "--s3-bucket"],
  ["s3Key", "--s3-key"],
  ["s3Owner", "--s3-owner"],
  ["azureConnStr", "--azure-conn-str"],
  ["azureContainer", "--azure-container"],
  ["azureBlob", "--azure-blob"],
  ["gcpBucket", "--gcp-bucket"],
  ["gcpBlob", "--gcp-blob"],
  ["minioEndpoint", "--minio-endpoint"],
  ["minioBucket", "--minio-bucket"],
  ["minioObject", "--minio-object"],
  ["asyncMode", "--async-mode"],
];

/** Adds DBVault's backup flags to `dbkeep backup`, in their own group of the help. */
export function addDbvaultBackupOptions(cmd: Command): Command {
  const group = "DBVault compatibility (the same backup as a URL and --to; see docs/migrating.md):";
  const opts = [
    new Option("-d, --db <engine>", "DBVault form: the engine of the database").choices(DBVAULT_ENGINES),
    new Option("-H, --host <host>", "DBVault form: database host (default: localhost)"),
    new Option("--port <port>", "DBVault form: database port (default: the engine's)"),
    new Option("-u, --user <user>", "DBVault form: database user"),
    new Option("-p, --password <password>", "DBVault form: database password (visible in the process list: prefer the prompt or PGPASSWORD/MYSQL_PWD)"),
    new Option("-D, --database <name>", "DBVault form: database name, or the SQLite file's path"),
    new Option("-o, --output <dir>", "DBVault form: directory the backup is written to (a local store)"),
    new Option("-e, --encrypt", "DBVault form: encrypt the backup (with age: see --key)"),
    new Option("-k, --key <key>", "DBVault form: with --encrypt, an age public key (age1...) or a key file of dbkeep keygen"),
    new Option("--cloud <cloud>", "DBVault form: also upload to this cloud (-c works too after --db)").choices(CLOUDS),
    new Option("--s3-bucket <bucket>", "DBVault form: S3 bucket (credentials and AWS_ENDPOINT_URL from the environment)"),
    new Option("--s3-key <key>", "DBVault form: S3 object key; dbkeep names objects itself and uses its directory as the prefix"),
    new Option("--s3-owner <account>", "DBVault form: expected bucket owner (12-digit AWS account id)"),
    new Option("--azure-conn-str <str>", "DBVault form: Azure connection string (prefer AZURE_STORAGE_CONNECTION_STRING)"),
    new Option("--azure-container <name>", "DBVault form: Azure container"),
    new Option("--azure-blob <name>", "DBVault form: blob name; its directory is used as the prefix"),
    new Option("--gcp-bucket <bucket>", "DBVault form: GCS bucket (GOOGLE_APPLICATION_CREDENTIALS)"),
    new Option("--gcp-blob <name>", "DBVault form: blob name; its directory is used as the prefix"),
    new Option("--minio-endpoint <host>", "DBVault form: MinIO endpoint (host[:port], https unless http:// is given)"),
    new Option("--minio-bucket <bucket>", "DBVault form: MinIO bucket (MINIO_ACCESS_KEY, MINIO_SECRET_KEY)"),
    new Option("--minio-object <name>", "DBVault form: object name; its directory is used as the prefix"),
    new Option("-a, --async-mode", "DBVault form: accepted and ignored: dbkeep always streams"),
  ];
  for (const o of opts) cmd.addOption(o.helpGroup(group));
  cmd.addHelpText(
    "after",
    `
DBVault (seed 002) command lines work as they were written; each prints its native equivalent:
  dbkeep backup --db mysql --host localhost --user root --database mydb --output ./backups
  dbkeep backup --db postgres --host db.internal --user admin --database analytics --output ./backups --encrypt --key age1...
  dbkeep backup --db sqlite --database ./my.db --output ./out --cloud s3 --s3-bucket my-backup-bucket
  dbkeep decrypt --file ./backups/backup.sql.gz.enc --key <fernet-key>     # old DBVault .enc files`,
  );
  return cmd;
}

/** Whether the backup command was given in DBVault's form. */
export function isDbvaultForm(flags: DbvaultBackupFlags): boolean {
  if (flags.db !== undefined) return true;
  const given = DBVAULT_ONLY.filter(([k]) => flags[k] !== undefined).map(([, f]) => f);
  if (given.length > 0) {
    throw new DbkeepError("USAGE", `${given.join(", ")} ${given.length === 1 ? "belongs" : "belong"} to the DBVault form, which needs --db ENGINE`, {
      hint: `add --db ${DBVAULT_ENGINES.join("|")}, or use the native form: dbkeep backup postgres://user@host/db --to ./backups`,
    });
  }
  return false;
}

/**
 * DBVault's `-c` is --cloud, dbkeep's global `-c` is --config. After `backup` in a command line that uses `--db`,
 * `-c` can only be DBVault's: rewrite it before commander (which gives the program's options precedence) parses.
 */
export function dbvaultArgv(argv: string[]): string[] {
  const at = argv.indexOf("backup", 2);
  if (at < 0) return argv;
  const rest = argv.slice(at + 1);
  if (!rest.some((a) => a === "--db" || a === "-d" || a.startsWith("--db="))) return argv;
  return [...argv.slice(0, at + 1), ...rest.map((a) => (a === "-c" ? "--cloud" : a.startsWith("-c") && a.length > 2 && !a.startsWith("--") ? `--cloud=${a.slice(2)}` : a))];
}

const PASSWORD_ENV: Record<string, string> = { postgres: "PGPASSWORD", mysql: "MYSQL_PWD", redis: "REDISCLI_AUTH" };

/** Shell-quotes one word for the native-equivalent line. */
function sh(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./~-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\\''")}'`;
}

/** The directory part of an object name (DBVault's --s3-key and friends), as a prefix; undefined for a bare name. */
function prefixOf(name: string | undefined): string | undefined {
  if (!name) return undefined;
  const d = dirname(name.replace(/^\/+/, ""));
  return d === "." ? undefined : d;
}

function usage(message: string, hint?: string): DbkeepError {
  return new DbkeepError("USAGE", message, hint ? { hint } : {});
}

/** The store URLs of --cloud, the warnings about what does not map one to one, and env names for the note. */
const AZURE_PLACEHOLDER = "DBKEEP_DBVAULT_AZURE_CONN_STR";

function cloudStores(f: DbvaultBackupFlags, warn: (m: string) => void): { urls: string[]; noteUrls?: string[]; azureConn?: string; envNote: string[] } {
  const envNote: string[] = [];
  const given = (pairs: [keyof DbvaultBackupFlags, string][]) => pairs.filter(([k]) => f[k] !== undefined).map(([, n]) => n);
  const s3Flags = given([["s3Bucket", "--s3-bucket"], ["s3Key", "--s3-key"], ["s3Owner", "--s3-owner"]]);
  const azFlags = given([["azureConnStr", "--azure-conn-str"], ["azureContainer", "--azure-container"], ["azureBlob", "--azure-blob"]]);
  const gcpFlags = given([["gcpBucket", "--gcp-bucket"], ["gcpBlob", "--gcp-blob"]]);
  const minioFlags = given([["minioEndpoint", "--minio-endpoint"], ["minioBucket", "--minio-bucket"], ["minioObject", "--minio-object"]]);
  const others: Record<string, string[]> = { s3: s3Flags, azure: azFlags, gcp: gcpFlags, minio: minioFlags };
  for (const [cloud, flags] of Object.entries(others)) {
    if (cloud !== f.cloud && flags.length > 0) {
      warn(`${flags.join(", ")} ${flags.length === 1 ? "is" : "are"} ignored without --cloud ${cloud}: nothing is uploaded to ${cloud} (as with DBVault); add --cloud ${cloud} to upload`);
    }
  }
  const objectName = (flag: string, value: string | undefined, prefix: string | undefined) => {
    if (value === undefined) return;
    warn(`${flag} ${value}: dbkeep names each backup's objects itself (DATABASE/DATABASE-TIMESTAMP...)${prefix ? `; they go under the prefix ${prefix}/` : "; they go at the top of the bucket"}`);
  };
  switch (f.cloud) {
    case undefined:
      return { urls: [], envNote };
    case "s3": {
      if (!f.s3Bucket) throw usage("--cloud s3 needs --s3-bucket BUCKET");
      const prefix = prefixOf(f.s3Key);
      objectName("--s3-key", f.s3Key, prefix);
      const q = new URLSearchParams();
      // boto3 (DBVault's client) honours AWS_ENDPOINT_URL; dbkeep takes it as the store's endpoint (path-style).
      const endpoint = process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
      if (endpoint) q.set("endpoint", endpoint);
      if (f.s3Owner) q.set("expected_bucket_owner", f.s3Owner);
      return { urls: [`s3://${f.s3Bucket}${prefix ? `/${prefix}` : ""}${q.size ? `?${q}` : ""}`], envNote };
    }
    case "azure": {
      if (!f.azureContainer) throw usage("--cloud azure needs --azure-container NAME");
      const prefix = prefixOf(f.azureBlob);
      objectName("--azure-blob", f.azureBlob, prefix);
      const conn = f.azureConnStr ?? process.env.AZURE_STORAGE_CONNECTION_STRING;
      if (!conn && !process.env.AZURE_STORAGE_KEY && !process.env.AZURE_STORAGE_SAS_TOKEN) {
        throw usage("--cloud azure needs --azure-conn-str or AZURE_STORAGE_CONNECTION_STRING", "export AZURE_STORAGE_CONNECTION_STRING=... (it stays out of the process list)");
      }
      if (f.azureConnStr) {
        warn("a connection string on the command line (--azure-conn-str) is visible to other users in the process list; set AZURE_STORAGE_CONNECTION_STRING instead");
        registerSecret(f.azureConnStr);
        envNote.push("AZURE_STORAGE_CONNECTION_STRING=***");
      }
      const url = `azure://${f.azureContainer}${prefix ? `/${prefix}` : ""}`;
      if (!f.azureConnStr) return { urls: [url], envNote };
      // The string itself never goes in a URL: the store is planned with a placeholder variable, replaced below by
      // the value (kept in this process only).
      return { urls: [`${url}?connection_string_env=${AZURE_PLACEHOLDER}`], noteUrls: [url], azureConn: f.azureConnStr, envNote };
    }
    case "gcp": {
      if (!f.gcpBucket) throw usage("--cloud gcp needs --gcp-bucket BUCKET");
      const prefix = prefixOf(f.gcpBlob);
      objectName("--gcp-blob", f.gcpBlob, prefix);
      // DBKEEP_GCS_ENDPOINT (as in seed 001's mapping): a private endpoint or an emulator instead of storage.googleapis.com.
      const endpoint = process.env.DBKEEP_GCS_ENDPOINT ? `?${new URLSearchParams({ endpoint: process.env.DBKEEP_GCS_ENDPOINT })}` : "";
      return { urls: [`gs://${f.gcpBucket}${prefix ? `/${prefix}` : ""}${endpoint}`], envNote };
    }
    case "minio": {
      if (!f.minioEndpoint || !f.minioBucket) throw usage("--cloud minio needs --minio-endpoint HOST and --minio-bucket BUCKET");
      const prefix = prefixOf(f.minioObject);
      objectName("--minio-object", f.minioObject, prefix);
      // The MinIO client DBVault used takes host[:port] and speaks https; an explicit http:// is honoured.
      const endpoint = /^https?:\/\//i.test(f.minioEndpoint) ? f.minioEndpoint : `https://${f.minioEndpoint}`;
      const q = new URLSearchParams({ endpoint, access_key_env: "MINIO_ACCESS_KEY", secret_key_env: "MINIO_SECRET_KEY" });
      for (const v of ["MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"]) {
        if (!process.env[v]) throw new DbkeepError("SECRET_MISSING", `--cloud minio: environment variable ${v} is not set`, { hint: `export ${v}=... (DBVault read the MinIO credentials from it too)` });
      }
      return { urls: [`s3://${f.minioBucket}${prefix ? `/${prefix}` : ""}?${q}`], envNote };
    }
    default:
      throw usage(`unknown --cloud ${f.cloud}`, `use ${CLOUDS.join(", ")}`);
  }
}

/** Reads a password from the terminal without echoing it. Ctrl-C cancels, Enter ends, Backspace erases. */
export async function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  const wasRaw = stdin.isRaw;
  // Echo off before the question shows, so that nothing typed in answer reaches the screen.
  stdin.setRawMode(true);
  stdin.resume();
  process.stderr.write(question);
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = "";
      const onData = (d: Buffer) => {
        for (const ch of d.toString("utf8")) {
          if (ch === "\r" || ch === "\n") {
            stdin.off("data", onData);
            resolve(value);
            return;
          }
          if (ch === "\u0003" || ch === "\u0004") {
            stdin.off("data", onData);
            reject(new DbkeepError("ABORTED", "no password entered: cancelled"));
            return;
          }
          if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
          else value += ch;
        }
      };
      stdin.on("data", onData);
    });
  } finally {
    stdin.setRawMode(wasRaw);
    stdin.pause();
    process.stderr.write("\n");
  }
}

/**
 * What --encrypt and --key mean here. DBVault encrypted with Fernet; dbkeep encrypts with age, so --key is an age
 * public key or a key file. A Fernet key is refused with the way forward; without --key, a new age identity is
 * made and shown once on the terminal, as DBVault showed its generated key.
 */
function dbvaultEncryption(f: DbvaultBackupFlags, interactive: boolean, warn: (m: string) => void): { plan?: EncryptionPlan; note: string[] } {
  const own = { recipients: f.recipient, recipients_file: f.recipientsFile, passphrase_env: f.passphraseEnv };
  if (!f.encrypt) {
    if (f.key) warn("--key is ignored without --encrypt: this backup is not encrypted (add --encrypt)");
    const plan = encryptionFromFlags("--recipient", own);
    return { ...(plan ? { plan } : {}), note: plan ? nativeEncryptionNote(f) : [] };
  }
  const fernetError = () =>
    new DbkeepError("USAGE", "--key is a Fernet key: dbkeep encrypts backups with age, not Fernet", {
      hint: "make an age key with `dbkeep keygen --save key.txt` and pass --key key.txt (or the age1... public key it prints); your Fernet key still decrypts your old .enc files: dbkeep decrypt --file FILE.enc --key KEY",
    });
  const key = f.key?.trim();
  if (key === undefined) {
    if (own.recipients?.length || own.recipients_file || own.passphrase_env) {
      return { plan: encryptionFromFlags("--recipient", own)!, note: nativeEncryptionNote(f) };
    }
    if (!interactive) {
      throw new DbkeepError("USAGE", "--encrypt without --key: dbkeep will not make a key nobody sees", {
        hint: "make an age key once with `dbkeep keygen --save key.txt`, keep key.txt safe, and pass --key key.txt (or the age1... public key it prints)",
      });
    }
    const made = generateIdentityFile();
    registerSecret(made.identity);
    // Shown once, on the terminal only: never through the logger (logs are kept and shipped).
    process.stderr.write(
      `\nNo --key given: a new age key was generated. Save it: it is needed to restore this backup, and dbkeep does not keep it.\n\n${made.text}\nRestore with: dbkeep restore DIR latest --to URL -i FILE_WITH_THE_KEY_ABOVE\n\n`,
    );
    return { plan: encryptionFromFlags("--encrypt", { ...own, recipients: [...(own.recipients ?? []), made.recipient] })!, note: ["-r", made.recipient] };
  }
  if (isFernetKey(key)) throw fernetError();
  if (/^age1/i.test(key)) {
    return { plan: encryptionFromFlags("--key", { ...own, recipients: [...(own.recipients ?? []), key] })!, note: ["-r", key] };
  }
  if (/^AGE-SECRET-KEY-1/i.test(key)) {
    throw usage("--key is an age secret key: it does not belong on a command line", "pass the file that holds it (--key key.txt), or its public key (age1...) from `dbkeep keygen -y key.txt`");
  }
  if (!existsSync(key) || !statSync(key).isFile()) {
    throw usage("--key is neither an age public key (age1...) nor a key file", "make a key with `dbkeep keygen --save key.txt` and pass --key key.txt");
  }
  const text = readFileSync(key, "utf8");
  const lines = keyLines(text).map((l) => l.value);
  if (lines.length === 1 && isFernetKey(lines[0]!)) throw fernetError();
  if (lines.some((l) => /^AGE-SECRET-KEY-1/i.test(l))) {
    // The identity's public key encrypts; the file itself is what restore needs later (-i).
    const plan = encryptionFromFlags("--key", { ...own, identity_file: key })!;
    const recipients = recipientsFor(plan).map((r) => (r.info.type === "X25519" ? r.info.recipient : ""));
    return { plan, note: recipients.flatMap((r) => (r ? ["-r", r] : [])) };
  }
  if (lines.length > 0 && lines.every((l) => /^age1/i.test(l))) {
    return { plan: encryptionFromFlags("--key", { ...own, recipients_file: key })!, note: ["-R", key] };
  }
  throw usage(`--key ${key}: the file holds no age key`, "make a key with `dbkeep keygen --save key.txt` and pass --key key.txt");
}

function nativeEncryptionNote(f: DbvaultBackupFlags): string[] {
  return [...(f.recipient ?? []).flatMap((r) => ["-r", r]), ...(f.recipientsFile ? ["-R", f.recipientsFile] : []), ...(f.passphraseEnv ? ["--passphrase-env", f.passphraseEnv] : [])];
}

/** The datasource of the DBVault flags: a native URL (without the password) and the section it parses to. */
function dbvaultSource(f: DbvaultBackupFlags, warn: (m: string) => void): { url: string; section: JobPlan["datasource"]["section"] } {
  const engine = ENGINE_OF[f.db!]!;
  if (!f.database) throw usage(`--db ${f.db} needs --database ${f.db === "sqlite" ? "PATH" : "NAME"}`, "DBVault's -D, --database was required too");
  const host = f.host ?? "localhost";
  const port = f.port !== undefined ? `:${f.port}` : "";
  if (f.port !== undefined && !/^\d+$/.test(f.port)) throw usage(`--port ${f.port} is not a port number`);
  const user = f.user ? `${encodeURIComponent(f.user)}@` : "";
  const db = encodeURIComponent(f.database);
  const hostPart = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  if (engine === "sqlite") {
    for (const [k, n] of [["host", "--host"], ["user", "--user"], ["password", "--password"], ["port", "--port"]] as const) {
      if (f[k] !== undefined) warn(`${n} is ignored with --db sqlite: a SQLite database is a file (--database PATH)`);
    }
    const url = `sqlite:${f.database}`;
    return { url, section: toSection(sourceFromUrl(url)) };
  }
  if (engine === "db2") {
    // Db2 has no URL form: the datasource is built from its keys, as a config would give them.
    if (f.host !== undefined && f.host !== "localhost") warn(`--host ${f.host}: dbkeep backs up a Db2 database of the local instance (BACKUP DATABASE); the host is not used`);
    if (f.port !== undefined) warn("--port is ignored with --db db2: the database is one of the local instance");
    const options = { engine: "db2", database: f.database, ...(f.user ? { user: f.user } : {}) };
    const parsed = ENGINES.db2!.schema.safeParse(options);
    if (!parsed.success) throw usage(`--database ${f.database}: ${parsed.error.issues[0]?.message ?? "not a Db2 database name"}`);
    return { url: `db2 database ${f.database}`, section: { engine: "db2", options: parsed.data as Record<string, unknown>, secretFields: ENGINES.db2!.secrets } };
  }
  if (engine === "mongodb") {
    const options: Record<string, unknown> = { engine, host, ...(f.port ? { port: Number(f.port) } : {}), ...(f.user ? { user: f.user } : {}), database: f.database };
    const parsed = ENGINES.mongodb!.schema.safeParse(options);
    if (!parsed.success) throw usage(`--db mongo: ${parsed.error.issues[0]?.message ?? "invalid options"}`);
    return { url: `mongodb://${user}${hostPart}${port}/${db}`, section: { engine, options: parsed.data as Record<string, unknown>, secretFields: ENGINES.mongodb!.secrets } };
  }
  if (engine === "redis") {
    // An RDB snapshot holds every database of the server; DBVault's --database only named its file.
    const name = /^[A-Za-z0-9._-]+$/.test(f.database) ? f.database : undefined;
    warn(`--database ${f.database} with --db redis names the backup${name ? "" : " (not here: only letters, digits, '.', '_' and '-')"}; the RDB snapshot holds every database of the server, as DBVault's did`);
    const url = `redis://${user}${hostPart}${f.port ? port : ":6379"}${name ? `?name=${encodeURIComponent(name)}` : ""}`;
    const s = sourceFromUrl(url);
    return { url, section: toSection(s) };
  }
  const url = `${engine}://${user}${hostPart}${port}/${db}`;
  return { url, section: toSection(sourceFromUrl(url)) };
}

function toSection(s: ReturnType<typeof sourceFromUrl>): JobPlan["datasource"]["section"] {
  return { engine: s.engine, options: s.options, secretFields: s.secretFields };
}

/**
 * The one-off plan of a DBVault command line, and the note naming its native equivalent. The password comes from
 * --password (with the warning a password in a URL gets), else from a prompt on a terminal, else from the engine's
 * own environment (PGPASSWORD, MYSQL_PWD, ...), as one-off mode always does.
 */
export async function dbvaultPlans(c: Context, targets: string[], f: DbvaultBackupFlags): Promise<JobPlan[]> {
  if (targets.length > 0) throw usage(`with --db, give the database with --database, not as an argument (${targets[0]})`);
  const warnings: string[] = [];
  const warn = (m: string) => warnings.push(m);
  const { url, section } = dbvaultSource(f, warn);
  const engine = section.engine;
  if (!f.output && !f.to?.length) throw usage("the DBVault form needs --output DIR", "DBVault's -o, --output was required too: the directory the backup is written to");
  if (f.asyncMode) warn("--async-mode is ignored: dbkeep streams every backup; there is no separate async mode");
  const cloud = cloudStores(f, warn);
  const enc = dbvaultEncryption(f, c.interactive, warn);

  let password = f.password;
  const passwordEnv = PASSWORD_ENV[engine];
  if (password !== undefined) {
    warn(`a password on the command line (--password) is visible to other users in the process list; ${passwordEnv ? `use ${passwordEnv}` : "use a config file with password_env"} or leave --password out to be asked for it`);
  } else if (engine !== "sqlite" && c.interactive && !(passwordEnv && process.env[passwordEnv])) {
    // DBVault prompted when --password was left out; an empty answer means no password (trust, socket or .pgpass).
    password = (await promptHidden(`Password${f.user ? ` for ${f.user}` : ""}: `)) || undefined;
  }
  for (const w of warnings) c.log.warn(w);

  const stores = [...(f.output ? [f.output] : []), ...cloud.urls, ...(f.to ?? [])];
  const plan = oneOffPlan(engine === "db2" ? undefined : url, stores, { ...f, verify: f.verify ?? true }, c.log);
  plan.datasource = { path: "source", section: { ...section, options: { ...section.options, ...(password !== undefined ? { password } : {}) } } };
  if (password !== undefined) registerSecret(password);
  if (cloud.azureConn) {
    for (const s of plan.stores) {
      if (s.section.options.connection_string_env !== AZURE_PLACEHOLDER) continue;
      delete s.section.options.connection_string_env;
      s.section.options.connection_string = cloud.azureConn;
      s.name = s.name.replace(/\?.*$/, "");
    }
  }
  if (enc.plan) plan.encryption = enc.plan;

  const envPart = [...(password !== undefined && passwordEnv ? [`${passwordEnv}=***`] : []), ...cloud.envNote];
  const native = [
    ...envPart,
    "dbkeep",
    "backup",
    engine === "db2" ? "(config: engine: db2, database: " + f.database + ")" : sh(url),
    ...[...(f.output ? [f.output] : []), ...(cloud.noteUrls ?? cloud.urls), ...(f.to ?? [])].flatMap((s) => ["--to", sh(s)]),
    ...enc.note.map(sh),
    ...(f.compression ? ["--compression", f.compression] : []),
    ...(f.level ? ["--level", f.level] : []),
    "--verify",
  ].join(" ");
  process.stderr.write(`note: DBVault form; the native equivalent is: ${native}\n`);
  return [plan];
}

// ---------------------------------------------------------------------------------------------------------------
// decrypt --file F --key K, keygen --save PATH

/** Where DBVault's decrypt put the plain file: the name without `.enc` (backup.sql.gz.enc -> backup.sql.gz). */
export function decryptedName(file: string): string {
  const name = basename(file);
  return join(dirname(file), /\.enc$/i.test(name) && name.length > 4 ? name.slice(0, -4) : `${name}.dec`);
}

/** A Fernet key from --key: the key itself, or a file that holds it (as `dbvault keygen --save` wrote). */
function fernetKeyOf(key: string, warn: (m: string) => void): string {
  if (isFernetKey(key)) {
    registerSecret(key.trim());
    warn("a key on the command line is visible to other users in the process list; pass the file that holds it instead (--key ~/.dbvault.key)");
    return key.trim();
  }
  if (existsSync(key) && statSync(key).isFile()) {
    const lines = keyLines(readFileSync(key, "utf8")).map((l) => l.value);
    if (lines.length === 1 && isFernetKey(lines[0]!)) return lines[0]!;
    if (lines.some((l) => /^AGE-SECRET-KEY-1/i.test(l))) {
      throw usage(`${key} is an age identity, not a Fernet key`, "age files decrypt with: dbkeep decrypt FILE -i KEYFILE -o OUT; --file/--key is for DBVault's Fernet .enc files");
    }
    throw usage(`${key} holds no Fernet key`, "a Fernet key is 44 characters of url-safe base64, as `dbvault keygen` printed it");
  }
  throw usage("--key is not a Fernet key, nor a file that holds one", "a Fernet key is 44 characters of url-safe base64, as `dbvault keygen` printed it (or the file `dbvault keygen --save` wrote)");
}

/** `dbkeep decrypt --file X.enc --key K [-o OUT]`: a DBVault .enc file to the plain dump beside it. */
export async function decryptDbvaultFile(file: string, key: string, output: string | undefined, warn: (m: string) => void): Promise<void> {
  const k = fernetKeyOf(key, warn);
  if (!existsSync(file)) throw usage(`${file}: no such file`);
  const head = Buffer.alloc(64);
  const fd = openSync(file, "r");
  let n: number;
  try {
    n = readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  if (!looksLikeFernet(head.subarray(0, n))) {
    const age = head.subarray(0, n).toString("latin1").startsWith("age-encryption.org/");
    throw new DbkeepError("USAGE", `${file} is not a Fernet token (DBVault .enc file)`, {
      hint: age ? "it is an age file: dbkeep decrypt FILE -i KEYFILE -o OUT" : "DBVault's .enc files begin with gAAAAA; this file is something else",
    });
  }
  const out = output ?? decryptedName(file);
  if (existsSync(out)) throw usage(`${out} exists; not overwriting it`, "remove it first, or choose another name with -o");
  const info = await fernetDecryptFile(file, out, k);
  process.stderr.write(`decrypted ${file} (encrypted ${info.timestamp.toISOString().replace(/\.000Z$/, "Z")}) to ${out}, ${info.plainBytes} bytes\n`);
  process.stdout.write(`${out}\n`);
}

/** The note keygen --save prints: dbkeep's keys are age keys, old Fernet keys keep decrypting old files. */
export const KEYGEN_SAVE_NOTE =
  "note: dbkeep encrypts with age: this is an age identity, not a Fernet key. Pass the file to `dbkeep backup --encrypt --key FILE` (or -r with the public key above); keep your DBVault Fernet keys: they still decrypt your old .enc files with `dbkeep decrypt --file FILE.enc --key KEY`.";
