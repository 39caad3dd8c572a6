import { readFileSync, statSync } from "node:fs";
import { userInfo } from "node:os";
import { join, resolve } from "node:path";
import { createRequire } from "node:module";
import { checkLevel, type Compression } from "../core/compression.js";
import { DbkeepError } from "../core/errors.js";
import { Secret } from "../core/redact.js";
import { ENGINES, PLANNED_ENGINES } from "../engines/registry.js";
import { NOTIFIERS } from "../notifiers/registry.js";
import { STORES } from "../stores/registry.js";
import { isSecretEnvName } from "../stores/child-env.js";
import { describeIssues, didYouMean, type Problem } from "./problems.js";
import { configSchema, daemonSchema, jobSchema, type DaemonConfig, type EncryptionConfig, type JobConfig, type RawConfig } from "./schema.js";

export type { Problem } from "./problems.js";

/** The secret fields of an encryption block (each also as `_env` and `_file`). */
export const ENCRYPTION_SECRETS = ["passphrase", "identity"] as const;

export interface Section {
  /** Options as the plug-in's schema normalised them. */
  options: Record<string, unknown>;
  /** Secret fields of the plug-in, resolved lazily when the thing is used. */
  secretFields: readonly string[];
}

export interface Config {
  file?: string;
  datasources: Record<string, Section & { engine: string }>;
  stores: Record<string, Section & { type: string }>;
  notifications: Record<string, Section & { type: string }>;
  jobs: Record<string, JobConfig & { stores: string[] }>;
  timezone: string;
  daemon: DaemonConfig;
  /** The top-level encryption block: the default of every job without one of its own. */
  encryption?: EncryptionConfig;
  warnings: string[];
}

export function configError(file: string | undefined, problems: Problem[]): DbkeepError {
  const where = file ? `config ${file}` : "config";
  const lines = problems.map((p) => `  ${p.path ? `${p.path}: ` : ""}${p.message}`).join("\n");
  const n = problems.length;
  return new DbkeepError("CONFIG_INVALID", `${where} has ${n} problem${n === 1 ? "" : "s"}`, {
    details: lines,
    hint: "fix the lines above; `dbkeep config check` shows the config as dbkeep reads it",
  });
}

/** Where the config file is: -c, then $DBKEEP_CONFIG (or seed 000's $DBBACKUP_CONFIG), then ./dbkeep.yaml. */
export function configPath(explicit?: string): { path: string; explicit: boolean } {
  const given = explicit ?? process.env.DBKEEP_CONFIG ?? process.env.DBBACKUP_CONFIG;
  return given ? { path: resolve(given), explicit: true } : { path: resolve("dbkeep.yaml"), explicit: false };
}

export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw unreadable(path, err as NodeJS.ErrnoException);
  }
  const config = parseConfig(text, path);
  const mode = safeMode(path);
  if (mode !== undefined && (mode & 0o044) !== 0) {
    for (const lit of literalSecrets(config)) {
      const instead = /\.env\.[^.]+$/.test(lit) ? "{ env: NAME } / { file: PATH }" : `${lit.split(".").pop()}_env / _file`;
      config.warnings.push(`config ${path} is readable by others (mode ${(mode & 0o777).toString(8)}) and holds a literal secret at ${lit}: chmod 600 it, or use ${instead}`);
    }
  }
  return config;
}

/** Why a config file cannot be read, in one line with what to do about it (never a raw EISDIR or EACCES). */
function unreadable(path: string, err: NodeJS.ErrnoException): DbkeepError {
  switch (err.code) {
    case "ENOENT":
      return new DbkeepError("CONFIG_INVALID", `config ${path} does not exist`, { hint: "pass -c FILE, set DBKEEP_CONFIG, or use URLs (dbkeep backup sqlite:./app.db --to ./backups)" });
    case "EISDIR":
      return new DbkeepError("CONFIG_INVALID", `config ${path} is a directory, not a file`, { hint: `pass the YAML file itself, e.g. -c ${join(path, "dbkeep.yaml")}` });
    case "EACCES":
    case "EPERM": {
      const user = safeUser();
      return new DbkeepError("CONFIG_INVALID", `config ${path} cannot be read: permission denied`, {
        hint: `dbkeep runs as ${user ?? "a user"} who may not read it: run dbkeep as the file's owner, or give that user read access (keep it unreadable for others: it may hold secrets)`,
      });
    }
    default:
      return new DbkeepError("CONFIG_INVALID", `config ${path} cannot be read: ${err.code ?? err.message}`, { hint: "check that the path names a readable YAML file" });
  }
}

function safeUser(): string | undefined {
  try {
    return userInfo().username;
  } catch {
    return undefined;
  }
}

function safeMode(path: string): number | undefined {
  try {
    return statSync(path).mode;
  } catch {
    return undefined;
  }
}

export function parseConfig(text: string, file?: string): Config {
  // Loaded on first use: one-off runs with URLs read no config file.
  const { parseDocument } = createRequire(import.meta.url)("yaml") as typeof import("yaml");
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length > 0) {
    throw configError(file, doc.errors.map((e) => ({ path: "", message: `YAML: ${e.message.split("\n")[0]}` })));
  }
  const raw: unknown = doc.toJS();
  if (raw === null || raw === undefined) {
    throw new DbkeepError("CONFIG_INVALID", file ? `config ${file} is empty` : "the config is empty", { hint: "define datasources, stores and jobs in it (docs/configuration.md), or use URLs: dbkeep backup sqlite:./app.db --to ./backups" });
  }
  const config = validateConfig(raw, file);
  if (Object.keys(config.datasources).length + Object.keys(config.stores).length + Object.keys(config.jobs).length === 0) {
    throw configError(file, [{ path: "", message: "defines no datasources, stores or jobs" }]);
  }
  return config;
}

const SECTIONS = ["datasources", "stores", "notifications", "jobs"] as const;

function kindOf(v: unknown): string {
  return v === null ? "nothing" : Array.isArray(v) ? "a list" : typeof v === "object" ? "a mapping" : typeof v === "string" ? "text" : `a ${typeof v}`;
}

/**
 * The top level when it did not validate as a whole (an unknown key, one section of the wrong shape): each part that
 * is valid on its own, so that the sections are still checked and every problem is reported at once.
 */
function lenientTop(raw: Record<string, unknown>): RawConfig {
  const shape = configSchema.shape;
  const part = <K extends keyof typeof shape>(k: K) => {
    const r = shape[k].safeParse(raw[k]);
    return r.success ? r.data : shape[k].safeParse(undefined).data;
  };
  return {
    datasources: part("datasources") ?? {},
    stores: part("stores") ?? {},
    notifications: part("notifications") ?? {},
    jobs: part("jobs") ?? {},
    timezone: part("timezone"),
    daemon: part("daemon"),
    encryption: part("encryption"),
  } as RawConfig;
}

/**
 * Database names the server would cut short: PostgreSQL keeps the first 63 bytes (NAMEDATALEN - 1) of a longer name
 * and MySQL/MariaDB refuse more than 64 characters, so a restore target named by a longer name would replace the
 * database its first 63 bytes name.
 */
export function databaseNameProblem(engine: string, name: unknown): string | undefined {
  if (typeof name !== "string") return undefined;
  if (engine === "postgres" || engine === "postgresql") {
    const bytes = Buffer.byteLength(name, "utf8");
    if (bytes > 63) return `database name "${name.slice(0, 20)}..." is ${bytes} bytes long; PostgreSQL keeps only the first 63 and would take it for another database`;
  }
  if ((engine === "mysql" || engine === "mariadb") && [...name].length > 64) {
    return `database name "${name.slice(0, 20)}..." is ${[...name].length} characters long; MySQL and MariaDB allow at most 64`;
  }
  return undefined;
}

/** Whether a compression level fits its compression: the check planJob makes, made when the config is read. */
function levelProblem(compression: unknown, level: unknown): string | undefined {
  if (typeof compression !== "string" || typeof level !== "number") return undefined;
  return checkLevel(compression as Compression, level);
}

export function validateConfig(raw: unknown, file?: string): Config {
  const problems: Problem[] = [];
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw configError(file, [{ path: "", message: `expected a mapping with datasources, stores and jobs at the top, got ${kindOf(raw)}` }]);
  }
  // `stores:` with nothing under it (YAML null) is an empty section, as it reads.
  const input: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  for (const k of SECTIONS) if (input[k] === null) delete input[k];
  const top = configSchema.safeParse(input);
  /** Sections that are not mappings: references into them are not checked (they would all be "unknown"). */
  const broken = new Set<string>();
  let c: RawConfig;
  if (top.success) c = top.data;
  else {
    problems.push(...describeIssues(top.error.issues, { schema: configSchema, raw: input, prefix: [] }));
    for (const i of top.error.issues) if (i.path.length > 0) broken.add(String(i.path[0]));
    c = lenientTop(input);
  }
  const out: Config = { ...(file ? { file } : {}), datasources: {}, stores: {}, notifications: {}, jobs: {}, timezone: c.timezone ?? "UTC", daemon: c.daemon ?? daemonSchema.parse({}), ...(c.encryption ? { encryption: c.encryption } : {}), warnings: [] };

  for (const [name, ds] of Object.entries(c.datasources)) {
    const engine = typeof ds.engine === "string" ? ds.engine : undefined;
    const plugin = engine ? ENGINES[engine] : undefined;
    if (!engine) {
      problems.push({ path: `datasources.${name}`, message: `missing key "engine" (one of: ${Object.keys(ENGINES).join(", ")})` });
      continue;
    }
    if (!plugin) {
      const planned = PLANNED_ENGINES.includes(engine);
      problems.push({
        path: `datasources.${name}.engine`,
        message: planned ? `engine "${engine}" is not available in this version of dbkeep` : `unknown engine "${engine}"${near(engine, Object.keys(ENGINES))} (available: ${Object.keys(ENGINES).join(", ")})`,
      });
      continue;
    }
    const parsed = plugin.schema.safeParse(ds);
    if (!parsed.success) problems.push(...describeIssues(parsed.error.issues, { schema: plugin.schema, raw: ds, prefix: ["datasources", name], secrets: plugin.secrets }));
    else {
      problems.push(...secretProblems(parsed.data, plugin.secrets, `datasources.${name}`));
      const long = databaseNameProblem(engine, parsed.data.database);
      if (long) problems.push({ path: `datasources.${name}.database`, message: long });
      const level = levelProblem(parsed.data.compression, parsed.data.compression_level);
      if (level) problems.push({ path: `datasources.${name}.compression_level`, message: level });
      out.datasources[name] = { engine, options: parsed.data, secretFields: plugin.secrets };
    }
  }

  for (const [name, st] of Object.entries(c.stores)) {
    const type = typeof st.type === "string" ? st.type : undefined;
    const plugin = type ? STORES[type] : undefined;
    if (!type || !plugin) {
      problems.push({ path: `stores.${name}${type ? ".type" : ""}`, message: type ? `unknown store type "${type}"${near(type, Object.keys(STORES))} (available: ${Object.keys(STORES).join(", ")})` : `missing key "type" (one of: ${Object.keys(STORES).join(", ")})` });
      continue;
    }
    const parsed = plugin.schema.safeParse(st);
    if (!parsed.success) problems.push(...describeIssues(parsed.error.issues, { schema: plugin.schema, raw: st, prefix: ["stores", name], secrets: plugin.secrets }));
    else {
      problems.push(...secretProblems(parsed.data, plugin.secrets, `stores.${name}`));
      out.stores[name] = { type, options: parsed.data, secretFields: plugin.secrets };
      if (!plugin.available) out.warnings.push(`stores.${name}: store type "${type}" is accepted but not available in this version; jobs using it will fail`);
    }
  }

  for (const [name, n] of Object.entries(c.notifications)) {
    const type = typeof n.type === "string" ? n.type : undefined;
    const plugin = type ? NOTIFIERS[type] : undefined;
    if (!type || !plugin) {
      problems.push({ path: `notifications.${name}${type ? ".type" : ""}`, message: type ? `unknown notifier type "${type}"${near(type, Object.keys(NOTIFIERS))} (available: ${Object.keys(NOTIFIERS).join(", ")})` : `missing key "type" (one of: ${Object.keys(NOTIFIERS).join(", ")})` });
      continue;
    }
    const parsed = plugin.schema.safeParse(n);
    if (!parsed.success) problems.push(...describeIssues(parsed.error.issues, { schema: plugin.schema, raw: n, prefix: ["notifications", name], secrets: plugin.secrets }));
    else {
      problems.push(...secretProblems(parsed.data, plugin.secrets, `notifications.${name}`));
      out.notifications[name] = { type, options: parsed.data, secretFields: plugin.secrets };
    }
  }

  const defined = (rec: Record<string, unknown>) => Object.keys(rec).join(", ") || "none";
  for (const [name, rawJob] of Object.entries(c.jobs)) {
    const p = `jobs.${name}`;
    const parsedJob = jobSchema.safeParse(rawJob);
    if (!parsedJob.success) problems.push(...describeIssues(parsedJob.error.issues, { schema: jobSchema, raw: rawJob, prefix: ["jobs", name] }));
    // Cross-references are checked even when other keys of the job are wrong: every problem at once.
    const job = parsedJob.success ? parsedJob.data : looseJob(rawJob);
    if (job.datasource && !broken.has("datasources") && !(job.datasource in c.datasources)) problems.push({ path: `${p}.datasource`, message: `unknown datasource "${job.datasource}" (defined: ${defined(c.datasources)})` });
    if (job.store && job.stores) problems.push({ path: p, message: "give either store or stores, not both" });
    const stores = job.stores ?? (job.store ? [job.store] : []);
    if (stores.length === 0) problems.push({ path: p, message: 'missing key "store" (the name of a store under stores:, or stores: [a, b])' });
    const twice = stores.filter((x, i) => stores.indexOf(x) !== i);
    if (twice.length > 0) problems.push({ path: `${p}.stores`, message: `store "${twice[0]}" is listed twice` });
    for (const s of stores) {
      if (!broken.has("stores") && !(s in c.stores)) problems.push({ path: `${p}.${job.stores ? "stores" : "store"}`, message: `unknown store "${s}" (defined: ${defined(c.stores)})` });
    }
    // The same check as when the job runs (planJob): the job's compression and level over the datasource's.
    const ds = out.datasources[job.datasource];
    const own = parsedJob.success ? parsedJob.data : undefined;
    if (own && ds && (own.compression !== undefined || own.compression_level !== undefined)) {
      const level = own.compression_level ?? ds.options.compression_level;
      const bad = levelProblem(own.compression ?? ds.options.compression ?? "gzip", level);
      if (bad) {
        problems.push(
          own.compression_level !== undefined
            ? { path: `${p}.compression_level`, message: bad }
            : { path: `${p}.compression`, message: `${bad} (the compression_level of datasources.${job.datasource})` },
        );
      }
    }
    for (const s of Object.keys((parsedJob.success && parsedJob.data.retention?.stores) || {})) {
      if (!stores.includes(s)) problems.push({ path: `${p}.retention.stores.${s}`, message: `the job does not write to store "${s}" (its stores: ${stores.join(", ") || "none"})` });
    }
    const tz = parsedJob.success ? parsedJob.data.retention?.timezone : undefined;
    if (tz && !validTimeZone(tz)) problems.push({ path: `${p}.retention.timezone`, message: `unknown time zone "${tz}"` });
    for (const [i, n] of (job.notify ?? []).entries()) {
      if (!broken.has("notifications") && !(n.notifier in c.notifications)) problems.push({ path: `${p}.notify.${i}.notifier`, message: `unknown notifier "${n.notifier}" (defined: ${defined(c.notifications)})` });
    }
    if (parsedJob.success && parsedJob.data.schedule && parsedJob.data.every !== undefined) problems.push({ path: p, message: "give either schedule or every, not both" });
    if (parsedJob.success && parsedJob.data.schedules && (parsedJob.data.schedule || parsedJob.data.every !== undefined)) problems.push({ path: `${p}.schedules`, message: "give either schedules or schedule / every, not both" });
    if (parsedJob.success && parsedJob.data.sync_every !== undefined && parsedJob.data.sync_schedule) problems.push({ path: `${p}.sync_every`, message: "give either sync_every or sync_schedule, not both" });
    if (parsedJob.success) problems.push(...selectiveJobProblems(parsedJob.data, c.datasources[job.datasource]?.engine, p));
    const vds = parsedJob.success ? parsedJob.data.verify_datasource : undefined;
    if (vds && !broken.has("datasources") && !(vds in c.datasources)) problems.push({ path: `${p}.verify_datasource`, message: `unknown datasource "${vds}" (defined: ${defined(c.datasources)})` });
    if (parsedJob.success) out.jobs[name] = { ...parsedJob.data, stores };
  }
  if (c.timezone && !validTimeZone(c.timezone)) problems.push({ path: "timezone", message: `unknown time zone "${c.timezone}"` });

  if (problems.length > 0) throw configError(file, problems);
  return out;
}

/** Partial and differential keys of a job: only on the engines that have them, differential keys only with the mode. */
function selectiveJobProblems(job: JobConfig, engine: unknown, p: string): Problem[] {
  const problems: Problem[] = [];
  const kind = engine === "postgresql" ? "postgres" : engine === "mariadb" ? "mysql" : engine;
  for (const k of ["tables", "exclude_tables", "schemas", "exclude_schemas"] as const) {
    if (job[k] && kind !== "postgres" && !(kind === "mysql" && !k.includes("schemas"))) {
      problems.push({ path: `${p}.${k}`, message: k.includes("schemas") ? `${k} exists for PostgreSQL datasources only` : `${k} exists for PostgreSQL and MySQL/MariaDB datasources only` });
    }
  }
  if (job.mode === "differential" && kind !== "postgres" && kind !== "mysql") {
    problems.push({ path: `${p}.mode`, message: "mode: differential exists for PostgreSQL and MySQL/MariaDB datasources only" });
  }
  for (const k of ["basis_column", "basis_columns", "track_deletes", "max_chain", "full_every", "cutoff_margin"] as const) {
    if (job[k] !== undefined && job.mode !== "differential") problems.push({ path: `${p}.${k}`, message: `${k} goes with mode: differential` });
  }
  return problems;
}

/** The references of a job whose other keys did not validate, for the cross-reference checks. */
function looseJob(raw: Record<string, unknown>): Pick<JobConfig, "datasource" | "store" | "stores" | "notify"> {
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  const stores = Array.isArray(raw.stores) ? raw.stores.filter((s): s is string => typeof s === "string") : undefined;
  const notify = Array.isArray(raw.notify)
    ? raw.notify.flatMap((n: unknown) => (n && typeof n === "object" && typeof (n as { notifier?: unknown }).notifier === "string" ? [{ notifier: (n as { notifier: string }).notifier, on: "failure" as const }] : []))
    : undefined;
  return { datasource: str(raw.datasource) ?? "", store: str(raw.store), stores, notify };
}

/** ` (did you mean "x"?)` when `word` is a near miss of one of `known`. */
function near(word: string, known: string[]): string {
  const m = didYouMean(word, known);
  return m ? ` (did you mean "${m}"?)` : "";
}

function validTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

function secretProblems(options: Record<string, unknown>, fields: readonly string[], path: string): Problem[] {
  const problems: Problem[] = [];
  for (const f of fields) {
    const given = [f, `${f}_env`, `${f}_file`].filter((k) => options[k] !== undefined);
    if (given.length > 1) problems.push({ path: `${path}.${f}`, message: `give only one of ${given.join(", ")}` });
  }
  return problems;
}

function literalSecrets(config: Config): string[] {
  const found: string[] = [];
  const scan = (kind: string, rec: Record<string, Section>) => {
    for (const [name, s] of Object.entries(rec)) {
      for (const f of s.secretFields) if (typeof s.options[f] === "string") found.push(`${kind}.${name}.${f}`);
      // restic and rclone stores: credentials given as literals in their env: map.
      const env = s.options.env;
      if (kind === "stores" && env && typeof env === "object") {
        for (const [k, v] of Object.entries(env as Record<string, unknown>)) if (typeof v === "string" && isSecretEnvName(k)) found.push(`${kind}.${name}.env.${k}`);
      }
    }
  };
  scan("datasources", config.datasources);
  scan("stores", config.stores);
  scan("notifications", config.notifications);
  const blocks: [string, EncryptionConfig | undefined][] = [["encryption", config.encryption], ...Object.entries(config.jobs).map(([n, j]): [string, EncryptionConfig | undefined] => [`jobs.${n}.encryption`, j.encryption || undefined])];
  for (const [path, e] of blocks) {
    for (const f of ENCRYPTION_SECRETS) if (e?.[f] !== undefined) found.push(`${path}.${f}`);
  }
  return found;
}

/**
 * The secrets a section gives (as a literal, `_env` or `_file`) that cannot be read now, as the errors reading them
 * raised: an unset variable, a missing or unreadable file. Checked before a backup starts, so that such a config
 * error stops it before any work, with exit 2.
 */
export function unreadableSecrets(section: Section, path: string): DbkeepError[] {
  const errors: DbkeepError[] = [];
  for (const f of section.secretFields) {
    try {
      resolveSecret(section, f, path);
    } catch (err) {
      errors.push(err instanceof DbkeepError ? err : new DbkeepError("SECRET_MISSING", `${path}.${f}: ${(err as Error).message}`));
    }
  }
  return errors;
}

/**
 * Resolves secret `field` of a section: the literal, `<field>_env` (the variable must be set) or `<field>_file`
 * (Docker/Kubernetes secrets; trailing newline removed; a file others can read gets a warning).
 */
export function resolveSecret(section: Section, field: string, path: string, warn: (msg: string) => void = () => undefined): Secret | undefined {
  const o = section.options;
  if (typeof o[field] === "string") return new Secret(o[field]);
  const env = o[`${field}_env`];
  if (typeof env === "string") {
    const v = process.env[env];
    if (v === undefined || v === "") {
      throw new DbkeepError("SECRET_MISSING", `${path}.${field}_env: environment variable ${env} is not set`, { hint: `export ${env}=... before running dbkeep` });
    }
    return new Secret(v);
  }
  const file = o[`${field}_file`];
  if (typeof file === "string") {
    let v: string;
    try {
      v = readFileSync(file, "utf8").replace(/\r?\n$/, "");
      const mode = statSync(file).mode;
      if ((mode & 0o044) !== 0) warn(`${path}.${field}_file: ${file} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
    } catch (err) {
      throw new DbkeepError("SECRET_MISSING", `${path}.${field}_file: cannot read ${file}: ${(err as Error).message}`);
    }
    return new Secret(v);
  }
  return undefined;
}
