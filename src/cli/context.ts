import { existsSync, statSync } from "node:fs";
import { createInterface } from "node:readline/promises";
import { configFromEnv, isSidecarEnv } from "../config/env.js";
import { configPath, loadConfigFile, validateConfig, type Config } from "../config/load.js";
import { isLocation, sourceFromUrl, storeFromUrl } from "../config/urls.js";
import { checkLevel, type Compression } from "../core/compression.js";
import { DbkeepError } from "../core/errors.js";
import { createLogger, type LogFormat, type Logger } from "../core/log.js";
import { planJob, type JobPlan } from "../core/jobs.js";
import { aroundProgress, createProgressLine } from "./progress.js";

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
  /** The config came from environment variables (sidecar mode). */
  sidecar = false;
  /** Sidecar mode with BACKUP_INTERVAL_SECONDS=0: run once and exit. */
  sidecarOnce = false;
  #config: Config | undefined;

  constructor(opts: GlobalOptions, signal: AbortSignal) {
    this.opts = opts;
    this.signal = signal;
    this.logFormat = opts.logFormat ?? (process.stderr.isTTY ? "text" : "json");
    this.log = createLogger({ format: this.logFormat, around: aroundProgress, level: opts.debug ? "debug" : opts.quiet ? "warn" : "info" });
  }

  /** The config file; throws a usage error if there is none. */
  config(): Config {
    if (!this.#config) {
      const { path, explicit } = configPath(this.opts.config);
      if (!explicit && !existsSync(path) && isSidecarEnv(process.env)) {
        const { raw, once } = configFromEnv(process.env);
        this.#config = validateConfig(raw, "environment");
        this.sidecar = true;
        this.sidecarOnce = once;
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
   */
  isStoreLocation(target: string): boolean {
    if (isLocation(target)) return true;
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

export interface DumpFlags {
  format?: string;
  compression?: string;
  level?: string;
  verify?: boolean;
  keepLast?: string;
}

/** A plan for one-off mode: a source URL and a store URL, no config file. */
export function oneOffPlan(sourceUrl: string | undefined, storeUrls: string | string[], flags: DumpFlags, log: Logger): JobPlan {
  const stores = (Array.isArray(storeUrls) ? storeUrls : [storeUrls]).map((url) => ({ name: url, section: storeFromUrl(url) }));
  const source = sourceUrl ? sourceFromUrl(sourceUrl) : undefined;
  for (const w of source?.warnings ?? []) log.warn(w);
  const options = { ...(source?.options ?? {}) };
  if (flags.format) options.format = flags.format;
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
