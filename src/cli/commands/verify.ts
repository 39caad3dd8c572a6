import type { Command } from "commander";
import { isLocation, sourceFromUrl } from "../../config/urls.js";
import { DbkeepError } from "../../core/errors.js";
import { clearDamage, listFor, noteDamage, resolveBackup } from "../../core/listing.js";
import { encryptionFromFlags, identitiesFor } from "../../crypto/settings.js";
import { scratchServerFor, serverOf, settingsOf } from "../../verify/plan.js";
import { renderReport } from "../../verify/report.js";
import { runVerify, type VerifySpec } from "../../verify/runner.js";
import type { Context } from "../context.js";
import { openTarget } from "./list.js";

interface VerifyFlags {
  json?: boolean;
  keep?: boolean;
  on?: string;
  scratchCluster?: boolean;
  store?: string;
  identity?: string;
  passphraseEnv?: string;
}

export function registerVerify(program: Command, ctx: () => Context): void {
  program
    .command("verify")
    .description("verify a backup by restoring it into a scratch database and checking what came back")
    .argument("<target>", "job name, or store URL / directory")
    .argument("[backup]", "backup id or file name, or latest", "latest")
    .option("--json", "print the report as JSON (its shape: docs/verify.md)")
    .option("--keep", "leave the scratch database (or file, cluster, server) in place for inspection")
    .option("--on <datasource>", "restore on this server: a datasource of the config or a database URL (default: the job's verify_datasource, else its own server)")
    .option("--scratch-cluster", "PostgreSQL: restore into a temporary cluster started from the local binaries")
    .option("--store <name>", "read from this store of the job (default: its first)")
    .option("-i, --identity <file>", "decrypt with the age identity (secret key) in this file")
    .option("--passphrase-env <name>", "decrypt with the passphrase in this environment variable")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep verify appdb-backup                       # the latest backup, on the job's verify_datasource
  dbkeep verify appdb-backup app-20260210-143000 --json
  dbkeep verify appdb-backup --scratch-cluster     # PostgreSQL: in a temporary cluster
  dbkeep verify ./backups latest --on postgres://postgres@127.0.0.1/postgres
  dbkeep verify ./backups app-20260210-143000      # SQLite and Redis need no server

The stored object's SHA-256 is checked first: a damaged backup is never restored. Then it is
restored into a new database named dbkeep_verify_<job>_<host>_<pid>_<random> (never the database
it came from), checked (tables, row counts, indexes, foreign keys, views, functions, triggers,
sequences, types, orphan rows, amcheck / CHECK TABLE / integrity_check, and the job's migration
table, assertions and health check) and dropped. A run that was killed leaves its scratch
database behind; the next run drops it. Exit code 1 when a check failed.`,
    )
    .action(async (target: string, ref: string, flags: VerifyFlags) => {
      const c = ctx();
      const { plan, store, prefix } = await openTarget(c, target, flags.store);
      try {
        const listing = await listFor(store, prefix, plan.oneOff ? undefined : plan.name);
        const { manifest: m, skipped, recheck } = resolveBackup(listing, ref, `${store.name}${prefix ? ` under ${prefix}` : ""}`, { latestMayBeNoted: true });
        if (recheck) c.log.warn({ backup: m.id }, `an earlier check found ${m.id} damaged (${recheck.problems.join("; ")}); checking it again`);
        if (skipped.length) c.log.warn({ damaged: skipped.map((d) => d.id) }, `newer backups are damaged (${skipped.map((d) => `${d.id}: ${d.problems[0]}`).join("; ")}): verifying ${m.id}`);
        const warn = (w: string) => c.log.warn(w);
        const settings = { ...settingsOf(plan), ...(flags.scratchCluster ? { scratch_cluster: true } : {}) };
        let server: VerifySpec["server"];
        if (flags.on && isLocation(flags.on)) {
          const source = sourceFromUrl(flags.on);
          for (const w of source.warnings) warn(w);
          server = serverOf(source, "--on", true, warn);
        } else if (flags.on) {
          const ds = c.config().datasources[flags.on];
          if (!ds) throw new DbkeepError("USAGE", `unknown datasource "${flags.on}"`, { hint: `datasources: ${Object.keys(c.config().datasources).join(", ")}, or a URL` });
          server = serverOf(ds, `datasources.${flags.on}`, false, warn);
        } else if (plan.oneOff) {
          if (["postgres", "postgresql", "mysql", "mariadb"].includes(m.engine) && !settings.scratch_cluster) {
            throw new DbkeepError("USAGE", `verifying a ${m.engine} backup from a store URL needs a server for the scratch database`, {
              hint: "pass --on postgres://user@host/postgres (or a datasource of the config), or --scratch-cluster for PostgreSQL",
            });
          }
          server = { engine: m.engine, options: {}, secret: () => undefined, oneOff: true };
        } else {
          server = scratchServerFor({ ...plan, verification: { ...plan.verification, settings } }, m.engine, warn);
        }
        const progress = c.progress(`verifying ${m.id}`, { read: "read", written: "restored" });
        let report;
        try {
          report = await runVerify({
            manifest: m,
            store,
            ...(plan.oneOff ? {} : { job: plan.name }),
            server,
            settings,
            keep: flags.keep ?? false,
            record: true,
            log: c.log,
            signal: c.signal,
            onProgress: progress.update,
            identities: () => {
              const own = encryptionFromFlags("--identity", { identity_file: flags.identity, passphrase_env: flags.passphraseEnv }) ?? plan.encryption;
              return own ? identitiesFor(own, warn) : [];
            },
          });
        } finally {
          progress.clear();
        }
        // A checksum that failed is recorded beside the backup, so that list and status show it damaged; a pass clears it.
        const checksum = report.checks.find((x) => x.name === "checksum");
        if (checksum?.status === "FAIL") await noteDamage(store, m, "verify", checksum.detail ?? "checksum mismatch");
        else if (report.ok) await clearDamage(store, m);
        process.stdout.write(flags.json ? JSON.stringify(report, null, 2) + "\n" : renderReport(report));
        if (!report.ok) process.exitCode = 1;
      } finally {
        await store.close();
      }
    });
}
