import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { isDbkeepError } from "../../src/core/errors.js";
import { Base64UrlDecoder, fernetDecrypt, fernetDecryptFile, fernetEncrypt, fernetGenerateKey, fernetTimestamp, fernetVerifyFile, isFernetKey, looksLikeFernet } from "../../src/crypto/fernet.js";
import { IN_CI, tempDir } from "../helpers/env.js";

/** The test vectors of the published spec (github.com/fernet/spec: generate.json, verify.json, invalid.json). */
const SECRET = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const GENERATE = {
  token: "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==",
  now: "1985-10-26T01:20:00-07:00",
  iv: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
  src: "hello",
};
const VERIFY = { token: GENERATE.token, now: "1985-10-26T01:20:01-07:00", ttl_sec: 60, src: "hello" };
const INVALID: { desc: string; token: string; now: string; ttl_sec: number }[] = [
  { desc: "incorrect mac", token: "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykQUFBQUFBQUFBQQ==", now: "1985-10-26T01:20:01-07:00", ttl_sec: 60 },
  { desc: "too short", token: "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPA==", now: "1985-10-26T01:20:01-07:00", ttl_sec: 60 },
  { desc: "invalid base64", token: "%%%%%%%%%%%%%AECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykRtfsH-p1YsUD2Q==", now: "1985-10-26T01:20:01-07:00", ttl_sec: 60 },
  { desc: "payload size not multiple of block size", token: "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPOm73QeoCk9uGib28Xe5vz6oxq5nmxbx_v7mrfyudzUm", now: "1985-10-26T01:20:01-07:00", ttl_sec: 60 },
  { desc: "payload padding error", token: "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0ODz4LEpdELGQAad7aNEHbf-JkLPIpuiYRLQ3RtXatOYREu2FWke6CnJNYIbkuKNqOhw==", now: "1985-10-26T01:20:01-07:00", ttl_sec: 60 },
  { desc: "far-future TS (unacceptable clock skew)", token: "gAAAAAAdwStRAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAnja1xKYyhd-Y6mSkTOyTGJmw2Xc2a6kBd-iX9b_qXQcw==", now: "1985-10-26T01:20:01-07:00", ttl_sec: 60 },
  { desc: "expired TTL", token: "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykRtfsH-p1YsUD2Q==", now: "1985-10-26T01:21:31-07:00", ttl_sec: 60 },
  { desc: "incorrect IV (causes padding error)", token: "gAAAAAAdwJ6xBQECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAkLhFLHpGtDBRLRTZeUfWgHSv49TF2AUEZ1TIvcZjK1zQ==", now: "1985-10-26T01:20:01-07:00", ttl_sec: 60 },
];

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function errorOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error");
}

async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

/** Python with the `cryptography` package: an independent Fernet implementation, when this machine has one. */
function pythonFernet(): string | undefined {
  for (const py of ["python3", "python"]) {
    const r = spawnSync(py, ["-c", "import cryptography.fernet"], { encoding: "utf8" });
    if (r.status === 0) return py;
  }
  return undefined;
}
const PY = pythonFernet();

describe("Fernet: the spec's test vectors", () => {
  it("generate.json: the same token from the same key, IV and time", () => {
    const token = fernetEncrypt(Buffer.from(GENERATE.src), SECRET, { iv: Buffer.from(GENERATE.iv), now: new Date(GENERATE.now) });
    expect(token).toBe(GENERATE.token);
  });

  it("verify.json: decrypts, with and without the TTL check", () => {
    expect(fernetDecrypt(VERIFY.token, SECRET, { ttlSeconds: VERIFY.ttl_sec, now: new Date(VERIFY.now) }).toString()).toBe(VERIFY.src);
    expect(fernetDecrypt(VERIFY.token, SECRET).toString()).toBe(VERIFY.src);
    expect(fernetTimestamp(VERIFY.token).toISOString()).toBe(new Date(GENERATE.now).toISOString());
  });

  for (const v of INVALID) {
    it(`invalid.json: ${v.desc}`, () => {
      const err = errorOf(() => fernetDecrypt(v.token, SECRET, { ttlSeconds: v.ttl_sec, now: new Date(v.now) }));
      expect(isDbkeepError(err), String(err)).toBe(true);
      expect(["DECRYPT_FAILED", "CORRUPT_BACKUP"]).toContain((err as { code: string }).code);
      expect((err as Error).message).not.toContain(SECRET);
    });
  }

  it("the time rules apply only when a TTL is asked for: an old backup decrypts years later", () => {
    const expired = INVALID.find((v) => v.desc === "expired TTL")!;
    // The same token read at a time inside its TTL gives the same plaintext as read with no time rules at all.
    const inTime = fernetDecrypt(expired.token, SECRET, { ttlSeconds: 60, now: new Date("1985-10-26T01:20:01-07:00") });
    expect(fernetDecrypt(expired.token, SECRET).equals(inTime)).toBe(true);
  });
});

describe("Fernet: keys, tokens, errors", () => {
  it("makes keys in Python's form and tells them apart from other strings", () => {
    const k = fernetGenerateKey();
    expect(k).toMatch(/^[A-Za-z0-9_-]{43}=$/);
    expect(Buffer.from(k, "base64url")).toHaveLength(32);
    expect(isFernetKey(k)).toBe(true);
    expect(isFernetKey(`${k}\n`)).toBe(true);
    expect(isFernetKey(k.slice(0, 43))).toBe(true);
    expect(isFernetKey("AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ")).toBe(false);
    expect(isFernetKey("age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq")).toBe(false);
    expect(isFernetKey("short")).toBe(false);
  });

  it("round-trips empty, block-sized and odd-sized plaintexts", () => {
    const key = fernetGenerateKey();
    for (const n of [0, 1, 15, 16, 17, 31, 32, 1000, 65_537]) {
      const plain = randomBytes(n);
      const token = fernetEncrypt(plain, key);
      expect(token.startsWith("gAAAAA")).toBe(true);
      expect(token.length % 4).toBe(0);
      expect(fernetDecrypt(token, key).equals(plain)).toBe(true);
    }
  });

  it("a wrong key is DECRYPT_FAILED with a hint, and neither key appears in the message", () => {
    const right = fernetGenerateKey();
    const wrong = fernetGenerateKey();
    const err = errorOf(() => fernetDecrypt(fernetEncrypt(Buffer.from("secret dump"), right), wrong));
    expect(isDbkeepError(err, "DECRYPT_FAILED")).toBe(true);
    expect((err as Error).message).toMatch(/wrong key/);
    expect((err as { hint: string }).hint).toMatch(/--key/);
    expect(JSON.stringify({ m: (err as Error).message, h: (err as { hint: string }).hint })).not.toContain(wrong.slice(0, 20));
  });

  it("a key that is not a Fernet key is a usage error that does not echo it", () => {
    const err = errorOf(() => fernetDecrypt(GENERATE.token, "my-password-123"));
    expect(isDbkeepError(err, "USAGE")).toBe(true);
    expect((err as Error).message).not.toContain("my-password-123");
    expect((err as { hint: string }).hint).toMatch(/44 characters/);
  });

  it("one flipped bit anywhere in the token is refused before decrypting", () => {
    const key = fernetGenerateKey();
    const raw = Buffer.from(fernetEncrypt(randomBytes(100), key), "base64url");
    for (const at of [0, 1, 9, 25, 40, raw.length - 1]) {
      const bad = Buffer.from(raw);
      bad[at]! ^= 0x01;
      const err = errorOf(() => fernetDecrypt(bad.toString("base64url"), key));
      expect(isDbkeepError(err), `byte ${at}: ${String(err)}`).toBe(true);
    }
  });

  it("decodes base64 strictly, in pieces of any size", () => {
    const data = randomBytes(1000);
    const text = data.toString("base64url") + "==".slice(0, (3 - (data.length % 3)) % 3);
    for (const size of [1, 3, 4, 7, 100]) {
      const d = new Base64UrlDecoder();
      const out: Buffer[] = [];
      for (let i = 0; i < text.length; i += size) out.push(d.push(text.slice(i, i + size)));
      out.push(d.end());
      expect(Buffer.concat(out).equals(data)).toBe(true);
    }
    expect(() => new Base64UrlDecoder().push("ab+c")).toThrow(/url-safe base64/);
    expect(() => {
      const d = new Base64UrlDecoder();
      d.push("abc=");
      d.push("abcd");
    }).toThrow(/after the base64 padding/);
    expect(looksLikeFernet(Buffer.from(GENERATE.token))).toBe(true);
    expect(looksLikeFernet(Buffer.from("\x1f\x8b\x08\x00"))).toBe(false);
    expect(looksLikeFernet(Buffer.from("-- PostgreSQL database dump"))).toBe(false);
  });
});

describe("Fernet: files", () => {
  const dir = tempDir("dbkeep-fernet-");

  it("decrypts a file in two passes to the output name, exactly, with a trailing newline tolerated", async () => {
    const key = fernetGenerateKey();
    const plain = randomBytes(3 * 1024 * 1024 + 5);
    const enc = join(dir, "big.sql.gz.enc");
    writeFileSync(enc, `${fernetEncrypt(plain, key, { now: new Date("2024-05-01T10:00:00Z") })}\n`);
    const info = await fernetVerifyFile(enc, key);
    expect(info.plainBytes).toBe(plain.length);
    expect(info.timestamp.toISOString()).toBe("2024-05-01T10:00:00.000Z");
    const out = join(dir, "big.sql.gz");
    await fernetDecryptFile(enc, out, key);
    expect(sha256(readFileSync(out))).toBe(sha256(plain));
    expect(readdirSync(dir).filter((n) => n.includes(".part-"))).toEqual([]);
  });

  it("a damaged or wrongly keyed file leaves no output and no temporary file", async () => {
    const key = fernetGenerateKey();
    const enc = join(dir, "bad.enc");
    const text = fernetEncrypt(randomBytes(200_000), key);
    // A different character in the middle of the ciphertext.
    const mid = Math.floor(text.length / 2);
    writeFileSync(enc, text.slice(0, mid) + (text[mid] === "A" ? "B" : "A") + text.slice(mid + 1));
    const out = join(dir, "bad.out");
    const e1 = await rejectionOf(fernetDecryptFile(enc, out, key));
    expect(isDbkeepError(e1, "DECRYPT_FAILED")).toBe(true);
    writeFileSync(enc, text);
    const e2 = await rejectionOf(fernetDecryptFile(enc, out, fernetGenerateKey()));
    expect(isDbkeepError(e2, "DECRYPT_FAILED")).toBe(true);
    writeFileSync(enc, text.slice(0, 5000));
    const e3 = await rejectionOf(fernetDecryptFile(enc, out, key));
    expect(isDbkeepError(e3), String(e3)).toBe(true);
    writeFileSync(enc, "-- PostgreSQL database dump\n");
    const e4 = await rejectionOf(fernetDecryptFile(enc, out, key));
    expect(isDbkeepError(e4, "CORRUPT_BACKUP"), String(e4)).toBe(true);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(dir).filter((n) => n.includes(".part-"))).toEqual([]);
  });
});

describe.skipIf(!PY && !IN_CI)("Fernet: tokens of Python's cryptography package (an independent implementation)", () => {
  const dir = tempDir("dbkeep-fernet-py-");

  function py(script: string, env: Record<string, string>): string {
    const r = spawnSync(PY!, ["-c", script], { encoding: "utf8", env: { ...process.env, ...env } });
    if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
    return r.stdout;
  }

  it("decrypts a gzip dump that cryptography.fernet encrypted, as DBVault writes its .enc files", async () => {
    if (!PY) throw new Error("python3 with the cryptography package is required under CI");
    const key = py("from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())", {}).trim();
    const dump = Buffer.from("-- dump\nCREATE TABLE t (id int);\n".repeat(20_000));
    const src = join(dir, "backup.sql");
    writeFileSync(src, dump);
    const enc = join(dir, "backup.sql.gz.enc");
    py(
      [
        "import gzip, os",
        "from cryptography.fernet import Fernet",
        "data = gzip.compress(open(os.environ['SRC'], 'rb').read())",
        "open(os.environ['ENC'], 'wb').write(Fernet(os.environ['KEY'].encode()).encrypt(data))",
      ].join("\n"),
      { SRC: src, ENC: enc, KEY: key },
    );
    expect(fernetDecrypt(readFileSync(enc), key).length).toBeGreaterThan(0);
    const out = join(dir, "backup.sql.gz");
    await fernetDecryptFile(enc, out, key);
    expect(gunzipSync(readFileSync(out)).equals(dump)).toBe(true);
  });

  it("Python decrypts what dbkeep encrypts, and refuses it under another key", () => {
    if (!PY) throw new Error("python3 with the cryptography package is required under CI");
    const key = fernetGenerateKey();
    const plain = randomBytes(70_001);
    const enc = join(dir, "ours.enc");
    writeFileSync(enc, fernetEncrypt(plain, key));
    const hex = py("import os; from cryptography.fernet import Fernet; print(Fernet(os.environ['KEY'].encode()).decrypt(open(os.environ['ENC'],'rb').read()).hex())", { ENC: enc, KEY: key }).trim();
    expect(hex).toBe(plain.toString("hex"));
    const r = spawnSync(PY!, ["-c", "import os; from cryptography.fernet import Fernet; Fernet(os.environ['KEY'].encode()).decrypt(open(os.environ['ENC'],'rb').read())"], {
      encoding: "utf8",
      env: { ...process.env, ENC: enc, KEY: fernetGenerateKey() },
    });
    expect(r.stderr).toContain("InvalidToken");
  });
});
