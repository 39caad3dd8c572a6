import { Transform, type TransformCallback } from "node:stream";
import { DbkeepError, type ErrorCode } from "../../core/errors.js";
import { Crc64 } from "./crc64.js";

/** RDB_OPCODE_EOF: the byte before the checksum. */
const OPCODE_EOF = 0xff;
/** The mark a diskless primary sends after the payload (RDB_EOF_MARK_SIZE): 40 random hex characters. */
const EOF_MARK = 40;
const MAGIC = Buffer.from("REDIS", "latin1");

export interface RdbCheckOptions {
  /**
   * Accept and remove the 40-byte end-of-transfer mark that `redis-cli --rdb -` leaves on stdout when the server
   * streams the snapshot diskless (redis-cli cuts it off a regular file with ftruncate, which a pipe does not
   * support). Only for the dump: a stored backup never carries it.
   */
  eofMark?: boolean;
  /** Error code for a bad snapshot: ENGINE_FAILED while dumping, CORRUPT_BACKUP when reading a backup. */
  code: ErrorCode;
  /** What to call the data in messages. */
  what: string;
}

export interface RdbInfo {
  version: number;
  bytes: number;
  /** False when the server writes RDB files without a checksum (rdbchecksum no): then only the framing is checked. */
  checksummed: boolean;
}

/**
 * Passes an RDB file through and fails the stream at its end unless it is a complete snapshot: the magic `REDIS`,
 * a four-digit version, and at the end the EOF opcode followed by the CRC-64 of everything before it. Bytes are
 * held back only as far as the trailer needs (49), so nothing downstream ever sees the end of a damaged snapshot.
 */
export class RdbCheck extends Transform {
  #crc = new Crc64();
  #held: Buffer = Buffer.alloc(0);
  #head: Buffer = Buffer.alloc(0);
  #bytes = 0;
  readonly #hold: number;
  readonly #o: RdbCheckOptions;
  info: RdbInfo | undefined;

  constructor(o: RdbCheckOptions) {
    super();
    this.#o = o;
    this.#hold = 1 + 8 + (o.eofMark ? EOF_MARK : 0);
  }

  #fail(message: string): DbkeepError {
    return new DbkeepError(this.#o.code, `${this.#o.what} is not a complete RDB snapshot: ${message}`, {
      hint: this.#o.code === "CORRUPT_BACKUP" ? "the backup is damaged; restore another one" : "the server sent a damaged or truncated snapshot; run the backup again",
    });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.#head.length < 9) {
      this.#head = Buffer.concat([this.#head, chunk.subarray(0, 9 - this.#head.length)]);
      if (!this.#headerOk(this.#head)) return cb(this.#fail("the header is not REDIS followed by a four-digit version"));
    }
    this.#bytes += chunk.length;
    if (chunk.length >= this.#hold) {
      this.#release(this.#held);
      this.#release(chunk.subarray(0, chunk.length - this.#hold));
      this.#held = Buffer.from(chunk.subarray(chunk.length - this.#hold));
    } else {
      const all = Buffer.concat([this.#held, chunk]);
      const keep = Math.min(this.#hold, all.length);
      this.#release(all.subarray(0, all.length - keep));
      this.#held = all.subarray(all.length - keep);
    }
    cb();
  }

  #release(part: Buffer): void {
    if (!part.length) return;
    this.#crc.update(part);
    this.push(part);
  }

  #headerOk(head: Buffer): boolean {
    const n = Math.min(head.length, 5);
    if (!head.subarray(0, n).equals(MAGIC.subarray(0, n))) return false;
    return /^\d*$/.test(head.subarray(5).toString("latin1"));
  }

  override _flush(cb: TransformCallback): void {
    if (this.#bytes < 10) return cb(this.#fail(this.#bytes === 0 ? "it is empty" : `it is only ${this.#bytes} bytes`));
    const tail = this.#held;
    const version = Number(this.#head.subarray(5, 9).toString("latin1"));
    // RDB files carry a checksum since version 5 (Redis 2.6); older ones end with the EOF opcode alone.
    const sumLen = version >= 5 ? 8 : 0;
    let match: number | undefined;
    let zeroSum: number | undefined;
    let sawEof = false;
    for (const markLen of this.#o.eofMark ? [0, EOF_MARK] : [0]) {
      const end = tail.length - markLen;
      const eofAt = end - sumLen - 1;
      if (eofAt < 0 || tail[eofAt] !== OPCODE_EOF) continue;
      if (markLen && !/^[0-9a-f]{40}$/.test(tail.subarray(end).toString("latin1"))) continue;
      sawEof = true;
      const stored = tail.subarray(end - sumLen, end);
      // The running CRC covers the released bytes; a copy is advanced over the held ones up to the checksum.
      if (sumLen === 0 || this.#crc.clone().update(tail.subarray(0, end - sumLen)).digest().equals(stored)) {
        match = markLen;
        break;
      }
      // Redis writes zeros when rdbchecksum is off, and loads such a file without checking it.
      if (stored.every((b) => b === 0)) zeroSum ??= markLen;
    }
    const markLen = match ?? zeroSum;
    if (markLen === undefined) {
      return cb(this.#fail(sawEof ? "its CRC-64 checksum does not match (the data is damaged)" : "it does not end with the RDB end marker and checksum (truncated or damaged)"));
    }
    this.info = { version, bytes: this.#bytes - markLen, checksummed: sumLen > 0 && match !== undefined };
    const out = tail.subarray(0, tail.length - markLen);
    if (out.length) this.push(out);
    cb();
  }
}
