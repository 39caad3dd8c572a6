import { existsSync, statSync } from "node:fs";
import { createInterface } from "node:readline/promises";
import { configFromEnv, isSidecarEnv } from "../config/env.js";
import { configPath, loadConfigFile, unreadableSecrets, validateConfig, type Config } from "../config/load.js";
import { describeIssues, keysAt } from "../config/problems.js";
import { isLocation, sourceFromUrl, storeFromUrl } from "../config/urls.js";
import { ENGINES } from "../engines/registry.js";
import { checkLevel, type Compression } from "../core/compression.js";
import { DbkeepError, toDbkeepError } from "../core/errors.js";
import { identitiesFor, recipientsFor } from "../crypto/settings.js";
import { createLogger, type LogFormat, type Logger } from "../core/log.js";
import { planJob, type JobPlan } from "../core/jobs.js";
import { aroundProgress, createProgressLine } from "./progress.js";
import { seed001LogLevel } from "../config/seeds/seed001.js";
import { describeSidecarJob, unsupportedSeedVars } from "../config/seeds/report.js";

/**
 * How long a command has, after SIGTERM, to stop what it does and clean up (a dump process, a staging database, a
 * partial upload) before it is ended: less than the 30 s a container runtime waits before it sends SIGKILL.
 */
export const DEFAULT_SHUTDOWN_SECONDS = 25;

export interface GlobalOptions {
  config?: string;
  logFormat?: LogFormat;
  quiet?: boolean;
  debug?: boolean;
}

/** What every command gets: the logger, the config (loaded on first use), the cancel signal, TTY helpers. */
export class Context {
  readonly log: Logger;
  readonly signal: AbortSignal;
  readonly opts: GlobalOptions;
  /** The log format in effect: --log-format, else text on a TTY and JSON lines elsewhere. */
  readonly logFormat: LogFormat;
  /** Set by commands that handle SIGTERM themselves (the daemon exits 0 after a graceful stop). */
  handlesSignals = false;
  /** After SIGTERM or SIGINT, the command is ended this many seconds later if it has not stopped by itself. */
  shutdownSeconds = DEFAULT_SHUTDOWN_SECONDS;
  /** The config came from environment variables (sidecar mode). */
  sidecar = false;
  /** Sidecar mode with BACKUP_INTERVAL_SECONDS=0: run once and exit. */
  sidecarOnce = false;
  /** In sidecar mode: the config built from the environment, before validation (for the start-up report). */
  sidecarRaw: Record<string, unknown> | undefined;
  #config: Config | undefined;

  constructor(opts: GlobalOptions, signal: AbortSignal) {
    this.opts = opts;
    this.signal = signal;
    this.logFormat = opts.logFormat ?? (process.stderr.isTTY ? "text" : "json");
    this.log = createLogger({ format: this.logFormat, around: aroundProgress, level: opts.debug ? "debug" : opts.quiet ? "warn" : (seed001LogLevel(process.env) ?? "info") });
  }

  /** The config file; throws a usage error if there is none. */
  config(): Config {
    if (!this.#config) {
      const { path, explicit } = configPath(this.opts.config);
      if (!explicit && !existsSync(path) && isSidecarEnv(process.env)) {
        const { raw, once, warnings } = configFromEnv(process.env);
        this.#config = validateConfig(raw, "environment");
        for (const w of warnings ?? []) this.log.warn(w);
        this.sidecar = true;
        this.sidecarOnce = once;
        this.sidecarRaw = raw;
        // What was built from the environment, before anything runs (secrets only by where they are read from).
        this.log.info(describeSidecarJob(raw));
        // Nothing of a replaced tool's environment is silently ignored.
        for (const u of unsupportedSeedVars(process.env)) this.log.warn(`${u.name} is set, but dbkeep does not use it: ${u.instead}`);
        return this.#config;
      }
      if (!explicit && !existsSync(path)) {
        throw new DbkeepError("USAGE", "no config file: ./dbkeep.yaml does not exist", {
          hint: "pass -c FILE, set DBKEEP_CONFIG, or use URLs: dbkeep backup sqlite:./app.db --to ./backups",
        });
      }
      this.#config = loadConfigFile(path);
      for (const w of this.#config.warnings) this.log.warn(w);
    }
    return this.#config;
  }

  /**
   * Whether a command's target names a store (URL or directory) rather than a job: URLs and paths that start with
   * ./ or / always do; a bare name does when it is an existing directory and no config defines a job of that name.
   * The commands that ask read backups from the store, so a local path that is not a directory is a usage error
   * (not "no backups": a typo in the path must not look like an empty store).
   */
  isStoreLocation(target: string): boolean {
    if (isLocation(target)) {
      const section = storeFromUrl(target);
      if (section.type === "local") mustBeDirectory(String(section.options.path), target);
      return true;
    }
    if (!existsSync(target) || !statSync(target).isDirectory()) return false;
    const { path, explicit } = configPath(this.opts.config);
    if (!explicit && !existsSync(path)) return true;
    return !(target in this.config().jobs);
  }

  plan(job: string): JobPlan {
    return planJob(this.config(), job);
  }

  get interactive(): boolean {
    return Boolean(process.stdin.isTTY && process.stderr.isTTY);
  }

  progress(label: string, words = { read: "read", written: "stored" }) {
    const enabled = Boolean(process.stderr.isTTY) && !this.opts.quiet && this.logFormat === "text";
    return createProgressLine(label, enabled, words);
  }

  /** Asks a yes/no question on the terminal; false without a TTY. */
  async confirm(question: string): Promise<boolean> {
    if (!this.interactive) return false;
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      const answer = await rl.question(`${question} [y/N] `);
      return /^y(es)?$/i.test(answer.trim());
    } finally {
      rl.close();
    }
  }
}

function mustBeDirectory(path: string, given: string): void {
  let st;
  try {
    st = statSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ENOTDIR") throw new DbkeepError("USAGE", `store directory ${given} cannot be read: ${code ?? (err as Error).message}`);
    throw new DbkeepError("USAGE", `no such store directory: ${given}`, { hint: "check the path; a store is the directory given to --to when backing up (or a job name of the config)" });
  }
  if (!st.isDirectory()) throw new DbkeepError("USAGE", `${given} is a file, not a store directory`, { hint: "give the directory that holds the backups (e.g. ./backups), not a backup file in it" });
}

/**
 * Every secret the backups of these jobs need (the datasource's, the stores', the encryption's passphrase and
 * recipients), read before any of them starts: an unset password_env is a config error (exit 2), not a failed
 * backup after "backing up ...". Notifiers are not checked: an unreadable notifier secret fails only its
 * notifications.
 */
export function checkSecrets(plans: JobPlan[]): void {
  const errors = new Map<string, DbkeepError>();
  const add = (e: DbkeepError) => errors.set(e.message, e);
  for (const plan of plans) {
    unreadableSecrets(plan.datasource.section, plan.datasource.path).forEach(add);
    for (const s of plan.stores) unreadableSecrets(s.section, `stores.${s.name}`).forEach(add);
    const encryption = plan.encryption;
    if (encryption) {
      const check = (fn: () => unknown) => {
        try {
          fn();
        } catch (err) {
          const e = toDbkeepError(err);
          if (e.exitCode !== 2) throw e;
          add(e);
        }
      };
      if (!plan.unencrypted) check(() => recipientsFor(encryption));
      // verify: restore decrypts the new backup right after writing it.
      const c = encryption.config;
      if (plan.verifyRestore && (c.identity !== undefined || c.identity_env !== undefined || c.identity_file !== undefined)) check(() => identitiesFor(encryption));
    }
  }
  if (errors.size === 0) return;
  const all = [...errors.values()];
  if (all.length === 1) throw new DbkeepError("SECRET_MISSING", all[0]!.message, { hint: all[0]!.hint ?? "set it before running dbkeep" });
  throw new DbkeepError("SECRET_MISSING", `${all.length} secrets cannot be read; nothing was backed up`, {
    details: all.map((e) => `  ${e.message}`).join("\n"),
    hint: "set the variables (or create the files) named above before running dbkeep",
  });
}

export interface DumpFlags {
  format?: string;
  compression?: string;
  level?: string;
  verify?: boolean;
  keepLast?: string;
}

/** `--format` as the engine's own schema allows it, checked before anything runs (not as a failed job). */
function checkFormat(engine: string, options: Record<string, unknown>): void {
  const plugin = ENGINES[engine];
  if (!plugin) return;
  if (!keysAt(plugin.schema, []).includes("format")) {
    throw new DbkeepError("USAGE", `--format: a ${engine} backup has no format to choose`, { hint: "leave --format out" });
  }
  const parsed = plugin.schema.safeParse(options);
  const issue = parsed.success ? undefined : parsed.error.issues.find((i) => i.path[0] === "format");
  if (!issue) return;
  const [problem] = describeIssues([issue], { schema: plugin.schema, raw: options, prefix: [] });
  throw new DbkeepError("USAGE", `--format: ${problem?.message ?? "not a format of this engine"}`);
}

/** A plan for one-off mode: a source URL and a store URL, no config file. */
export function oneOffPlan(sourceUrl: string | undefined, storeUrls: string | string[], flags: DumpFlags, log: Logger): JobPlan {
  const stores = (Array.isArray(storeUrls) ? storeUrls : [storeUrls]).map((url) => ({ name: url, section: storeFromUrl(url) }));
  const source = sourceUrl ? sourceFromUrl(sourceUrl) : undefined;
  for (const w of source?.warnings ?? []) log.warn(w);
  const options = { ...(source?.options ?? {}) };
  if (flags.format) {
    options.format = flags.format;
    checkFormat(source?.engine ?? "sqlite", options);
  }
  const compression = (flags.compression ?? options.compression ?? "gzip") as Compression;
  if (!["gzip", "zstd", "lz4", "none"].includes(compression)) {
    throw new DbkeepError("USAGE", `unknown compression "${compression}"`, { hint: "use gzip, zstd, lz4 or none" });
  }
  const level = flags.level !== undefined ? Number(flags.level) : (options.compression_level as number | undefined);
  const bad = checkLevel(compression, level);
  if (bad) throw new DbkeepError("USAGE", bad);
  return {
    name: "one-off",
    datasource: { path: "source", section: { engine: source?.engine ?? "sqlite", options, secretFields: source?.secretFields ?? [] } },
    store: stores[0]!,
    stores,
    require: "all",
    compression,
    ...(level !== undefined ? { level } : {}),
    verify: flags.verify ?? false,
    retry: { maxAttempts: 1, delaySeconds: 0, multiplier: 1 },
    ...(flags.keepLast ? { retention: { keep_last: Number(flags.keepLast) } } : {}),
    timezone: "UTC",
    oneOff: true,
  };
}

/**
 * The restore's question before it replaces what a target holds, asked once per run (a differential chain restores
 * twice): lists what is there, goes on with --auto-confirm, refuses without a TTY, asks on one.
 */
export function replaceConfirmer(c: Context, o: { autoConfirm?: boolean; clear: () => void; source: string | (() => string) }): (objects: string[], what: string) => Promise<boolean> {
  let confirmed = false;
  return async (objects, what) => {
    if (confirmed) return true;
    const list = objects.slice(0, 10).join(", ") + (objects.length > 10 ? `, ... (${objects.length} in all)` : "");
    c.log.warn({ target: what, objects: objects.length }, `${what} already holds: ${list}`);
    if (o.autoConfirm) return (confirmed = true);
    o.clear();
    if (!c.interactive) return false;
    if (await c.confirm(`Replace ${what} (${objects.length} tables/views) with ${typeof o.source === "string" ? o.source : o.source()}?`)) return (confirmed = true);
    throw new DbkeepError("RESTORE_REFUSED", `restore cancelled: ${what} was not changed`);
  };
}
