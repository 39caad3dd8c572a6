import { randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { sourceFromUrl } from "../../src/config/urls.js";
import { Crc64, crc64 } from "../../src/engines/redis/crc64.js";
import { RdbCheck } from "../../src/engines/redis/rdb.js";
import { dumpPayloadOk, encodeCommand, LOGICAL_HEADER, LOGICAL_TRAILER, LogicalCheck, printable, RespReader } from "../../src/engines/redis/resp.js";

/** An RDB file as Redis frames it: magic, version, body, EOF opcode, CRC-64 of everything before it. */
function rdb(body: Buffer, version = "0010"): Buffer {
  const head = Buffer.concat([Buffer.from(`REDIS${version}`, "latin1"), body, Buffer.from([0xff])]);
  return Buffer.concat([head, new Crc64().update(head).digest()]);
}

/** A DUMP payload as Redis frames it: value, 2-byte RDB version, CRC-64. */
function payload(value: Buffer): Buffer {
  const head = Buffer.concat([value, Buffer.from([10, 0])]);
  return Buffer.concat([head, new Crc64().update(head).digest()]);
}

async function run(data: Buffer, o: ConstructorParameters<typeof RdbCheck>[0], chunk = 7): Promise<{ out: Buffer; check: RdbCheck }> {
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) parts.push(data.subarray(i, i + chunk));
  const out: Buffer[] = [];
  const check = new RdbCheck(o);
  await pipeline(Readable.from(parts), check, new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) }));
  return { out: Buffer.concat(out), check };
}

describe("CRC-64/JONES", () => {
  it("matches the test vector of Redis's crc64.c", () => {
    expect(crc64(Buffer.from("123456789"))).toBe(0xe9c6d914c4b8d9can);
  });

  it("gives the same result however the input is split, and as a bit-by-bit reference", () => {
    const poly = 0x95ac9329ac4bc9b5n;
    const reference = (buf: Buffer) => {
      let c = 0n;
      for (const b of buf) {
        c ^= BigInt(b);
        for (let i = 0; i < 8; i++) c = c & 1n ? (c >> 1n) ^ poly : c >> 1n;
      }
      return c;
    };
    for (const n of [0, 1, 7, 8, 9, 63, 64, 65, 1000]) {
      const buf = randomBytes(n);
      const whole = crc64(buf);
      expect(whole).toBe(reference(buf));
      const split = new Crc64();
      for (let i = 0; i < n; i += 5) split.update(buf.subarray(i, i + 5));
      expect(split.value()).toBe(whole);
    }
  });
});

describe("RdbCheck", () => {
  const file = rdb(randomBytes(5000));

  it("passes a complete snapshot through unchanged, at any chunk size", async () => {
    for (const chunk of [1, 7, 48, 49, 50, 4096, 100_000]) {
      const { out, check } = await run(file, { code: "CORRUPT_BACKUP", what: "x" }, chunk);
      expect(out.equals(file)).toBe(true);
      expect(check.info).toEqual({ version: 10, bytes: file.length, checksummed: true });
    }
  });

  it("removes the end-of-transfer mark that redis-cli --rdb - leaves on a pipe, and only in the dump", async () => {
    const marked = Buffer.concat([file, Buffer.from("0123456789abcdef0123456789abcdef01234567", "latin1")]);
    for (const chunk of [3, 40, 64 * 1024]) {
      const { out } = await run(marked, { eofMark: true, code: "ENGINE_FAILED", what: "x" }, chunk);
      expect(out.equals(file)).toBe(true);
    }
    // Without a mark the same stage keeps every byte.
    expect((await run(file, { eofMark: true, code: "ENGINE_FAILED", what: "x" })).out.equals(file)).toBe(true);
    await expect(run(marked, { code: "CORRUPT_BACKUP", what: "the backup" })).rejects.toThrow(/the backup is not a complete RDB snapshot/);
  });

  it("refuses a flipped byte anywhere, a truncated file, a wrong header and an empty input", async () => {
    for (const at of [9, 100, 2500, file.length - 12, file.length - 3]) {
      const bad = Buffer.from(file);
      bad[at]! ^= 0x01;
      await expect(run(bad, { code: "CORRUPT_BACKUP", what: "the backup" })).rejects.toMatchObject({ code: "CORRUPT_BACKUP" });
    }
    await expect(run(file.subarray(0, file.length - 1000), { code: "CORRUPT_BACKUP", what: "b" })).rejects.toThrow(/truncated|checksum/);
    await expect(run(Buffer.concat([Buffer.from("REDIX0010"), file.subarray(9)]), { code: "CORRUPT_BACKUP", what: "b" })).rejects.toThrow(/header/);
    await expect(run(Buffer.alloc(0), { code: "CORRUPT_BACKUP", what: "b" })).rejects.toThrow(/empty/);
  });

  it("accepts a zero checksum (rdbchecksum no) and says it could not check it", async () => {
    const head = Buffer.concat([Buffer.from("REDIS0010"), randomBytes(300), Buffer.from([0xff])]);
    const { check } = await run(Buffer.concat([head, Buffer.alloc(8)]), { code: "CORRUPT_BACKUP", what: "x" });
    expect(check.info?.checksummed).toBe(false);
  });
});

describe("RESP reader and the logical dump check", () => {
  const keys = [Buffer.from([0x00, 0xff, 0x0d, 0x0a]), Buffer.from("plain"), Buffer.from("ключ"), Buffer.alloc(0)];
  const dump = Buffer.concat([
    encodeCommand(["ECHO", LOGICAL_HEADER]),
    encodeCommand(["SELECT", "0"]),
    ...keys.map((k, i) => encodeCommand(["RESTORE", k, String(i * 1000), payload(Buffer.concat([Buffer.from("\r\n$3\r\n*1"), randomBytes(i * 300)]))])),
    encodeCommand(["SELECT", "5"]),
    encodeCommand(["RESTORE", "big", "0", payload(randomBytes(20_000))]),
    encodeCommand(["ECHO", `${LOGICAL_TRAILER}${keys.length + 1}`]),
  ]);

  function read(data: Buffer, chunk: number): Buffer[][] {
    const r = new RespReader();
    const cmds: Buffer[][] = [];
    for (let i = 0; i < data.length; i += chunk) cmds.push(...r.push(data.subarray(i, i + chunk)));
    r.end();
    return cmds;
  }

  it("reads binary-safe commands back exactly, however the bytes are split", () => {
    const whole = read(dump, dump.length);
    expect(whole).toHaveLength(keys.length + 5);
    expect(whole.slice(2, 2 + keys.length).map((c) => c[1])).toEqual(keys);
    for (const chunk of [1, 2, 3, 17, 4096]) expect(read(dump, chunk)).toEqual(whole);
  });

  it("checks header, payload checksums and the trailer's key count", () => {
    const check = new LogicalCheck();
    for (const cmd of read(dump, 1000)) check.command(cmd);
    const s = check.end();
    expect(s.keys).toBe(keys.length + 1);
    expect([...s.databases]).toEqual([[0, keys.length], [5, 1]]);

    const noTrailer = new LogicalCheck();
    for (const cmd of read(dump.subarray(0, dump.lastIndexOf(encodeCommand(["ECHO", `${LOGICAL_TRAILER}${keys.length + 1}`]))), 1000)) noTrailer.command(cmd);
    expect(() => noTrailer.end()).toThrow(/truncated/);

    const flipped = Buffer.from(dump);
    flipped[dump.length - 5000]! ^= 0x40; // inside the large payload
    const c2 = new LogicalCheck();
    expect(() => read(flipped, 4096).forEach((cmd) => c2.command(cmd))).toThrow(/fails its CRC-64 check/);
  });

  it("refuses what is not a command stream, and input that stops mid-command", () => {
    expect(() => read(Buffer.from("SET a b\r\n"), 10)).toThrow(/malformed/);
    expect(() => read(dump.subarray(0, dump.length - 3), 100)).toThrow(/middle of a command/);
    expect(() => new LogicalCheck().command([Buffer.from("FLUSHALL")])).toThrow(/header/);
  });

  it("checks a DUMP payload's own CRC-64", () => {
    const p = payload(Buffer.from("value"));
    expect(dumpPayloadOk(p)).toBe(true);
    p[0]! ^= 1;
    expect(dumpPayloadOk(p)).toBe(false);
    expect(dumpPayloadOk(Buffer.from("short"))).toBe(false);
  });

  it("prints binary keys readably", () => {
    expect(printable(Buffer.from([0x00, 0x41, 0xff]))).toBe("\\x00A\\xff");
    expect(printable(Buffer.from("user:ключ"))).toBe("user:ключ");
  });
});

describe("redis URLs", () => {
  it("reads user, password, host, port, database and options, and warns about the password", () => {
    const s = sourceFromUrl("redis://backup:s%40cret@cache.internal:6380/3?mode=logical&compression=zstd");
    expect(s.engine).toBe("redis");
    expect(s.options).toMatchObject({ host: "cache.internal", port: 6380, username: "backup", password: "s@cret", db: 3, mode: "logical", compression: "zstd" });
    expect(s.warnings[0]).toMatch(/process list; use REDISCLI_AUTH/);
  });

  it("defaults to 127.0.0.1:6379, rdb mode; rediss:// is TLS", () => {
    expect(sourceFromUrl("redis://localhost").options).toMatchObject({ host: "localhost", port: 6379, mode: "rdb", tls: false });
    expect(sourceFromUrl("rediss://[::1]:6390?tls_ca=/etc/ca.pem").options).toMatchObject({ host: "::1", port: 6390, tls: true, tls_ca: "/etc/ca.pem" });
    expect(sourceFromUrl("redis://h:6379?rdb_path=/var/lib/redis/dump.rdb").options).toMatchObject({ rdb_path: "/var/lib/redis/dump.rdb" });
  });

  it("refuses a path that is not a database number and unknown parameters", () => {
    expect(() => sourceFromUrl("redis://h/cache")).toThrow(/database number/);
    expect(() => sourceFromUrl("redis://h/0?format=custom")).toThrow(/unknown parameter "format"/);
  });
});
