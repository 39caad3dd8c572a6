import type { Command } from "commander";
import { DbkeepError, isDbkeepError } from "../../core/errors.js";
import { policyFor, prune } from "../../core/jobs.js";
import type { RetentionPolicy } from "../../core/retention.js";
import { durationSeconds } from "../../config/schema.js";
import type { Context } from "../context.js";
import { table } from "../format.js";
import { openTarget, targetStores } from "./list.js";
import { duration, isoDate, wholeNumber } from "../options.js";

interface PruneFlags {
  dryRun?: boolean;
  force?: boolean;
  json?: boolean;
  keepLast?: string;
  now?: string;
  orphanGrace?: string;
  store?: string;
  catalog?: boolean;
}

export function registerPrune(program: Command, ctx: () => Context): void {
  program
    .command("prune")
    .description("apply the retention policy: delete expired backups and leftovers of failed runs")
    .argument("<target>", "job name, or store URL / directory (with --keep-last)")
    .option("--dry-run", "show what would be kept and deleted, and why; delete nothing")
    .option("--json", "print the decisions as JSON")
    .option("--keep-last <n>", "keep the N newest backups (overrides the job's keep_last)", wholeNumber(1))
    .option("--now <iso>", "evaluate the policy as if it were this time (with --dry-run)", isoDate)
    .option("--orphan-grace <duration>", "remove leftovers of failed runs older than this (default: the job's orphan_grace, else 1h)", duration)
    .option("--force", "prune even though the job's last backup failed, and delete damaged backups too")
    .option("--store <name>", "prune only this store of the job (default: each of its stores, with its own policy)")
    .option("--no-catalog", "with --dry-run: read every manifest from the store, not only those new or changed since this machine's catalog")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep prune appdb-backup --dry-run
  dbkeep prune appdb-backup
  dbkeep prune ./backups --keep-last 7 --dry-run
  dbkeep prune appdb-backup --dry-run --now 2027-01-01T00:00:00Z   # what that date would delete
  dbkeep prune appdb-backup --dry-run --no-catalog

The newest backup is never deleted. Without retention rules nothing is deleted. When the job's
last backup failed, prune deletes nothing (a broken job must not eat its history) unless --force.
A job's prune counts and deletes only that job's backups (its manifests say which job made them);
on a store given by URL, each job and database is pruned on its own. Damaged backups (data gone or
cut, manifest unreadable or lost) are never deleted without --force: see dbkeep repair. Leftovers
of runs that provably never finished are removed after the grace period. A dry run takes the
manifests the store lists unchanged since an earlier listing on this machine from its catalog
($DBKEEP_STATE_DIR/catalog); a prune that deletes reads every manifest from the store.`,
    )
    .action(async (target: string, flags: PruneFlags) => {
      const c = ctx();
      // Each store of a job is pruned with its own policy (retention.stores.NAME), else the job's.
      const names = targetStores(c, target, flags.store);
      const docs: unknown[] = [];
      let failed = false;
      for (const name of names) {
        const { plan, store, prefix } = await openTarget(c, target, name);
        try {
          const policy: RetentionPolicy = { ...policyFor(plan), ...(flags.keepLast ? { keep_last: Number(flags.keepLast) } : {}) };
          const now = flags.now ? new Date(flags.now) : undefined;
          if (now && Number.isNaN(now.getTime())) throw new DbkeepError("USAGE", `--now: not a date: ${flags.now}`, { hint: "e.g. --now 2027-01-01T00:00:00Z" });
          const grace = durationSeconds(flags.orphanGrace ?? plan.retention?.orphan_grace ?? "1h");
          if (grace === undefined) throw new DbkeepError("USAGE", `--orphan-grace: not a duration: ${flags.orphanGrace}`, { hint: "e.g. 30m, 1h, 2d" });
          let r;
          try {
            r = await prune(store, prefix, policy, {
              dryRun: flags.dryRun ?? false,
              force: flags.force ?? false,
              timezone: plan.timezone,
              ...(now ? { now } : {}),
              orphanGraceSeconds: grace,
              catalog: flags.catalog === false ? "rebuild" : "use",
              ...(plan.oneOff ? {} : { job: plan.name }),
              log: c.log.child({ store: store.name }),
            });
          } catch (err) {
            // One unreachable store does not stop the others from being pruned.
            if (names.length === 1 || isDbkeepError(err, "USAGE")) throw err;
            failed = true;
            c.log.error({ store: store.name }, `prune of ${store.name} failed: ${(err as Error).message}`);
            continue;
          }
          if (flags.json) {
            docs.push({ store: store.name, dry_run: r.dryRun, policy, ...(r.blocked ? { blocked: r.blocked } : {}), backups: r.entries, damaged: r.damaged, orphans: r.orphans.map((o) => o.key), deleted: r.deleted });
            continue;
          }
          if (names.length > 1) process.stdout.write(`${store.name}:\n`);
          if (r.blocked) {
            process.stdout.write(`nothing deleted: ${r.blocked}\n`);
            continue;
          }
          const rows = r.entries.map((e) => [e.action === "keep" ? "KEEP" : r.dryRun ? "DELETE" : "DELETED", e.id, e.at.replace("T", " ").slice(0, 19), e.reasons.join(", ")]);
          if (rows.length > 0) process.stdout.write(table(["ACTION", "BACKUP", "TAKEN (UTC)", "WHY"], rows) + "\n");
          for (const d of r.damaged) {
            const act = d.action === "keep" ? "KEEP" : r.dryRun ? "DELETE" : "DELETED";
            process.stdout.write(`${act}  ${d.id}  (damaged: ${d.problems.join("; ")}${d.action === "keep" ? `; ${d.repairable ? "dbkeep repair makes its manifest again, " : ""}--force deletes it` : ""})\n`);
          }
          for (const o of r.orphans) process.stdout.write(`${r.dryRun ? "DELETE" : "DELETED"}  ${o.key}  (leftover of a failed or killed run)\n`);
          const del = r.entries.filter((e) => e.action === "delete").length;
          process.stdout.write(`${r.entries.length - del} kept, ${del} ${r.dryRun ? "to delete" : "deleted"}${r.orphans.length ? `, ${r.orphans.length} leftover(s) ${r.dryRun ? "to remove" : "removed"}` : ""}${r.dryRun ? " (dry run)" : ""}\n`);
        } finally {
          await store.close();
        }
      }
      if (flags.json) process.stdout.write(JSON.stringify(docs.length === 1 ? docs[0] : { stores: docs }, null, 2) + "\n");
      if (failed) process.exitCode = 1;
    });
}
