import { spawn } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";
import { freePort, loadFixture, redisAvailable, startRedis, type TestRedis } from "../helpers/redis.js";
import { checkOf, dataPath, deadPid, editManifest, flipByte, parseReport } from "../helpers/verify.js";

function verify(store: string) {
  const r = dbkeep(["verify", store, "latest", "--json"]);
  expect(r.stdout, r.stderr).not.toBe("");
  return { code: r.code, report: parseReport(r.stdout) };
}

function scratchDirs(kind: string): string[] {
  return readdirSync(tmpdir()).filter((n) => n.startsWith(`dbkeep-verify-${kind}-`));
}

/** Scratch directories of `kind` left by a process that is gone (other test files run verify at the same time). */
function deadScratchDirs(kind: string, except: string[]): string[] {
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  return scratchDirs(kind).filter((n) => !except.includes(n) && !alive(Number(n.split("-")[3])));
}

describe("dbkeep verify: SQLite", () => {
  const dir = tempDir("dbkeep-it-verify-sqlite-");
  const good = join(dir, "good");

  beforeAll(() => {
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const r = dbkeep(["backup", `sqlite:${join(dir, "app.db")}`, "--to", good]);
    expect(r.code, r.stderr).toBe(0);
  });

  it("a good backup passes every check, and the scratch file is gone", () => {
    const before = scratchDirs("sqlite");
    const { code, report } = verify(good);
    expect(code).toBe(0);
    expect(report.checks.filter((c) => c.status !== "PASS")).toEqual([]);
    for (const name of ["checksum", "restore", "tables", "row_counts", "indexes", "foreign_keys", "views", "triggers", "orphans", "integrity"]) expect(checkOf(report, name).status).toBe("PASS");
    expect(checkOf(report, "integrity").detail).toMatch(/integrity_check ok/);
    expect(report.target.kind).toBe("file");
    expect(existsSync(report.target.name)).toBe(false);
    expect(deadScratchDirs("sqlite", before)).toEqual([]);
  });

  it("a manifest that claims more fails tables, row_counts and indexes; a corrupted object fails at the checksum", () => {
    const claims = join(dir, "claims");
    cpSync(good, claims, { recursive: true });
    editManifest(claims, (m) => {
      const tables = m.tables as { name: string; rows?: number }[];
      tables.find((t) => t.name === "orders")!.rows! += 2;
      tables.push({ name: "invoices", rows: 3 });
      (m.objects as Record<string, string[]>).indexes!.push("orders_by_date");
    });
    const a = verify(claims);
    expect(a.code).toBe(1);
    expect(checkOf(a.report, "tables")).toMatchObject({ status: "FAIL", detail: "missing 1 of 4: invoices" });
    expect(checkOf(a.report, "row_counts")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("orders: 5000 rows, expected 5002") });
    expect(checkOf(a.report, "indexes")).toMatchObject({ status: "FAIL", detail: "missing 1 of 2: orders_by_date" });

    const corrupt = join(dir, "corrupt");
    cpSync(good, corrupt, { recursive: true });
    flipByte(dataPath(corrupt), 100);
    const b = verify(corrupt);
    expect(b.code).toBe(1);
    expect(checkOf(b.report, "checksum").status).toBe("FAIL");
    expect(checkOf(b.report, "restore").status).toBe("SKIP");
  });

  it("an encrypted backup is verified with its identity, and refused without it", () => {
    const key = join(dir, "key.txt");
    const pub = dbkeep(["keygen", "-o", key]).stdout.trim().split("\n").pop()!;
    expect(pub).toMatch(/^age1/);
    const store = join(dir, "encrypted");
    expect(dbkeep(["backup", `sqlite:${join(dir, "app.db")}`, "--to", store, "-r", pub]).code).toBe(0);
    const r = dbkeep(["verify", store, "latest", "--json", "-i", key]);
    const report = parseReport(r.stdout);
    expect(r.code, r.stderr).toBe(0);
    expect(report.backup.encrypted).toBe(true);
    expect(checkOf(report, "row_counts").status).toBe("PASS");
    const without = dbkeep(["verify", store, "latest", "--json"]);
    expect(without.code).toBe(1);
    expect(checkOf(parseReport(without.stdout), "restore")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("is encrypted") });
  });

  it("--keep leaves the scratch file, and later runs do not take it for a leftover", () => {
    const r = dbkeep(["verify", good, "latest", "--json", "--keep"]);
    const kept = parseReport(r.stdout);
    expect(kept.target.kept).toBe(true);
    expect(existsSync(kept.target.name)).toBe(true);
    const next = verify(good).report;
    expect(next.leftovers_removed).not.toContain(join(kept.target.name, ".."));
    expect(existsSync(kept.target.name)).toBe(true);
    rmSync(join(kept.target.name, ".."), { recursive: true, force: true });
  });

  it("the scratch file of a killed run is removed by the next run, one of a live run is not", () => {
    const dead = join(tmpdir(), `dbkeep-verify-sqlite-${deadPid()}-0123abcd`);
    const live = join(tmpdir(), `dbkeep-verify-sqlite-${process.pid}-0123abcd`);
    for (const d of [dead, live]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, "app.db"), "left behind");
    }
    try {
      const { code } = verify(good);
      expect(code).toBe(0);
      // Another verify running at the same time (other test files) may have been the one to remove it.
      expect(existsSync(dead)).toBe(false);
      expect(existsSync(live)).toBe(true);
    } finally {
      for (const d of [dead, live]) rmSync(d, { recursive: true, force: true });
    }
  });
});

const redisOk = redisAvailable();

describe.skipIf(!redisOk)("dbkeep verify: Redis", () => {
  const dir = tempDir("dbkeep-it-verify-redis-");
  let server: TestRedis;

  beforeAll(async () => {
    server = await startRedis();
    await loadFixture(server);
    for (const mode of ["logical", "rdb"]) {
      const r = dbkeep(["backup", `redis://127.0.0.1:${server.port}?mode=${mode}`, "--to", join(dir, mode)]);
      expect(r.code, r.stderr).toBe(0);
    }
  });
  afterAll(async () => {
    await server?.stop();
  });

  it.each(["logical", "rdb"])("a good %s backup passes every check in a temporary redis-server, stopped afterwards", (mode) => {
    const { code, report } = verify(join(dir, mode));
    expect(code).toBe(0);
    expect(report.checks.filter((c) => c.status !== "PASS")).toEqual([]);
    expect(checkOf(report, "tables").detail).toBe("3 table(s) present, none unexpected");
    expect(checkOf(report, "row_counts").detail).toMatch(/^3 table\(s\), \d+ row\(s\)/);
    expect(checkOf(report, "integrity").detail).toMatch(/key\(s\) in 3 database\(s\)/);
    expect(report.target.kind).toBe("server");
    expect(existsSync(report.target.name)).toBe(false);
  });

  it("a manifest that claims more keys or another database fails row_counts and tables; a corrupted object fails at the checksum", () => {
    const claims = join(dir, "claims");
    cpSync(join(dir, "logical"), claims, { recursive: true });
    editManifest(claims, (m) => {
      const tables = m.tables as { name: string; rows?: number }[];
      tables.find((t) => t.name === "db1")!.rows! += 1;
      tables.push({ name: "db9", rows: 1 });
    });
    const a = verify(claims);
    expect(a.code).toBe(1);
    expect(checkOf(a.report, "tables")).toMatchObject({ status: "FAIL", detail: "missing 1 of 4: db9" });
    expect(checkOf(a.report, "row_counts")).toMatchObject({ status: "FAIL", detail: expect.stringContaining("db1: 3 rows, expected 4") });

    const corrupt = join(dir, "corrupt");
    cpSync(join(dir, "rdb"), corrupt, { recursive: true });
    flipByte(dataPath(corrupt), 40);
    const b = verify(corrupt);
    expect(b.code).toBe(1);
    expect(checkOf(b.report, "checksum").status).toBe("FAIL");
    expect(checkOf(b.report, "restore").status).toBe("SKIP");
  });

  it("the redis-server of a killed run is stopped and its directory removed by the next run", async () => {
    const leftover = join(tmpdir(), `dbkeep-verify-redis-${deadPid()}-0badc0de`);
    mkdirSync(leftover);
    const port = await freePort();
    const orphan = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--dir", leftover, "--save", "", "--pidfile", join(leftover, "redis.pid"), "--daemonize", "no"], { stdio: "ignore", detached: true });
    const gone = new Promise((r) => orphan.once("exit", r));
    for (let i = 0; i < 100 && !existsSync(join(leftover, "redis.pid")); i++) await new Promise((r) => setTimeout(r, 50));
    const { report } = verify(join(dir, "logical"));
    expect(report.leftovers_removed).toContain(leftover);
    await gone;
    expect(orphan.signalCode).toBe("SIGKILL");
    expect(existsSync(leftover)).toBe(false);
  });
});
