import { spawnSync } from "node:child_process";
import { createCipheriv, createHash, randomBytes, scryptSync } from "node:crypto";
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * restic repositories for tests. `restic init` calibrates its key derivation to about half a second of CPU, and
 * every restic command pays it again when it opens the repository: a test suite of a few dozen commands on a
 * shared 2-core machine spends most of its time there. So a test file initialises one repository with restic,
 * replaces its key with the same master key under cheap scrypt parameters (restic's key format, written here), and
 * copies that template for each fresh repository. Everything after opening the repository is restic's usual work.
 */

/** restic's key: scrypt(password) -> AES-256 key + Poly1305-AES MAC key (k, r). */
interface DerivedKey {
  encrypt: Buffer;
  macK: Buffer;
  macR: Buffer;
}

const P1305 = (1n << 130n) - 5n;

function leToBig(b: Buffer): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

function poly1305(msg: Buffer, r: Buffer, s: Buffer): Buffer {
  const rr = leToBig(r) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  let acc = 0n;
  for (let i = 0; i < msg.length; i += 16) {
    const chunk = Buffer.concat([msg.subarray(i, i + 16), Buffer.from([1])]);
    acc = ((acc + leToBig(chunk)) * rr) % P1305;
  }
  let tag = (acc + leToBig(s)) & ((1n << 128n) - 1n);
  const out = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) {
    out[i] = Number(tag & 0xffn);
    tag >>= 8n;
  }
  return out;
}

function mac(key: DerivedKey, nonce: Buffer, ciphertext: Buffer): Buffer {
  const aes = createCipheriv("aes-128-ecb", key.macK, null);
  aes.setAutoPadding(false);
  const s = aes.update(nonce);
  return poly1305(ciphertext, key.macR, s);
}

function open(key: DerivedKey, data: Buffer): Buffer {
  const nonce = data.subarray(0, 16);
  const ct = data.subarray(16, data.length - 16);
  if (!mac(key, nonce, ct).equals(data.subarray(data.length - 16))) throw new Error("restic key: MAC mismatch (wrong password?)");
  const d = createCipheriv("aes-256-ctr", key.encrypt, nonce);
  return Buffer.concat([d.update(ct), d.final()]);
}

function seal(key: DerivedKey, plain: Buffer): Buffer {
  const nonce = randomBytes(16);
  const e = createCipheriv("aes-256-ctr", key.encrypt, nonce);
  const ct = Buffer.concat([e.update(plain), e.final()]);
  return Buffer.concat([nonce, ct, mac(key, nonce, ct)]);
}

function derive(password: string, salt: Buffer, N: number, r: number, p: number): DerivedKey {
  const k = scryptSync(password, salt, 64, { N, r, p, maxmem: 256 * N * r * p + 64 * 1024 * 1024 });
  return { encrypt: k.subarray(0, 32), macK: k.subarray(32, 48), macR: k.subarray(48, 64) };
}

/** Re-encrypts the repository's only key under scrypt N=1024, r=8, p=1 (a few milliseconds). */
function cheapenKey(repo: string, password: string): void {
  const dir = join(repo, "keys");
  const [name] = readdirSync(dir);
  if (!name) throw new Error(`no key in ${dir}`);
  const file = JSON.parse(readFileSync(join(dir, name), "utf8")) as { N: number; r: number; p: number; salt: string; data: string } & Record<string, unknown>;
  const master = open(derive(password, Buffer.from(file.salt, "base64"), file.N, file.r, file.p), Buffer.from(file.data, "base64"));
  const salt = randomBytes(64);
  const N = 1024;
  const cheap = { ...file, N, r: 8, p: 1, salt: salt.toString("base64"), data: seal(derive(password, salt, N, 8, 1), master).toString("base64") };
  const content = Buffer.from(JSON.stringify(cheap));
  rmSync(join(dir, name));
  writeFileSync(join(dir, createHash("sha256").update(content).digest("hex")), content, { mode: 0o400 });
}

/** A factory of fresh, empty repositories with the given password, each a copy of one template. */
export function resticRepos(root: string, password: string): () => string {
  let template: string | undefined;
  let n = 0;
  return () => {
    if (!template) {
      template = join(root, "template");
      mkdirSync(root, { recursive: true });
      const r = spawnSync("restic", ["init", "--no-cache", "--repo", template], { env: { PATH: process.env.PATH, HOME: process.env.HOME, RESTIC_PASSWORD: password }, encoding: "utf8" });
      if (r.status !== 0) throw new Error(`restic init failed: ${r.stderr}`);
      cheapenKey(template, password);
    }
    const repo = join(root, `repo-${++n}`);
    cpSync(template, repo, { recursive: true });
    return repo;
  };
}
