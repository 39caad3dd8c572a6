import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { COMPRESSIONS } from "../../core/compression.js";
import { DbkeepError, formatError, toDbkeepError } from "../../core/errors.js";
import { adoptDump, alreadyImported, checkFits, checkSource, databaseName, openDumpSource, restoreSource, takenAt, type DetectedDump } from "../../core/import.js";
import { backupPrefix, openEngine, openStores, withStore, type JobPlan } from "../../core/jobs.js";
import { listFor } from "../../core/listing.js";
import { redact } from "../../core/redact.js";
import { sweepTempDirs } from "../../core/tempdir.js";
import { encryptionFromFlags, recipientsFor } from "../../crypto/settings.js";
import type { Engine } from "../../engines/engine.js";
import { ENGINES } from "../../engines/registry.js";
import { oneOffPlan, replaceConfirmer, type Context } from "../context.js";
import { formatBytes } from "../format.js";
import { BACKUP_TYPES, integer, isoDate, oneOf } from "../options.js";

interface ImportFlags {
  job?: string;
  to?: string;
  store?: string;
  takenAt?: string;
  type?: string;
  database?: string;
  compression?: string;
  level?: string;
  recipient?: string[];
  recipientsFile?: string;
  passphraseEnv?: string;
  keyEnv?: string;
  keyFile?: string;
  checkOnly?: boolean;
  json?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

interface FileResult {
  file: string;
  ok: boolean;
  detected?: string;
  format?: string;
  engine?: string;
  checked?: string;
  backup?: string;
  key?: string;
  taken_at?: string;
  taken_from?: string;
  bytes?: number;
  stores?: { name: string; ok: boolean; error?: string }[];
  skipped?: string;
  error?: DbkeepError;
}

export function registerImport(program: Command, ctx: () => Context): void {
  program
    .command("import")
    .description("adopt dumps made by other tools (pg_dump, mysqldump, sqlite3, redis-cli, seed 002's .enc) as backups of a job")
    .argument("<files...>", "dump files, or pg_dump directory-format directories")
    .option("--job <name>", "the job whose stores take the dumps; they become its backups")
    .option("--to <store>", "one-off mode: a store URL or directory instead of a job")
    .option("--store <name>", "only this store of the job (default: every store of the job)")
    .option("--taken-at <time>", "when the dump was taken, ISO 8601 (default: a date and time in the file name, else a .enc file's Fernet timestamp, else the file's mtime)", isoDate)
    .option("--type <kind>", `label the backups: ${BACKUP_TYPES.join(", ")}; manual backups are never pruned`, oneOf(BACKUP_TYPES))
    .option("--database <name>", "one-off mode: the name in the store's layout (default: the database the dump names, else the file name)")
    .option("--compression <c>", "one-off mode: gzip, zstd, lz4 or none (default gzip)", oneOf(COMPRESSIONS))
    .option("--level <n>", "one-off mode: compression level", integer)
    .option("-r, --recipient <age1...>", "one-off mode: encrypt to this age public key (repeatable)", collect)
    .option("-R, --recipients-file <file>", "one-off mode: encrypt to the age public keys in this file")
    .option("--passphrase-env <name>", "one-off mode: encrypt with the passphrase in this environment variable")
    .option("--key-env <name>", "the Fernet key of seed 002 .enc files, in this environment variable")
    .option("--key-file <path>", "the Fernet key of seed 002 .enc files, in this file")
    .option("--check-only", "detect and check the files; import nothing")
    .option("--json", "print the results as one JSON document")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep import old/app-20250101-020000.dump --job appdb-backup
  dbkeep import old/*.sql.gz --job appdb-backup --type daily
  dbkeep import legacy.sql --job appdb-backup --taken-at 2025-06-30T02:00:00Z
  dbkeep import ./pgdump-dir --job appdb-backup          # pg_dump -Fd output, as a directory or a tar
  dbkeep import dump.rdb --job cache-backup
  dbkeep import backup.sql.gz.enc --job appdb-backup --key-file ~/.dbvault.key
  DBVAULT_KEY=... dbkeep import old/*.enc --job appdb-backup --key-env DBVAULT_KEY
  dbkeep import app.db.zst --to ./backups --database app
  dbkeep import old/*.dump --job appdb-backup --check-only

What a file is comes from its content (magic bytes and dump headers), not its name: pg_dump
plain, custom and directory dumps (directory as a directory or a tar), pg_dumpall scripts,
mysqldump / mariadb-dump SQL, SQLite files and Redis RDB snapshots, each raw or with gzip,
zstd or lz4, and seed 002's Fernet .enc files (a Fernet token around a gzip dump). Each file is
read to its end and checked first (the completion line of a SQL dump, every block of a pg_dump
archive, SQLite's integrity_check, the RDB checksum); a truncated file is refused and nothing of it is stored. An accepted dump is
stored like a backup of the job, in the job's compression and encryption, with a manifest marked
"imported"; list, restore, verify, prune and sync treat it like any other backup. A file whose
content was imported into the store before, or that is a backup's own stored file, is skipped.
The time it was taken, which names it and which retention goes by: --taken-at, else a date and
time in the file name (20250101-020000, 2025-01-01T02:00:00, read as UTC), else, for a .enc file,
the timestamp in its Fernet token (when DBVault encrypted it), else its mtime.
The Fernet key of .enc files is read from --key-env or --key-file, never from the command line;
the whole file's HMAC is checked before anything is decrypted, into a private temporary file
that is removed afterwards. A wrong key is refused and nothing of the file is stored.`,
    )
    .action(async (files: string[], flags: ImportFlags) => {
      const c = ctx();
      if (Boolean(flags.job) === Boolean(flags.to)) {
        throw new DbkeepError("USAGE", flags.job ? "give --job or --to, not both" : "dbkeep import needs --job NAME (or --to STORE)", { hint: "dbkeep import FILE --job appdb-backup" });
      }
      if (flags.takenAt && files.length > 1) throw new DbkeepError("USAGE", "--taken-at goes with one file", { hint: "import the files one at a time, or let their names or mtimes say when each was taken" });
      if (flags.job && (flags.database || flags.compression || flags.level || flags.recipient?.length || flags.recipientsFile || flags.passphraseEnv)) {
        throw new DbkeepError("USAGE", "--database, --compression, --level and the encryption flags go with --to", { hint: "a job's backups take the job's own database name, compression and encryption" });
      }
      if (flags.to && flags.store) throw new DbkeepError("USAGE", "--store goes with --job", { hint: `the store is ${flags.to} itself` });
      await sweepTempDirs();
      const plan = flags.job ? withStore(c.plan(flags.job), flags.store) : oneOffPlan(undefined, flags.to!, { ...(flags.compression ? { compression: flags.compression } : {}), ...(flags.level ? { level: flags.level } : {}) }, c.log);
      const encryptionPlan = flags.job
        ? plan.unencrypted ? undefined : plan.encryption
        : encryptionFromFlags("--recipient", { recipients: flags.recipient, recipients_file: flags.recipientsFile, passphrase_env: flags.passphraseEnv });
      const encryption = encryptionPlan ? recipientsFor(encryptionPlan, (m) => c.log.warn(m)) : undefined;
      const jobEngine = flags.job ? await openEngine(plan, (m) => c.log.warn(m)) : undefined;
      const stores = flags.checkOnly ? [] : await openStores(plan, (m) => c.log.warn(m));
      const results: FileResult[] = [];
      try {
        for (const file of files) {
          const r: FileResult = { file, ok: false };
          results.push(r);
          try {
            const src = await openDumpSource(file, { signal: c.signal, log: c.log, fernetKey: () => fernetKey(flags) });
            try {
              const d = src.detected;
              Object.assign(r, { detected: d.what, engine: d.engine, format: d.format });
              const engine = jobEngine ?? (await engineFor(d, flags.database, file));
              checkFits(d, engine, flags.job ? `job ${flags.job}` : `the store's layout`);
              r.checked = await checkSource(src, c.signal);
              const taken = takenAt(src, flags.takenAt);
              Object.assign(r, { taken_at: taken.at.toISOString(), taken_from: taken.from });
              c.log.info({ file, what: d.what, check: r.checked }, `${file}: ${d.what}; ${r.checked}`);
              if (flags.checkOnly) {
                r.ok = true;
                continue;
              }
              const prefix = backupPrefix(plan, engine);
              const earlier = alreadyImported((await listFor(stores[0]!, prefix, plan.oneOff ? undefined : plan.name)).backups, src);
              if (earlier) {
                const was = earlier.imported ? `already imported as ${earlier.id}` : `already in the store as backup ${earlier.id}`;
                Object.assign(r, { ok: true, skipped: was, backup: earlier.id, key: earlier.key });
                c.log.info({ file, backup: earlier.id }, `${file}: ${was}; skipped`);
                continue;
              }
              const outcome = await adoptDump({
                source: src,
                engine,
                ...(plan.oneOff ? {} : { job: plan.name }),
                ...(flags.type ? { type: flags.type } : {}),
                stores,
                ...(plan.prefix ? { prefix: plan.prefix } : {}),
                ...(plan.basename ? { basename: plan.basename } : {}),
                compression: plan.compression,
                ...(plan.level !== undefined ? { level: plan.level } : {}),
                ...(encryption ? { encryption } : {}),
                verify: plan.verify,
                taken,
                log: c.log,
                signal: c.signal,
              });
              const m = outcome.manifest;
              const failed = outcome.stores.filter((s) => !s.ok);
              Object.assign(r, { backup: m.id, key: m.key, bytes: m.stored_bytes, stores: outcome.stores.map((s) => ({ name: s.store.name, ok: s.ok, ...(s.error ? { error: redact(s.error.message) } : {}) })) });
              r.ok = failed.length === 0 || plan.require === "any";
              if (failed.length) {
                const msg = `${m.id} is in ${outcome.stores.filter((s) => s.ok).map((s) => s.store.name).join(", ")} but not in ${failed.map((s) => s.store.name).join(", ")}`;
                if (r.ok) c.log.warn(msg);
                else r.error = new DbkeepError("STORE_FAILED", msg, { hint: `dbkeep sync ${plan.name} copies it there` });
              }
            } finally {
              await src.close();
            }
          } catch (err) {
            r.error = toDbkeepError(err);
            if (r.error.code === "ABORTED") throw r.error;
          }
        }
      } finally {
        await Promise.all(stores.map((s) => s.close().catch(() => undefined)));
      }
      report(c, results, flags);
      const failed = results.filter((r) => !r.ok);
      if (failed.length) process.exitCode = Math.max(...failed.map((r) => r.error?.exitCode ?? 1));
    });
}

/** Reads the Fernet key only when a file needs it: from the environment or a file, never from argv. */
function fernetKey(flags: Pick<ImportFlags, "keyEnv" | "keyFile">): string {
  if (flags.keyEnv) {
    const v = process.env[flags.keyEnv];
    if (!v) throw new DbkeepError("SECRET_MISSING", `environment variable ${flags.keyEnv} (--key-env) is not set`, { hint: "export it with the Fernet key the files were encrypted with" });
    return v.trim();
  }
  if (flags.keyFile) {
    try {
      return readFileSync(flags.keyFile, "utf8").trim();
    } catch (err) {
      throw new DbkeepError("SECRET_MISSING", `cannot read the key file ${flags.keyFile} (--key-file): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  throw new DbkeepError("USAGE", "this file is a Fernet token (seed 002's .enc): it needs its key", { hint: "pass --key-env NAME or --key-file PATH" });
}

/** One-off mode: an engine of the dump's kind, named for the store's layout. */
async function engineFor(d: DetectedDump, name: string | undefined, file: string): Promise<Engine> {
  const database = name ?? databaseName(d);
  const options: Record<string, Record<string, unknown>> = {
    postgres: { engine: "postgres", database, ...(d.format === "dumpall" ? { all_databases: true } : {}) },
    mysql: { engine: "mysql", database },
    sqlite: { engine: "sqlite", path: file, database },
    redis: { engine: "redis", name: database },
  };
  const engine = await ENGINES[d.engine]!.create(options[d.engine]!, { secret: () => undefined, oneOff: true });
  return { ...engine, database };
}

function report(c: Context, results: FileResult[], flags: ImportFlags): void {
  if (flags.json) {
    const doc = {
      ok: results.every((r) => r.ok),
      files: results.map(({ error, ...r }) => ({ ...r, ...(error ? { error: error.message, code: error.code, ...(error.hint ? { hint: error.hint } : {}) } : {}) })),
    };
    process.stdout.write(JSON.stringify(doc, null, 2) + "\n");
    return;
  }
  for (const r of results) {
    if (r.error) {
      process.stderr.write(redact(formatError(r.error)) + "\n");
      continue;
    }
    const when = `taken ${r.taken_at?.replace("T", " ").slice(0, 19)} (${r.taken_from})`;
    if (flags.checkOnly) process.stdout.write(`${r.file}: ${r.detected}; ${r.checked}; ${when}\n`);
    else if (r.skipped) process.stdout.write(`${r.file}: ${r.skipped}\n`);
    else process.stdout.write(`${r.file}: imported as ${r.backup}  ${r.detected}, ${when}  ${formatBytes(r.bytes ?? 0)}  ${r.key}\n`);
  }
  if (results.length > 1) c.log.info(`${results.filter((r) => r.ok).length} of ${results.length} files ${flags.checkOnly ? "checked" : "imported"}`);
}

/** Whether a restore's target names a bare dump: a file, or a pg_dump directory-format directory. */
export function isDumpFile(target: string): boolean {
  try {
    const st = statSync(target);
    return st.isFile() || (st.isDirectory() && existsSync(join(target, "toc.dat")));
  } catch {
    return false;
  }
}

export interface RestoreFileFlags {
  to?: string;
  autoConfirm?: boolean;
  jobs?: string;
  json?: boolean;
  keyEnv?: string;
  keyFile?: string;
}

type Target = Pick<JobPlan, "datasource" | "oneOff">;

/**
 * `dbkeep restore FILE`: a dump made by another tool (or a backup file copied out of a store), restored straight
 * into --to, or into the datasource of the config's only job (sidecar mode). `resolveTarget` is restore's own
 * reading of --to.
 */
export async function restoreDumpFile(c: Context, file: string, ref: string, flags: RestoreFileFlags, resolveTarget: (fallback: Target) => Target): Promise<void> {
  if (ref && ref !== "latest") throw new DbkeepError("USAGE", `${file} is a dump file: there is no backup "${ref}" to choose in it`, { hint: `dbkeep restore ${file} --to TARGET` });
  await sweepTempDirs();
  let fallback: Target = { datasource: { path: "--to", section: { engine: "", options: {}, secretFields: [] } }, oneOff: true };
  if (!flags.to) {
    const jobs = Object.keys(c.config().jobs);
    if (jobs.length !== 1) throw new DbkeepError("USAGE", `restoring a dump file needs --to (the config has ${jobs.length} jobs)`, { hint: `e.g. dbkeep restore ${file} --to postgres://user@host/app_copy` });
    fallback = c.plan(jobs[0]!);
  }
  const plan = resolveTarget(fallback);
  const src = await openDumpSource(file, { signal: c.signal, log: c.log, fernetKey: () => fernetKey(flags) });
  try {
    const engine = await openEngine(plan, (m) => c.log.warn(m));
    const d = src.detected;
    checkFits(d, engine, `the target (${engine.name} database ${engine.database})`);
    const checked = await checkSource(src, c.signal);
    c.log.info({ file, what: d.what, check: checked }, `${file}: ${d.what}; ${checked}`);
    const progress = c.progress(`restoring ${file}`, { read: "read", written: "restored" });
    try {
      const result = await restoreSource(src, {
        engine,
        log: c.log,
        signal: c.signal,
        ...(flags.jobs ? { jobs: Number(flags.jobs) } : {}),
        onProgress: progress.update,
        confirm: replaceConfirmer(c, { ...(flags.autoConfirm ? { autoConfirm: true } : {}), clear: () => progress.clear(), source: file }),
      });
      progress.clear();
      if (flags.json) process.stdout.write(JSON.stringify({ file, detected: d.what, format: d.format, target: result.target, seconds: result.seconds, bytes: result.storedBytes, replaced: result.replaced }, null, 2) + "\n");
      else process.stdout.write(`restored ${file} (${d.what}) into ${result.target}\n`);
    } finally {
      progress.clear();
    }
  } finally {
    await src.close();
  }
}
