import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Command } from "commander";
import { COMPRESSION_EXT } from "../../core/compression.js";
import { DbkeepError, isDbkeepError } from "../../core/errors.js";
import { fsyncPath } from "../../core/fsync.js";
import { ENCRYPTED_EXT, type Manifest } from "../../core/manifest.js";
import { listFor, resolveBackup } from "../../core/listing.js";
import { streamFromStore } from "../../core/pipeline.js";
import { HashStage } from "../../core/streams.js";
import { createAgeDecryptStream, fileKeyIdentity, readHeader, unlockHeader } from "../../crypto/age.js";
import { encryptionFromFlags, identitiesFor } from "../../crypto/settings.js";
import type { Store } from "../../stores/store.js";
import type { Context } from "../context.js";
import { formatBytes } from "../format.js";
import { onlyJob, openTarget, targetStores } from "./list.js";

interface DownloadFlags {
  output?: string;
  store?: string;
  extract?: boolean;
  identity?: string;
  passphraseEnv?: string;
}

export function registerDownload(program: Command, ctx: () => Context): void {
  program
    .command("download")
    .description("stream a backup out of its store into a file, checksum-verified")
    .argument("<target>", "job name, or store URL / directory")
    .argument("[backup]", "backup id or file name, or latest (default); with one argument that is no job nor store: a backup of the only job")
    .option("-o, --output <file>", "where to write it (default: the backup's file name here; - for stdout)")
    .option("--store <name>", "read from this store of the job (default: the first that holds the backup)")
    .option("--extract", "decrypt and decompress: write the plain dump instead of the stored object")
    .option("-i, --identity <file>", "with --extract: decrypt with the age identity in this file")
    .option("--passphrase-env <name>", "with --extract: decrypt with the passphrase in this environment variable")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep download appdb-backup                       # latest, as stored (e.g. app-20260210-143000.sql.gz)
  dbkeep download appdb-backup app-20260210-143000 -o /tmp/app.sql.gz
  dbkeep download ./backups latest --extract -o app.sql
  dbkeep download appdb-backup --store offsite -o - | zcat | less
  dbkeep download backups/postgres/postgres_db/postgres_db-20260210-020000.dump   # sidecar mode (seed 001)

The bytes are checked against the manifest's SHA-256 while they stream; on a mismatch the
output file is removed and the exit code is 1. A file is written beside its final name and
renamed into place only when complete.`,
    )
    .action(async (given: string, givenRef: string | undefined, flags: DownloadFlags) => {
      const c = ctx();
      let target = given;
      let ref = givenRef ?? "latest";
      // Seed 001's `download KEY`: a store key (or file name) of the only job's backups, found in any of its stores.
      if (givenRef === undefined && !c.isStoreLocation(given) && !(given in c.config().jobs)) {
        target = onlyJob(c);
        ref = given.split("/").pop()!;
      }
      const names = targetStores(c, target, flags.store);
      for (let i = 0; i < names.length; i++) {
        const { plan, store, prefix } = await openTarget(c, target, names[i]);
        try {
          let m: Manifest;
          try {
            m = resolveBackup(await listFor(store, prefix, plan.oneOff ? undefined : plan.name), ref, store.name).manifest;
          } catch (err) {
            if (i < names.length - 1 && (isDbkeepError(err, "BACKUP_NOT_FOUND") || isDbkeepError(err, "CORRUPT_BACKUP"))) continue;
            throw err;
          }
          const identities = () => {
            const own = encryptionFromFlags("--identity", { identity_file: flags.identity, passphrase_env: flags.passphraseEnv }) ?? plan.encryption;
            return own ? identitiesFor(own, (w) => c.log.warn(w)) : [];
          };
          const out = flags.output ?? (flags.extract ? plainName(m) : basename(m.key));
          const body = flags.extract ? await extracted(store, m, identities, c.signal) : await verified(store, m, c.signal);
          let bytes: number;
          try {
            bytes = await write(body.stream, out, body.done);
          } catch (err) {
            // Nothing was kept of a damaged copy (the file is written beside and renamed only when verified).
            if (out !== "-" && i < names.length - 1 && isDbkeepError(err, "CHECKSUM_MISMATCH")) {
              c.log.warn({ store: store.name }, `the copy in ${store.name} is damaged; trying the next store`);
              continue;
            }
            throw err;
          }
          if (out !== "-") c.log.info({ backup: m.id, file: out, bytes, store: store.name }, `${m.id}: wrote ${out} (${formatBytes(bytes)}) from ${store.name}, SHA-256 verified`);
          return;
        } finally {
          await store.close();
        }
      }
    });
}

function plainName(m: Manifest): string {
  let name = basename(m.key);
  if (name.endsWith(ENCRYPTED_EXT)) name = name.slice(0, -ENCRYPTED_EXT.length);
  const ext = COMPRESSION_EXT[m.compression];
  if (ext && name.endsWith(ext)) name = name.slice(0, -ext.length);
  return name;
}

async function verified(store: Store, m: Manifest, signal: AbortSignal): Promise<{ stream: Readable; done: Promise<void> }> {
  const body = await store.get(m.key, { signal });
  const check = new HashStage({ sha256: m.sha256, bytes: m.stored_bytes, what: `${m.key} in ${store.name}` });
  body.on("error", (err) => check.destroy(err));
  return { stream: body.pipe(check), done: Promise.resolve() };
}

async function extracted(store: Store, m: Manifest, identities: () => ReturnType<typeof identitiesFor>, signal: AbortSignal): Promise<{ stream: Readable; done: Promise<void> }> {
  let stages;
  if (m.encryption) {
    const ids = identities();
    if (ids.length === 0) throw new DbkeepError("USAGE", `backup ${m.id} is encrypted; --extract needs its identity`, { hint: "pass --identity FILE or --passphrase-env NAME" });
    const key = fileKeyIdentity(await unlockHeader(await readHeader(await store.get(m.key, { signal }), m.key), ids, m.key));
    stages = [createAgeDecryptStream([key], { what: m.key })];
  }
  return streamFromStore({ store, key: m.key, expected: { sha256: m.sha256, bytes: m.stored_bytes, what: m.key }, compression: m.compression, ...(stages ? { stages } : {}), signal });
}

/** Writes beside the final name and renames when every byte arrived and checked out; stdout for "-". */
async function write(stream: Readable, out: string, done: Promise<void>): Promise<number> {
  let bytes = 0;
  stream.on("data", (c: Buffer) => (bytes += c.length));
  if (out === "-") {
    await pipeline(stream, process.stdout, { end: false });
    await done;
    return bytes;
  }
  const tmp = join(dirname(out), `.${basename(out)}.partial-${randomBytes(4).toString("hex")}`);
  try {
    await pipeline(stream, createWriteStream(tmp, { flags: "wx", mode: 0o600 }));
    await done;
    await fsyncPath(tmp, "r+");
    await rename(tmp, out);
    return bytes;
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    if (isDbkeepError(err)) throw err;
    throw new DbkeepError("IO_FAILED", `cannot write ${out}: ${(err as Error).message}`, { cause: err });
  }
}
