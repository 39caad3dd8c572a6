import { randomBytes } from "node:crypto";
import { closeSync, createReadStream, createWriteStream, existsSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Command } from "commander";
import { DbkeepError } from "../../core/errors.js";
import { createAgeDecryptStream, createAgeEncryptStream, X25519Identity, type Identity } from "../../crypto/age.js";
import { generateIdentityFile } from "../../crypto/keys.js";
import { encryptionFromFlags, identitiesFor, recipientsFor } from "../../crypto/settings.js";
import type { Context } from "../context.js";
import { decryptDbvaultFile, KEYGEN_SAVE_NOTE } from "../seed002.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** keygen, encrypt and decrypt: age files without a config, each usable on its own. */
export function registerCrypt(program: Command, _ctx: () => Context): void {
  program
    .command("keygen")
    .description("create an age identity (secret key) for encrypted backups and print its public key")
    .option("-o, --output <file>", "write the identity to this file (mode 0600; never overwritten)")
    .option("-y, --public <file>", "print the public keys of the identities in this file instead")
    .option("-s, --save <file>", "DBVault's form of --output: write the identity to this file")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep keygen -o key.txt                 # prints age1...: put it in encryption.recipients
  dbkeep keygen -y key.txt                 # the public key of an existing identity
  dbkeep keygen > key.txt
  dbkeep keygen --save ~/.dbkeep.key       # DBVault's form; an age key, not a Fernet key

Keep the identity file off the backup machine: it only needs the public key (age1...) to encrypt,
and the identity is needed only to restore. The file is age's own format: the age tool reads it too.`,
    )
    .action((flags: { output?: string; public?: string; save?: string }) => {
      if (flags.public) {
        const ids = readIdentities(flags.public);
        process.stdout.write(ids.map((i) => (i as X25519Identity).recipient).join("\n") + "\n");
        return;
      }
      const key = generateIdentityFile();
      if (flags.save && flags.output) throw new DbkeepError("USAGE", "give -o or --save, not both");
      const file = flags.output ?? flags.save;
      if (!file) {
        process.stdout.write(key.text);
        process.stderr.write(`Public key: ${key.recipient}\n`);
        return;
      }
      writeNew(file, Buffer.from(key.text), "an identity");
      process.stdout.write(`${key.recipient}\n`);
      if (flags.save) process.stderr.write(`${KEYGEN_SAVE_NOTE}\n`);
    });

  program
    .command("encrypt")
    .description("encrypt a file with age, as backups are (the age tool can decrypt it)")
    .argument("<file>", "the file to encrypt, or - for standard input")
    .option("-o, --output <file>", "write here (default: standard output)")
    .option("-r, --recipient <age1...>", "encrypt to this public key (repeatable)", collect)
    .option("-R, --recipients-file <file>", "encrypt to the public keys in this file")
    .option("--passphrase-env <name>", "encrypt with the passphrase in this environment variable")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep encrypt app.db -o app.db.age -r age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
  dbkeep encrypt dump.sql -o dump.sql.age -R recipients.txt
  DBKEEP_PASSPHRASE=... dbkeep encrypt dump.sql -o dump.sql.age --passphrase-env DBKEEP_PASSPHRASE`,
    )
    .action(async (file: string, flags: { output?: string; recipient?: string[]; recipientsFile?: string; passphraseEnv?: string }) => {
      const plan = encryptionFromFlags("--recipient", { recipients: flags.recipient, recipients_file: flags.recipientsFile, passphrase_env: flags.passphraseEnv });
      if (!plan) throw new DbkeepError("USAGE", "give -r RECIPIENT, -R FILE or --passphrase-env NAME", { hint: "create a key pair with: dbkeep keygen -o key.txt" });
      const recipients = recipientsFor(plan);
      await transformFile(file, flags.output, createAgeEncryptStream(recipients));
    });

  program
    .command("decrypt")
    .description("decrypt an age file (a backup's data file, or anything age encrypted), or a DBVault .enc file (--file, --key)")
    .argument("[file]", "the file to decrypt, or - for standard input")
    .option("-o, --output <file>", "write here (default: standard output); written only if the whole file decrypts")
    .option("-i, --identity <file>", "an identity file (repeatable)", collect)
    .option("--passphrase-env <name>", "decrypt with the passphrase in this environment variable")
    .option("-f, --file <file>", "DBVault form: the Fernet-encrypted .enc file to decrypt (written without .enc beside it, or to -o)")
    .option("-k, --key <key>", "DBVault form: the Fernet key it was encrypted with, or the file holding it")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep decrypt --file ./backups/backup.sql.gz.enc --key ~/.dbvault.key   # writes ./backups/backup.sql.gz
  dbkeep decrypt backups/app/app-20260101-000000.db.gz.age -i key.txt -o app.db.gz
  dbkeep decrypt backups/app/app-20260101-000000.sql.zst.age -i key.txt | zstd -d | psql app_copy
  DBKEEP_PASSPHRASE=... dbkeep decrypt dump.sql.age --passphrase-env DBKEEP_PASSPHRASE -o dump.sql

A wrong identity, a changed byte or a truncated file is refused with exit code 1; with -o nothing
is written then.`,
    )
    .action(async (arg: string | undefined, flags: { output?: string; identity?: string[]; passphraseEnv?: string; file?: string; key?: string }) => {
      if (arg !== undefined && flags.file !== undefined) throw new DbkeepError("USAGE", "give the file once: as an argument or with --file");
      const file = arg ?? flags.file;
      if (file === undefined) throw new DbkeepError("USAGE", "name the file to decrypt", { hint: "dbkeep decrypt FILE.age -i key.txt -o OUT, or for DBVault files: dbkeep decrypt --file FILE.enc --key KEY" });
      if (flags.key !== undefined) {
        if (flags.identity?.length || flags.passphraseEnv) throw new DbkeepError("USAGE", "--key (a DBVault Fernet key) does not go with -i or --passphrase-env (age)");
        if (file === "-") throw new DbkeepError("USAGE", "a DBVault .enc file is read twice (checked, then decrypted): give its path, not -");
        await decryptDbvaultFile(file, flags.key, flags.output, (m) => process.stderr.write(`warning: ${m}\n`));
        return;
      }
      if (flags.file !== undefined && !flags.identity?.length && !flags.passphraseEnv) {
        throw new DbkeepError("USAGE", "--file needs --key: the Fernet key the DBVault file was encrypted with", { hint: "dbkeep decrypt --file FILE.enc --key KEY (or --key FILE holding it)" });
      }
      const ids: Identity[] = (flags.identity ?? []).flatMap((f) => readIdentities(f));
      const pass = encryptionFromFlags("--passphrase-env", { passphrase_env: flags.passphraseEnv });
      if (pass) ids.push(...identitiesFor(pass));
      if (ids.length === 0) throw new DbkeepError("USAGE", "give -i IDENTITY_FILE or --passphrase-env NAME", { hint: "the identity file is the one dbkeep keygen -o (or age-keygen) wrote" });
      await transformFile(file, flags.output, createAgeDecryptStream(ids, { what: file === "-" ? "standard input" : file }));
    });
}

function readIdentities(file: string): Identity[] {
  return identitiesFor(encryptionFromFlags("--identity", { identity_file: file })!, (w) => process.stderr.write(`warning: ${w}\n`));
}

/** Creates `path` with mode 0600; refuses to replace anything. */
function writeNew(path: string, content: Buffer, what: string): void {
  let fd: number;
  try {
    fd = openSync(path, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") {
      throw new DbkeepError("USAGE", `${path} exists; not overwriting it with ${what}`, { hint: "choose another file name, or move the old file away first" });
    }
    throw new DbkeepError("USAGE", `cannot create ${path}: ${(err as Error).message}`);
  }
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * FILE (or stdin) through `stage` to OUT (or stdout). OUT is written beside its final name and renamed only when
 * the stream ended cleanly: a failed decryption leaves no partial plaintext behind.
 */
async function transformFile(file: string, out: string | undefined, stage: Transform): Promise<void> {
  if (file !== "-" && !existsSync(file)) throw new DbkeepError("USAGE", `${file}: no such file`);
  const source: Readable = file === "-" ? process.stdin : createReadStream(file);
  if (!out) {
    if (process.stdout.isTTY) throw new DbkeepError("USAGE", "refusing to write binary data to a terminal", { hint: "pass -o FILE, or redirect standard output" });
    await pipeline(source, stage, process.stdout, { end: false });
    return;
  }
  if (existsSync(out)) throw new DbkeepError("USAGE", `${out} exists; not overwriting it`, { hint: "choose another output file, or remove it first" });
  const tmp = join(dirname(out), `.${basename(out)}.dbkeep-${randomBytes(4).toString("hex")}`);
  try {
    await pipeline(source, stage, createWriteStream(tmp, { mode: 0o600, flags: "wx" }));
    if (existsSync(out)) throw new DbkeepError("USAGE", `${out} appeared while writing; not overwriting it`);
    renameSync(tmp, out);
  } finally {
    rmSync(tmp, { force: true });
  }
}
