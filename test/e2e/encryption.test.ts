import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";
import { resealManifest } from "../helpers/manifest.js";

const MARKER = `dbkeep-marker-${randomBytes(6).toString("hex")}`;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** The SQLite sample with one row nobody could guess: what must never appear in an encrypted store. */
function sampleWithMarker(dir: string): string {
  const file = join(dir, "app.db");
  copyFileSync(join(ROOT, "examples/app.db"), file);
  const db = new Database(file);
  db.exec(`CREATE TABLE secrets (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO secrets (v) VALUES ('${MARKER}')`);
  db.close();
  return file;
}

function markerIn(file: string): string | undefined {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare("SELECT v FROM secrets").get() as { v: string } | undefined)?.v;
  } finally {
    db.close();
  }
}

/** Every file under `dir`, with its bytes. */
function filesUnder(dir: string): { path: string; bytes: Buffer }[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .map((path) => ({ path, bytes: readFileSync(path) }));
}

function keygen(dir: string, name: string): { file: string; recipient: string } {
  const file = join(dir, name);
  const r = dbkeep(["keygen", "-o", file]);
  expect(r.code).toBe(0);
  return { file, recipient: r.stdout.trim() };
}

interface ListedManifest {
  id: string;
  key: string;
  sha256: string;
  checksum_key: string;
  encryption: null | { format: string; recipients: { type: string; recipient?: string }[] };
}

function listed(store: string): ListedManifest[] {
  const r = dbkeep(["list", store, "--json"]);
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { backups: ListedManifest[] }).backups;
}

function flipByte(file: string, at: number): void {
  const b = readFileSync(file);
  b[at] = b[at]! ^ 0x01;
  writeFileSync(file, b);
}

describe("CLI: keygen, encrypt, decrypt", () => {
  it("keygen writes a 0600 identity in age's format, prints the recipient, never overwrites", () => {
    const dir = tempDir();
    const { file, recipient } = keygen(dir, "key.txt");
    expect(recipient).toMatch(/^age1[0-9a-z]{58}$/);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, "utf8");
    expect(text).toMatch(new RegExp(`^# created: \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\n# public key: ${recipient}\\nAGE-SECRET-KEY-1[0-9A-Z]{58}\\n$`));
    expect(spawnSync("age-keygen", ["-y", file], { encoding: "utf8" }).stdout.trim()).toBe(recipient);
    expect(dbkeep(["keygen", "-y", file]).stdout.trim()).toBe(recipient);
    const again = dbkeep(["keygen", "-o", file]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("exists; not overwriting it");
    expect(readFileSync(file, "utf8")).toBe(text);
  });

  it("every new command has --help with examples; usage errors exit 2", () => {
    for (const cmd of ["keygen", "encrypt", "decrypt"]) {
      const r = dbkeep([cmd, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Examples:");
    }
    const dir = tempDir();
    writeFileSync(join(dir, "plain"), "x");
    expect(dbkeep(["encrypt", join(dir, "plain"), "-o", join(dir, "x.age")]).code).toBe(2);
    const bad = dbkeep(["encrypt", join(dir, "plain"), "-o", join(dir, "x.age"), "-r", "age1notakey"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: --recipient: "age1notakey" is not an age recipient/);
    const secret = dbkeep(["encrypt", join(dir, "plain"), "-o", join(dir, "x.age"), "-r", "AGE-SECRET-KEY-1XQ9Q6N79ZLSH62YWZQDJEEXMC3MJD0X7FNH3HX3SD0YG8EFLL4HS95QXGM"]);
    expect(secret.code).toBe(2);
    expect(secret.stderr).not.toContain("XQ9Q6N79");
    expect(dbkeep(["decrypt", join(dir, "x.age")]).code).toBe(2);
  });

  it("encrypt -> age -d, age -e -> decrypt, several recipients; a wrong identity writes nothing", () => {
    const dir = tempDir();
    const a = keygen(dir, "a.txt");
    const b = keygen(dir, "b.txt");
    const c = keygen(dir, "c.txt");
    writeFileSync(join(dir, "recipients.txt"), `# team\n${b.recipient}\n\n`);
    const data = randomBytes(200_000);
    writeFileSync(join(dir, "data"), data);

    const e = dbkeep(["encrypt", join(dir, "data"), "-o", join(dir, "data.age"), "-r", a.recipient, "-R", join(dir, "recipients.txt")]);
    expect(e.stderr).toBe("");
    expect(e.code).toBe(0);
    for (const k of [a, b]) {
      const r = spawnSync("age", ["-d", "-i", k.file, join(dir, "data.age")]);
      expect(r.status).toBe(0);
      expect(r.stdout.equals(data)).toBe(true);
    }

    const byAge = spawnSync("age", ["-e", "-r", a.recipient, "-r", c.recipient, "-o", join(dir, "byage.age"), join(dir, "data")]);
    expect(byAge.status).toBe(0);
    const d = dbkeep(["decrypt", join(dir, "byage.age"), "-i", c.file, "-o", join(dir, "out")]);
    expect(d.code).toBe(0);
    expect(readFileSync(join(dir, "out")).equals(data)).toBe(true);
    expect(statSync(join(dir, "out")).mode & 0o777).toBe(0o600);

    const wrong = dbkeep(["decrypt", join(dir, "data.age"), "-i", c.file, "-o", join(dir, "out2")]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr.split("\n")[0]).toBe(`error: cannot decrypt ${join(dir, "data.age")}: none of the given identities is one of its 2 recipient(s)`);
    expect(readdirSync(dir).filter((f) => f.includes("out2"))).toEqual([]);

    flipByte(join(dir, "data.age"), statSync(join(dir, "data.age")).size - 100);
    const tampered = dbkeep(["decrypt", join(dir, "data.age"), "-i", a.file, "-o", join(dir, "out3")]);
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toMatch(/failed authentication/);
    expect(readdirSync(dir).filter((f) => f.includes("out3"))).toEqual([]);
  });

  it("a passphrase: dbkeep encrypt --passphrase-env, dbkeep decrypt --passphrase-env", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "data"), "hello\n");
    const env = { DBKEEP_TEST_PASS: "a long test passphrase" };
    expect(dbkeep(["encrypt", join(dir, "data"), "-o", join(dir, "data.age"), "--passphrase-env", "DBKEEP_TEST_PASS"], { env }).code).toBe(0);
    const d = dbkeep(["decrypt", join(dir, "data.age"), "--passphrase-env", "DBKEEP_TEST_PASS"], { env });
    expect(d.code).toBe(0);
    expect(d.stdout).toBe("hello\n");
    const wrong = dbkeep(["decrypt", join(dir, "data.age"), "--passphrase-env", "DBKEEP_TEST_PASS"], { env: { DBKEEP_TEST_PASS: "another passphrase" } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("wrong passphrase");
  });
});

describe("CLI: encrypted backups (SQLite)", () => {
  it("the stored objects hold no plaintext, the manifest lists the recipients and no secret, list needs no key", () => {
    const dir = tempDir();
    const src = sampleWithMarker(dir);
    const a = keygen(dir, "a.txt");
    const b = keygen(dir, "b.txt");
    writeFileSync(join(dir, "team.txt"), `${b.recipient}\n`);

    // The control: without encryption and without compression the marker is plainly in the store.
    expect(dbkeep(["backup", `sqlite:${src}`, "--to", join(dir, "plain"), "--compression", "none"]).code).toBe(0);
    expect(filesUnder(join(dir, "plain")).some((f) => f.bytes.includes(MARKER))).toBe(true);

    const r = dbkeep(["backup", `sqlite:${src}`, "--to", join(dir, "enc"), "--compression", "none", "-r", a.recipient, "--recipients-file", join(dir, "team.txt")]);
    expect(r.stderr).not.toContain("error");
    expect(r.code).toBe(0);
    const files = filesUnder(join(dir, "enc"));
    expect(files.some((f) => f.bytes.includes(MARKER))).toBe(false);
    for (const f of files) {
      expect(f.bytes.includes("AGE-SECRET-KEY")).toBe(false);
      expect(f.bytes.toString("latin1").toLowerCase().includes("age-secret-key")).toBe(false);
    }

    const [m] = listed(join(dir, "enc"));
    expect(m!.key).toMatch(/^app\/app-\d{8}-\d{6}\.db\.age$/);
    expect(m!.checksum_key).toBe(`${m!.key}.sha256`);
    expect(m!.encryption).toEqual({ format: "age", recipients: [{ type: "X25519", recipient: a.recipient }, { type: "X25519", recipient: b.recipient }] });
    const stored = readFileSync(join(dir, "enc", m!.key));
    expect(stored.subarray(0, 22).toString()).toBe("age-encryption.org/v1\n");
    expect(m!.sha256).toBe(sha256(stored));
    expect(readFileSync(join(dir, "enc", m!.checksum_key), "utf8")).toBe(`${sha256(stored)}  ${m!.key.split("/").pop()}\n`);
    expect(dbkeep(["list", join(dir, "enc")]).stdout).toMatch(/file\/none\+age\s+app\/app-\d{8}-\d{6}\.db\.age/);

    // Either recipient's identity opens it, with age itself as well.
    for (const k of [a, b]) {
      const out = join(dir, `by-age-${k === a ? "a" : "b"}.db`);
      expect(spawnSync("age", ["-d", "-i", k.file, "-o", out, join(dir, "enc", m!.key)]).status).toBe(0);
      expect(markerIn(out)).toBe(MARKER);
    }
  });

  it("restores with -i; a wrong key, no key, or a tampered byte leave the target untouched", () => {
    const dir = tempDir();
    const src = sampleWithMarker(dir);
    const a = keygen(dir, "a.txt");
    const other = keygen(dir, "other.txt");
    const store = join(dir, "backups");
    expect(dbkeep(["backup", `sqlite:${src}`, "--to", store, "--compression", "zstd", "-r", a.recipient, "--verify"]).code).toBe(0);

    // The target already exists and holds something else.
    const target = join(dir, "target.db");
    const t = new Database(target);
    t.exec("CREATE TABLE keep (v TEXT); INSERT INTO keep VALUES ('original')");
    t.close();
    const before = readFileSync(target);
    const untouched = () => {
      expect(readFileSync(target).equals(before)).toBe(true);
      expect(readdirSync(dir).filter((f) => f.startsWith("target.db") && f !== "target.db")).toEqual([]);
    };

    const none = dbkeep(["restore", store, "latest", "--to", `sqlite:${target}`, "--auto-confirm"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^error: backup app-\d{8}-\d{6} is encrypted \(to age1[0-9a-z]{58}\); restoring it needs the identity\nhint: pass --identity FILE/);
    untouched();

    const wrong = dbkeep(["restore", store, "latest", "--to", `sqlite:${target}`, "--auto-confirm", "-i", other.file]);
    expect(wrong.code).toBe(1);
    const lines = wrong.stderr.split("\n").filter((l) => l.startsWith("error:"));
    expect(lines).toEqual([`error: cannot decrypt backup ${listed(store)[0]!.id}: it is encrypted to ${a.recipient}, and the identity given is ${other.recipient}`]);
    untouched();

    const [m] = listed(store);
    const data = join(store, m!.key);
    const original = readFileSync(data);
    // A restore that finds the data damaged records it (list shows the backup damaged, "latest" passes it over);
    // named by its id, the backup is checked again as it is read.
    for (const at of [40, original.length - 30]) {
      flipByte(data, at);
      const r = dbkeep(["restore", store, m!.id, "--to", `sqlite:${target}`, "--auto-confirm", "-i", a.file]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("does not match its manifest");
      untouched();
      writeFileSync(data, original);
    }

    // Someone who changes a byte and rewrites the checksums too is still stopped, by the decryption.
    flipByte(data, original.length - 30);
    const forged = sha256(readFileSync(data));
    const manifestFile = join(store, m!.key.replace(/\.db\.zst\.age$/, ".manifest.json"));
    writeFileSync(manifestFile, resealManifest(readFileSync(manifestFile, "utf8").replace(m!.sha256, forged)));
    writeFileSync(join(store, m!.checksum_key), `${forged}  ${m!.key.split("/").pop()}\n`);
    const r = dbkeep(["restore", store, m!.id, "--to", `sqlite:${target}`, "--auto-confirm", "-i", a.file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: cannot decrypt app\/app-\d{8}-\d{6}\.db\.zst\.age: the data is damaged, truncated or was changed: chunk \d+ \(after \d+ bytes of plaintext\) failed authentication$/m);
    untouched();
    writeFileSync(data, original);
    writeFileSync(manifestFile, resealManifest(readFileSync(manifestFile, "utf8").replace(forged, m!.sha256)));
    writeFileSync(join(store, m!.checksum_key), `${m!.sha256}  ${m!.key.split("/").pop()}\n`);

    expect(dbkeep(["list", store]).code).toBe(1);
    const ok = dbkeep(["restore", store, m!.id, "--to", `sqlite:${target}`, "--auto-confirm", "-i", a.file]);
    expect(ok.stderr).not.toContain("error:");
    expect(ok.code).toBe(0);
    // It passed: the note is gone, and the backup is listed as complete again.
    expect(listed(store).map((b) => b.id)).toEqual([m!.id]);
    expect(markerIn(target)).toBe(MARKER);
  });

  it("a passphrase in one-off mode: the manifest says scrypt and nothing else", () => {
    const dir = tempDir();
    const src = sampleWithMarker(dir);
    const pass = `pass-${randomBytes(8).toString("hex")}`;
    const env = { DBKEEP_TEST_PASS: pass };
    const store = join(dir, "backups");
    expect(dbkeep(["backup", `sqlite:${src}`, "--to", store, "--compression", "none", "--passphrase-env", "DBKEEP_TEST_PASS"], { env }).code).toBe(0);
    const [m] = listed(store);
    expect(m!.encryption).toEqual({ format: "age", recipients: [{ type: "scrypt" }] });
    for (const f of filesUnder(store)) {
      expect(f.bytes.includes(pass)).toBe(false);
      expect(f.bytes.includes(MARKER)).toBe(false);
    }
    const r = dbkeep(["restore", store, "latest", "--to", `sqlite:${join(dir, "out.db")}`, "--passphrase-env", "DBKEEP_TEST_PASS"], { env });
    expect(r.code).toBe(0);
    expect(markerIn(join(dir, "out.db"))).toBe(MARKER);
    const wrong = dbkeep(["restore", store, "latest", "--to", `sqlite:${join(dir, "out2.db")}`, "--passphrase-env", "DBKEEP_TEST_PASS"], { env: { DBKEEP_TEST_PASS: "not the passphrase" } });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("wrong passphrase");
    expect(existsSync(join(dir, "out2.db"))).toBe(false);
  });

  it("config mode: a top-level block for every job, a job's own block, verify, and config check hides secrets", () => {
    const dir = tempDir();
    sampleWithMarker(dir);
    const a = keygen(dir, "a.txt");
    const cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  app: { engine: sqlite, path: ${join(dir, "app.db")}, compression: gzip }
  copy: { engine: sqlite, path: ${join(dir, "copy.db")} }
stores:
  local: { type: local, path: ${join(dir, "backups")} }
encryption:
  recipients: [${a.recipient}]
  identity_file: ${a.file}
jobs:
  app-backup: { datasource: app, store: local, verify: true }
  app-pass:
    datasource: app
    store: local
    prefix: pass
    encryption: { passphrase: literal-test-passphrase }
  app-plain: { datasource: app, store: local, prefix: plain, encryption: false }
`,
      { mode: 0o600 },
    );
    const b = dbkeep(["-c", cfg, "backup", "--all", "--log-format", "text"]);
    expect(b.code).toBe(0);
    expect(b.stderr).toMatch(/verified: size, SHA-256 and compression frames match/);
    const check = dbkeep(["-c", cfg, "config", "check"]);
    expect(check.code).toBe(0);
    expect(check.stdout).not.toContain("literal-test-passphrase");
    expect(check.stdout).toContain('passphrase: "***"');
    expect(check.stdout).toContain(a.recipient);

    for (const job of ["app-backup", "app-pass"]) {
      const r = dbkeep(["-c", cfg, "restore", job, "--to", "copy", "--auto-confirm"]);
      expect(r.stderr).not.toContain("error:");
      expect(r.code).toBe(0);
      expect(markerIn(join(dir, "copy.db"))).toBe(MARKER);
    }
    const [m] = (JSON.parse(dbkeep(["-c", cfg, "list", "app-pass", "--json"]).stdout) as { backups: ListedManifest[] }).backups;
    expect(m!.encryption).toEqual({ format: "age", recipients: [{ type: "scrypt" }] });
    // encryption: false opts one job out of the top-level block: a plain gzip object, restorable without a key.
    const [plain] = (JSON.parse(dbkeep(["-c", cfg, "list", "app-plain", "--json"]).stdout) as { backups: ListedManifest[] }).backups;
    expect(plain!.encryption).toBeNull();
    expect(plain!.key).toMatch(/\.db\.gz$/);
    const [enc] = (JSON.parse(dbkeep(["-c", cfg, "list", "app-backup", "--json"]).stdout) as { backups: ListedManifest[] }).backups;
    expect(enc!.key).toMatch(/\.age$/);
    const rp = dbkeep(["-c", cfg, "restore", "app-plain", "--to", "copy", "--auto-confirm"]);
    expect(rp.code, rp.stderr).toBe(0);
    expect(markerIn(join(dir, "copy.db"))).toBe(MARKER);

    const invalid = join(dir, "invalid.yaml");
    writeFileSync(invalid, `datasources: {}\nstores: {}\nencryption: { recipients: [age1nope], passphrase_env: X }\n`);
    const bad = dbkeep(["-c", invalid, "config", "check"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("encryption.recipients.0: \"age1nope\" is not an age recipient");
    expect(bad.stderr).toContain("encryption.passphrase_env: a passphrase cannot be combined with recipients");
  });
});
