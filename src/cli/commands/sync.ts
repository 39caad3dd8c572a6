import type { Command } from "commander";
import { DbkeepError } from "../../core/errors.js";
import { backupPrefix, openEngine, openStores, planJob, storePolicy } from "../../core/jobs.js";
import { syncStores } from "../../core/sync.js";
import type { Context } from "../context.js";
import { formatBytes } from "../format.js";

interface SyncFlags {
  from?: string;
  to?: string;
  dryRun?: boolean;
  json?: boolean;
  ignoreRetention?: boolean;
}

export function registerSync(program: Command, ctx: () => Context): void {
  program
    .command("sync")
    .description("copy the backups a store of a job is missing from another of its stores, checksum-verified")
    .argument("<job>", "job name")
    .option("--from <store>", "copy from this store only (default: any store of the job that holds the backup)")
    .option("--to <store>", "fill this store only (default: every store of the job)")
    .option("--dry-run", "show what would be copied; copy nothing")
    .option("--ignore-retention", "also copy backups the target's retention policy would delete at once")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep sync appdb-backup                      # fill every gap dbkeep status shows
  dbkeep sync appdb-backup --from local --to r2
  dbkeep sync appdb-backup --dry-run

Each copy streams through a SHA-256 check against the backup's manifest and writes the
manifest last, so an interrupted sync leaves nothing that looks like a backup. Running it
twice copies nothing the second time.`,
    )
    .action(async (job: string, flags: SyncFlags) => {
      const c = ctx();
      const plan = planJob(c.config(), job);
      for (const n of [flags.from, flags.to]) {
        if (n && !plan.stores.some((s) => s.name === n)) {
          throw new DbkeepError("USAGE", `job ${job} does not write to store "${n}"`, { hint: `its stores: ${plan.stores.map((s) => s.name).join(", ")}` });
        }
      }
      if (plan.stores.length < 2 && !flags.from) throw new DbkeepError("USAGE", `job ${job} has one store: there is nothing to sync`, { hint: "give the job several stores: stores: [local, offsite]" });
      const engine = await openEngine(plan);
      const stores = await openStores(plan, (m) => c.log.warn(m));
      try {
        const byName = (n: string) => stores[plan.stores.findIndex((s) => s.name === n)]!;
        const sources = flags.from ? [byName(flags.from)] : stores;
        const targets = flags.to ? [byName(flags.to)] : stores;
        const r = await syncStores(sources, targets, backupPrefix(plan, engine), {
          ...(flags.ignoreRetention ? {} : { policyFor: (s) => storePolicy(plan, stores.indexOf(s)) }),
          timezone: plan.timezone,
          dryRun: flags.dryRun ?? false,
          job,
          signal: c.signal,
          log: c.log.child({ job }),
        });
        if (flags.json) process.stdout.write(JSON.stringify({ job, dry_run: flags.dryRun ?? false, ...r }, null, 2) + "\n");
        else {
          for (const x of r.copied) process.stdout.write(`${flags.dryRun ? "would copy" : "copied"}  ${x.id}  ${x.from} -> ${x.to}  ${formatBytes(x.bytes)}\n`);
          for (const x of r.failed) process.stdout.write(`FAILED  ${x.id}  ${x.from} -> ${x.to}: ${x.error}\n`);
          for (const x of r.skipped) process.stdout.write(`skipped ${x.id} for ${x.to}: ${x.reason}\n`);
          for (const x of r.unreachable) process.stdout.write(`${x.store}: cannot be listed: ${x.error}\n`);
          const total = r.copied.reduce((a, x) => a + x.bytes, 0);
          process.stdout.write(
            r.copied.length + r.failed.length === 0 ? "every store holds every backup it should\n" : `${r.copied.length} ${flags.dryRun ? "to copy" : "copied"} (${formatBytes(total)}), ${r.failed.length} failed\n`,
          );
        }
        if (r.failed.length || r.unreachable.length) process.exitCode = 1;
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    });
}
