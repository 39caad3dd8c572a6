import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import { explainDb2Error } from "../../src/engines/db2/index.js";
import { dbkeep, tempDir, storedBackup } from "../helpers/env.js";

const PASSWORD = "Db2s3cret";
const IMAGE = Buffer.concat([Buffer.from("DB2 backup image\n"), Buffer.from(Array.from({ length: 8192 }, (_v, i) => (i * 7) % 256))]);

/**
 * Fake `db2` (the CLP) and `db2ckbkp`. db2 records its argv, the mode of its command file and the file's
 * statements with the password masked (plus whether it was there), and acts on them: BACKUP writes an image named
 * as Db2 names it into the TO directory, RESTORE copies the image from the FROM directory to log/, LIST DATABASE
 * DIRECTORY prints the aliases in bin/catalog. The child gets a minimal environment: files steer the scripts.
 */
function fakeTools(dir: string): { bin: string; log: string } {
  const bin = join(dir, "bin");
  const log = join(dir, "log");
  for (const d of [bin, log]) {
    rmSync(d, { recursive: true, force: true });
    mkdirSync(d, { recursive: true });
  }
  writeFileSync(
    join(bin, "db2"),
    `#!/bin/sh
n=$(ls "${log}" | grep -c '^db2\\.argv') ; n=$((n + 1))
printf '%s\\n' "$@" > "${log}/db2.argv.$n"
env > "${log}/db2.env.$n"
f="$2"
stat -c %a "$f" > "${log}/db2.mode.$n"
echo "$f" > "${log}/db2.file.$n"
if grep -q '${PASSWORD}' "$f"; then echo yes > "${log}/db2.haspw.$n"; fi
sed 's/${PASSWORD}/***/g' "$f" > "${log}/db2.cmd.$n"
if [ -f "${bin}/fail-auth" ]; then
  echo 'SQL30082N  Security processing failed with reason "24" ("USERNAME AND/OR PASSWORD INVALID").  SQLSTATE=08001'
  exit 4
fi
if grep -q '^LIST DATABASE DIRECTORY' "$f"; then
  echo " System Database Directory"
  for a in $(cat "${bin}/catalog" 2>/dev/null); do echo ""; echo " Database alias                       = $a"; echo " Database name                        = $a"; done
  exit 0
fi
if grep -q '^BACKUP DATABASE' "$f"; then
  db=$(sed -n 's/^BACKUP DATABASE \\([^ ;]*\\).*/\\1/p' "$f")
  to=$(sed -n 's/.* TO \\([^ ;]*\\).*/\\1/p' "$f")
  cp "${bin}/image" "$to/$db.0.db2inst1.DBPART000.20260101120000.001"
  echo ""
  echo "Backup successful. The timestamp for this backup image is : 20260101120000"
  exit 0
fi
if grep -q '^RESTORE DATABASE' "$f"; then
  from=$(sed -n 's/.* FROM \\([^ ;]*\\).*/\\1/p' "$f")
  cp "$from"/*.001 "${log}/restored"
  echo "DB20000I  The RESTORE DATABASE command completed successfully."
  exit 0
fi
echo "SQL0104N  An unexpected token was found."; exit 4
`,
  );
  writeFileSync(
    join(bin, "db2ckbkp"),
    `#!/bin/sh
printf '%s\\n' "$@" >> "${log}/db2ckbkp.argv"
if [ -f "${bin}/ckbkp-fail" ]; then echo "Image Verification Complete - ERRORS DETECTED:  1"; exit 1; fi
echo "[1] Buffers processed:  ####"
echo "Image Verification Complete - successful."
`,
  );
  writeFileSync(join(bin, "image"), IMAGE);
  chmodSync(join(bin, "db2"), 0o755);
  chmodSync(join(bin, "db2ckbkp"), 0o755);
  return { bin, log };
}

function config(dir: string, bin: string, extra = ""): string {
  const file = join(dir, "dbkeep.yaml");
  writeFileSync(
    file,
    `datasources:
  src:
    engine: db2
    instance: db2inst1
    database: SAMPLE
    user: db2inst1
    password_env: DB2_PW
    bin_dir: ${bin}
    compression: zstd
${extra}
  dst:
    engine: db2
    instance: db2inst1
    database: SAMPCOPY
    user: db2inst1
    password_env: DB2_PW
    bin_dir: ${bin}
stores:
  local: { type: local, path: ${join(dir, "backups")} }
jobs:
  db2: { datasource: src, store: local }
`,
    { mode: 0o600 },
  );
  return file;
}

const ENV = { DB2_PW: PASSWORD };
const read = (p: string) => readFileSync(p, "utf8");

/** Every db2 call as { argv, cmd (password masked), mode, haspw, file }. */
function calls(log: string): { argv: string[]; cmd: string; mode: string; haspw: boolean; file: string; env: string }[] {
  const n = readdirSync(log).filter((f) => f.startsWith("db2.argv.")).length;
  return Array.from({ length: n }, (_v, i) => ({
    argv: read(join(log, `db2.argv.${i + 1}`)).trimEnd().split("\n"),
    cmd: read(join(log, `db2.cmd.${i + 1}`)),
    mode: read(join(log, `db2.mode.${i + 1}`)).trim(),
    haspw: existsSync(join(log, `db2.haspw.${i + 1}`)),
    file: read(join(log, `db2.file.${i + 1}`)).trim(),
    env: read(join(log, `db2.env.${i + 1}`)),
  }));
}


describe("db2 engine through the CLI, with stand-in db2 and db2ckbkp", () => {
  it("backs up through a 0600 command file, checks the image, and restores it into another database", () => {
    const dir = tempDir();
    const { bin, log } = fakeTools(dir);
    const cfg = config(dir, bin);
    const b = dbkeep(["-c", cfg, "backup", "db2"], { env: ENV });
    expect(b.stderr).not.toContain("error:");
    expect(b.code).toBe(0);
    const [backup] = calls(log);
    expect(backup?.argv).toEqual(["-stf", backup?.file]);
    expect(backup?.cmd).toMatch(/^BACKUP DATABASE SAMPLE USER db2inst1 USING \*\*\* TO \S+ WITHOUT PROMPTING;\n$/);
    expect(backup?.haspw).toBe(true);
    expect(backup?.mode).toBe("600");
    expect(backup?.env).toContain("DB2INSTANCE=db2inst1");
    expect(backup?.env).not.toContain(PASSWORD);
    expect(existsSync(backup?.file ?? "")).toBe(false);
    const staging = /TO (\S+) /.exec(backup?.cmd ?? "")?.[1] ?? "";
    expect(existsSync(staging)).toBe(false);
    expect(read(join(log, "db2ckbkp.argv")).trim()).toBe(join(staging, "SAMPLE.0.db2inst1.DBPART000.20260101120000.001"));
    expect(b.stdout + b.stderr).not.toContain(PASSWORD);
    expect(storedBackup(dir, ".db2.tar.zst")).toMatch(/SAMPLE-\d{8}-\d{6}\.db2\.tar\.zst$/);

    writeFileSync(join(bin, "catalog"), "SAMPLE SAMPCOPY\n");
    const refused = dbkeep(["-c", cfg, "restore", "db2", "--to", "dst"], { env: ENV });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/restore refused/);

    const r = dbkeep(["-c", cfg, "restore", "db2", "--to", "dst", "--auto-confirm"], { env: ENV });
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    const restore = calls(log).at(-1);
    expect(restore?.cmd).toMatch(/^RESTORE DATABASE SAMPLE USER db2inst1 USING \*\*\* FROM \S+ TAKEN AT 20260101120000 INTO SAMPCOPY REPLACE EXISTING WITHOUT PROMPTING;\n$/);
    expect(restore?.mode).toBe("600");
    expect(restore?.argv.join(" ")).not.toContain(PASSWORD);
    expect(existsSync(restore?.file ?? "")).toBe(false);
    expect(readFileSync(join(log, "restored")).equals(IMAGE)).toBe(true);
    expect(read(join(log, "db2ckbkp.argv")).trim().split("\n")).toHaveLength(2);
  });

  it("adds ONLINE, and rolls an online image forward to its end after the restore", () => {
    const dir = tempDir();
    const { bin, log } = fakeTools(dir);
    const cfg = config(dir, bin, "    online: true");
    expect(dbkeep(["-c", cfg, "backup", "db2"], { env: ENV }).code).toBe(0);
    expect(calls(log)[0]?.cmd).toMatch(/^BACKUP DATABASE SAMPLE USER db2inst1 USING \*\*\* ONLINE TO \S+ INCLUDE LOGS WITHOUT PROMPTING;\n$/);
    const r = dbkeep(["-c", cfg, "restore", "db2", "--to", "dst", "--auto-confirm"], { env: ENV });
    expect(r.code).toBe(0);
    const cmd = calls(log).at(-1)?.cmd ?? "";
    expect(cmd).toMatch(/^RESTORE DATABASE SAMPLE USER db2inst1 USING \*\*\* FROM \S+ TAKEN AT 20260101120000 INTO SAMPCOPY LOGTARGET \S+ REPLACE EXISTING WITHOUT PROMPTING;\n/);
    expect(cmd).toMatch(/\nROLLFORWARD DATABASE SAMPCOPY USER db2inst1 USING \*\*\* TO END OF BACKUP AND COMPLETE OVERFLOW LOG PATH \(\S+\);\n$/);
  });

  it("fails the backup when db2ckbkp finds the image damaged, with nothing listed", () => {
    const dir = tempDir();
    const { bin } = fakeTools(dir);
    writeFileSync(join(bin, "ckbkp-fail"), "");
    const cfg = config(dir, bin);
    const b = dbkeep(["-c", cfg, "--log-format", "text", "backup", "db2"], { env: ENV });
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/error: db2ckbkp found the backup image SAMPLE\.0\.db2inst1\.DBPART000\.20260101120000\.001 damaged/);
    const l = dbkeep(["-c", cfg, "list", "db2", "--json"], { env: ENV });
    expect((JSON.parse(l.stdout) as { backups: unknown[] }).backups).toEqual([]);
  });

  it("turns SQL30082N into a connection error with a hint and never shows the password", () => {
    const dir = tempDir();
    const { bin } = fakeTools(dir);
    writeFileSync(join(bin, "fail-auth"), "");
    const cfg = config(dir, bin);
    const b = dbkeep(["-c", cfg, "--log-format", "text", "backup", "db2"], { env: ENV });
    expect(b.code).toBe(1);
    expect(b.stderr.split("\n").filter((l) => l.startsWith("error:"))).toEqual([expect.stringMatching(/^error: db2 failed with exit code 4/)]);
    expect(b.stderr).toMatch(/SQL30082N/);
    expect(b.stderr).toMatch(/hint: Db2 refused the user or password/);
    expect(b.stderr).not.toContain(PASSWORD);
  });

  it("never calls RESTORE for a stored backup with a flipped byte", () => {
    const dir = tempDir();
    const { bin, log } = fakeTools(dir);
    const cfg = config(dir, bin);
    expect(dbkeep(["-c", cfg, "backup", "db2"], { env: ENV }).code).toBe(0);
    const file = storedBackup(dir, ".db2.tar.zst");
    const bytes = readFileSync(file);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] ?? 0) ^ 0x01;
    writeFileSync(file, bytes);
    const r = dbkeep(["-c", cfg, "restore", "db2", "--to", "dst", "--auto-confirm"], { env: ENV });
    expect(r.code).toBe(1);
    expect(calls(log).some((c) => c.cmd.startsWith("RESTORE"))).toBe(false);
    expect(existsSync(join(log, "restored"))).toBe(false);
  });

  it("names the Db2 client when db2 is missing", () => {
    const dir = tempDir();
    mkdirSync(join(dir, "empty"));
    const cfg = config(dir, join(dir, "empty"));
    const b = dbkeep(["-c", cfg, "--log-format", "text", "backup", "db2"], { env: ENV });
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/db2 not found/);
    expect(b.stderr).toMatch(/install the IBM Db2 client or set bin_dir/);
  });
});

describe("db2 config and messages", () => {
  it("checks the database name and the password sources", () => {
    const problems = (body: string): string[] => {
      try {
        parseConfig(`datasources:\n  d: { engine: db2, ${body} }\n`);
        return [];
      } catch (err) {
        return ((err as { details?: string }).details ?? "").split("\n").map((l) => l.trim());
      }
    };
    expect(problems("database: SAMPLE, online: true")).toEqual([]);
    expect(problems("database: toolongname")[0]).toMatch(/datasources\.d\.database: a Db2 database name/);
    expect(problems("database: S, password: x, password_env: Y")).toContain("datasources.d.password: give only one of password, password_env");
  });

  it("maps SQL codes to hints", () => {
    expect(explainDb2Error('SQL30082N  Security processing failed with reason "24"')).toMatchObject({ code: "CONNECTION_FAILED" });
    expect(explainDb2Error("SQL1032N  No start database manager command was issued.  SQLSTATE=57019")).toMatchObject({ hint: expect.stringMatching(/db2start/) });
    expect(explainDb2Error("SQL1035N  The operation failed because the specified database cannot be connected to in the mode requested.")).toMatchObject({ retryable: true });
    expect(explainDb2Error("something else")).toBeUndefined();
  });
});
