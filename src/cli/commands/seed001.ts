import type { Command } from "commander";
import { DbkeepError } from "../../core/errors.js";
import type { Context } from "../context.js";
import { onlyJob } from "./list.js";

/**
 * Seed 001's verbs that dbkeep has under other names: `upload` (sync the job's first store into the others, or
 * adopt a dump file with `dbkeep import`) and `test` (doctor, then stores check). Each runs dbkeep's own command,
 * so that both behave the same and are documented once.
 */
export function registerSeed001(program: Command, ctx: () => Context): void {
  const rerun = async (args: string[]): Promise<number> => {
    process.exitCode = 0;
    await program.parseAsync(args, { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  };

  program
    .command("upload")
    .description("seed 001's upload: copy the backups the job's other stores (e.g. GCS) are missing from its first, or adopt a dump file")
    .argument("[job]", "job name (default: the only job, e.g. in sidecar mode)")
    .option("--file <path>", "adopt this dump file as a backup of the job, in every store (dbkeep import)")
    .option("--dry-run", "show what would be copied; copy nothing")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep upload                                  # sync all pending: the same as dbkeep sync JOB --from local
  dbkeep upload --file /backups/old/postgres_db_daily_20250101_020000.dump

Backups are written to every store of the job at once; upload copies what a store missed (an
outage), checksum-verified. --file runs dbkeep import FILE --job JOB: the file must be a dump that
pg_restore reads; it is labelled manual (never pruned) unless its path names daily or weekly.`,
    )
    .action(async (job: string | undefined, flags: { file?: string; dryRun?: boolean }) => {
      const c = ctx();
      const name = job ?? onlyJob(c);
      if (flags.file) {
        if (!program.commands.some((x) => x.name() === "import")) {
          throw new DbkeepError("NOT_AVAILABLE", "upload --file needs dbkeep import, which this build does not have", { hint: "copy the file into the store's directory by hand, or upgrade dbkeep" });
        }
        const type = /(?:^|[/_.-])(daily|weekly|manual)(?:[/_.-]|$)/.exec(flags.file)?.[1] ?? "manual";
        process.exitCode = await rerun(["import", flags.file, "--job", name, "--type", type]);
        return;
      }
      const plan = c.plan(name);
      if (plan.stores.length < 2) throw new DbkeepError("USAGE", `job ${name} has one store (${plan.store.name}): there is no cloud store to upload to`, { hint: "set GCS_BUCKET_NAME (seed 001), or give the job several stores" });
      const code = await rerun(["sync", name, "--from", plan.store.name, ...(flags.dryRun ? ["--dry-run"] : [])]);
      process.exitCode = code;
    });

  program
    .command("test")
    .description("seed 001's connection test: check the database (dbkeep doctor) and every store (dbkeep stores check)")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep test
  docker exec backup dbkeep test

Exit code 1 when the database or a store failed a check.`,
    )
    .action(async () => {
      const doctor = await rerun(["doctor"]);
      const stores = await rerun(["stores", "check"]);
      process.exitCode = doctor || stores ? 1 : 0;
    });
}
