import type { Command } from "commander";
import { backupPrefix, openEngine, openStore, withStore, type JobPlan } from "../../core/jobs.js";
import { listFor } from "../../core/listing.js";
import type { Store } from "../../stores/store.js";
import { DbkeepError } from "../../core/errors.js";
import { oneOffPlan, type Context } from "../context.js";
import { formatBytes, table } from "../format.js";

/** The store and prefix a command works on: a job of the config, or a store URL (all backups in it). */
export async function openTarget(c: Context, target: string, storeName?: string): Promise<{ plan: JobPlan; store: Store; prefix: string }> {
  if (c.isStoreLocation(target)) {
    if (storeName) throw new DbkeepError("USAGE", "--store goes with a job name", { hint: `the store is ${target} itself` });
    const plan = oneOffPlan(undefined, target, {}, c.log);
    return { plan, store: await openStore(plan), prefix: "" };
  }
  const plan = withStore(c.plan(target), storeName);
  const engine = await openEngine(plan);
  return { plan, store: await openStore(plan), prefix: backupPrefix(plan, engine) };
}

/**
 * The stores a command goes through, in order, for openTarget: the one `--store` names, the store a URL is, or
 * every store of the job.
 */
export function targetStores(c: Context, target: string, store: string | undefined): (string | undefined)[] {
  return store || c.isStoreLocation(target) ? [store] : c.plan(target).stores.map((s) => s.name);
}

/** The job a command works on when none is named: the config's only job (sidecar mode builds exactly one). */
export function onlyJob(c: Context): string {
  const jobs = Object.keys(c.config().jobs);
  if (jobs.length === 1) return jobs[0]!;
  throw new DbkeepError("USAGE", jobs.length ? "name the job: the config has several" : "the config defines no jobs", { hint: `jobs: ${jobs.join(", ") || "none"}` });
}

/** --cloud: the first of the job's stores that is not a local directory. */
function cloudStore(c: Context, target: string): string {
  const ref = c.plan(target).stores.find((s) => s.section.type !== "local");
  if (!ref) throw new DbkeepError("USAGE", `job ${target} has no cloud store`, { hint: "set GCS_BUCKET_NAME (seed 001), or give the job a store that is not a directory" });
  return ref.name;
}

export function registerList(program: Command, ctx: () => Context): void {
  program
    .command("list")
    .description("list the backups of a job, or of every database in a store")
    .argument("[target]", "job name, or store URL / directory (default: the only job, e.g. in sidecar mode)")
    .option("--json", "print JSON")
    .option("--type <kind>", "only backups of this type (daily, weekly, manual, ...)")
    .option("--cloud", "list the job's first store that is not a local directory (e.g. GCS)")
    .option("--all", "also show leftovers of failed or killed runs and unreadable manifests")
    .option("--store <name>", "which of the job's stores to list (default: its first; see dbkeep status for all)")
    .option("--no-catalog", "read every manifest from the store, not only those new or changed since this machine's catalog (which is written anew)")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep list ./backups
  dbkeep list appdb-backup --json
  dbkeep list ./backups --all
  dbkeep list appdb-backup --store offsite
  dbkeep list --type daily                       # sidecar mode: the only job
  dbkeep list --cloud --json
  dbkeep list appdb-backup --no-catalog

Manifests the store lists unchanged (same size, time and change token) since an earlier listing on this
machine are taken from its catalog in $DBKEEP_STATE_DIR/catalog; every other one is read from the store.`,
    )
    .action(async (given: string | undefined, flags: { json?: boolean; all?: boolean; store?: string; type?: string; cloud?: boolean; catalog?: boolean }) => {
      const c = ctx();
      const target = given ?? onlyJob(c);
      if (flags.cloud && flags.store) throw new DbkeepError("USAGE", "give either --cloud or --store");
      const { plan, store, prefix } = await openTarget(c, target, flags.cloud ? cloudStore(c, target) : flags.store);
      try {
        const all = await listFor(store, prefix, plan.oneOff ? undefined : plan.name, { catalog: flags.catalog === false ? "rebuild" : "use" });
        const listing = flags.type ? { ...all, backups: all.backups.filter((b) => b.type === flags.type) } : all;
        const damaged = listing.damaged.map((d) => ({ id: d.id, taken_at: d.at, problems: d.problems, repairable: d.repairable, keys: d.objects.map((o) => o.key) }));
        // Damaged backups make the exit code 1, so that a script or a monitor notices them.
        if (damaged.length) process.exitCode = 1;
        if (flags.json) {
          const doc = {
            store: store.name,
            backups: listing.backups,
            damaged,
            ...(listing.flaws.size ? { flaws: Object.fromEntries(listing.flaws) } : {}),
            ...(flags.all
              ? {
                  incomplete: listing.leftovers.flatMap((l) =>
                    l.objects.map((o) => ({ key: o.key, size: o.size, modified: o.modified.toISOString(), partial: o.partial ?? false, why: l.why, ...(l.marker ? { run: { host: l.marker.host, pid: l.marker.pid, started_at: l.marker.started_at, ...(l.marker.job ? { job: l.marker.job } : {}) } } : {}) })),
                  ),
                }
              : {}),
          };
          process.stdout.write(JSON.stringify(doc, null, 2) + "\n");
          return;
        }
        if (listing.backups.length === 0) process.stdout.write(`no complete backups in ${store.name}${prefix ? ` under ${prefix}` : ""}\n`);
        else {
          // Partial and differential backups say so (in a column shown only when the listing holds one).
          const kind = (b: (typeof listing.backups)[number]) =>
            b.differential?.kind === "differential"
              ? `differential of ${b.differential.base?.id ?? "?"}`
              : [b.differential?.kind === "full" ? "full" : "", b.selection ? `partial: ${b.selection.tables.length} table(s)` : ""].filter(Boolean).join(", ");
          const kinds = listing.backups.map(kind);
          const withKind = kinds.some(Boolean);
          const withType = listing.backups.some((b) => b.type);
          const rows = listing.backups.map((b, i) => [
            b.id, b.started_at.replace("T", " ").slice(0, 19), ...(withType ? [b.type ?? "-"] : []), formatBytes(b.stored_bytes), `${b.format}/${b.compression}${b.encryption ? "+age" : ""}`,
            ...(withKind ? [kinds[i] || "full"] : []), b.key,
          ]);
          process.stdout.write(table(["BACKUP", "TAKEN (UTC)", ...(withType ? ["TYPE"] : []), "SIZE", "FORMAT", ...(withKind ? ["KIND"] : []), "KEY"], rows) + "\n");
        }
        for (const d of listing.damaged) {
          process.stdout.write(`DAMAGED  ${d.id}  ${d.at.replace("T", " ").slice(0, 19)}  ${d.problems.join("; ")}${d.repairable ? `  (dbkeep repair ${target} ${d.id} makes its manifest again)` : ""}\n`);
        }
        for (const [id, flaws] of listing.flaws) process.stdout.write(`FLAW     ${id}  ${flaws.join("; ")}\n`);
        if (listing.damaged.length) c.log.error(`${listing.damaged.length} damaged backup(s) in ${store.name}: they cannot be restored as they are; prune keeps them (see dbkeep repair)`);
        if (flags.all) {
          if (listing.leftovers.length === 0) process.stdout.write("no leftovers of failed or killed runs\n");
          for (const l of listing.leftovers) {
            for (const o of l.objects) {
              const why = l.why === "uncommitted" ? `(never committed${l.marker ? `: run ${l.marker.pid} on ${l.marker.host} since ${l.marker.started_at}` : ""})` : l.why === "interrupted upload" ? "(interrupted upload)" : "(no data)";
              process.stdout.write(`incomplete  ${o.key}  ${formatBytes(o.size)}  ${o.modified.toISOString()}  ${why}\n`);
            }
          }
        } else if (listing.orphans.length > 0) {
          c.log.info(`${listing.orphans.length} leftover object(s) of failed or killed runs: see list --all; prune removes them`);
        }
      } finally {
        await store.close();
      }
    });
}
