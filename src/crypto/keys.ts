import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from "node:crypto";
import { bech32Decode, bech32Encode } from "./bech32.js";

/**
 * age's X25519 keys: `age1...` recipients (public keys) and `AGE-SECRET-KEY-1...` identities (secret keys), both
 * bech32 of the raw 32-byte key. Node takes X25519 keys only as KeyObjects, so raw keys are wrapped in the fixed
 * DER prefixes of RFC 8410 (PKCS#8 for the secret, SPKI for the public key).
 */
const PKCS8_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b656e032100", "hex");
const RECIPIENT_HRP = "age";
const IDENTITY_HRP = "age-secret-key-";

export function privateKeyFromRaw(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
}

export function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: "der", type: "spki" });
}

export function rawPublicKey(key: KeyObject): Buffer {
  const der = (key.type === "private" ? createPublicKey(key) : key).export({ format: "der", type: "spki" });
  return Buffer.from(der.subarray(der.length - 32));
}

/**
 * X25519(secret, public). OpenSSL refuses an all-zero shared secret (a low-order public point), which age requires
 * to be refused too; callers turn the exception into a header error.
 */
export function x25519(privateKey: KeyObject, publicRaw: Buffer): Buffer {
  return diffieHellman({ privateKey, publicKey: publicKeyFromRaw(publicRaw) });
}

export function generateX25519(): { privateKey: KeyObject; publicRaw: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  return { privateKey, publicRaw: rawPublicKey(publicKey) };
}

export function rawPrivateKey(key: KeyObject): Buffer {
  const der = key.export({ format: "der", type: "pkcs8" });
  return Buffer.from(der.subarray(der.length - 32));
}

export function encodeRecipient(publicRaw: Buffer): string {
  return bech32Encode(RECIPIENT_HRP, publicRaw);
}

export function encodeIdentity(privateRaw: Buffer): string {
  return bech32Encode(IDENTITY_HRP, privateRaw).toUpperCase();
}

/** The raw public key of an `age1...` recipient; throws with the reason otherwise. */
export function decodeRecipient(s: string): Buffer {
  // Never echo a secret key that was put where a public key belongs.
  if (/^age-secret-key-/i.test(s)) throw new Error("this is a secret key (AGE-SECRET-KEY-1...), not a recipient: give its public key (age1...)");
  let d: { hrp: string; data: Buffer };
  try {
    d = bech32Decode(s);
  } catch (err) {
    throw new Error(`"${shorten(s)}" is not an age recipient (${(err as Error).message})`, { cause: err });
  }
  if (d.hrp !== RECIPIENT_HRP) throw new Error(`"${shorten(s)}" is not an age X25519 recipient (expected age1...)`);
  if (d.data.length !== 32) throw new Error(`"${shorten(s)}" is not an age X25519 recipient (wrong length)`);
  return d.data;
}

/** The raw secret key of an `AGE-SECRET-KEY-1...` identity. Never puts the key itself into the message. */
export function decodeIdentity(s: string): Buffer {
  let d: { hrp: string; data: Buffer };
  try {
    d = bech32Decode(s);
  } catch (err) {
    throw new Error(`not an age identity (AGE-SECRET-KEY-1...): ${(err as Error).message}`, { cause: err });
  }
  if (d.hrp !== IDENTITY_HRP) throw new Error(`not an age X25519 identity: it starts with ${d.hrp.toUpperCase()}1, expected AGE-SECRET-KEY-1`);
  if (d.data.length !== 32) throw new Error("not an age X25519 identity: wrong length");
  return d.data;
}

export function isRecipient(s: string): boolean {
  try {
    decodeRecipient(s);
    return true;
  } catch {
    return false;
  }
}

/** The public recipient of an identity. */
export function recipientOf(identity: string): string {
  return encodeRecipient(rawPublicKey(privateKeyFromRaw(decodeIdentity(identity))));
}

/** A new identity, in the text of age-keygen's identity files. */
export function generateIdentityFile(now = new Date()): { text: string; identity: string; recipient: string } {
  const { privateKey, publicRaw } = generateX25519();
  const identity = encodeIdentity(rawPrivateKey(privateKey));
  const recipient = encodeRecipient(publicRaw);
  const created = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  return { text: `# created: ${created}\n# public key: ${recipient}\n${identity}\n`, identity, recipient };
}

/** The meaningful lines of an age identity or recipients file: without blank lines and `#` comments. */
export function keyLines(text: string): { line: number; value: string }[] {
  return text
    .split(/\r?\n/)
    .map((l, i) => ({ line: i + 1, value: l.trim() }))
    .filter((l) => l.value !== "" && !l.value.startsWith("#"));
}

function shorten(s: string): string {
  return s.length > 72 ? `${s.slice(0, 69)}...` : s;
}
