import { spawn, spawnSync } from "node:child_process";
import { openSync, readSync, writeSync, closeSync, readdirSync, statSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, createDb, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, tempDir } from "../helpers/env.js";
import { contentOf } from "../helpers/pgcompare.js";

const SRC = "dbkeep_it_fail_src";
const DST = "dbkeep_it_fail_dst";
const available = await pgAvailable();

function backupsIn(store: string): string[] {
  const r = dbkeep(["list", store, "--json"]);
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { backups: { id: string }[] }).backups.map((b) => b.id);
}

function flipByte(file: string, at: number): void {
  const fd = openSync(file, "r+");
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0] = b[0]! ^ 0x01;
  writeSync(fd, b, 0, 1, at);
  closeSync(fd);
}

describe.skipIf(!available)("PostgreSQL: killed and corrupted backups", () => {
  let store: string;
  let good: string;

  beforeAll(async () => {
    store = tempDir();
    await createDb(SRC);
    // Enough data that a slow compression level keeps the backup running for a few seconds.
    await pgQuery(SRC, "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat(' payload ', 5) || g AS v FROM generate_series(1, 400000) g");
    await pgQuery(SRC, "CREATE TABLE small (id int PRIMARY KEY, v text); INSERT INTO small SELECT g, 'row ' || g FROM generate_series(1, 100) g");
  });

  afterAll(async () => {
    await dropDb(SRC);
    await dropDb(DST);
  });

  it("SIGKILL mid-stream: nothing is listed, the earlier backup still restores, the next backup succeeds, prune removes the leftover", async () => {
    const first = dbkeep(["backup", pgUrl(SRC), "--to", store, "--compression", "zstd", "--json"]);
    expect(first.code).toBe(0);
    const before = backupsIn(store);
    expect(before).toHaveLength(1);
    good = before[0]!;

    const child = spawn(process.execPath, [CLI, "backup", pgUrl(SRC), "--to", store, "--compression", "zstd", "--level", "19"], { stdio: "ignore" });
    const dir = join(store, SRC);
    const deadline = Date.now() + 60_000;
    let partial: string | undefined;
    while (!partial && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      partial = readdirSync(dir).find((f) => f.includes(".dbkeep-partial-") && statSync(join(dir, f)).size > 0);
    }
    expect(partial, "the backup should be mid-stream").toBeDefined();
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));

    expect(backupsIn(store)).toEqual(before);
    const all = dbkeep(["list", store, "--all"]);
    expect(all.stdout).toMatch(/incomplete .*dbkeep-partial-.*(never committed|interrupted upload)/);

    const restored = dbkeep(["restore", store, before[0]!, "--to", pgUrl(DST), "--auto-confirm"]);
    expect(restored.stderr).not.toContain("error:");
    expect(restored.code).toBe(0);
    expect(await contentOf(DST)).toEqual(await contentOf(SRC));

    await new Promise((r) => setTimeout(r, 1100)); // a new second, so the next backup gets its own name
    const next = dbkeep(["backup", pgUrl(SRC), "--to", store, "--compression", "zstd"]);
    expect(next.code).toBe(0);
    expect(backupsIn(store)).toHaveLength(2);
    // The next backup removed what the killed one left (its process is gone): prune finds nothing more.
    expect(readdirSync(dir).some((f) => f.includes(".dbkeep-partial-") || f.includes(".pending-"))).toBe(false);
    const pruned = dbkeep(["prune", store, "--orphan-grace", "0s"]);
    expect(pruned.code).toBe(0);
    expect(pruned.stdout).not.toContain("leftover");
    expect(backupsIn(store)).toHaveLength(2);
  });

  for (const format of ["plain", "custom"] as const) {
    it(`one flipped byte in a stored ${format} backup: restore refuses and the target is untouched`, async () => {
      const b = dbkeep(["backup", pgUrl(SRC, `format=${format}`), "--to", store, "--compression", "gzip", "--json"]);
      expect(b.code).toBe(0);
      const { key, backup } = (JSON.parse(b.stdout) as { jobs: { key: string; backup: string }[] }).jobs[0]!;
      // The target holds the source's data before the attempt; it must hold exactly that afterwards.
      expect(dbkeep(["restore", store, backup, "--to", pgUrl(DST), "--auto-confirm"]).code).toBe(0);
      await pgQuery(DST, "INSERT INTO small VALUES (1000, 'written after the restore')");
      const before = await contentOf(DST);

      const file = join(store, key);
      flipByte(file, Math.floor(statSync(file).size / 2));
      const r = dbkeep(["restore", store, backup, "--to", pgUrl(DST), "--auto-confirm"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/SHA-256 of .* does not match its manifest|corrupt|invalid/i);
      expect(r.stderr.split("\n").filter((l) => l.startsWith("error: "))).toHaveLength(1);
      expect(await contentOf(DST)).toEqual(before);
      const leftovers = await pgQuery<{ datname: string }>("postgres", "SELECT datname FROM pg_database WHERE datname LIKE $1", [`${DST}_dbkeep_%`]);
      expect(leftovers).toEqual([]);
      // The restore recorded what it found: the backup is listed as damaged now (exit 1), and prune --force deletes it.
      const listed = dbkeep(["list", store, "--json"]);
      expect(listed.code).toBe(1);
      expect((JSON.parse(listed.stdout) as { damaged: { id: string; problems: string[] }[] }).damaged).toEqual([
        { id: backup, taken_at: expect.any(String), problems: [expect.stringMatching(/restore found its data damaged/)], repairable: false, keys: expect.any(Array) },
      ]);
      expect(dbkeep(["prune", store, "--force", "--keep-last", "100"]).code).toBe(0);
      expect(dbkeep(["list", store]).code).toBe(0);
    });
  }

  it("pg_dump killed mid-dump while its output goes straight into zstd: the job fails naming pg_dump, nothing is listed", async () => {
    const before = backupsIn(store);
    const child = spawn(process.execPath, [CLI, "backup", pgUrl(SRC), "--to", store, "--compression", "zstd", "--level", "19"], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number>((r) => child.once("exit", (code) => r(code ?? -1)));
    const dir = join(store, SRC);
    const deadline = Date.now() + 60_000;
    let killed = false;
    while (!killed && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      const mid = existsSync(dir) && readdirSync(dir).some((f) => f.includes(".dbkeep-partial-"));
      if (!mid) continue;
      const pids = (spawnSync("pgrep", ["-f", "pg_dump.*snapshot"], { encoding: "utf8" }).stdout ?? "").trim().split("\n").filter(Boolean);
      for (const pid of pids) process.kill(Number(pid), "SIGKILL");
      killed = pids.length > 0;
    }
    expect(killed, "pg_dump should be running mid-stream").toBe(true);
    expect(await exited).toBe(1);
    expect(stderr).toMatch(/pg_dump/);
    expect(backupsIn(store)).toEqual(before);
  });

  it("a missing target database is created", async () => {
    await dropDb(DST);
    const r = dbkeep(["restore", store, good, "--to", pgUrl(DST)]);
    expect(r.stderr).not.toContain("error:");
    expect(r.code).toBe(0);
    expect(existsSync(store)).toBe(true);
    const [row] = await pgQuery<{ n: string }>(DST, "SELECT count(*) AS n FROM small");
    expect(Number(row?.n)).toBe(100);
  });

  it("existing tables are reported and, without a TTY or --auto-confirm, the restore refuses", async () => {
    const r = dbkeep(["restore", store, good, "--to", pgUrl(DST)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("already holds: public.big, public.small");
    expect(r.stderr).toContain("restore refused");
    expect(r.stderr).toContain("--auto-confirm");
  });

  it("a pg_dump older than the server: checked while pg_dump starts, which is stopped; the job fails with a hint and leaves nothing", async () => {
    const before = backupsIn(store);
    const bin = tempDir();
    const pidFile = join(bin, "dump.pid");
    // Answers --version as PostgreSQL 9.6; as the dump it records its pid and waits, as a slow start would.
    writeFileSync(
      join(bin, "pg_dump"),
      `#!/bin/sh\nif [ "$1" = "--version" ]; then sleep 0.3; echo "pg_dump (PostgreSQL) 9.6.24"; exit 0; fi\necho $$ > ${pidFile}\nexec sleep 30\n`,
      { mode: 0o755 },
    );
    const started = Date.now();
    const r = dbkeep(["backup", `${pgUrl(SRC)}?bin_dir=${encodeURIComponent(bin)}`, "--to", store, "--compression", "zstd"]);
    expect(r.code).toBe(1);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(r.stderr).toMatch(/pg_dump 9\.6\.24 is older than the server \(\d+/);
    expect(r.stderr).toMatch(/hint: install postgresql-client-\d+ and set pg_version/);
    // The dump had started (the check did not hold it back) and is gone now.
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    expect(pid).toBeGreaterThan(0);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(backupsIn(store)).toEqual(before);
    expect(readdirSync(join(store, SRC)).filter((f) => f.includes(".dbkeep-partial-"))).toEqual([]);
  });

  it("a connection failure is one clear line with the tool's message and a hint", () => {
    const r = dbkeep(["backup", "postgres://postgres@127.0.0.1:1/nope", "--to", store]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot connect to PostgreSQL \(host 127\.0\.0\.1, port 1, database nope\)/);
    expect(r.stderr).toMatch(/hint: /);
    const missing = dbkeep(["backup", pgUrl("dbkeep_no_such_db"), "--to", store]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('database "dbkeep_no_such_db" does not exist');
  });
});
