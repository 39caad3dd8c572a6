import type { Command } from "commander";
import { formatError } from "../../core/errors.js";
import { History, historyPath } from "../../core/history.js";
import { openStoreRef, pruneJob, runJob, type JobPlan, type JobResult } from "../../core/jobs.js";
import { redact } from "../../core/redact.js";
import { checkSecrets, type Context } from "../context.js";
import { formatBytes } from "../format.js";
import { hostPort } from "../options.js";
import { daemonCommand, type DaemonFlags } from "./daemon.js";

/**
 * The commands of seed 003's container (`start`, `run-once`, `forget-prune`, `init`), so that a compose file or a
 * CronJob written for it keeps its `command:`. Each is a thin name for what dbkeep does anyway: the daemon, one run
 * of the job, its retention with the space reclaimed, the creation of its restic repository.
 */
export function registerSeed003(program: Command, ctx: () => Context): void {
  program
    .command("start")
    .description("run the job on its schedule (CRON_SCHEDULE, BACKUP_INTERVAL_SECONDS): the daemon; with neither set in seed 003's environment, one backup and exit")
    .option("--listen <host:port>", "address for /healthz, /readyz and /metrics (default: $DBKEEP_LISTEN, else 127.0.0.1:9187)", hostPort)
    .addHelpText(
      "after",
      `
Examples:
  DB_TYPE=postgres PGHOST=db PGPASSWORD=... RESTIC_REPOSITORY=s3:s3.amazonaws.com/bucket/app \\
    RESTIC_PASSWORD_FILE=/run/secrets/restic CRON_SCHEDULE="0 2 * * *" TZ=Europe/Amsterdam dbkeep start
  BACKUP_INTERVAL_SECONDS=86400 dbkeep start      # every day, counted from the start

The same as \`dbkeep daemon\` (seed 003's default command). See docs/migrating.md.`,
    )
    .action((flags: DaemonFlags) => daemonCommand(ctx(), flags));

  const runOnce = (name: string, hidden: boolean) =>
    program
      .command(name, { hidden })
      .description("back up now, once, then apply the retention (seed 003: backup, then restic forget) and exit")
      .argument("[jobs...]", "jobs of a config file (default: every job; in sidecar mode the one job)")
      .addHelpText(
        "after",
        `
Examples:
  dbkeep run-once                                   # the sidecar job of the environment
  docker run --rm --env-file seed003.env dbkeep run-once

Exit code 0 when the backup succeeded, 1 when it failed, 2 for a configuration error. The webhook (WEBHOOK_URL)
is sent either way. The same as \`dbkeep backup\` followed by the job's retention when prune_after_backup is set.`,
      )
      .action(async (jobs: string[]) => {
        const c = ctx();
        const plans = plansOf(c, jobs);
        checkSecrets(plans);
        const history = openHistory(c);
        const results: JobResult[] = [];
        for (const plan of plans) {
          const startedAt = new Date();
          const r = await runJob(plan, { log: c.log, signal: c.signal });
          history?.record(r, startedAt, "cli");
          results.push(r);
          if (r.error) process.stderr.write(redact(formatError(r.error, plans.length > 1 ? r.job : undefined)) + "\n");
          else if (r.manifest) {
            const where = r.snapshot ? `${r.store} snapshot ${r.snapshot.id}` : r.store;
            process.stdout.write(`${r.manifest.id}  ${formatBytes(r.manifest.stored_bytes)}  ${where}  ${r.manifest.key}\n`);
          }
        }
        history?.close();
        if (results.some((r) => !r.ok)) process.exitCode = 1;
      });
  runOnce("run-once", false);
  // seed 003's cron line called this to drop root first; dbkeep's image runs as an unprivileged user already.
  runOnce("run-once-as-backups", true);

  program
    .command("forget-prune")
    .description("apply the job's retention now and reclaim the space (seed 003: restic forget --keep-* --prune)")
    .argument("[jobs...]", "jobs of a config file (default: every job; in sidecar mode the one job)")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep forget-prune                               # KEEP_DAILIES, KEEP_WEEKLIES, ... of the environment
  dbkeep -c dbkeep.yaml forget-prune appdb-backup

The same as \`dbkeep prune JOB\`, followed by \`restic prune\` in restic stores. Only backups dbkeep made are
counted and forgotten; snapshots made by other tools in the repository are left alone.`,
    )
    .action(async (jobs: string[]) => {
      const c = ctx();
      const plans = plansOf(c, jobs);
      checkSecrets(plans);
      let ok = true;
      for (const plan of plans) {
        if (!plan.retention) c.log.info({ job: plan.name }, "no retention rules: nothing is forgotten");
        ok = (await pruneJob(plan, { log: c.log, warn: (m) => c.log.warn(m), reclaim: true })) && ok;
      }
      if (!ok) process.exitCode = 1;
    });

  program
    .command("init")
    .description("create the job's restic repository now (seed 003's init; a backup also creates it when it is missing)")
    .argument("[jobs...]", "jobs of a config file (default: every job; in sidecar mode the one job)")
    .addHelpText(
      "after",
      `
Examples:
  RESTIC_REPOSITORY=sftp:backup@host:/srv/restic RESTIC_PASSWORD_FILE=/run/secrets/restic DB_TYPE=postgres dbkeep init

A repository that exists already is left as it is (exit 0). Stores other than restic need no initialisation.`,
    )
    .action(async (jobs: string[]) => {
      const c = ctx();
      const plans = plansOf(c, jobs);
      checkSecrets(plans);
      const done = new Set<string>();
      for (const ref of plans.flatMap((p) => p.stores)) {
        if (done.has(ref.name)) continue;
        done.add(ref.name);
        const store = await openStoreRef(ref, (m) => c.log.warn(m));
        try {
          const where = store.location ?? store.name;
          if (!store.initialise) process.stdout.write(`${store.name}: nothing to initialise\n`);
          else if (await store.initialise()) process.stdout.write(`${store.name}: created the repository at ${where}\n`);
          else process.stdout.write(`${store.name}: ${where} is a repository already; left as it is\n`);
        } finally {
          await store.close();
        }
      }
    });
}

function plansOf(c: Context, jobs: string[]): JobPlan[] {
  const names = jobs.length ? jobs : Object.keys(c.config().jobs);
  return names.map((n) => c.plan(n));
}

function openHistory(c: Context): History | undefined {
  try {
    return new History(historyPath(c.config().daemon.history));
  } catch (err) {
    c.log.warn({ err: (err as Error).message }, "the run history cannot be opened; this run is not recorded");
    return undefined;
  }
}
