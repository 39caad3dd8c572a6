import type { Command } from "commander";
import { DbkeepError } from "../../core/errors.js";
import { backupPrefix, openEngine, openStores, planJob, storePolicy } from "../../core/jobs.js";
import { ofJob } from "../../core/listing.js";
import { keptBy, listEach, presence } from "../../core/sync.js";
import type { Context } from "../context.js";
import { formatBytes, table } from "../format.js";

export function registerStatus(program: Command, ctx: () => Context): void {
  program
    .command("status")
    .description("which stores hold each backup of a job, and which are missing it")
    .argument("[jobs...]", "job names (default: every job of the config)")
    .option("--json", "print JSON")
    .option("--no-catalog", "read every manifest from the stores, not only those new or changed since this machine's catalog")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep status
  dbkeep status appdb-backup
  dbkeep status appdb-backup --json
  dbkeep status appdb-backup --no-catalog

A backup missing from a store (an upload that failed, a store that was down) is shown as MISSING;
dbkeep sync JOB copies it there. A copy whose data or manifest is damaged (a data object that is gone
or has another size, a manifest that is unreadable) is shown as DAMAGED: sync replaces it from a
store that holds it intact, dbkeep repair makes a lost manifest again. "-" marks a backup the store's
own retention policy does not keep. Exit code 1 when a store cannot be listed or holds a damaged
backup.`,
    )
    .action(async (jobs: string[], flags: { json?: boolean; catalog?: boolean }) => {
      const c = ctx();
      const config = c.config();
      const names = jobs.length ? jobs : Object.keys(config.jobs);
      if (names.length === 0) throw new DbkeepError("USAGE", "the config defines no jobs");
      const docs = [];
      let unreachable = false;
      let damagedSeen = false;
      for (const job of names) {
        const plan = planJob(config, job);
        const engine = await openEngine(plan);
        const stores = await openStores(plan, (m) => c.log.warn(m));
        try {
          const listings = (await listEach(stores, backupPrefix(plan, engine), { catalog: flags.catalog === false ? "rebuild" : "use" })).map((l) => (l.listing ? { ...l, listing: ofJob(l.listing, job) } : l));
          const rows = presence(listings);
          const storeNames = stores.map((s) => s.name);
          // A backup a store's own retention would not keep is not missing there: sync would not copy it either.
          const now = new Date();
          const expected = new Map(stores.map((store, i) => [store.name, keptBy(storePolicy(plan, i), rows, plan.timezone, now)]));
          const wanted = (n: string, id: string) => expected.get(n)?.has(id) ?? true;
          const missing = Object.fromEntries(storeNames.map((n) => [n, rows.filter((r) => !r.in[n] && wanted(n, r.id)).length]));
          const errors = listings.filter((l) => l.error).map((l) => ({ store: l.store.name, error: l.error!.message }));
          if (errors.length) unreachable = true;
          // Damaged copies with no complete copy anywhere get rows of their own.
          const known = new Set(rows.map((r) => r.id));
          const lost = listings.flatMap((l) => (l.listing?.damaged ?? []).filter((d) => !known.has(d.id)).map((d) => ({ store: l.store.name, d })));
          const damagedCount = rows.reduce((n, r) => n + Object.keys(r.damaged).length, 0) + lost.length;
          if (damagedCount) damagedSeen = true;
          docs.push({
            job,
            stores: storeNames,
            backups: rows.map((r) => ({
              id: r.id,
              started_at: r.started_at,
              stored_bytes: r.manifest.stored_bytes,
              in: r.in,
              ...(Object.keys(r.damaged).length ? { damaged: r.damaged } : {}),
              ...(storeNames.some((n) => !r.in[n] && !wanted(n, r.id)) ? { not_kept_by_retention: storeNames.filter((n) => !r.in[n] && !wanted(n, r.id)) } : {}),
            })),
            damaged: lost.map(({ store, d }) => ({ id: d.id, store, taken_at: d.at, problems: d.problems, repairable: d.repairable })),
            missing,
            unreachable: errors,
          });
          if (flags.json) continue;
          process.stdout.write(`${job}\n`);
          if (rows.length === 0 && lost.length === 0) process.stdout.write("  no backups\n");
          else {
            const cell = (n: string, r: (typeof rows)[number]) => (errors.some((e) => e.store === n) ? "?" : r.in[n] ? "ok" : r.damaged[n] ? "DAMAGED" : wanted(n, r.id) ? "MISSING" : "-");
            const body = [
              ...rows.map((r) => [r.id, r.started_at.replace("T", " ").slice(0, 19), formatBytes(r.manifest.stored_bytes), ...storeNames.map((n) => cell(n, r))]),
              ...lost.map(({ store, d }) => [d.id, d.at.replace("T", " ").slice(0, 19), "?", ...storeNames.map((n) => (n === store ? "DAMAGED" : "-"))]),
            ];
            process.stdout.write(table(["BACKUP", "TAKEN (UTC)", "SIZE", ...stores.map((s) => s.name.replace(/^[a-z0-9]+:/, ""))], body).replace(/^/gm, "  ") + "\n");
          }
          for (const r of rows) for (const [n, why] of Object.entries(r.damaged)) process.stdout.write(`  ${r.id} is damaged in ${n}: ${why}; dbkeep sync ${job} replaces it\n`);
          for (const { store, d } of lost) process.stdout.write(`  ${d.id} is damaged in ${store} and complete nowhere: ${d.problems.join("; ")}${d.repairable ? `; dbkeep repair ${job} ${d.id}` : ""}\n`);
          for (const e of errors) process.stdout.write(`  ${e.store}: cannot be listed: ${e.error}\n`);
          const gaps = storeNames.filter((n) => missing[n]! > 0 && !errors.some((e) => e.store === n));
          if (gaps.length) process.stdout.write(`  ${gaps.map((n) => `${n} is missing ${missing[n]}`).join("; ")}: dbkeep sync ${job} copies them\n`);
          else if (rows.length && !errors.length && !damagedCount) process.stdout.write(`  every store holds every backup\n`);
        } finally {
          await Promise.all(stores.map((s) => s.close()));
        }
      }
      if (flags.json) process.stdout.write(JSON.stringify(names.length === 1 && jobs.length === 1 ? docs[0] : { jobs: docs }, null, 2) + "\n");
      if (unreachable || damagedSeen) process.exitCode = 1;
    });
}
