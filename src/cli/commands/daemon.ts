import type { Command } from "commander";
import { configPath, loadConfigFile, type Config } from "../../config/load.js";
import { historyPath } from "../../core/history.js";
import { durationSeconds } from "../../config/schema.js";
import { runDaemon, STOPPED_EARLY } from "../../daemon/daemon.js";
import { toDbkeepError } from "../../core/errors.js";
import { planJob } from "../../core/jobs.js";
import { checkSecrets, DEFAULT_SHUTDOWN_SECONDS, type Context } from "../context.js";
import { hostPort } from "../options.js";

export function registerDaemon(program: Command, ctx: () => Context): void {
  program
    .command("daemon")
    .description("run every job on its schedule, serve /healthz, /readyz and /metrics, keep a run history")
    .option("--listen <host:port>", "address for /healthz, /readyz and /metrics (default: $DBKEEP_LISTEN, else daemon.listen, else 127.0.0.1:9187)", hostPort)
    .option("--once", "run every scheduled job once, now, then exit (exit code 1 when a run failed)")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep -c /etc/dbkeep/dbkeep.yaml daemon
  dbkeep daemon --listen 0.0.0.0:9187          # e.g. in a container, scraped by Prometheus
  DBKEEP_SOURCE=postgres://app@db/app DBKEEP_STORE=/backups DBKEEP_SCHEDULE="0 2 * * *" dbkeep daemon

Jobs run when they have schedule: (cron, seconds optional) or every: (an interval). SIGHUP reloads the
config (an invalid one is refused and the running one kept); SIGTERM lets running jobs finish for
daemon.shutdown_grace, then stops them cleanly, and exits 0. --once (and BACKUP_INTERVAL_SECONDS=0) runs
every scheduled job now, whatever the run history says, and exits 0, 1 when a run failed, or 143 when
SIGTERM stopped it first. For cron or a Kubernetes CronJob, \`dbkeep backup\` does the same for one job.`,
    )
    .action((flags: DaemonFlags) => daemonCommand(ctx(), flags));
}

export interface DaemonFlags {
  listen?: string;
  once?: boolean;
}

/** `dbkeep daemon`, also seed 003's `start`. */
export async function daemonCommand(c: Context, flags: DaemonFlags): Promise<void> {
  c.handlesSignals = true;
  // $DBKEEP_LISTEN applies with a config file too: the container image sets it to 0.0.0.0:9187.
  const listen = flags.listen ?? process.env.DBKEEP_LISTEN;
  let initial: Config | undefined = c.config();
  const historyFile = historyPath(initial.daemon.history);
  // Running jobs get shutdown_grace to finish after SIGTERM, then are stopped and get the usual time to clean up.
  const setDeadline = (config: Config) => (c.shutdownSeconds = (durationSeconds(config.daemon.shutdown_grace) ?? 60) + DEFAULT_SHUTDOWN_SECONDS);
  setDeadline(initial);
  const once = flags.once ?? c.sidecarOnce;
  const scheduled = Object.entries(initial.jobs).filter(([, j]) => j.schedule || j.schedules || j.every !== undefined).map(([name]) => planJob(initial!, name));
  if (once) checkSecrets(scheduled);
  else {
    // A long-running daemon still starts: the other jobs run, and the failing one fails each run (and notifies).
    try {
      checkSecrets(scheduled);
    } catch (err) {
      const e = toDbkeepError(err);
      c.log.error({ code: e.code, ...(e.details ? { details: e.details } : {}) }, `${e.message}: the jobs that need it fail until it is set`);
    }
  }
  // The first load already happened (and warned); later loads are SIGHUP reloads.
  const load = (): Config => {
    const config = initial ?? (c.sidecar ? c.config() : loadConfigFile(configPath(c.opts.config).path));
    initial = undefined;
    setDeadline(config);
    return config;
  };
  const code = await runDaemon({
    loadConfig: load,
    log: c.log,
    shutdown: c.signal,
    ...(listen ? { listen } : {}),
    historyPath: historyFile,
    once,
  });
  // A single run stopped by a signal ends as any command stopped by it does: 130 for SIGINT, 143 for SIGTERM.
  const reason = c.signal.reason instanceof Error ? c.signal.reason.message : "";
  process.exitCode = code === STOPPED_EARLY && reason.includes("SIGINT") ? 130 : code;
}
