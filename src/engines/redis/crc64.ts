/**
 * CRC-64/JONES as Redis computes it (src/crc64.c): reflected polynomial 0xad93d23594c935a9, initial value 0, no
 * final xor. It guards RDB files (the last 8 bytes, little-endian) and every DUMP payload. The state is kept as two
 * 32-bit halves so that no BigInt arithmetic runs per byte, and eight bytes are folded per step (slicing-by-8):
 * an RDB snapshot is checked at hundreds of MB/s while it streams.
 */
const POLY_LO = 0xac4bc9b5; // 0x95ac9329ac4bc9b5 is the bit-reversed polynomial
const POLY_HI = 0x95ac9329;

const LO = new Uint32Array(8 * 256);
const HI = new Uint32Array(8 * 256);

for (let i = 0; i < 256; i++) {
  let lo = i;
  let hi = 0;
  for (let bit = 0; bit < 8; bit++) {
    const odd = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (odd) {
      lo = (lo ^ POLY_LO) >>> 0;
      hi = (hi ^ POLY_HI) >>> 0;
    }
  }
  LO[i] = lo;
  HI[i] = hi;
}
for (let t = 1; t < 8; t++) {
  for (let i = 0; i < 256; i++) {
    const plo = LO[(t - 1) * 256 + i]!;
    const phi = HI[(t - 1) * 256 + i]!;
    const idx = plo & 0xff;
    LO[t * 256 + i] = (((plo >>> 8) | (phi << 24)) ^ LO[idx]!) >>> 0;
    HI[t * 256 + i] = ((phi >>> 8) ^ HI[idx]!) >>> 0;
  }
}

/** An incremental CRC-64/JONES. */
export class Crc64 {
  #lo = 0;
  #hi = 0;

  update(buf: Uint8Array): this {
    let lo = this.#lo;
    let hi = this.#hi;
    let p = 0;
    const n = buf.length;
    const end8 = n - (n % 8);
    for (; p < end8; p += 8) {
      lo ^= buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24);
      hi ^= buf[p + 4]! | (buf[p + 5]! << 8) | (buf[p + 6]! << 16) | (buf[p + 7]! << 24);
      const l = lo >>> 0;
      const h = hi >>> 0;
      lo = LO[1792 + (l & 0xff)]! ^ LO[1536 + ((l >>> 8) & 0xff)]! ^ LO[1280 + ((l >>> 16) & 0xff)]! ^ LO[1024 + (l >>> 24)]! ^
        LO[768 + (h & 0xff)]! ^ LO[512 + ((h >>> 8) & 0xff)]! ^ LO[256 + ((h >>> 16) & 0xff)]! ^ LO[h >>> 24]!;
      hi = HI[1792 + (l & 0xff)]! ^ HI[1536 + ((l >>> 8) & 0xff)]! ^ HI[1280 + ((l >>> 16) & 0xff)]! ^ HI[1024 + (l >>> 24)]! ^
        HI[768 + (h & 0xff)]! ^ HI[512 + ((h >>> 8) & 0xff)]! ^ HI[256 + ((h >>> 16) & 0xff)]! ^ HI[h >>> 24]!;
    }
    for (; p < n; p++) {
      const idx = (lo ^ buf[p]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ LO[idx]!;
      hi = (hi >>> 8) ^ HI[idx]!;
    }
    this.#lo = lo >>> 0;
    this.#hi = hi >>> 0;
    return this;
  }

  /** A copy of the running state, to be advanced separately. */
  clone(): Crc64 {
    const c = new Crc64();
    c.#lo = this.#lo;
    c.#hi = this.#hi;
    return c;
  }

  /** The checksum as Redis stores it: 8 bytes, little-endian. */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32LE(this.#lo, 0);
    out.writeUInt32LE(this.#hi, 4);
    return out;
  }

  /** The checksum as a number, for tests and messages. */
  value(): bigint {
    return (BigInt(this.#hi) << 32n) | BigInt(this.#lo);
  }
}

export function crc64(buf: Uint8Array): bigint {
  return new Crc64().update(buf).value();
}
