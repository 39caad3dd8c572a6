import type { Command } from "commander";
import { History, historyPath } from "../../core/history.js";
import type { Context } from "../context.js";
import { formatBytes, formatDuration, table } from "../format.js";
import { wholeNumber } from "../options.js";

export function registerHistory(program: Command, ctx: () => Context): void {
  program
    .command("history")
    .description("show past runs (from the daemon and from dbkeep backup) with results, durations, sizes and errors")
    .argument("[job]", "only this job")
    .option("--json", "print JSON")
    .option("--limit <n>", "at most this many runs", wholeNumber(1), "50")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep history
  dbkeep history appdb-backup --limit 10
  dbkeep history --json`,
    )
    .action((job: string | undefined, flags: { json?: boolean; limit: string }) => {
      const c = ctx();
      const h = new History(historyPath(c.config().daemon.history));
      try {
        const rows = h.list(job, Math.max(1, Number(flags.limit) || 50));
        if (flags.json) return void process.stdout.write(JSON.stringify({ runs: rows }, null, 2) + "\n");
        if (rows.length === 0) return void process.stdout.write("no runs recorded yet\n");
        const lines = rows.map((r) => [r.started_at.replace("T", " ").slice(0, 19), r.job, r.ok ? "ok" : "FAILED", formatDuration(r.seconds), r.bytes === null ? "-" : formatBytes(r.bytes), String(r.attempts), r.trigger, r.verified === null ? "-" : `${r.verified ? "ok" : "FAILED"}${r.restore_seconds !== null ? ` (restore ${formatDuration(r.restore_seconds)})` : ""}`, r.backup ?? r.error ?? ""]);
        process.stdout.write(table(["STARTED (UTC)", "JOB", "RESULT", "DURATION", "SIZE", "ATTEMPTS", "TRIGGER", "VERIFIED", "BACKUP / ERROR"], lines) + "\n");
      } finally {
        h.close();
      }
    });
}
