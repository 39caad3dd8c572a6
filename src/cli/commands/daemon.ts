import type { Command } from "commander";
import { configPath, loadConfigFile, type Config } from "../../config/load.js";
import { historyPath } from "../../core/history.js";
import { runDaemon } from "../../daemon/daemon.js";
import type { Context } from "../context.js";

export function registerDaemon(program: Command, ctx: () => Context): void {
  program
    .command("daemon")
    .description("run every job on its schedule, serve /healthz, /readyz and /metrics, keep a run history")
    .option("--listen <host:port>", "address for /healthz, /readyz and /metrics (default: $DBKEEP_LISTEN, else daemon.listen, else 127.0.0.1:9187)")
    .option("--once", "run every scheduled job once, then exit")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep -c /etc/dbkeep/dbkeep.yaml daemon
  dbkeep daemon --listen 0.0.0.0:9187          # e.g. in a container, scraped by Prometheus
  DBKEEP_SOURCE=postgres://app@db/app DBKEEP_STORE=/backups DBKEEP_SCHEDULE="0 2 * * *" dbkeep daemon

Jobs run when they have schedule: (cron, seconds optional) or every: (an interval). SIGHUP reloads the
config (an invalid one is refused and the running one kept); SIGTERM lets running jobs finish for
daemon.shutdown_grace, then stops them cleanly, and exits 0. For cron or a Kubernetes CronJob, use
\`dbkeep backup\` instead: it runs once and exits.`,
    )
    .action(async (flags: { listen?: string; once?: boolean }) => {
      const c = ctx();
      c.handlesSignals = true;
      // $DBKEEP_LISTEN applies with a config file too: the container image sets it to 0.0.0.0:9187.
      const listen = flags.listen ?? process.env.DBKEEP_LISTEN;
      let initial: Config | undefined = c.config();
      const historyFile = historyPath(initial.daemon.history);
      // The first load already happened (and warned); later loads are SIGHUP reloads.
      const load = (): Config => {
        const config = initial ?? (c.sidecar ? c.config() : loadConfigFile(configPath(c.opts.config).path));
        initial = undefined;
        return config;
      };
      const code = await runDaemon({
        loadConfig: load,
        log: c.log,
        shutdown: c.signal,
        ...(listen ? { listen } : {}),
        historyPath: historyFile,
        once: flags.once ?? c.sidecarOnce,
      });
      process.exitCode = code;
    });
}
