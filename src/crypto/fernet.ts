import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual, type Decipher } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { DbkeepError } from "../core/errors.js";

/**
 * Fernet (github.com/fernet/spec), the format of the `.enc` files seed 002 (DBVault) wrote through Python's
 * `cryptography.fernet`. A token is url-safe base64 of
 *
 *   0x80 | timestamp (8 bytes, big-endian seconds) | IV (16) | AES-128-CBC ciphertext, PKCS#7 padded | HMAC-SHA256 (32)
 *
 * with the HMAC over everything before it. The key is url-safe base64 of 32 bytes: the first 16 sign, the last 16
 * encrypt. dbkeep itself encrypts with age; this file exists so that old Fernet files decrypt and can be imported.
 * The HMAC is always checked, in constant time, before a byte is decrypted.
 */
const VERSION = 0x80;
const HEADER = 1 + 8 + 16;
const MAC = 32;
const BLOCK = 16;
/** The smallest token: header, one block of ciphertext (an empty plaintext is one block of padding), the MAC. */
const MIN_TOKEN = HEADER + BLOCK + MAC;
/** The clock skew the spec (and Python's implementation) tolerates, checked only when a TTL is asked for. */
const MAX_CLOCK_SKEW = 60;

const KEY_HINT = "a Fernet key is 44 characters of url-safe base64 (32 bytes), as printed by `dbvault keygen` or saved by `dbvault keygen --save`";
const WRONG_KEY_HINT = "check --key: it must be the key the file was encrypted with (the one DBVault printed, or the one saved with `dbvault keygen --save`)";

export interface FernetKey {
  signing: Buffer;
  encryption: Buffer;
}

export interface FernetEncryptOptions {
  /** The IV; random unless given (the spec's test vectors fix it). */
  iv?: Buffer;
  /** The token's time, in seconds since the epoch or as a Date; now unless given. */
  now?: number | Date;
}

export interface FernetDecryptOptions {
  /**
   * Refuse tokens older than this many seconds, or more than 60 s in the future (the spec's TTL and clock-skew rules).
   * Without it no time is checked: a backup is meant to be read years after it was made, on any clock.
   */
  ttlSeconds?: number;
  /** The time the TTL is measured against (seconds since the epoch, or a Date); now unless given. */
  now?: number | Date;
}

/** What the first pass over an encrypted file learns; the second pass checks the file is still the same. */
export interface FernetFileInfo {
  /** The token's timestamp: when the backup was encrypted. */
  timestamp: Date;
  /** Bytes of the decoded token. */
  tokenBytes: number;
  /** Bytes of the plaintext (exact: ciphertext length minus the padding of its last block). */
  plainBytes: number;
  /** The HMAC at the end of the token; the second pass must compute the same one. */
  mac: Buffer;
}

function seconds(t: number | Date | undefined): number {
  if (t === undefined) return Math.floor(Date.now() / 1000);
  return t instanceof Date ? Math.floor(t.getTime() / 1000) : Math.floor(t);
}

/** A new random key, url-safe base64 with padding, the form Python's `Fernet.generate_key()` prints. */
export function fernetGenerateKey(): string {
  return randomBytes(32).toString("base64url") + "=";
}

const B64URL_RE = /^[A-Za-z0-9_-]*={0,2}$/;

/** True when `s` looks like a Fernet key (so that callers can tell one apart from an age key or a path). */
export function isFernetKey(s: string): boolean {
  try {
    parseFernetKey(s);
    return true;
  } catch {
    return false;
  }
}

/** Splits a key into its signing and encryption halves. Never puts the key itself in an error. */
export function parseFernetKey(key: string): FernetKey {
  const s = key.trim();
  // Python's urlsafe_b64decode also takes standard base64; keys pasted from elsewhere sometimes use it.
  const normal = s.replace(/\+/g, "-").replace(/\//g, "_");
  if (!B64URL_RE.test(normal) || normal.replace(/=+$/, "").length !== 43) {
    throw new DbkeepError("USAGE", "the key is not a Fernet key", { hint: KEY_HINT });
  }
  const raw = Buffer.from(normal.replace(/=+$/, ""), "base64url");
  if (raw.length !== 32) throw new DbkeepError("USAGE", "the key is not a Fernet key", { hint: KEY_HINT });
  return { signing: raw.subarray(0, 16), encryption: raw.subarray(16, 32) };
}

/** Encrypts `plain` into a token (url-safe base64 with padding, as every Fernet implementation writes it). */
export function fernetEncrypt(plain: Buffer, key: string, opts: FernetEncryptOptions = {}): string {
  const k = parseFernetKey(key);
  const iv = opts.iv ?? randomBytes(16);
  if (iv.length !== 16) throw new DbkeepError("INTERNAL", "a Fernet IV is 16 bytes");
  const head = Buffer.alloc(HEADER);
  head[0] = VERSION;
  head.writeBigUInt64BE(BigInt(seconds(opts.now)), 1);
  iv.copy(head, 9);
  const cipher = createCipheriv("aes-128-cbc", k.encryption, iv);
  const body = Buffer.concat([head, cipher.update(plain), cipher.final()]);
  const token = Buffer.concat([body, createHmac("sha256", k.signing).update(body).digest()]);
  // base64url without padding, then the padding every Fernet implementation writes: 2 for n%3==1, 1 for n%3==2.
  return token.toString("base64url") + "=".repeat((3 - (token.length % 3)) % 3);
}

function damaged(what: string, cause?: unknown): DbkeepError {
  return new DbkeepError("CORRUPT_BACKUP", `not a valid Fernet token: ${what}`, {
    hint: "the file is damaged or is not a DBVault .enc file (those are Fernet tokens: url-safe base64 starting with gAAAAA)",
    cause,
  });
}

function wrongKey(): DbkeepError {
  return new DbkeepError("DECRYPT_FAILED", "the Fernet token's HMAC does not match: wrong key, or the file was changed after it was encrypted", {
    hint: WRONG_KEY_HINT,
  });
}

/**
 * A strict streaming decoder of url-safe base64: whitespace anywhere is skipped (files sometimes end with a newline),
 * padding is optional but only at the end, any other character is an error. Feed it pieces of any size.
 */
export class Base64UrlDecoder {
  private rest = "";
  private padded = false;

  push(chunk: Buffer | string): Buffer {
    let s = (typeof chunk === "string" ? chunk : chunk.toString("latin1")).replace(/[\t\n\r ]/g, "");
    if (s.length === 0) return Buffer.alloc(0);
    if (this.padded) {
      if (!/^=*$/.test(s)) throw damaged("characters after the base64 padding");
      this.rest += s;
      return Buffer.alloc(0);
    }
    const eq = s.indexOf("=");
    if (eq >= 0) {
      if (!/^=*$/.test(s.slice(eq))) throw damaged("characters after the base64 padding");
      this.padded = true;
    }
    s = this.rest + s;
    if (!/^[A-Za-z0-9_-]*=*$/.test(s)) throw damaged("a character that is not url-safe base64");
    if (this.padded) {
      this.rest = s;
      return Buffer.alloc(0);
    }
    const whole = s.length - (s.length % 4);
    this.rest = s.slice(whole);
    return Buffer.from(s.slice(0, whole), "base64url");
  }

  end(): Buffer {
    const s = this.rest;
    this.rest = "";
    const data = s.replace(/=+$/, "");
    const pad = s.length - data.length;
    if (data.length % 4 === 1) throw damaged("truncated base64");
    if (pad > 0 && (data.length + pad) % 4 !== 0) throw damaged("wrong base64 padding");
    return Buffer.from(data, "base64url");
  }
}

function decodeToken(token: string | Buffer): Buffer {
  const d = new Base64UrlDecoder();
  return Buffer.concat([d.push(token), d.end()]);
}

function checkTime(ts: number, opts: FernetDecryptOptions): void {
  if (opts.ttlSeconds === undefined) return;
  const now = seconds(opts.now);
  if (ts > now + MAX_CLOCK_SKEW) {
    throw new DbkeepError("DECRYPT_FAILED", "the Fernet token's timestamp is in the future", { hint: "check this machine's clock" });
  }
  if (now - ts > opts.ttlSeconds) {
    throw new DbkeepError("DECRYPT_FAILED", `the Fernet token is older than ${opts.ttlSeconds} s`);
  }
}

function checkShape(total: number, first: number | undefined): void {
  if (first !== undefined && first !== VERSION) throw damaged(`version byte 0x${first.toString(16).padStart(2, "0")} (expected 0x80)`);
  if (total < MIN_TOKEN) throw damaged(`${total} bytes is too short`);
  if ((total - HEADER - MAC) % BLOCK !== 0) throw damaged("the ciphertext is not a whole number of AES blocks");
}

/** Decrypts a whole token held in memory. Wrong key or damaged token -> DbkeepError (DECRYPT_FAILED or CORRUPT_BACKUP). */
export function fernetDecrypt(token: string | Buffer, key: string, opts: FernetDecryptOptions = {}): Buffer {
  const k = parseFernetKey(key);
  const raw = decodeToken(token);
  checkShape(raw.length, raw[0]);
  const body = raw.subarray(0, raw.length - MAC);
  const mac = createHmac("sha256", k.signing).update(body).digest();
  if (!timingSafeEqual(mac, raw.subarray(raw.length - MAC))) throw wrongKey();
  checkTime(Number(raw.readBigUInt64BE(1)), opts);
  const decipher = createDecipheriv("aes-128-cbc", k.encryption, raw.subarray(9, HEADER));
  try {
    return Buffer.concat([decipher.update(body.subarray(HEADER)), decipher.final()]);
  } catch (err) {
    // The MAC matched, so the key signed this token: a padding error here means it was made wrongly, not damaged.
    throw damaged("bad padding in the plaintext", err);
  }
}

/** The timestamp of a token (read without the key; not authenticated until the token is decrypted). */
export function fernetTimestamp(head: string | Buffer): Date {
  const d = new Base64UrlDecoder();
  const s = (typeof head === "string" ? head : head.toString("latin1")).slice(0, 16);
  const raw = Buffer.concat([d.push(s.replace(/=+$/, "")), d.end()]);
  if (raw.length < 9 || raw[0] !== VERSION) throw damaged("no Fernet header");
  return new Date(Number(raw.readBigUInt64BE(1)) * 1000);
}

/**
 * True when the first bytes of a file look like a Fernet token: base64 of 0x80 and a timestamp before 2106, which
 * is always "gAAAAA". For telling `.enc` files apart by content, not by name.
 */
export function looksLikeFernet(head: Buffer): boolean {
  const s = head.subarray(0, 64).toString("latin1");
  return /^gAAAAA[A-Za-z0-9_-]*/.test(s) && /^[A-Za-z0-9_=-]*$/.test(s.replace(/[\r\n]+$/, ""));
}

/** Yields the decoded bytes of a token file, a piece at a time. */
async function* decodedPieces(path: string): AsyncGenerator<Buffer> {
  const d = new Base64UrlDecoder();
  for await (const chunk of createReadStream(path, { highWaterMark: 256 * 1024 })) {
    const b = d.push(chunk as Buffer);
    if (b.length > 0) yield b;
  }
  const last = d.end();
  if (last.length > 0) yield last;
}

interface TokenEnd {
  total: number;
  mac: Buffer;
  first: number | undefined;
}

/**
 * Walks the decoded token once, yielding everything before the MAC in order, in pieces, with its offset; when done
 * `end` holds the MAC and the total length. Holds back only the last 32 bytes, so memory does not grow with the
 * file, and reads only as fast as the consumer takes pieces.
 */
async function* tokenBody(path: string, end: TokenEnd): AsyncGenerator<{ piece: Buffer; offset: number }> {
  let held = Buffer.alloc(0);
  let offset = 0;
  for await (const piece of decodedPieces(path)) {
    if (end.first === undefined) {
      end.first = piece[0];
      // Fail early on a file that is not Fernet at all, before reading gigabytes of it.
      if (end.first !== VERSION) checkShape(piece.length, end.first);
    }
    end.total += piece.length;
    const buf = held.length > 0 ? Buffer.concat([held, piece]) : piece;
    const n = buf.length - MAC;
    if (n > 0) {
      yield { piece: buf.subarray(0, n), offset };
      offset += n;
      held = Buffer.from(buf.subarray(n));
    } else {
      held = Buffer.from(buf);
    }
  }
  end.mac = held;
}

/**
 * First pass over an encrypted file: checks its shape and its HMAC (in constant time) without decrypting anything.
 * Wrong key or damaged file -> DbkeepError.
 */
export async function fernetVerifyFile(inPath: string, key: string, opts: FernetDecryptOptions = {}): Promise<FernetFileInfo> {
  const k = parseFernetKey(key);
  const hmac = createHmac("sha256", k.signing);
  let header = Buffer.alloc(0);
  let lastBlocks = Buffer.alloc(0);
  const w: TokenEnd = { total: 0, mac: Buffer.alloc(0), first: undefined };
  for await (const { piece, offset } of tokenBody(inPath, w)) {
    hmac.update(piece);
    if (offset < HEADER) header = Buffer.concat([header, piece.subarray(0, HEADER - offset)]);
    lastBlocks = Buffer.from(Buffer.concat([lastBlocks, piece]).subarray(-2 * BLOCK));
  }
  checkShape(w.total, w.first);
  const mac = hmac.digest();
  if (!timingSafeEqual(mac, w.mac)) throw wrongKey();
  const ts = Number(header.readBigUInt64BE(1));
  checkTime(ts, opts);
  // The padding length is in the last plaintext block: decrypting that one block (its IV is the block before it)
  // gives the exact plaintext size without a second full pass. The MAC has matched, so this decrypts signed data.
  const ctLen = w.total - HEADER - MAC;
  const prev = ctLen > BLOCK ? lastBlocks.subarray(0, BLOCK) : header.subarray(9, HEADER);
  const d = createDecipheriv("aes-128-cbc", k.encryption, prev).setAutoPadding(false);
  const last = Buffer.concat([d.update(lastBlocks.subarray(-BLOCK)), d.final()]);
  const pad = last[BLOCK - 1]!;
  if (pad < 1 || pad > BLOCK || !last.subarray(BLOCK - pad).every((b) => b === pad)) throw damaged("bad padding in the plaintext");
  return { timestamp: new Date(ts * 1000), tokenBytes: w.total, plainBytes: ctLen - pad, mac };
}

/**
 * Second pass: the plaintext of a file that `fernetVerifyFile` has checked, as a stream. It computes the HMAC again
 * while it reads and fails (before its end) if the file is not the one that was checked, so a file changed between
 * the passes never yields a complete plaintext. Memory stays constant.
 */
export function fernetDecryptStream(inPath: string, key: string, info: FernetFileInfo): Readable {
  const k = parseFernetKey(key);
  async function* plain(): AsyncGenerator<Buffer> {
    const hmac = createHmac("sha256", k.signing);
    let header = Buffer.alloc(0);
    let decipher: Decipher | undefined;
    const w: TokenEnd = { total: 0, mac: Buffer.alloc(0), first: undefined };
    for await (const { piece, offset } of tokenBody(inPath, w)) {
      hmac.update(piece);
      let p = piece;
      if (offset < HEADER) {
        const take = Math.min(HEADER - offset, p.length);
        header = Buffer.concat([header, p.subarray(0, take)]);
        p = p.subarray(take);
        if (header.length === HEADER) decipher = createDecipheriv("aes-128-cbc", k.encryption, header.subarray(9, HEADER));
      }
      if (p.length > 0 && decipher) {
        const out = decipher.update(p);
        if (out.length > 0) yield out;
      }
    }
    if (w.total !== info.tokenBytes || !decipher || !timingSafeEqual(hmac.digest(), w.mac) || !timingSafeEqual(w.mac, info.mac)) {
      throw new DbkeepError("CORRUPT_BACKUP", "the encrypted file changed while it was being decrypted", {
        hint: "make sure nothing writes to the file, then run the command again",
      });
    }
    try {
      const tail = decipher.final();
      if (tail.length > 0) yield tail;
    } catch (err) {
      throw damaged("bad padding in the plaintext", err);
    }
  }
  return Readable.from(plain(), { objectMode: false });
}

/**
 * Decrypts a Fernet-encrypted file (a seed 002 `.enc`) to `outPath` in two streaming passes: the HMAC is verified
 * first without decrypting, then the file is decrypted into a temporary name beside `outPath` that is renamed only
 * when complete and checked again. Nothing is left under `outPath` on failure.
 */
export async function fernetDecryptFile(inPath: string, outPath: string, key: string, opts: FernetDecryptOptions = {}): Promise<FernetFileInfo> {
  const info = await fernetVerifyFile(inPath, key, opts);
  const tmp = join(dirname(outPath), `.${basename(outPath)}.part-${process.pid}-${randomBytes(4).toString("hex")}`);
  try {
    await pipeline(fernetDecryptStream(inPath, key, info), createWriteStream(tmp, { flags: "wx", mode: 0o600 }));
    const fh = await open(tmp, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, outPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return info;
}
