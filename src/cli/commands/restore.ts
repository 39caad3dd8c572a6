import type { Command } from "commander";
import { isLocation, sourceFromUrl } from "../../config/urls.js";
import { DbkeepError, isDbkeepError } from "../../core/errors.js";
import { openEngine, type JobPlan } from "../../core/jobs.js";
import type { Manifest } from "../../core/manifest.js";
import { clearDamage, listFor, noteDamage, resolveBackup } from "../../core/listing.js";
import type { Store } from "../../stores/store.js";
import { runRestore } from "../../core/restore.js";
import { sweepTempDirs } from "../../core/tempdir.js";
import { encryptionFromFlags, identitiesFor } from "../../crypto/settings.js";
import { replaceConfirmer, type Context } from "../context.js";
import { formatBytes, formatDuration } from "../format.js";
import { openTarget, targetStores } from "./list.js";
import { wholeNumber } from "../options.js";
import { isDumpFile, restoreDumpFile } from "./import.js";

interface RestoreFlags {
  to?: string;
  autoConfirm?: boolean;
  jobs?: string;
  globals?: boolean;
  json?: boolean;
  identity?: string;
  passphraseEnv?: string;
  store?: string;
  keyEnv?: string;
  keyFile?: string;
}

export function registerRestore(program: Command, ctx: () => Context): void {
  program
    .command("restore")
    .description("restore a backup (the latest by default) into the job's datasource or another target")
    .argument("<target>", "job name, store URL / directory, or a dump file (see dbkeep import --help)")
    .argument("[backup]", "backup id or file name, or latest", "latest")
    .option("--to <datasource>", "restore into this datasource of the config, or a database URL")
    .option("--auto-confirm", "replace existing tables in the target without asking")
    .option("--jobs <n>", "parallel restore jobs (pg_restore -j) for custom and directory dumps", wholeNumber(1))
    .option("--globals", "PostgreSQL: also restore the roles and tablespaces saved with globals: true")
    .option("--json", "print the result as JSON")
    .option("-i, --identity <file>", "decrypt with the age identity (secret key) in this file")
    .option("--passphrase-env <name>", "decrypt with the passphrase in this environment variable")
    .option("--store <name>", "read from this store of the job (default: the first, in the job's order, that holds the backup intact)")
    .option("--key-env <name>", "a seed 002 .enc dump file: its Fernet key, in this environment variable")
    .option("--key-file <path>", "a seed 002 .enc dump file: its Fernet key, in this file")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep restore ./backups latest --to sqlite:./restored.db
  dbkeep restore ./backups latest --to sqlite:./restored.db -i key.txt
  dbkeep restore ./backups app-20260210-143000 --to postgres://app@localhost/app_copy
  dbkeep restore appdb-backup                      # latest, into the job's own datasource
  dbkeep restore appdb-backup app-20260210-143000.sql.gz --to staging-db --auto-confirm
  dbkeep restore appdb-backup latest --store offsite --to staging-db
  dbkeep restore ./old/app.dump --to postgres://app@localhost/app_copy   # a dump file made by pg_dump
  dbkeep restore ./old/backup.sql.gz.enc --to postgres://app@localhost/app_copy --key-file ~/.dbvault.key

The backup's SHA-256 is checked while it streams; the target is replaced only after the whole
backup was read, verified and restored beside it, so a damaged backup never changes the target.
PostgreSQL swaps the restored database in with one transaction: a restore killed at any point
leaves the old or the new database, and what it leaves beside it (a staging database, a temp
copy) is removed by the next restore or dbkeep doctor. SIGTERM stops it cleanly (exit 143).
An encrypted backup needs its identity (-i, or encryption.identity_file in the config); a wrong
one is refused before the target is touched.
A dump file (pg_dump, mysqldump, sqlite3, redis-cli --rdb, seed 002 .enc; raw, gzip, zstd or lz4)
is recognized by its content, read to its end and checked first, then restored the same way.`,
    )
    .action(async (target: string, ref: string, flags: RestoreFlags) => {
      const c = ctx();
      if (isDumpFile(target)) return restoreDumpFile(c, target, ref, flags, (fallback) => targetPlan(c, fallback, flags.to));
      await sweepTempDirs();
      // A job with several stores: the first store, in the job's order, that holds the backup intact.
      const names = targetStores(c, target, flags.store);
      // Asked once for the whole run, whichever store the backup finally comes from.
      let current: { id: string; clear: () => void } | undefined;
      const confirm = replaceConfirmer(c, { ...(flags.autoConfirm ? { autoConfirm: true } : {}), clear: () => current?.clear(), source: () => `backup ${current?.id ?? ""}` });
      for (let i = 0; i < names.length; i++) {
        const last = i === names.length - 1;
        const { plan, store, prefix } = await openTarget(c, target, names[i]);
        try {
          const m = await pick(c, store, prefix, plan, target, ref).catch((err: unknown) => {
            if (last || !(isDbkeepError(err, "BACKUP_NOT_FOUND") || isDbkeepError(err, "CORRUPT_BACKUP"))) throw err;
            c.log.warn({ store: store.name }, (err as Error).message + "; trying the next store");
            return undefined;
          });
          if (!m) continue;
          const st = await store.stat(m.key);
          if (!last && st?.size !== m.stored_bytes) {
            c.log.warn({ store: store.name, key: m.key }, `${m.key} in ${store.name} is ${st ? `${st.size} bytes, not ${m.stored_bytes}` : "missing"}; trying the next store`);
            continue;
          }
          const engine = await openEngine(targetPlan(c, plan, flags.to));
          const progress = c.progress(`restoring ${m.id}`, { read: "read", written: "restored" });
          current = { id: m.id, clear: () => progress.clear() };
          let result;
          try {
            result = await runRestore({
              manifest: m,
              store,
              engine,
              log: c.log,
              signal: c.signal,
              ...(flags.jobs ? { jobs: Number(flags.jobs) } : {}),
              ...(flags.globals ? { extras: true } : {}),
              onProgress: progress.update,
              identities: () => {
                const own = encryptionFromFlags("--identity", { identity_file: flags.identity, passphrase_env: flags.passphraseEnv }) ?? plan.encryption;
                return own ? identitiesFor(own, (w) => c.log.warn(w)) : [];
              },
              confirm,
            });
          } catch (err) {
            // The engine left the target as it was; list and status show the copy as damaged from now on.
            if (isDbkeepError(err, "CHECKSUM_MISMATCH")) await noteDamage(store, m, "restore", (err as Error).message);
            // Another store may hold an intact copy.
            if (!last && isDbkeepError(err, "CHECKSUM_MISMATCH")) {
              c.log.warn({ store: store.name, err: (err as Error).message }, `the copy in ${store.name} is damaged; trying the next store`);
              continue;
            }
            throw err;
          } finally {
            progress.clear();
          }
          // A backup an earlier check had found damaged passed this time: the note goes.
          await clearDamage(store, m);
          if (flags.json) process.stdout.write(JSON.stringify({ backup: m.id, store: store.name, target: result.target, seconds: result.seconds, bytes: result.storedBytes, replaced: result.replaced }, null, 2) + "\n");
          else process.stdout.write(`restored ${m.id} from ${store.name} into ${result.target} (${formatBytes(m.raw_bytes)} in ${formatDuration(result.seconds)})\n`);
          return;
        } finally {
          await store.close();
        }
      }
    });
}

/** The backup `ref` names in a store (latest by default). */
async function pick(c: Context, store: Store, prefix: string, plan: JobPlan, target: string, ref: string): Promise<Manifest> {
  const listing = await listFor(store, prefix, plan.oneOff ? undefined : plan.name);
  const candidates = listing.backups;
  if (plan.oneOff && (!ref || ref === "latest")) {
    const dbs = new Set(candidates.map((b) => b.database));
    if (dbs.size > 1) {
      throw new DbkeepError("USAGE", `${store.name} holds backups of ${dbs.size} databases (${[...dbs].join(", ")}): "latest" is ambiguous`, {
        hint: "name the backup: dbkeep list " + target,
      });
    }
  }
  const { manifest, skipped, recheck } = resolveBackup(listing, ref, `${store.name}${prefix ? ` under ${prefix}` : ""}`);
  if (recheck) c.log.warn({ backup: manifest.id }, `an earlier check found ${manifest.id} damaged (${recheck.problems.join("; ")}); it is checked again as it is read, and the target changes only if it passes`);
  if (skipped.length) {
    c.log.warn(
      { damaged: skipped.map((d) => d.id) },
      `the newest backup${skipped.length > 1 ? "s are" : " is"} damaged (${skipped.map((d) => `${d.id}: ${d.problems[0]}`).join("; ")}): restoring ${manifest.id}, the newest complete one`,
    );
  }
  return manifest;
}

/** The datasource to restore into: --to (a datasource of the config or a URL), else the job's own. */
function targetPlan(c: Context, plan: Pick<JobPlan, "datasource" | "oneOff">, to: string | undefined): Pick<JobPlan, "datasource" | "oneOff"> {
  if (to && isLocation(to)) {
    const source = sourceFromUrl(to);
    for (const w of source.warnings) c.log.warn(w);
    return { datasource: { path: "--to", section: source }, oneOff: true };
  }
  if (to) {
    const config = c.config();
    const ds = config.datasources[to];
    if (!ds) {
      throw new DbkeepError("USAGE", `unknown datasource "${to}"`, { hint: `datasources: ${Object.keys(config.datasources).join(", ")}, or a URL such as postgres://user@host/db` });
    }
    return { datasource: { path: `datasources.${to}`, section: ds }, oneOff: false };
  }
  if (plan.oneOff) {
    throw new DbkeepError("USAGE", "restoring from a store URL needs --to", { hint: "e.g. --to sqlite:./restored.db or --to postgres://user@host/app_copy" });
  }
  return plan;
}
