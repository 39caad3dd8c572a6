import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, CLI_ENV, dbkeep, dropDb, pgAvailable, pgQuery, pgUrl, ROOT } from "../helpers/env.js";
import { contentOf } from "../helpers/pgcompare.js";

/**
 * Crash drills of `dbkeep restore` over an existing PostgreSQL database: SIGKILL and SIGTERM at named steps of the
 * restore and its swap (DBKEEP_TEST_PAUSE_AT, a hook for these drills only) and at seeded random times while the
 * backup streams. After each: the target exists and holds either its old content or the complete new content;
 * a SIGTERM exits 143 with the interrupt line (never "Premature close" or EPIPE) and leaves nothing behind; after a
 * SIGKILL, the next restore or `dbkeep doctor` leaves no staging database and no temp directory of dbkeep's. A live
 * concurrent restore's staging database and temp copy are never touched.
 *
 * DBKEEP_DRILL_SEED repeats a run; DBKEEP_DRILLS sets the number of timed drills (default 8).
 */
const available = await pgAvailable();
const P = `dbkeep_it_crash_${randomBytes(2).toString("hex")}`;
const SRC = `${P}_src`;
const TARGET = `${P}_t`;
const TPL = `${P}_tpl`;
const OTHER = `${P}_other`;
const SEED = Number(process.env.DBKEEP_DRILL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const TIMED = Number(process.env.DBKEEP_DRILLS ?? 8);
/** The temp dir of every dbkeep run here: whatever dbkeep leaves in it is seen. */
const TMP = mkdtempSync(join(tmpdir(), "dbkeep-it-crash-"));
const STORE = mkdtempSync(join(tmpdir(), "dbkeep-it-crash-store-"));
const FORMATS = { plain: "zstd", custom: "gzip", directory: "zstd" } as const;
type Format = keyof typeof FORMATS;
const STEPS = ["restore:staging-created", "restore:scratch-ready", "restore:before-swap", "swap:before-commit", "swap:after-commit"] as const;

/** mulberry32: small, seedable, good enough to pick drill points. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Run {
  waitFor(what: RegExp | string, ms?: number): Promise<void>;
  kill(sig: NodeJS.Signals): void;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function start(args: string[], env: Record<string, string> = {}): Run {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...CLI_ENV, TMPDIR: TMP, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const waiters: (() => void)[] = [];
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
    for (const w of waiters) w();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return {
    exit,
    kill: (sig) => child.kill(sig),
    waitFor: (what, ms = 60_000) =>
      new Promise<void>((resolve, reject) => {
        const seen = () => (typeof what === "string" ? stderr.includes(what) : what.test(stderr));
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${String(what)}; stderr:\n${stderr}`)), ms);
        const check = () => {
          if (!seen()) return;
          clearTimeout(timer);
          resolve();
        };
        waiters.push(check);
        void exit.then(() => {
          if (!seen()) {
            clearTimeout(timer);
            reject(new Error(`exited before ${String(what)}; stderr:\n${stderr}`));
          }
        });
        check();
      }),
  };
}

function restoreArgs(format: Format, jobs: number, target = TARGET): string[] {
  return ["restore", join(STORE, format), "latest", "--to", pgUrl(target), "--auto-confirm", "--jobs", String(jobs), "--log-format", "text"];
}

/** dbkeep's leftovers on the server and in the temp dir. */
async function leftoverDbs(prefix = P): Promise<string[]> {
  const r = await pgQuery<{ datname: string }>("postgres", "SELECT datname FROM pg_database WHERE starts_with(datname, $1) AND datname ~ '_dbkeep_(restore|old)_' ORDER BY 1", [prefix]);
  return r.map((x) => x.datname);
}
function leftoverDirs(): string[] {
  return readdirSync(TMP).filter((n) => n.startsWith("dbkeep-"));
}

/**
 * A killed process's own server session ends once the statement it was running finishes (a CREATE DATABASE, a
 * DROP DATABASE), and holds the restore's lock until then: the "next run" of the drills starts after that, as a
 * real next run would. The sessions of its orphaned pg_restore or psql in the staging database are not waited for:
 * the next run must cope with them.
 */
async function settle(since: Date): Promise<void> {
  for (let i = 0; i < 150; i++) {
    const r = await pgQuery<{ n: string }>(
      "postgres",
      "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'dbkeep' AND backend_start >= $1 AND datname = 'postgres'",
      [since],
    );
    if (Number(r[0]?.n) === 0) return;
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function resetTarget(name = TARGET): Promise<void> {
  await dropDb(name);
  await pgQuery("postgres", `CREATE DATABASE "${name}" TEMPLATE "${TPL}"`);
  await pgQuery("postgres", `ALTER DATABASE "${name}" SET work_mem TO '7MB'`);
}

async function workMem(db: string): Promise<string | undefined> {
  const r = await pgQuery<{ w: string }>(db, "SELECT current_setting('work_mem') AS w");
  return r[0]?.w;
}

let OLD: Record<string, string>;
let NEW: Record<string, string>;
/** How long a restore takes here from its "restoring" line to its exit (measured by the baseline test). */
let RESTORE_MS = 700;

/** "old", "new", or a description of what else is there (a failure). */
async function outcome(db = TARGET): Promise<string> {
  let now: Record<string, string>;
  try {
    now = await contentOf(db);
  } catch (err) {
    return `unreadable: ${(err as Error).message}`;
  }
  const same = (a: Record<string, string>) => JSON.stringify(a) === JSON.stringify(now);
  return same(OLD) ? "old" : same(NEW) ? "new" : `neither: ${JSON.stringify(now)}`;
}

describe.skipIf(!available)("crash drills: restore of PostgreSQL over an existing database", () => {
  beforeAll(async () => {
    await dropDb(SRC);
    await dropDb(TPL);
    await pgQuery("postgres", `CREATE DATABASE "${SRC}"`);
    await pgQuery(SRC, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'new ' || md5(g::text) FROM generate_series(1, 40000) g");
    await pgQuery(SRC, "CREATE TABLE u (k text PRIMARY KEY); INSERT INTO u VALUES ('only in the backup')");
    await pgQuery("postgres", `CREATE DATABASE "${TPL}"`);
    await pgQuery(TPL, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'old ' || g FROM generate_series(1, 500) g");
    for (const [format, compression] of Object.entries(FORMATS)) {
      const b = dbkeep(["backup", pgUrl(SRC, `format=${format}`), "--to", join(STORE, format), "--compression", compression], { env: { TMPDIR: TMP } });
      expect(b.code, b.stderr).toBe(0);
    }
    NEW = await contentOf(SRC);
    OLD = await contentOf(TPL);
    expect(OLD).not.toEqual(NEW);
  });

  afterAll(async () => {
    if (!available) return;
    for (const db of [SRC, TPL, TARGET, OTHER, `${P}_legacy`, `${P}_closed`, ...(await leftoverDbs())]) await dropDb(db);
    rmSync(TMP, { recursive: true, force: true });
    rmSync(STORE, { recursive: true, force: true });
  });

  it("restores over the target and carries its settings over (the drills' baseline)", async () => {
    await resetTarget();
    expect(await outcome()).toBe("old");
    let slowest = 0;
    for (const [format, jobs] of [["plain", 1], ["custom", 2], ["directory", 2]] as const) {
      await resetTarget();
      const run = start(restoreArgs(format, jobs));
      await run.waitFor(/restoring \S+ into/);
      const t0 = Date.now();
      const r = await run.exit;
      slowest = Math.max(slowest, Date.now() - t0);
      expect(r.code, r.stderr).toBe(0);
      expect(await outcome(), format).toBe("new");
      expect(await workMem(TARGET)).toBe("7MB");
      expect(await leftoverDbs()).toEqual([]);
      expect(leftoverDirs()).toEqual([]);
    }
    // The timed drills kill anywhere from the start of the stream to the end of the swap.
    RESTORE_MS = slowest;
  });

  const stats = { drills: 0, old: 0, new: 0, completedBeforeKill: 0, sigkill: 0, sigterm: 0 };

  /** One drill: kill at `at` (a named step or a delay after the restore started), then check the invariants. */
  async function drill(label: string, format: Format, jobs: number, sig: NodeJS.Signals, at: string | number, next: "doctor" | "restore"): Promise<string> {
    await resetTarget();
    const since = new Date();
    const run = start(restoreArgs(format, jobs), typeof at === "string" ? { DBKEEP_TEST_PAUSE_AT: at } : {});
    if (typeof at === "string") await run.waitFor(`dbkeep-test-pause: ${at}`);
    else {
      await run.waitFor(/restoring \S+ into/);
      await new Promise((r) => setTimeout(r, at));
    }
    run.kill(sig);
    const r = await run.exit;
    const what = `${label}: ${format} -j${jobs}, ${sig} at ${typeof at === "string" ? at : `${at} ms`}`;
    const got = await outcome();
    // The target is there, accepts connections and holds one of the two: never missing, never half.
    expect(["old", "new"], `${what}\n${got}\n${r.stderr}`).toContain(got);
    if (got === "new") expect(await workMem(TARGET), what).toBe("7MB");
    stats.drills++;
    stats[got as "old" | "new"]++;
    if (r.code === 0) {
      // It finished before the signal came.
      stats.completedBeforeKill++;
      expect(got, what).toBe("new");
    } else if (sig === "SIGTERM") {
      stats.sigterm++;
      expect(r.stderr, what).not.toMatch(/Premature close|EPIPE|ERR_STREAM/);
      expect(r.code, `${what}\n${r.stderr}`).toBe(143);
      if (got === "old") expect(r.stderr, what).toContain("error: interrupted by SIGTERM");
      // SIGTERM cleans up itself: nothing is left for a next run.
      await settle(since);
      expect(await leftoverDbs(), what).toEqual([]);
      expect(leftoverDirs(), what).toEqual([]);
      return got;
    } else {
      stats.sigkill++;
      expect(r.signal, what).toBe("SIGKILL");
    }
    // The next run finds and removes whatever the killed one left.
    await settle(since);
    if (next === "doctor") {
      const d = dbkeep(["doctor", pgUrl(TARGET)], { env: { TMPDIR: TMP } });
      expect(d.stdout, what).toContain("✓ pg_restore");
      expect(d.stdout, what).not.toMatch(/✗ .*(killed|leftover)/);
      expect(await outcome(), what).toBe(got);
    } else {
      const again = await start(restoreArgs(format, jobs)).exit;
      expect(again.code, `${what}\n${again.stderr}`).toBe(0);
      expect(await outcome(), what).toBe("new");
    }
    expect(await leftoverDbs(), what).toEqual([]);
    expect(leftoverDirs(), what).toEqual([]);
    return got;
  }

  it("SIGKILL and SIGTERM at every named step of the restore and its swap", async () => {
    const pick = rng(SEED);
    for (const step of STEPS) {
      for (const sig of ["SIGKILL", "SIGTERM"] as const) {
        const format: Format = step === "restore:scratch-ready" ? (pick() < 0.5 ? "custom" : "directory") : (["plain", "custom", "directory"] as const)[Math.floor(pick() * 3)]!;
        const jobs = format === "plain" ? 1 : step === "restore:scratch-ready" ? 2 : 1 + Math.floor(pick() * 2);
        const got = await drill(`seed ${SEED}`, format, jobs, sig, step, pick() < 0.5 ? "doctor" : "restore");
        // Before the swap's COMMIT the old content stays, after it the new one: there is no state in between.
        expect(got, `seed ${SEED}: ${sig} at ${step}`).toBe(step === "swap:after-commit" ? "new" : "old");
      }
    }
  }, 300_000);

  it(`SIGKILL and SIGTERM at ${TIMED} seeded random times while the backup streams`, async () => {
    const pick = rng(SEED ^ 0x5eed);
    for (let i = 0; i < TIMED; i++) {
      const format = (["plain", "custom", "directory"] as const)[Math.floor(pick() * 3)]!;
      const jobs = format === "plain" ? 1 : 1 + Math.floor(pick() * 2);
      const sig = pick() < 0.5 ? "SIGKILL" : "SIGTERM";
      const delay = Math.floor(pick() * RESTORE_MS);
      await drill(`seed ${SEED} drill ${i}`, format, jobs, sig, delay, pick() < 0.5 ? "doctor" : "restore");
    }
    console.log(`restore crash drills, named steps and timed (seed ${SEED}): ${JSON.stringify(stats)}`);
  }, 300_000);

  it("never touches a live concurrent restore's staging database or temp copy", async () => {
    await resetTarget(OTHER);
    const resume = join(STORE, "resume");
    rmSync(resume, { force: true });
    // A: paused with its staging database and its pg_restore -j temp copy in place.
    const a = start(restoreArgs("directory", 2, OTHER), { DBKEEP_TEST_PAUSE_AT: "restore:scratch-ready", DBKEEP_TEST_RESUME_FILE: resume });
    await a.waitFor("dbkeep-test-pause: restore:scratch-ready");
    const liveDbs = await leftoverDbs(OTHER);
    const liveDirs = leftoverDirs();
    expect(liveDbs).toHaveLength(1);
    expect(liveDirs).toHaveLength(1);
    // B: killed in the same state, so that there is something dead to clean up beside A.
    await resetTarget();
    const since = new Date();
    const b = start(restoreArgs("directory", 2), { DBKEEP_TEST_PAUSE_AT: "restore:scratch-ready" });
    await b.waitFor("dbkeep-test-pause: restore:scratch-ready");
    b.kill("SIGKILL");
    await b.exit;
    await settle(since);
    expect((await leftoverDbs(TARGET)).length).toBe(1);
    // doctor and another restore run beside A: B's leftovers go, A's stay.
    const d = dbkeep(["doctor", pgUrl(TARGET)], { env: { TMPDIR: TMP } });
    expect(d.stdout).toMatch(/a restore into .*_other is running/);
    expect(d.stdout).toMatch(/dropped \S+_t_dbkeep_restore_\S+, the staging database of a restore into \S+_t that was killed/);
    const c = await start(restoreArgs("plain", 1)).exit;
    expect(c.code, c.stderr).toBe(0);
    expect(await leftoverDbs(TARGET)).toEqual([]);
    expect(await leftoverDbs(OTHER)).toEqual(liveDbs);
    expect(leftoverDirs()).toEqual(liveDirs);
    // A goes on from where it was and completes.
    writeFileSync(resume, "");
    const ra = await a.exit;
    expect(ra.code, ra.stderr).toBe(0);
    expect(await outcome(OTHER)).toBe("new");
    expect(await leftoverDbs(OTHER)).toEqual([]);
    rmSync(resume, { force: true });
    expect(leftoverDirs()).toEqual([]);
  }, 120_000);

  it("repairs what an earlier dbkeep's non-atomic swap left: a target renamed away, a target refusing connections", async () => {
    // Killed between its two renames: the target renamed to ..._dbkeep_old_<id>, the staging database beside it.
    const legacy = `${P}_legacy`;
    await dropDb(legacy);
    await pgQuery("postgres", `CREATE DATABASE "${legacy}_dbkeep_old_0123abcd" TEMPLATE "${TPL}"`);
    await pgQuery("postgres", `ALTER DATABASE "${legacy}_dbkeep_old_0123abcd" ALLOW_CONNECTIONS false`);
    await pgQuery("postgres", `CREATE DATABASE "${legacy}_dbkeep_restore_0123abcd"`);
    // A restore into it refuses: the target looked missing when it was inspected, and is back now.
    const r = await start(restoreArgs("plain", 1, legacy)).exit;
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain(`database ${legacy} was missing after an earlier restore was killed in its swap; it has been put back`);
    expect(await outcome(legacy)).toBe("old");
    expect(await leftoverDbs(legacy)).toEqual([]);

    // Killed after closing the target to connections, before renaming it.
    const closed = `${P}_closed`;
    await resetTarget(closed);
    await pgQuery("postgres", `ALTER DATABASE "${closed}" ALLOW_CONNECTIONS false`);
    await pgQuery("postgres", `CREATE DATABASE "${closed}_dbkeep_restore_89abcdef"`);
    const d = dbkeep(["doctor", pgUrl(closed)], { env: { TMPDIR: TMP } });
    expect(d.stdout).toContain(`! database ${closed} refused connections after an earlier dbkeep's restore was killed in its swap; it accepts them again`);
    expect(await outcome(closed)).toBe("old");
    expect(await leftoverDbs(closed)).toEqual([]);
  });

  it("a leftover temp copy of a live process is kept, of a dead one removed", async () => {
    const host = (await import("../../src/engines/postgres/scratch.js")).hostTag();
    // This test's own process is alive; pid 2147483646 is above any pid_max; "ffff"/"eeee" is another host.
    const live = `dbkeep-pgrestore-${host}-${process.pid}-0-aaaaaa`;
    const dead = `dbkeep-pgrestore-${host}-2147483646-0-bbbbbb`;
    const foreign = `dbkeep-pgrestore-${host === "ffff" ? "eeee" : "ffff"}-2147483646-0-cccccc`;
    for (const d of [live, dead, foreign]) {
      mkdirSync(join(TMP, d));
      writeFileSync(join(TMP, d, "dump"), "x");
    }
    const d = dbkeep(["doctor", pgUrl(SRC)], { env: { TMPDIR: TMP } });
    expect(d.stdout).toContain(`! removed ${join(TMP, dead)}, the temp directory of a restore that was killed`);
    expect(leftoverDirs().sort()).toEqual([live, foreign].sort());
    for (const n of [live, foreign]) rmSync(join(TMP, n), { recursive: true, force: true });
  });
});
