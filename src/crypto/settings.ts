import { existsSync, readFileSync } from "node:fs";
import { ENCRYPTION_SECRETS, resolveSecret, type Section } from "../config/load.js";
import { encryptionSchema, type EncryptionConfig } from "../config/schema.js";
import { DbkeepError } from "../core/errors.js";
import { parseIdentityFile, parseRecipients, parseRecipientsFile, ScryptIdentity, ScryptRecipient, X25519Identity, X25519Recipient, type Identity, type Recipient } from "./age.js";

/** An encryption block and where it came from (`jobs.app.encryption`, `encryption`, `--recipient`), for messages. */
export interface EncryptionPlan {
  path: string;
  config: EncryptionConfig;
}

function section(plan: EncryptionPlan): Section {
  return { options: plan.config as Record<string, unknown>, secretFields: ENCRYPTION_SECRETS };
}

/** resolveSecret, with messages that name the flag when the block came from the command line. */
function secret(plan: EncryptionPlan, field: "passphrase" | "identity", warn: (m: string) => void) {
  const env = plan.config[`${field}_env`];
  if (plan.path.startsWith("-") && env !== undefined && !process.env[env]) {
    throw new DbkeepError("SECRET_MISSING", `--${field}-env: environment variable ${env} is not set`, { hint: `export ${env}=... before running dbkeep` });
  }
  return resolveSecret(section(plan), field, plan.path, warn);
}

function readKeyFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new DbkeepError("USAGE", `${what}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (err as Error).message}`);
  }
}

/** The identities of a block (identity / _env / _file), read only when a backup has to be decrypted. */
function identitiesOf(plan: EncryptionPlan, warn: (m: string) => void): Identity[] {
  const c = plan.config;
  if (c.identity_file && !existsSync(c.identity_file)) {
    throw new DbkeepError("SECRET_MISSING", `${plan.path.startsWith("-") ? plan.path : `${plan.path}.identity_file`}: identity file ${c.identity_file} does not exist`, {
      hint: "the identity file is the one dbkeep keygen -o (or age-keygen) wrote",
    });
  }
  const value = secret(plan, "identity", warn);
  if (!value) return [];
  const what = c.identity_file ? `identity file ${c.identity_file}` : c.identity_env ? `$${c.identity_env}` : `${plan.path}.identity`;
  return parseIdentityFile(value.reveal(), what);
}

/**
 * Whom a backup is encrypted to: the recipients and the recipients file, or the passphrase; a block that holds only
 * an identity encrypts to that identity's own public key, so that a block never silently means "no encryption".
 */
export function recipientsFor(plan: EncryptionPlan, warn: (m: string) => void = () => undefined): Recipient[] {
  const c = plan.config;
  const out: Recipient[] = [];
  if (c.recipients) out.push(...parseRecipients(c.recipients.map((value, i) => ({ value, where: `${plan.path}.recipients.${i}` }))));
  if (c.recipients_file) out.push(...parseRecipientsFile(readKeyFile(c.recipients_file, `${plan.path}.recipients_file`), `recipients file ${c.recipients_file}`));
  const pass = secret(plan, "passphrase", warn);
  if (pass) out.push(new ScryptRecipient(pass.reveal()));
  if (out.length === 0) {
    for (const id of identitiesOf(plan, warn)) if (id instanceof X25519Identity) out.push(new X25519Recipient(id.recipient));
  }
  if (out.length === 0) {
    throw new DbkeepError("CONFIG_INVALID", `${plan.path}: nothing to encrypt to`, { hint: "give recipients, recipients_file or passphrase_env" });
  }
  const seen = new Set<string>();
  return out.filter((r) => {
    const k = r.info.type === "X25519" ? r.info.recipient : "scrypt";
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** What decrypts a backup: the identity of the block, and its passphrase. */
export function identitiesFor(plan: EncryptionPlan, warn: (m: string) => void = () => undefined): Identity[] {
  const out = identitiesOf(plan, warn);
  const pass = secret(plan, "passphrase", warn);
  if (pass) out.push(new ScryptIdentity(pass.reveal()));
  return out;
}

/** An encryption block from command-line flags, checked like one from the config (usage errors, exit 2). */
export function encryptionFromFlags(path: string, raw: Record<string, unknown>): EncryptionPlan | undefined {
  const given = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0)));
  if (Object.keys(given).length === 0) return undefined;
  const parsed = encryptionSchema.safeParse(given);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new DbkeepError("USAGE", `${path}: ${issue.message}`, issue.path[0] === "recipients" ? { hint: "recipients are age1... public keys, as printed by dbkeep keygen" } : {});
  }
  return { path, config: parsed.data };
}
