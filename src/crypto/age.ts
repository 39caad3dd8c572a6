import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, scrypt, timingSafeEqual, type KeyObject } from "node:crypto";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { DbkeepError } from "../core/errors.js";
import { decodeIdentity, decodeRecipient, encodeRecipient, generateX25519, keyLines, privateKeyFromRaw, rawPublicKey, x25519 } from "./keys.js";

/**
 * The age file format (age-encryption.org/v1) around Node's own primitives: X25519, HKDF-SHA-256, HMAC-SHA-256,
 * scrypt and ChaCha20-Poly1305 all come from node:crypto (OpenSSL); this file only lays out the bytes: the header
 * with its recipient stanzas and MAC, and the STREAM payload of 64 KiB chunks. Files it writes decrypt with the
 * reference `age` tool and the other way round.
 */
const VERSION_LINE = "age-encryption.org/v1";
const CHUNK = 64 * 1024;
const TAG = 16;
const ENC_CHUNK = CHUNK + TAG;
const FILE_KEY_SIZE = 16;
const NONCE_SIZE = 16;
const X25519_LABEL = "age-encryption.org/v1/X25519";
const SCRYPT_LABEL = "age-encryption.org/v1/scrypt";
/** age's default for new files: about a second and 256 MiB. */
export const SCRYPT_WORK_FACTOR = 18;
/** age refuses higher work factors when decrypting: beyond it a file could make a reader spend minutes and GiBs. */
const MAX_SCRYPT_WORK_FACTOR = 22;
/** Headers are a few hundred bytes per recipient; this only bounds what a damaged or hostile file can make us buffer. */
const MAX_HEADER = 1024 * 1024;

export interface Stanza {
  type: string;
  args: string[];
  body: Buffer;
}

/** What the manifest records about one recipient: public information only. */
export type RecipientInfo = { type: "X25519"; recipient: string } | { type: "scrypt" };

export interface Recipient {
  readonly info: RecipientInfo;
  wrap(fileKey: Buffer): Promise<Stanza>;
}

export interface Identity {
  readonly kind: "X25519" | "scrypt" | "file key";
  /** The file key if one of the stanzas is for this identity, else undefined; throws when a stanza of its kind is malformed. */
  unwrap(stanzas: Stanza[]): Promise<Buffer | undefined>;
}

/** How decryption failed, in the categories of the age test vectors. */
export type AgeFailure = "header" | "no-match" | "hmac" | "payload";

export class AgeError extends DbkeepError {
  readonly reason: AgeFailure;
  constructor(reason: AgeFailure, message: string, hint: string, cause?: unknown) {
    super("DECRYPT_FAILED", message, { hint, cause });
    this.reason = reason;
  }
}

class Malformed extends Error {}

const b64 = (b: Buffer) => b.toString("base64").replace(/=+$/, "");

/** Strict unpadded base64: the canonical encoding only, as age requires (a header is MACed as it is written). */
function unb64(s: string): Buffer {
  if (!/^[A-Za-z0-9+/]*$/.test(s) || s.length % 4 === 1) throw new Malformed("invalid base64");
  const out = Buffer.from(s, "base64");
  if (b64(out) !== s) throw new Malformed("non-canonical base64");
  return out;
}

function hkdf(ikm: Buffer, salt: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync("sha256", ikm, salt, info, 32));
}

const ZERO_NONCE = Buffer.alloc(12);

function seal(key: Buffer, nonce: Buffer, plaintext: Buffer): Buffer {
  const c = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG });
  const ct = c.update(plaintext);
  c.final();
  return Buffer.concat([ct, c.getAuthTag()]);
}

/** The plaintext, or undefined when authentication fails; nothing is released before the tag was checked. */
function open(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | undefined {
  const d = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG });
  d.setAuthTag(sealed.subarray(sealed.length - TAG));
  const pt = d.update(sealed.subarray(0, sealed.length - TAG));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return pt;
}

/** A wrapped file key: a wrong key is "not mine" (undefined), a body of the wrong size is a malformed stanza. */
function unwrapBody(key: Buffer, body: Buffer): Buffer | undefined {
  if (body.length !== FILE_KEY_SIZE + TAG) throw new Malformed("wrapped file key has the wrong size");
  return open(key, ZERO_NONCE, body);
}

function scryptKey(passphrase: string, salt: Buffer, logN: number): Promise<Buffer> {
  const N = 2 ** logN;
  return new Promise((resolve, reject) => {
    scrypt(passphrase, Buffer.concat([Buffer.from(SCRYPT_LABEL), salt]), 32, { N, r: 8, p: 1, maxmem: 128 * N * 8 + 16 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

export class X25519Recipient implements Recipient {
  readonly info: RecipientInfo;
  readonly #public: Buffer;
  constructor(recipient: string) {
    this.#public = decodeRecipient(recipient);
    this.info = { type: "X25519", recipient: encodeRecipient(this.#public) };
  }
  async wrap(fileKey: Buffer): Promise<Stanza> {
    const eph = generateX25519();
    const shared = x25519(eph.privateKey, this.#public);
    const key = hkdf(shared, Buffer.concat([eph.publicRaw, this.#public]), X25519_LABEL);
    return { type: "X25519", args: [b64(eph.publicRaw)], body: seal(key, ZERO_NONCE, fileKey) };
  }
}

export class ScryptRecipient implements Recipient {
  readonly info: RecipientInfo = { type: "scrypt" };
  readonly #passphrase: string;
  readonly #logN: number;
  constructor(passphrase: string, workFactor = SCRYPT_WORK_FACTOR) {
    if (passphrase === "") throw new DbkeepError("USAGE", "the passphrase is empty");
    this.#passphrase = passphrase;
    this.#logN = workFactor;
  }
  async wrap(fileKey: Buffer): Promise<Stanza> {
    const salt = randomBytes(16);
    const key = await scryptKey(this.#passphrase, salt, this.#logN);
    return { type: "scrypt", args: [b64(salt), String(this.#logN)], body: seal(key, ZERO_NONCE, fileKey) };
  }
}

export class X25519Identity implements Identity {
  readonly kind = "X25519" as const;
  readonly #private: KeyObject;
  readonly #public: Buffer;
  constructor(identity: string) {
    this.#private = privateKeyFromRaw(decodeIdentity(identity));
    this.#public = rawPublicKey(this.#private);
  }
  get recipient(): string {
    return encodeRecipient(this.#public);
  }
  async unwrap(stanzas: Stanza[]): Promise<Buffer | undefined> {
    for (const s of stanzas) {
      if (s.type !== "X25519") continue;
      if (s.args.length !== 1) throw new Malformed("X25519 stanza must have one argument");
      const share = unb64(s.args[0]!);
      if (share.length !== 32) throw new Malformed("X25519 share has the wrong length");
      let shared: Buffer;
      try {
        shared = x25519(this.#private, share);
      } catch (err) {
        throw new Malformed(`X25519 share is a low-order point (${(err as Error).message})`);
      }
      if (shared.every((b) => b === 0)) throw new Malformed("X25519 share is a low-order point");
      const key = hkdf(shared, Buffer.concat([share, this.#public]), X25519_LABEL);
      const fileKey = unwrapBody(key, s.body);
      if (fileKey) return fileKey;
    }
    return undefined;
  }
}

export class ScryptIdentity implements Identity {
  readonly kind = "scrypt" as const;
  readonly #passphrase: string;
  constructor(passphrase: string) {
    this.#passphrase = passphrase;
  }
  async unwrap(stanzas: Stanza[]): Promise<Buffer | undefined> {
    for (const s of stanzas) {
      if (s.type !== "scrypt") continue;
      if (s.args.length !== 2) throw new Malformed("scrypt stanza must have two arguments");
      const salt = unb64(s.args[0]!);
      if (salt.length !== 16) throw new Malformed("scrypt salt has the wrong length");
      const w = s.args[1]!;
      if (!/^[1-9][0-9]*$/.test(w)) throw new Malformed(`scrypt work factor ${JSON.stringify(w)} is not a plain decimal`);
      const logN = Number(w);
      if (logN > MAX_SCRYPT_WORK_FACTOR) throw new Malformed(`scrypt work factor ${w} is above ${MAX_SCRYPT_WORK_FACTOR}`);
      if (s.body.length !== FILE_KEY_SIZE + TAG) throw new Malformed("wrapped file key has the wrong size");
      const fileKey = unwrapBody(await scryptKey(this.#passphrase, salt, logN), s.body);
      if (fileKey) return fileKey;
    }
    return undefined;
  }
}

/** An identity that already holds the file key: for reading back a file this process has just written. */
export function fileKeyIdentity(fileKey: Buffer): Identity {
  return { kind: "file key", unwrap: async () => fileKey };
}

/** Identities from the text of an age identity file (`# comments` and one AGE-SECRET-KEY-1... per line). */
export function parseIdentityFile(text: string, what: string): X25519Identity[] {
  const lines = keyLines(text);
  if (lines.length === 0) throw new DbkeepError("USAGE", `${what} holds no identity`, { hint: "create one with: dbkeep keygen -o key.txt" });
  return lines.map((l) => {
    try {
      return new X25519Identity(l.value);
    } catch (err) {
      const encrypted = l.value.startsWith("age-encryption.org/") || l.value.startsWith("-----BEGIN AGE");
      throw new DbkeepError("USAGE", `${what} line ${l.line}: ${encrypted ? "passphrase-protected identity files are not supported" : (err as Error).message}`, {
        hint: "an identity file holds AGE-SECRET-KEY-1... lines as written by dbkeep keygen or age-keygen",
      });
    }
  });
}

/** Recipients from `age1...` strings, e.g. the lines of a recipients file. */
export function parseRecipients(values: { value: string; where: string }[]): X25519Recipient[] {
  return values.map(({ value, where }) => {
    try {
      return new X25519Recipient(value);
    } catch (err) {
      throw new DbkeepError("USAGE", `${where}: ${(err as Error).message}`, {
        hint: value.startsWith("AGE-SECRET-KEY-") ? "that is a secret key: give its public key (the '# public key:' line of the identity file)" : "recipients are age1... public keys, as printed by dbkeep keygen",
      });
    }
  });
}

export function parseRecipientsFile(text: string, what: string): X25519Recipient[] {
  const lines = keyLines(text);
  if (lines.length === 0) throw new DbkeepError("USAGE", `${what} holds no recipient`);
  return parseRecipients(lines.map((l) => ({ value: l.value, where: `${what} line ${l.line}` })));
}

export function encodeHeaderNoMac(stanzas: Stanza[]): Buffer {
  const lines = [VERSION_LINE];
  for (const s of stanzas) {
    lines.push(["->", s.type, ...s.args].join(" "));
    const body = b64(s.body);
    for (let i = 0; i < body.length; i += 64) lines.push(body.slice(i, i + 64));
    if (body.length % 64 === 0) lines.push("");
  }
  lines.push("---");
  return Buffer.from(lines.join("\n"), "latin1");
}

function headerMac(fileKey: Buffer, headerNoMac: Buffer): Buffer {
  return createHmac("sha256", hkdf(fileKey, Buffer.alloc(0), "header")).update(headerNoMac).digest();
}

export interface Header {
  stanzas: Stanza[];
  /** The header up to and including `---`: what the MAC covers. */
  headerNoMac: Buffer;
  mac: Buffer;
  /** Bytes the header takes, up to and including the newline after the MAC. */
  size: number;
}

function validArg(a: string): boolean {
  if (a === "") return false;
  for (let i = 0; i < a.length; i++) {
    const c = a.charCodeAt(i);
    if (c < 33 || c > 126) return false;
  }
  return true;
}

/** Parses a header at the start of `buf`; undefined if `buf` ends before the header does. Throws Malformed. */
export function parseHeader(buf: Buffer): Header | undefined {
  let pos = 0;
  const nextLine = (): string | undefined => {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0) return undefined;
    const line = buf.toString("latin1", pos, nl);
    pos = nl + 1;
    return line;
  };
  const version = nextLine();
  if (version === undefined) {
    if (!Buffer.from(VERSION_LINE).subarray(0, buf.length).equals(buf.subarray(0, VERSION_LINE.length))) throw new Malformed("not an age file");
    return undefined;
  }
  if (version !== VERSION_LINE) throw new Malformed(version.startsWith("age-encryption.org/") ? `unsupported version ${JSON.stringify(version)}` : "not an age file");
  const stanzas: Stanza[] = [];
  let line = nextLine();
  for (;;) {
    if (line === undefined) return undefined;
    const lineStart = pos - line.length - 1;
    if (line.startsWith("---")) {
      const parts = line.split(" ");
      if (parts[0] !== "---" || parts.length !== 2) throw new Malformed("malformed closing line");
      const mac = unb64(parts[1]!);
      if (mac.length !== 32) throw new Malformed("header MAC has the wrong length");
      return { stanzas, headerNoMac: buf.subarray(0, lineStart + 3), mac, size: pos };
    }
    if (!line.startsWith("->")) throw new Malformed("unexpected line in header");
    const parts = line.split(" ");
    if (parts[0] !== "->" || parts.length < 2) throw new Malformed("malformed stanza line");
    const args = parts.slice(1);
    if (!args.every(validArg)) throw new Malformed("invalid stanza argument");
    const body: Buffer[] = [];
    for (;;) {
      const l = nextLine();
      if (l === undefined) return undefined;
      if (l.length > 64) throw new Malformed("stanza body line too long");
      const bytes = unb64(l);
      body.push(bytes);
      if (bytes.length < 48) break;
    }
    stanzas.push({ type: args[0]!, args: args.slice(1), body: Buffer.concat(body) });
    line = nextLine();
  }
}

const HINT_DAMAGED = "the file is damaged or was changed; if it is a backup, restore another one";

function headerError(what: string, err: unknown): AgeError {
  return new AgeError("header", `${what} is not a valid age-encrypted file: ${(err as Error).message}`, HINT_DAMAGED, err);
}

/** Unwraps the file key with the first identity that matches, then checks the header MAC with it. */
export async function unlockHeader(header: Header, identities: Identity[], what: string): Promise<Buffer> {
  const scrypts = header.stanzas.filter((s) => s.type === "scrypt").length;
  if (scrypts > 0 && header.stanzas.length !== 1) throw headerError(what, new Malformed("a passphrase (scrypt) stanza must be the only one"));
  let fileKey: Buffer | undefined;
  try {
    for (const id of identities) {
      fileKey = await id.unwrap(header.stanzas);
      if (fileKey) break;
    }
  } catch (err) {
    if (err instanceof Malformed) throw headerError(what, err);
    throw err;
  }
  if (!fileKey) throw noMatch(header, identities, what);
  if (!timingSafeEqual(headerMac(fileKey, header.headerNoMac), header.mac)) {
    throw new AgeError("hmac", `cannot decrypt ${what}: its header was changed (header MAC mismatch)`, HINT_DAMAGED);
  }
  return fileKey;
}

function noMatch(header: Header, identities: Identity[], what: string): AgeError {
  const byPassphrase = header.stanzas.some((s) => s.type === "scrypt");
  const x25519s = header.stanzas.filter((s) => s.type === "X25519").length;
  const givenPass = identities.some((i) => i.kind === "scrypt");
  const givenKeys = identities.some((i) => i.kind === "X25519");
  let detail: string;
  let hint = "use the identity file whose public key the backup lists (`dbkeep list --json` shows the recipients)";
  if (byPassphrase && givenPass) {
    detail = "wrong passphrase";
    hint = "check the passphrase variable";
  } else if (byPassphrase) {
    detail = "it is encrypted with a passphrase, and no passphrase was given";
    hint = "pass --passphrase-env NAME, or passphrase_env in the encryption block";
  } else if (!givenKeys) {
    detail = `it is encrypted to ${x25519s} X25519 recipient(s), and no identity was given`;
    hint = "pass -i IDENTITY_FILE, or identity_file in the encryption block";
  } else {
    detail = `none of the given identities is one of its ${x25519s} recipient(s)`;
  }
  return new AgeError("no-match", `cannot decrypt ${what}: ${detail}`, hint);
}

/** Reads just the header of an age file, so that it can be unlocked before anything streams anywhere. */
export async function readHeader(source: Readable, what: string): Promise<Header> {
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const c of source) {
      chunks.push(c as Buffer);
      n += (c as Buffer).length;
      const header = parseHeader(Buffer.concat(chunks, n));
      if (header) return header;
      if (n > MAX_HEADER) throw new Malformed("no end of header in the first MiB");
    }
    throw new Malformed(n === 0 ? "the file is empty" : "the header is truncated");
  } catch (err) {
    if (err instanceof Malformed) throw headerError(what, err);
    throw err;
  } finally {
    source.destroy();
  }
}

/** Buffers held by reference until a whole chunk is there; a chunk inside one buffer is taken without copying. */
class ByteQueue {
  #bufs: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    if (b.length === 0) return;
    this.#bufs.push(b);
    this.length += b.length;
  }
  /** Everything queued, as one buffer; the queue keeps it. */
  all(): Buffer {
    const one = this.#bufs.length === 1 ? this.#bufs[0]! : Buffer.concat(this.#bufs, this.length);
    this.#bufs = this.length ? [one] : [];
    return one;
  }
  take(n: number): Buffer {
    const first = this.#bufs[0];
    let out: Buffer;
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#bufs.shift();
      else this.#bufs[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const b = this.#bufs[0]!;
        const k = Math.min(b.length, n - filled);
        b.copy(out, filled, 0, k);
        filled += k;
        if (k === b.length) this.#bufs.shift();
        else this.#bufs[0] = b.subarray(k);
      }
    }
    this.length -= n;
    return out;
  }
}

/** The 12-byte STREAM nonce: an 11-byte big-endian chunk counter and the last-chunk flag. */
class StreamNonce {
  readonly bytes = Buffer.alloc(12);
  get index(): number {
    return this.bytes.readUIntBE(5, 6);
  }
  next(): void {
    for (let i = 10; i >= 0; i--) {
      this.bytes[i] = (this.bytes[i]! + 1) & 0xff;
      if (this.bytes[i] !== 0) return;
    }
    throw new Error("STREAM counter overflow");
  }
  setLast(last: boolean): void {
    this.bytes[11] = last ? 1 : 0;
  }
}

/** Encrypts to the recipients: header, payload nonce, then 64 KiB chunks; memory stays at about one chunk. */
export class AgeEncryptStream extends Transform {
  readonly #setup: Promise<{ header: Buffer; payloadKey: Buffer }>;
  readonly #fileKey = randomBytes(FILE_KEY_SIZE);
  readonly #queue = new ByteQueue();
  readonly #nonce = new StreamNonce();
  #started = false;
  #payloadKey: Buffer | undefined;

  constructor(recipients: Recipient[]) {
    // Room for a few chunks each side: with Node's 16 KiB default every 64 KiB chunk would stall the pipeline once.
    super({ writableHighWaterMark: 4 * ENC_CHUNK, readableHighWaterMark: 4 * ENC_CHUNK });
    if (recipients.length === 0) throw new DbkeepError("USAGE", "no recipients to encrypt to");
    if (recipients.some((r) => r.info.type === "scrypt") && recipients.length > 1) {
      throw new DbkeepError("USAGE", "a passphrase cannot be combined with other recipients", { hint: "age allows a passphrase only on its own" });
    }
    this.#setup = (async () => {
      const stanzas = await Promise.all(recipients.map((r) => r.wrap(this.#fileKey)));
      const headerNoMac = encodeHeaderNoMac(stanzas);
      const nonce = randomBytes(NONCE_SIZE);
      const header = Buffer.concat([headerNoMac, Buffer.from(` ${b64(headerMac(this.#fileKey, headerNoMac))}\n`), nonce]);
      return { header, payloadKey: hkdf(this.#fileKey, nonce, "payload") };
    })();
    this.#setup.catch(() => undefined);
  }

  /** An identity holding this file's key, so that the writer can read back what it wrote without any secret key. */
  fileKeyIdentity(): Identity {
    return fileKeyIdentity(this.#fileKey);
  }

  #start(): Promise<void> | undefined {
    if (this.#started) return undefined;
    return this.#setup.then(({ header, payloadKey }) => {
      this.#payloadKey = payloadKey;
      this.#started = true;
      this.push(header);
    });
  }

  #seal(plaintext: Buffer, last: boolean): void {
    this.#nonce.setLast(last);
    const c = createCipheriv("chacha20-poly1305", this.#payloadKey!, this.#nonce.bytes, { authTagLength: TAG });
    // Ciphertext and tag go out as they are: joining them costs a 64 KiB allocation and copy per chunk, about as
    // much as the cipher itself.
    const ct = c.update(plaintext);
    if (ct.length > 0) this.push(ct);
    c.final();
    this.push(c.getAuthTag());
    this.#nonce.next();
  }

  #chunks(): void {
    // A full chunk is sealed as "not last" only once more data is known to follow.
    while (this.#queue.length > CHUNK) this.#seal(this.#queue.take(CHUNK), false);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#queue.push(chunk);
    const starting = this.#start();
    if (!starting) {
      this.#chunks();
      return cb();
    }
    starting.then(() => {
      this.#chunks();
      cb();
    }, cb);
  }

  override _flush(cb: TransformCallback): void {
    (this.#start() ?? Promise.resolve()).then(() => {
      this.#chunks();
      this.#seal(this.#queue.take(this.#queue.length), true);
      cb();
    }, cb);
  }
}

export function createAgeEncryptStream(recipients: Recipient[]): AgeEncryptStream {
  return new AgeEncryptStream(recipients);
}

/**
 * Decrypts an age file. The header is checked (and the file key unwrapped) before any plaintext is released;
 * each chunk is released only after its tag verified, and the stream errors instead of ending if the file is
 * truncated, extended or changed anywhere, so a consumer never sees a clean end of unauthenticated data.
 */
export class AgeDecryptStream extends Transform {
  readonly #identities: Identity[];
  readonly #what: string;
  readonly #queue = new ByteQueue();
  #state: "header" | "nonce" | "payload" | "done" = "header";
  #fileKey: Buffer | undefined;
  #payloadKey: Buffer | undefined;
  readonly #nonce = new StreamNonce();
  /** Plaintext bytes released so far: where a failure happened. */
  released = 0;

  constructor(identities: Identity[], opts: { what?: string } = {}) {
    super({ writableHighWaterMark: 4 * ENC_CHUNK, readableHighWaterMark: 4 * ENC_CHUNK });
    if (identities.length === 0) throw new DbkeepError("USAGE", "no identity to decrypt with", { hint: "pass -i IDENTITY_FILE or --passphrase-env NAME" });
    this.#identities = identities;
    this.#what = opts.what ?? "the file";
  }

  #payloadError(detail: string): AgeError {
    return new AgeError("payload", `cannot decrypt ${this.#what}: ${detail}`, HINT_DAMAGED);
  }

  async #drain(final: boolean): Promise<void> {
    if (this.#state === "header") {
      const buf = this.#queue.all();
      let header: Header | undefined;
      try {
        header = parseHeader(buf);
        if (!header && final) throw new Malformed(buf.length === 0 ? "the file is empty" : "the header is truncated");
        if (!header && buf.length > MAX_HEADER) throw new Malformed("no end of header in the first MiB");
      } catch (err) {
        throw err instanceof Malformed ? headerError(this.#what, err) : err;
      }
      if (!header) return;
      this.#fileKey = await unlockHeader(header, this.#identities, this.#what);
      this.#queue.take(header.size);
      this.#state = "nonce";
    }
    if (this.#state === "nonce") {
      if (this.#queue.length < NONCE_SIZE) {
        // age reads the payload nonce with the header: a file that ends before it has a truncated header.
        if (final) throw headerError(this.#what, new Malformed("the file ends before its payload begins (truncated)"));
        return;
      }
      this.#payloadKey = hkdf(this.#fileKey!, this.#queue.take(NONCE_SIZE), "payload");
      this.#state = "payload";
    }
    this.#chunks();
    if (final) this.#finish();
  }

  /**
   * Opens every whole chunk buffered, the way the reference implementation reads: a full-size chunk is tried as
   * "not last" first and as "last" second, and after a last chunk nothing may follow.
   */
  #chunks(): void {
    if (this.#queue.length > 0 && this.#state === "done") throw this.#payloadError("data follows its last chunk (the file was changed or extended)");
    while (this.#queue.length >= ENC_CHUNK) {
      const sealed = this.#queue.take(ENC_CHUNK);
      if (!this.#open(sealed, false)) {
        if (!this.#open(sealed, true)) throw this.#authError(false);
        this.#state = "done";
        if (this.#queue.length > 0) throw this.#payloadError("data follows its last chunk (the file was changed or extended)");
      }
    }
  }

  #finish(): void {
    if (this.#state === "done") return;
    const rest = this.#queue.length;
    if (rest === 0) throw this.#payloadError(this.#nonce.index > 0 ? "the file is truncated (its last chunk is missing)" : "the file is truncated (no payload)");
    if (rest === TAG && this.#nonce.index > 0) throw this.#payloadError("its last chunk is empty, which age does not allow (the file was changed)");
    if (rest < TAG || !this.#open(this.#queue.take(rest), true)) throw this.#authError(true);
    this.#state = "done";
  }

  #authError(last: boolean): AgeError {
    const at = `chunk ${this.#nonce.index} (after ${this.released} bytes of plaintext)`;
    return this.#payloadError(last ? `the data is damaged, truncated or was changed: ${at} failed authentication` : `the data is damaged or was changed: ${at} failed authentication`);
  }

  /** Releases the chunk's plaintext if it authenticates under this flag; false (and nothing released) if not. */
  #open(sealed: Buffer, last: boolean): boolean {
    this.#nonce.setLast(last);
    const pt = open(this.#payloadKey!, this.#nonce.bytes, sealed);
    if (!pt) return false;
    this.#nonce.next();
    this.released += pt.length;
    if (pt.length > 0) this.push(pt);
    return true;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#queue.push(chunk);
    if (this.#state === "payload" || this.#state === "done") {
      try {
        this.#chunks();
        cb();
      } catch (err) {
        cb(err as Error);
      }
      return;
    }
    this.#drain(false).then(() => cb(), cb);
  }

  override _flush(cb: TransformCallback): void {
    this.#drain(true).then(() => cb(), cb);
  }
}

export function createAgeDecryptStream(identities: Identity[], opts: { what?: string } = {}): AgeDecryptStream {
  return new AgeDecryptStream(identities, opts);
}
