import { readFileSync } from "node:fs";
import { basename, extname, join } from "node:path";
import type { Command } from "commander";
import { DbkeepError } from "../../core/errors.js";
import type { JobPlan } from "../../core/jobs.js";
import { stateDir } from "../../core/lock.js";
import { createLogger } from "../../core/log.js";
import { openQueryConnection } from "../../query/connection.js";
import { runConsole } from "../../query/console.js";
import { createConsoleBackupOps } from "../../query/console-ops.js";
import { parseDotEnv, seedDatasource, type SeedStartFlags } from "../../query/console-seed004.js";
import { resolveDatasource, type ResolvedDatasource } from "../../query/datasource.js";
import { oneOffPlan, type Context } from "../context.js";
import { wholeNumber } from "../options.js";

interface ConsoleFlags extends SeedStartFlags {
  to?: string;
  job?: string;
  maxRows?: string;
}

export function registerConsole(program: Command, ctx: () => Context): void {
  program
    .command("console")
    .description("an interactive prompt on one database: SQL, tables, backup, list, restore")
    .argument("[datasource]", "datasource name from the config, or a URL (postgres://..., mysql://..., sqlite:./app.db)")
    .option("--to <store>", "store URL or directory for backup, list and restore (default: the store of the datasource's job)")
    .option("--job <name>", "the job whose store and settings backup, list and restore use (when several jobs back up this datasource)")
    .option("--max-rows <n>", "rows a sql command shows at most", wholeNumber(1), "100")
    .option("--db <engine>", "instead of DATASOURCE, as the DB Backup Utility was started: postgres or mysql, with --database ...")
    .option("--database <name>", "with --db: the database (else DB_NAME of the .env file)")
    .option("--host <host>", "with --db: the server (else DB_HOST, else localhost)")
    .option("--port <port>", "with --db: the port (else DB_PORT)")
    .option("--user <user>", "with --db: the user (else DB_USER)")
    .option("--password <password>", "with --db: the password (visible to other users in the process list: prefer DB_PASSWORD in .env, or PGPASSWORD / MYSQL_PWD)")
    .option("--storage <kind>", "with --db: local (the only kind; -path DIR of each command says where)")
    .option("--env-file <file>", "with --db: read DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME from FILE (--config file reads ./.env)")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep console appdb
  dbkeep console sqlite:./app.db --to ./backups
  dbkeep console postgres://app@localhost/shop --to /var/backups
  dbkeep console --db postgres --database mydb --host localhost --port 5432 --user postgres
  dbkeep console --db postgres --database mydb --storage local --config file     # DB_* from ./.env

Inside: help, tables, sql SELECT ..., sql SELECT ... --csv PATH, backup, backup --table T,
backup --differential, list, restore [BACKUP], exit; and the DB Backup Utility's commands:
full database -path P, full tables -tablename A -tablename B -path P, differential backup,
SQL SELECT ... -extract -path DIR. Tab completes commands, tables and columns;
the history is kept in $DBKEEP_STATE_DIR/console_history. Backups go to the store of the config's
job for this datasource (--job picks one of several), or to --to STORE. See docs/query.md.`,
    )
    .action(async (datasourceArg: string | undefined, flags: ConsoleFlags) => {
      const c = ctx();
      const datasource = seedStart(c, datasourceArg, flags);
      const maxRows = Number(flags.maxRows);
      if (!Number.isInteger(maxRows) || maxRows < 1) throw new DbkeepError("USAGE", `--max-rows must be a positive whole number, not "${flags.maxRows}"`);
      const ds = resolveDatasource(datasource, () => c.config(), (m) => c.log.warn(m));
      if (!["postgres", "postgresql", "mysql", "mariadb", "sqlite"].includes(ds.section.engine)) {
        throw new DbkeepError("USAGE", `the console is not available for ${ds.section.engine} datasources`, { hint: "it works with PostgreSQL, MySQL/MariaDB and SQLite" });
      }
      const target = backupTarget(c, ds, datasource, flags);
      // The console says what each command did; routine log lines would only scroll the prompt away.
      const log = createLogger({ format: c.logFormat, level: c.opts.debug ? "debug" : "warn" });
      c.handlesSignals = true;
      await runConsole({
        name: ds.oneOff ? promptName(ds) : ds.name,
        connect: () => openQueryConnection(ds.section, { secret: ds.secret, oneOff: ds.oneOff }),
        input: process.stdin,
        output: process.stdout,
        historyFile: join(stateDir(), "console_history"),
        ...("plan" in target ? { backups: createConsoleBackupOps(target.plan, target.describe, log) } : { unavailable: target.unavailable }),
        // Seed 004's -path DIR: a directory store, zstd as that tool wrote (unless the datasource names a compression).
        backupsAt: (dir: string) => createConsoleBackupOps(storePlan(c, ds, dir, { arg: datasource, zstd: true }), `directory ${dir}`, log),
        signal: c.signal,
        maxRows,
      });
    });
}

/**
 * A plan that backs the datasource up into one store (--to STORE, or seed 004's -path DIR). `zstd`: zstd, as seed
 * 004 wrote, unless the datasource's URL asks for a compression itself.
 */
function storePlan(c: Context, ds: ResolvedDatasource, location: string, o: { arg: string; zstd?: boolean }): JobPlan {
  const base = oneOffPlan(undefined, location, {}, c.log);
  const options = ds.section.options;
  const own = (options.compression as JobPlan["compression"] | undefined) ?? "gzip";
  const compression = o.zstd && !(ds.oneOff && /[?&]compression=/.test(o.arg)) ? "zstd" : own;
  return {
    ...base,
    name: ds.oneOff ? base.name : `console-${ds.name}`,
    datasource: { path: ds.path, section: ds.section },
    compression,
    ...(typeof options.compression_level === "number" && compression === own ? { level: options.compression_level } : {}),
    oneOff: ds.oneOff,
  };
}

/** Where the console's backups go: --to STORE, else the job of this datasource in the config. */
function backupTarget(c: Context, ds: ResolvedDatasource, datasourceArg: string, flags: ConsoleFlags): { plan: JobPlan; describe: string } | { unavailable: string } {
  if (flags.to) {
    if (flags.job) throw new DbkeepError("USAGE", "give --to or --job, not both");
    return { plan: storePlan(c, ds, flags.to, { arg: datasourceArg }), describe: `store ${flags.to}` };
  }
  if (ds.oneOff) {
    if (flags.job) return { plan: c.plan(flags.job), describe: `job ${flags.job}` };
    return { unavailable: "no store: open the console with --to STORE (or give a datasource of the config that a job backs up)" };
  }
  const config = c.config();
  if (flags.job) {
    const plan = c.plan(flags.job);
    if (config.jobs[flags.job]?.datasource !== ds.name) throw new DbkeepError("USAGE", `job ${flags.job} backs up datasource ${config.jobs[flags.job]?.datasource}, not ${ds.name}`);
    return { plan, describe: `job ${flags.job} (store ${plan.store.name})` };
  }
  const jobs = Object.entries(config.jobs).filter(([, j]) => j.datasource === ds.name).map(([n]) => n);
  if (jobs.length === 0) return { unavailable: `no job of the config backs up ${ds.name}: open the console with --to STORE` };
  const plan = c.plan(jobs[0]!);
  if (jobs.length > 1) c.log.info(`backups use job ${jobs[0]} (jobs of ${ds.name}: ${jobs.join(", ")}; --job picks another)`);
  return { plan, describe: `job ${jobs[0]} (store ${plan.store.name})` };
}

/**
 * The DATASOURCE argument, or the URL for the DB Backup Utility's start flags (`--db postgres --database mydb ...`,
 * its `--config file` reading ./.env). The password goes to the engines as PGPASSWORD / MYSQL_PWD, never into a URL.
 */
function seedStart(c: Context, arg: string | undefined, flags: ConsoleFlags): string {
  const seedFlags = ["database", "host", "port", "user", "password", "storage", "envFile"] as const;
  if (flags.db === undefined) {
    const stray = seedFlags.find((k) => flags[k] !== undefined);
    if (stray) throw new DbkeepError("USAGE", `--${stray === "envFile" ? "env-file" : stray} goes with --db`, { hint: "dbkeep console --db postgres --database mydb ..., or dbkeep console postgres://user@host/db" });
    if (arg === undefined) throw new DbkeepError("USAGE", "name a datasource", { hint: "dbkeep console appdb, dbkeep console postgres://user@host/db, or dbkeep console --db postgres --database mydb" });
    return arg;
  }
  if (arg !== undefined) throw new DbkeepError("USAGE", "give DATASOURCE or --db, not both");
  // The seed's `--config file` arrives as the global -c/--config: "file" reads ./.env, "manual" takes the flags alone.
  const envFile = flags.envFile ?? (c.opts.config === "file" ? ".env" : undefined);
  let dotenv: Record<string, string> = {};
  if (envFile !== undefined) {
    try {
      dotenv = parseDotEnv(readFileSync(envFile, "utf8"));
    } catch (err) {
      throw new DbkeepError("USAGE", `cannot read ${envFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { hint: "create it with DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME, or start with --config manual and the flags" });
    }
  }
  const { url, password } = seedDatasource(flags, dotenv);
  if (flags.password !== undefined) c.log.warn(`--password is visible to other users in the process list: put DB_PASSWORD in .env (--config file) or set ${password?.variable ?? "PGPASSWORD"} instead`);
  if (password) process.env[password.variable] = password.value;
  return url;
}

/** The prompt of a URL datasource: its database, or a SQLite file's name without its extension. */
function promptName(ds: ResolvedDatasource): string {
  const o = ds.section.options;
  if (typeof o.database === "string") return o.database;
  if (typeof o.path === "string") return basename(o.path, extname(o.path)) || "sqlite";
  return ds.section.engine;
}
