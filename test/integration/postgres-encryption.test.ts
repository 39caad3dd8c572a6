import { createHash, randomBytes } from "node:crypto";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, tempDir } from "../helpers/env.js";
import { resealManifest } from "../helpers/manifest.js";

const SRC = "dbkeep_it_enc_src";
const DST = "dbkeep_it_enc_dst";
const ROLE = "dbkeep_it_enc_role";
const MARKER = `pg-marker-${randomBytes(6).toString("hex")}`;
const available = await pgAvailable();

function filesUnder(dir: string): { path: string; bytes: Buffer }[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name))
    .map((path) => ({ path, bytes: readFileSync(path) }));
}

async function databases(): Promise<string[]> {
  return (await pgQuery<{ datname: string }>("postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'dbkeep_it_enc%'")).map((r) => r.datname);
}

describe.skipIf(!available)("PostgreSQL: encrypted backups", () => {
  let dir: string;
  let cfg: string;
  let key: { file: string; recipient: string };
  let other: string;

  beforeAll(async () => {
    dir = tempDir();
    await createDb(SRC);
    await pgQuery(SRC, `CREATE TABLE secrets (id serial PRIMARY KEY, v text); INSERT INTO secrets (v) VALUES ('${MARKER}')`);
    await pgQuery(SRC, "CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g");
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
    await pgQuery("postgres", `CREATE ROLE ${ROLE} NOLOGIN PASSWORD 'role-pw-${MARKER}'`);
    const k = dbkeep(["keygen", "-o", join(dir, "key.txt")]);
    expect(k.code).toBe(0);
    key = { file: join(dir, "key.txt"), recipient: k.stdout.trim() };
    expect(dbkeep(["keygen", "-o", join(dir, "other.txt")]).code).toBe(0);
    other = join(dir, "other.txt");
    cfg = join(dir, "dbkeep.yaml");
    writeFileSync(
      cfg,
      `datasources:
  src: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${SRC}, format: plain, compression: none, globals: true }
  dst: { engine: postgres, host: 127.0.0.1, user: postgres, database: ${DST} }
stores:
  local: { type: local, path: ${join(dir, "backups")} }
jobs:
  src-backup:
    datasource: src
    store: local
    verify: true
    encryption:
      recipients: [${key.recipient}]
      identity_file: ${key.file}
`,
      { mode: 0o600 },
    );
  });

  afterAll(async () => {
    await dropDb(SRC);
    await dropDb(DST);
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
  });

  it("the dump and the globals are stored encrypted: no marker row, no key, the recipients in the manifest", () => {
    const b = dbkeep(["-c", cfg, "backup", "src-backup"]);
    expect(b.stderr).not.toContain("error:");
    expect(b.code).toBe(0);
    const files = filesUnder(join(dir, "backups"));
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const f of files) {
      expect(f.bytes.includes(MARKER), f.path).toBe(false);
      expect(f.bytes.includes("AGE-SECRET-KEY"), f.path).toBe(false);
    }
    const [m] = (JSON.parse(dbkeep(["-c", cfg, "list", "src-backup", "--json"]).stdout) as { backups: { key: string; encryption: unknown; extras: { key: string }[] }[] }).backups;
    expect(m!.key).toMatch(/\.sql\.age$/);
    expect(m!.extras[0]!.key).toMatch(/\.globals\.sql\.age$/);
    expect(m!.encryption).toEqual({ format: "age", recipients: [{ type: "X25519", recipient: key.recipient }] });
  });

  it("a wrong identity leaves an existing target untouched, with no staging database left", async () => {
    await createDb(DST);
    await pgQuery(DST, "CREATE TABLE keep (v text); INSERT INTO keep VALUES ('original')");
    const r = dbkeep(["-c", cfg, "restore", "src-backup", "--to", "dst", "--auto-confirm", "--globals", "-i", other]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: cannot decrypt backup dbkeep_it_enc_src-\d{8}-\d{6}: it is encrypted to age1/m);
    expect(await pgQuery(DST, "SELECT v FROM keep")).toEqual([{ v: "original" }]);
    expect(await databases()).toEqual(expect.arrayContaining([SRC, DST]));
    expect((await databases()).length).toBe(2);
  });

  it("a changed byte whose checksums were rewritten too is refused by decryption, reported as the cause; the target is untouched", async () => {
    const store = join(dir, "backups");
    const [m] = (JSON.parse(dbkeep(["-c", cfg, "list", "src-backup", "--json"]).stdout) as { backups: { id: string; key: string; sha256: string; checksum_key: string }[] }).backups;
    const data = join(store, m!.key);
    const manifestFile = join(store, m!.key.replace(/\.sql\.age$/, ".manifest.json"));
    const saved = [data, manifestFile, join(store, m!.checksum_key)].map((f) => [f, readFileSync(f)] as const);
    try {
      const bytes = readFileSync(data);
      bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
      writeFileSync(data, bytes);
      const forged = createHash("sha256").update(bytes).digest("hex");
      writeFileSync(manifestFile, resealManifest(readFileSync(manifestFile, "utf8").replace(m!.sha256, forged)));
      writeFileSync(join(store, m!.checksum_key), `${forged}  ${m!.key.split("/").pop()}\n`);
      const r = dbkeep(["-c", cfg, "restore", "src-backup", "--to", "dst", "--auto-confirm"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: cannot decrypt .*\.sql\.age: the data is damaged or was changed: chunk \d+ \(after \d+ bytes of plaintext\) failed authentication$/m);
      expect(await pgQuery(DST, "SELECT v FROM keep")).toEqual([{ v: "original" }]);
      expect((await databases()).length).toBe(2);
    } finally {
      for (const [f, b] of saved) writeFileSync(f, b);
    }
  });

  it("the job's identity restores it, globals included; one-off restore with -i works too", async () => {
    await pgQuery("postgres", `DROP ROLE IF EXISTS ${ROLE}`);
    const r = dbkeep(["-c", cfg, "restore", "src-backup", "--to", "dst", "--auto-confirm", "--globals"]);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    expect(await pgQuery(DST, "SELECT v FROM secrets")).toEqual([{ v: MARKER }]);
    expect(await pgQuery("postgres", `SELECT rolname FROM pg_roles WHERE rolname = '${ROLE}'`)).toHaveLength(1);

    await dropDb(DST);
    const one = dbkeep(["restore", join(dir, "backups"), "latest", "--to", pgUrl(DST), "-i", key.file]);
    expect(one.stderr).not.toContain("error:");
    expect(one.code).toBe(0);
    expect(await pgQuery(DST, "SELECT v FROM secrets")).toEqual([{ v: MARKER }]);
  });
});
