import type { Command } from "commander";
import { DbkeepError } from "../../core/errors.js";
import { openEngine } from "../../core/jobs.js";
import { listFor } from "../../core/listing.js";
import { repairBackup, rewriteSidecar, type RepairOutcome, type RepairTemplate } from "../../core/repair.js";
import { encryptionFromFlags, identitiesFor } from "../../crypto/settings.js";
import type { Context } from "../context.js";
import { table } from "../format.js";
import { openTarget, targetStores } from "./list.js";

interface RepairFlags {
  dryRun?: boolean;
  json?: boolean;
  store?: string;
  identity?: string;
  passphraseEnv?: string;
}

export function registerRepair(program: Command, ctx: () => Context): void {
  program
    .command("repair")
    .description("make damaged backups whole again where their data proves itself: lost manifests, missing sidecars")
    .argument("<target>", "job name, or store URL / directory")
    .argument("[backups...]", "backup ids (default: every damaged backup, and every sidecar that is missing or wrong)")
    .option("--dry-run", "say what would be repaired; write nothing")
    .option("--json", "print the outcome as JSON")
    .option("--store <name>", "repair only this store of the job (default: each of its stores)")
    .option("-i, --identity <file>", "decrypt encrypted backups with the age identity in this file, to check them")
    .option("--passphrase-env <name>", "decrypt with the passphrase in this environment variable")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep repair appdb-backup --dry-run
  dbkeep repair appdb-backup app-20260210-143000
  dbkeep repair ./backups -i key.txt

A backup whose manifest is missing or unreadable gets a new one when its data hashes to what its
.sha256 sidecar says and decompresses (and decrypts) to its end; the engine and format come from
the job, or from a complete backup of the same database beside it. The damaged manifest is kept
beside the new one (<id>.damaged-manifest-<time>.txt). Partial and differential backups are not
rebuilt. A backup whose data is missing or cut cannot be repaired here: dbkeep sync copies it
from another store of the job that holds it intact. Exit code 1 when something stays damaged.`,
    )
    .action(async (target: string, ids: string[], flags: RepairFlags) => {
      const c = ctx();
      const docs: { store: string; outcomes: RepairOutcome[] }[] = [];
      let left = false;
      for (const name of targetStores(c, target, flags.store)) {
        const { plan, store, prefix } = await openTarget(c, target, name);
        try {
          let template: RepairTemplate | undefined;
          if (!plan.oneOff) {
            const engine = await openEngine(plan, (m) => c.log.warn(m));
            template = { engine: engine.name, format: engine.format, extension: engine.extension, database: engine.database, job: plan.name, source: engine.source() as unknown as Record<string, string | number> };
          }
          const identities = () => {
            const own = encryptionFromFlags("--identity", { identity_file: flags.identity, passphrase_env: flags.passphraseEnv }) ?? plan.encryption;
            return own ? identitiesFor(own, (w) => c.log.warn(w)) : [];
          };
          const listing = await listFor(store, prefix, plan.oneOff ? undefined : plan.name);
          const wanted = (id: string) => ids.length === 0 || ids.includes(id);
          for (const id of ids) {
            if (!listing.damaged.some((d) => d.id === id) && !listing.backups.some((m) => m.id === id)) {
              throw new DbkeepError("USAGE", `backup ${id} is not in ${store.name}`, { hint: `dbkeep list ${target} shows what is there` });
            }
          }
          const outcomes: RepairOutcome[] = [];
          for (const d of listing.damaged.filter((x) => wanted(x.id))) {
            outcomes.push(await repairBackup(store, listing, d, { dryRun: flags.dryRun ?? false, signal: c.signal, log: c.log, ...(template ? { template } : {}), identities }));
          }
          for (const m of listing.backups.filter((x) => wanted(x.id))) {
            const r = await rewriteSidecar(store, m, { dryRun: flags.dryRun ?? false, signal: c.signal, log: c.log });
            if (r.detail !== "its sidecar is right already") outcomes.push(r);
          }
          if (outcomes.some((o) => o.action === "not repairable")) left = true;
          docs.push({ store: store.name, outcomes });
          if (flags.json) continue;
          if (outcomes.length === 0) process.stdout.write(`${store.name}: nothing to repair\n`);
          else process.stdout.write(`${store.name}:\n` + table(["BACKUP", "OUTCOME", "DETAIL"], outcomes.map((o) => [o.id, o.action.toUpperCase(), o.detail])) + "\n");
        } finally {
          await store.close();
        }
      }
      if (flags.json) process.stdout.write(JSON.stringify(docs.length === 1 ? docs[0] : { stores: docs }, null, 2) + "\n");
      if (left) process.exitCode = 1;
    });
}
