import { randomBytes } from "node:crypto";
import { rename, unlink, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { seedCatalog } from "../../core/backup-catalog.js";
import { DbkeepError } from "../../core/errors.js";
import { fsyncPath } from "../../core/fsync.js";
import type { JobPlan } from "../../core/jobs.js";
import { listFor } from "../../core/listing.js";
import type { Manifest } from "../../core/manifest.js";
import type { Context } from "../context.js";
import { openTarget } from "./list.js";

/** Where a backup's data is, for backup_location: a local file's absolute path, else `<store>/<key>`. */
function locationOf(plan: JobPlan, storeName: string, m: Manifest): string {
  const section = plan.store.section;
  if (section.type === "local" && typeof section.options.path === "string") return join(resolve(section.options.path), m.key);
  return `${storeName}/${m.key}`;
}

export function registerCatalog(program: Command, ctx: () => Context): void {
  const catalog = program
    .command("catalog")
    .description("the backup catalog in other tools' formats")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep catalog export /backups -o /backups/backup_catalog.json   # the DB Backup Utility's backup_catalog.json`,
    );
  catalog
    .command("export")
    .description("write a backup_catalog.json as the DB Backup Utility wrote it, from the backups' manifests")
    .argument("[target]", "job name, or store URL / directory (default: every job of the config)")
    .option("-o, --output <file>", "write the catalog to FILE (default: stdout)")
    .option("--store <name>", "which of the job's stores to read (default: its first)")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep catalog export /backups -o /backups/backup_catalog.json
  dbkeep catalog export appdb-nightly -o backup_catalog.json
  dbkeep catalog export | jq '.backups[] | select(.type == "full") | .backup_location'

Every complete backup becomes one entry of {"backups": [...]}, oldest first, with the fields of that tool's
catalog: id, type (full, partial or differential), status, timestamp_start, duration_seconds, compress,
backup_location and statistics (total_tables, total_rows_processed, total_size_bytes). See docs/migrating.md.`,
    )
    .action(async (target: string | undefined, flags: { output?: string; store?: string }) => {
      const c = ctx();
      const targets = target !== undefined ? [target] : Object.keys(c.config().jobs);
      if (targets.length === 0) throw new DbkeepError("USAGE", "the config defines no jobs", { hint: "name a store: dbkeep catalog export /backups" });
      if (target === undefined && flags.store) throw new DbkeepError("USAGE", "--store goes with a job name", { hint: "dbkeep catalog export JOB --store NAME" });
      const found: { manifest: Manifest; location: string }[] = [];
      for (const t of targets) {
        const { plan, store, prefix } = await openTarget(c, t, flags.store);
        try {
          const listing = await listFor(store, prefix, plan.oneOff ? undefined : plan.name);
          for (const m of listing.backups) found.push({ manifest: m, location: locationOf(plan, store.name, m) });
          if (listing.damaged.length) c.log.warn(`${listing.damaged.length} damaged backup(s) in ${store.name} are left out of the catalog (dbkeep list ${t} shows them)`);
        } finally {
          await store.close();
        }
      }
      const text = JSON.stringify(seedCatalog(found), null, 2) + "\n";
      if (!flags.output || flags.output === "-") {
        process.stdout.write(text);
        return;
      }
      await writeAtomically(flags.output, text);
      c.log.info(`wrote ${found.length} backup(s) to ${flags.output}`);
    });
}

/** Beside the final name, fsynced, renamed: a reader never sees half a catalog. */
async function writeAtomically(file: string, text: string): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.partial-${randomBytes(4).toString("hex")}`);
  try {
    await writeFile(tmp, text, { flag: "wx", mode: 0o644 });
    await fsyncPath(tmp, "r+");
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new DbkeepError("IO_FAILED", `cannot write ${file}: ${(err as Error).message}`, { cause: err, hint: "check that the directory exists and is writable" });
  }
}
