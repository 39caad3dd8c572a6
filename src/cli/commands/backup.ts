import type { Command } from "commander";
import { DbkeepError, formatError } from "../../core/errors.js";
import { redact } from "../../core/redact.js";
import { pruneJob, runJob, type JobPlan, type JobResult } from "../../core/jobs.js";
import { History, historyPath } from "../../core/history.js";
import { isLocation } from "../../config/urls.js";
import { encryptionFromFlags } from "../../crypto/settings.js";
import { checkSecrets, oneOffPlan, type Context } from "../context.js";
import { formatBytes, formatDuration, table } from "../format.js";
import { BACKUP_TYPES, integer, oneOf, wholeNumber } from "../options.js";
import { COMPRESSIONS } from "../../core/compression.js";
import { addDbvaultBackupOptions, dbvaultPlans, isDbvaultForm, type DbvaultBackupFlags } from "../seed002.js";

interface BackupFlags extends DbvaultBackupFlags {
  all?: boolean;
  to?: string[];
  prune?: boolean;
  parallel?: string;
  format?: string;
  compression?: string;
  level?: string;
  verify?: boolean;
  type?: string;
  json?: boolean;
  recipient?: string[];
  recipientsFile?: string;
  passphraseEnv?: string;
  table?: string[];
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function registerBackup(program: Command, ctx: () => Context): void {
  addDbvaultBackupOptions(program
    .command("backup")
    .description("back up one or more jobs of the config, or a database given by URL")
    .argument("[targets...]", "job names, or one source URL with --to")
    .option("--all", "run every job of the config")
    .option("--to <store>", "one-off mode: store URL or directory to back up into (repeatable: one dump, several stores)", collect)
    .option("--prune", "apply the job's retention after a successful backup")
    .option("--parallel <n>", "run up to N jobs at once", wholeNumber(1), "1")
    .option("--format <format>", "one-off mode: dump format (plain, custom, directory)")
    .option("--compression <c>", "one-off mode: gzip, zstd, lz4 or none", oneOf(COMPRESSIONS))
    .option("--level <n>", "one-off mode: compression level", integer)
    .option("--verify", "read the backup back and check it after upload")
    .option("--type <kind>", `label the backup: ${BACKUP_TYPES.join(", ")}; manual backups are never pruned`, oneOf(BACKUP_TYPES))
    .option("--json", "print the results as one JSON document")
    .option("-r, --recipient <age1...>", "one-off mode: encrypt to this age public key (repeatable)", collect)
    .option("-R, --recipients-file <file>", "one-off mode: encrypt to the age public keys in this file")
    .option("--passphrase-env <name>", "one-off mode: encrypt with the passphrase in this environment variable")
    .option("--table <pattern>", "back up only this table (glob, schema.table for PostgreSQL; repeatable); replaces tables: of the config", collect)
    .addHelpText(
      "after",
      `
Examples:
  dbkeep backup sqlite:./app.db --to ./backups
  dbkeep backup sqlite:./app.db --to ./backups --to /mnt/usb/backups   # one dump, two stores
  dbkeep backup sqlite:./app.db --to ./backups -r age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
  dbkeep backup postgres://app@db.internal:5432/app --to ./backups --compression zstd
  dbkeep backup 'postgres://app@localhost/app?format=custom' --to /var/backups
  dbkeep -c dbkeep.yaml backup appdb-backup
  dbkeep backup --all --parallel 4 --prune
  dbkeep backup appdb-backup --type manual          # kept until deleted by hand
  dbkeep backup postgres://app@localhost/app --to ./backups --table 'public.orders*' --table users`,
    ))
    .action(async (targets: string[], flags: BackupFlags) => {
      const c = ctx();
      const plans = withTables(isDbvaultForm(flags) ? await dbvaultPlans(c, targets, flags) : planBackups(c, targets, flags), flags.table);
      checkSecrets(plans);
      const parallel = Number(flags.parallel ?? "1");
      // Runs of configured jobs go into the same history as the daemon's (`dbkeep history`).
      const history = plans.some((p) => !p.oneOff) ? openHistory(c) : undefined;
      const results = await runPool(plans, parallel, async (plan) => {
        const progress = plans.length === 1 ? c.progress(`backing up ${plan.name === "one-off" ? "" : plan.name + " "}`.trimEnd()) : undefined;
        try {
          const startedAt = new Date();
          const r = await runJob(plan, { log: c.log, signal: c.signal, ...(flags.type ? { type: flags.type } : {}), ...(progress ? { onProgress: progress.update } : {}) });
          progress?.clear();
          if (!plan.oneOff) history?.record(r, startedAt, "cli");
          // prune_after_backup: runJob applied the retention already.
          if (r.ok && flags.prune && !plan.pruneAfterBackup && plan.retention) {
            await pruneJob(plan, { log: c.log, warn: (m) => c.log.warn(m) });
          } else if (r.ok && flags.prune && !plan.retention) {
            c.log.info({ job: plan.name }, "no retention rules: nothing to prune");
          }
          return r;
        } finally {
          progress?.clear();
        }
      });
      history?.close();
      report(c, results, flags.json ?? false);
      if (results.some((r) => !r.ok)) process.exitCode = 1;
    });
}

/** --table: a partial backup of the given tables, replacing the datasource's and the job's own selection. */
function withTables(plans: JobPlan[], tables: string[] | undefined): JobPlan[] {
  if (!tables?.length) return plans;
  return plans.map((plan) => {
    const engine = plan.datasource.section.engine;
    if (!["postgres", "postgresql", "mysql", "mariadb"].includes(engine)) {
      throw new DbkeepError("USAGE", `--table works with PostgreSQL and MySQL/MariaDB, not ${engine}${plan.oneOff ? "" : ` (job ${plan.name})`}`);
    }
    const { tables: _t, exclude_tables: _x, ...options } = plan.datasource.section.options;
    return { ...plan, datasource: { ...plan.datasource, section: { ...plan.datasource.section, options: { ...options, tables } } } };
  });
}

function openHistory(c: Context): History | undefined {
  try {
    return new History(historyPath(c.config().daemon.history));
  } catch (err) {
    c.log.warn({ err: (err as Error).message }, "the run history cannot be opened; this run is not recorded");
    return undefined;
  }
}

function planBackups(c: Context, targets: string[], flags: BackupFlags): JobPlan[] {
  const locations = targets.filter(isLocation);
  if (locations.length > 0) {
    if (targets.length !== 1) throw new DbkeepError("USAGE", "give one source URL at a time, without job names");
    if (!flags.to?.length) throw new DbkeepError("USAGE", "one-off backups need --to STORE", { hint: `dbkeep backup ${targets[0]} --to ./backups` });
    const plan = oneOffPlan(targets[0], flags.to, flags, c.log);
    const encryption = encryptionFromFlags("--recipient", { recipients: flags.recipient, recipients_file: flags.recipientsFile, passphrase_env: flags.passphraseEnv });
    return [{ ...plan, ...(encryption ? { encryption } : {}) }];
  }
  if (flags.to?.length) throw new DbkeepError("USAGE", "--to goes with a source URL; jobs of the config use their own store");
  if (flags.recipient?.length || flags.recipientsFile || flags.passphraseEnv) {
    throw new DbkeepError("USAGE", "--recipient, --recipients-file and --passphrase-env go with a source URL", { hint: "jobs of the config are encrypted by their encryption block" });
  }
  const config = c.config();
  // Sidecar mode builds exactly one job from the environment: `dbkeep backup` alone runs it (a CronJob's command).
  const names = flags.all || (targets.length === 0 && c.sidecar) ? Object.keys(config.jobs) : targets;
  if (names.length === 0) {
    throw new DbkeepError("USAGE", "name the jobs to run, or --all", { hint: `jobs: ${Object.keys(config.jobs).join(", ") || "none defined"}` });
  }
  return names.map((n) => c.plan(n));
}

async function runPool<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function report(c: Context, results: JobResult[], json: boolean): void {
  if (json) {
    const doc = {
      ok: results.every((r) => r.ok),
      succeeded: results.filter((r) => r.ok).length,
      failed: results.filter((r) => !r.ok).length,
      jobs: results.map((r) => ({
        job: r.job,
        ok: r.ok,
        attempts: r.attempts,
        seconds: Math.round(r.seconds * 100) / 100,
        store: r.store,
        ...(r.stores ? { stores: r.stores } : {}),
        ...(r.manifest ? { backup: r.manifest.id, key: r.manifest.key, bytes: r.manifest.stored_bytes, raw_bytes: r.manifest.raw_bytes, sha256: r.manifest.sha256 } : {}),
        ...(r.error ? { error: r.error.message, code: r.error.code, ...(r.error.hint ? { hint: r.error.hint } : {}) } : {}),
      })),
    };
    process.stdout.write(JSON.stringify(doc, null, 2) + "\n");
    return;
  }
  for (const r of results) {
    if (!r.error) continue;
    // Structured for machines when the logs are JSON; a readable block (message, tool output, hint) for people.
    if (c.logFormat === "json") {
      c.log.error({ job: r.job, code: r.error.code, ...(r.error.details ? { details: r.error.details } : {}), ...(r.error.hint ? { hint: r.error.hint } : {}) }, `job ${r.job} failed: ${r.error.message}`);
    }
    process.stderr.write(redact(formatError(r.error, results.length > 1 ? r.job : undefined)) + "\n");
  }
  if (results.length === 1) {
    const r = results[0]!;
    if (r.manifest) {
      process.stdout.write(`${r.manifest.id}  ${formatBytes(r.manifest.stored_bytes)} (${formatBytes(r.manifest.raw_bytes)} raw)  ${r.store}  ${r.manifest.key}\n`);
    }
    return;
  }
  const rows = results.map((r) => [r.job, r.ok ? "ok" : "FAILED", formatDuration(r.seconds), r.manifest ? formatBytes(r.manifest.stored_bytes) : "-", r.store, String(r.attempts)]);
  const ok = results.filter((r) => r.ok).length;
  process.stdout.write(`${table(["JOB", "RESULT", "DURATION", "SIZE", "STORE", "ATTEMPTS"], rows)}\n${ok} succeeded, ${results.length - ok} failed\n`);
}
