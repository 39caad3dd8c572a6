import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { inflateSync } from "node:zlib";
import * as testkit from "cctv-age";
import { describe, expect, it } from "vitest";
import { AgeError, createAgeDecryptStream, createAgeEncryptStream, encodeHeaderNoMac, parseHeader, parseIdentityFile, ScryptIdentity, ScryptRecipient, X25519Identity, X25519Recipient, type Identity, type Recipient } from "../../src/crypto/age.js";
import { bech32Decode, bech32Encode } from "../../src/crypto/bech32.js";
import { decodeRecipient, generateIdentityFile, recipientOf } from "../../src/crypto/keys.js";
import { tempDir } from "../helpers/env.js";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Feeds `data` in pieces of varying size, so that header, nonce and chunk boundaries fall anywhere. */
function pieces(data: Buffer, seed = 1): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  let s = seed;
  while (i < data.length) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const n = 1 + (s % 70_000);
    out.push(data.subarray(i, i + n));
    i += n;
  }
  return out;
}

/** Decrypts, returning what was released before a failure too (the test vectors check it). */
async function decrypt(data: Buffer, identities: Identity[], seed = 1): Promise<{ plaintext: Buffer; error?: unknown }> {
  const d = createAgeDecryptStream(identities);
  const chunks: Buffer[] = [];
  d.on("data", (c: Buffer) => chunks.push(c));
  const done = new Promise<void>((resolve, reject) => {
    d.on("end", resolve);
    d.on("error", reject);
  });
  // No waiting for "drain": a stream that failed never emits it; the inputs here are a few MiB at most.
  for (const p of pieces(data, seed)) d.write(p);
  d.end();
  try {
    await done;
    return { plaintext: Buffer.concat(chunks) };
  } catch (error) {
    return { plaintext: Buffer.concat(chunks), error };
  }
}

async function encrypt(data: Buffer, recipients: Recipient[]): Promise<Buffer> {
  const e = createAgeEncryptStream(recipients);
  const out: Buffer[] = [];
  e.on("data", (c: Buffer) => out.push(c));
  const done = new Promise<void>((resolve, reject) => {
    e.on("end", resolve);
    e.on("error", reject);
  });
  Readable.from(pieces(data, 7)).pipe(e);
  await done;
  return Buffer.concat(out);
}

function age(args: string[], input: Buffer): { code: number; stdout: Buffer; stderr: string } {
  const r = spawnSync("age", args, { input, maxBuffer: 256 * 1024 * 1024 });
  if (r.error) throw new Error(`the reference age tool is needed (apt-get install age): ${r.error.message}`);
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

interface Vector {
  name: string;
  meta: Record<string, string[]>;
  body: Buffer;
}

const vectors: Vector[] = Object.entries(testkit as unknown as Record<string, Uint8Array>)
  .filter(([name, v]) => name !== "default" && v instanceof Uint8Array)
  .map(([name, raw]) => {
    const buf = Buffer.from(raw);
    const sep = buf.indexOf("\n\n");
    const meta: Record<string, string[]> = {};
    for (const line of buf.subarray(0, sep).toString("utf8").split("\n")) {
      const i = line.indexOf(": ");
      (meta[line.slice(0, i)] ??= []).push(line.slice(i + 2));
    }
    let body = buf.subarray(sep + 2);
    if (meta.compressed?.[0] === "zlib") body = inflateSync(body);
    return { name, meta, body };
  });

const EXPECT: Record<string, string> = { "header failure": "header", "no match": "no-match", "HMAC failure": "hmac", "payload failure": "payload" };

/** What dbkeep does not implement: ASCII armor (backups are binary) and post-quantum hybrid (ML-KEM) identities. */
const unsupported = (v: Vector) => v.meta.armored !== undefined || (v.meta.identity ?? []).some((i) => i.startsWith("AGE-SECRET-KEY-PQ-"));

describe("age test vectors (C2SP CCTV, npm cctv-age)", () => {
  it("are all there; only armored and hybrid ML-KEM vectors are left out", () => {
    expect(vectors.length).toBeGreaterThan(140);
    const left = vectors.filter(unsupported).map((v) => v.name);
    expect(left.every((n) => n.startsWith("armor_") || n.startsWith("hybrid"))).toBe(true);
    expect(vectors.length - left.length).toBeGreaterThan(90);
  });
  for (const v of vectors.filter((x) => !unsupported(x))) {
    const expectation = v.meta.expect![0]!;
    it(`${v.name}: ${expectation}`, async () => {
      const ids: Identity[] = [...(v.meta.identity ?? []).map((i) => new X25519Identity(i)), ...(v.meta.passphrase ?? []).map((p) => new ScryptIdentity(p))];
      if (ids.length === 0) ids.push(new X25519Identity(generateIdentityFile().identity));
      const r = await decrypt(v.body, ids);
      if (expectation === "success") {
        expect(r.error).toBeUndefined();
      } else {
        expect(r.error).toBeInstanceOf(AgeError);
        expect((r.error as AgeError).reason).toBe(EXPECT[expectation]);
        expect((r.error as AgeError).code).toBe("DECRYPT_FAILED");
      }
      if (v.meta.payload) expect(sha256(r.plaintext)).toBe(v.meta.payload[0]);
      if (expectation !== "header failure") {
        const h = parseHeader(v.body)!;
        expect(encodeHeaderNoMac(h.stanzas).equals(h.headerNoMac)).toBe(true);
      }
    });
  }
});

describe("bech32 and keys", () => {
  it("round-trips and rejects a changed character, mixed case and a wrong prefix", () => {
    const key = randomBytes(32);
    const s = bech32Encode("age", key);
    expect(bech32Decode(s).data.equals(key)).toBe(true);
    expect(bech32Decode(s.toUpperCase()).data.equals(key)).toBe(true);
    const flipped = s.slice(0, 10) + (s[10] === "q" ? "p" : "q") + s.slice(11);
    expect(() => bech32Decode(flipped)).toThrow(/checksum/);
    expect(() => bech32Decode(s.slice(0, 10) + s.slice(10).toUpperCase())).toThrow(/mixed case/);
    expect(() => decodeRecipient(bech32Encode("age-secret-key-", key))).toThrow(/secret key/);
    expect(() => decodeRecipient(bech32Encode("agex", key))).toThrow(/not an age X25519 recipient/);
  });

  it("keygen writes age-keygen's format, and age-keygen -y agrees on the public key", () => {
    const { text, identity, recipient } = generateIdentityFile(new Date("2026-01-01T00:00:00Z"));
    expect(text).toBe(`# created: 2026-01-01T00:00:00Z\n# public key: ${recipient}\n${identity}\n`);
    expect(identity).toMatch(/^AGE-SECRET-KEY-1[0-9A-Z]{58}$/);
    expect(recipient).toMatch(/^age1[0-9a-z]{58}$/);
    expect(recipientOf(identity)).toBe(recipient);
    const file = join(tempDir(), "key.txt");
    writeFileSync(file, text, { mode: 0o600 });
    const r = spawnSync("age-keygen", ["-y", file], { encoding: "utf8" });
    expect(r.stdout.trim()).toBe(recipient);
  });
});

/** The header with one base64 character of its MAC replaced by another: still well-formed, no longer matching. */
function changeMac(ct: Buffer, headerSize: number): Buffer {
  const c = Buffer.from(ct);
  const at = headerSize - 20;
  c[at] = c[at] === 0x41 ? 0x42 : 0x41;
  return c;
}

describe("age format: dbkeep and the reference age tool", () => {
  const dir = tempDir();
  const alice = generateIdentityFile();
  const bob = generateIdentityFile();
  const aliceFile = join(dir, "alice.txt");
  const bobFile = join(dir, "bob.txt");
  writeFileSync(aliceFile, alice.text, { mode: 0o600 });
  writeFileSync(bobFile, bob.text, { mode: 0o600 });
  const aliceId = parseIdentityFile(alice.text, "alice.txt");
  const bobId = parseIdentityFile(bob.text, "bob.txt");

  const sizes = [0, 1, 65535, 65536, 65537, 2 * 65536, 5 * 1024 * 1024 + 3];
  for (const size of sizes) {
    it(`${size} bytes: dbkeep -> age -d, and age -e -> dbkeep, to two recipients`, async () => {
      const data = randomBytes(size);
      const ct = await encrypt(data, [new X25519Recipient(alice.recipient), new X25519Recipient(bob.recipient)]);
      const expectedChunks = Math.max(1, Math.ceil(size / 65536));
      expect(ct.length).toBe(parseHeader(ct)!.size + 16 + size + 16 * expectedChunks);
      for (const key of [aliceFile, bobFile]) {
        const r = age(["-d", "-i", key], ct);
        expect(r.stderr).toBe("");
        expect(r.stdout.equals(data)).toBe(true);
      }
      const byAge = age(["-e", "-r", alice.recipient, "-r", bob.recipient], data);
      expect(byAge.code).toBe(0);
      for (const id of [aliceId, bobId]) {
        const r = await decrypt(byAge.stdout, id, size);
        expect(r.error).toBeUndefined();
        expect(r.plaintext.equals(data)).toBe(true);
      }
    });
  }

  it("a passphrase: dbkeep -> age -d (age reads the passphrase from a terminal, driven by script)", async () => {
    const data = randomBytes(100_000);
    const ct = await encrypt(data, [new ScryptRecipient("correct horse battery staple")]);
    expect((await decrypt(ct, [new ScryptIdentity("correct horse battery staple")])).plaintext.equals(data)).toBe(true);
    const wrong = await decrypt(ct, [new ScryptIdentity("wrong")]);
    expect((wrong.error as AgeError).message).toContain("wrong passphrase");
    writeFileSync(join(dir, "pass.age"), ct);
    const r = spawnSync("script", ["-qec", `age -d -o ${join(dir, "pass.out")} ${join(dir, "pass.age")}`, "/dev/null"], { input: "correct horse battery staple\n", encoding: "utf8", timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(spawnSync("cmp", [join(dir, "pass.out"), "-"], { input: data }).status).toBe(0);
  });

  it("a tampered header or payload byte, truncation, extension and a wrong identity are refused", async () => {
    const data = randomBytes(3 * 65536 + 100);
    const ct = await encrypt(data, [new X25519Recipient(alice.recipient)]);
    const headerSize = parseHeader(ct)!.size;
    const flip = (at: number) => {
      const c = Buffer.from(ct);
      c[at]! ^= 0x01;
      return c;
    };
    const swapBase64 = (buf: Buffer, at: number) => {
      const c = Buffer.from(buf);
      c[at] = c[at] === 0x41 ? 0x42 : 0x41;
      return c;
    };
    const cases: [string, Buffer, string, RegExp][] = [
      ["MAC", changeMac(ct, headerSize), "hmac", /header was changed \(header MAC mismatch\)/],
      ["version line", flip(3), "header", /not a valid age-encrypted file: not an age file/],
      // Another valid base64 letter (a flipped bit could make the line invalid base64, a header error instead).
      ["stanza body", swapBase64(ct, ct.indexOf("\n", ct.indexOf("->")) + 5), "no-match", /none of the given identities/],
      ["nonce", flip(headerSize + 3), "payload", /failed authentication/],
      ["first chunk", flip(headerSize + 16 + 100), "payload", /chunk 0 /],
      ["last chunk", flip(ct.length - 1), "payload", /chunk 3 /],
      ["truncated at a chunk boundary", ct.subarray(0, headerSize + 16 + 65536 + 16), "payload", /truncated/],
      ["truncated mid-chunk", ct.subarray(0, ct.length - 50), "payload", /failed authentication/],
      ["extended", Buffer.concat([ct, Buffer.from("x")]), "payload", /failed authentication/],
    ];
    for (const [what, bad, reason, message] of cases) {
      const r = await decrypt(bad, aliceId);
      expect(r.error, what).toBeInstanceOf(AgeError);
      expect((r.error as AgeError).reason, what).toBe(reason);
      expect((r.error as AgeError).message, what).toMatch(message);
      expect(r.plaintext.length, what).toBeLessThan(data.length);
      expect(age(["-d", "-i", aliceFile], bad).code, `age agrees: ${what}`).not.toBe(0);
    }
    const wrong = await decrypt(ct, bobId);
    expect((wrong.error as AgeError).reason).toBe("no-match");
    expect((wrong.error as AgeError).message).toMatch(/^cannot decrypt the file: none of the given identities is one of its 1 recipient\(s\)$/);
    expect(wrong.plaintext.length).toBe(0);
  });

  it("memory stays bounded: 256 MiB through encrypt and decrypt grow the process by far less", async () => {
    const enc = createAgeEncryptStream([new X25519Recipient(alice.recipient)]);
    const dec = createAgeDecryptStream(aliceId);
    const block = randomBytes(65_536 - 1000);
    let out = 0;
    const h = createHash("sha256");
    const hIn = createHash("sha256");
    dec.on("data", (c: Buffer) => {
      out += c.length;
      h.update(c);
    });
    enc.pipe(dec);
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 4096; i++) {
      hIn.update(block);
      if (!enc.write(block)) await new Promise((r) => enc.once("drain", r));
    }
    enc.end();
    await new Promise((r) => dec.once("end", r));
    expect(out).toBe(4096 * block.length);
    expect(h.digest("hex")).toBe(hIn.digest("hex"));
    // Buffering the stream would add its whole size; the allocator's own slack stays well below that.
    expect(process.memoryUsage().rss - before).toBeLessThan(96 * 1024 * 1024);
  });
});
