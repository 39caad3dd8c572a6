import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfigFile } from "../../src/config/load.js";
import { createLogger } from "../../src/core/log.js";
import { openStoreRef, planJob, runJob } from "../../src/core/jobs.js";
import { listFor } from "../../src/core/listing.js";
import { CLI, CLI_ENV, dbkeepAsync, ROOT, tempDir, type CliResult } from "../helpers/env.js";
import { startS3, type TestS3 } from "../helpers/s3-server.js";
import { sqliteContent } from "../helpers/sqlite.js";

/**
 * Crash drills: `backup`, `prune` and `sync` killed with SIGKILL or SIGTERM at seeded random moments, into a local
 * and an S3 store at once. After each kill: nothing partial is listed and nothing is damaged, every earlier backup
 * is intact, a SIGTERM exits 143 (or 0 if the run was done), and the next run leaves no leftover of the killed one,
 * in the stores or in the temp dir. (Restore, with its database swap, has drills of its own:
 * test/integration/postgres-restore-crash.test.ts.)
 */
const SEED = Number(process.env.DRILL_SEED ?? Date.now() % 100000);
const DRILLS = Number(process.env.DRILLS ?? 4);
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => ((x = (x * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}
const random = rng(SEED);
const quiet = createLogger({ level: "silent" });
const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

interface Listed {
  backups: { id: string; key: string; sha256: string }[];
  damaged: { id: string; problems: string[] }[];
  incomplete?: { key: string; why: string }[];
}

describe(`crash drills (seed ${SEED}, ${DRILLS} kills per command; DRILL_SEED=${SEED} repeats them)`, () => {
  const dir = tempDir("dbkeep-crash-");
  const tmp = join(dir, "tmp");
  let s3: TestS3;
  let env: Record<string, string>;
  let cfg: string;
  let source: string;

  /** A config of its own for each drill, so that a seed repeats one drill alone: its local directory and S3 prefix. */
  function useStores(name: string): void {
    cfg = join(dir, `${name}.yaml`);
    writeFileSync(
      cfg,
      `datasources:
  app: { engine: sqlite, path: ${source}, compression: zstd }
stores:
  local: { type: local, path: ${join(dir, name)} }
  cloud: { type: s3, endpoint: ${s3.endpoint}, bucket: ${s3.bucket}, prefix: ${name}, access_key_env: TEST_S3_ACCESS_KEY, secret_key_env: TEST_S3_SECRET_KEY }
jobs:
  app:
    datasource: app
    stores: [local, cloud]
    retention: { keep_last: 2, orphan_grace: 1h }
`,
      { mode: 0o600 },
    );
    local = join(dir, name);
  }
  let local: string;

  /** Runs the CLI and kills it after `afterMs` with `signal`. */
  function runKilled(args: string[], signal: NodeJS.Signals, afterMs: number): Promise<CliResult & { signal: NodeJS.Signals | null }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...CLI_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill(signal), afterMs);
      child.on("error", reject);
      child.on("close", (code, sig) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, signal: sig, stdout, stderr });
      });
    });
  }
  const run = (args: string[]) => dbkeepAsync(["-c", cfg, ...args], env, 120_000);
  /** What the job's store holds, read in this process (the CLI's list is checked at the end of each drill series). */
  async function listing(name: string): Promise<Listed> {
    const plan = planJob(loadConfigFile(cfg), "app");
    const store = await openStoreRef(plan.stores.find((s) => s.name === name)!);
    try {
      const l = await listFor(store, "app/", "app");
      return {
        backups: l.backups.map((m) => ({ id: m.id, key: m.key, sha256: m.sha256 })),
        damaged: l.damaged.map((d) => ({ id: d.id, problems: d.problems })),
        incomplete: l.leftovers.flatMap((x) => x.objects.map((o) => ({ key: o.key, why: x.why }))),
      };
    } finally {
      await store.close();
    }
  }
  /** The same through the CLI, as a user sees it. */
  async function listed(store: string): Promise<Listed> {
    const r = await run(["list", "app", "--store", store, "--json", "--all"]);
    expect(r.code, `list ${store}: ${r.stderr}`).toBe(0);
    return JSON.parse(r.stdout) as Listed;
  }
  async function timed(args: string[]): Promise<number> {
    const t = Date.now();
    const r = await run(args);
    expect(r.code, r.stderr).toBe(0);
    return Date.now() - t;
  }
  /** The invariants after a kill: no damage anywhere, every backup listed before is still listed and intact. */
  async function invariants(before: Map<string, string>, what: string): Promise<void> {
    for (const store of ["local", "cloud"]) {
      const l = await listing(store);
      expect(l.damaged, `${what}: damaged in ${store}`).toEqual([]);
      for (const b of l.backups) {
        const path = join(local, b.key);
        if (store === "local") expect(sha(path), `${what}: ${b.key}`).toBe(b.sha256);
      }
    }
    const now = await listing("local");
    for (const [id, sum] of before) {
      const b = now.backups.find((x) => x.id === id);
      if (b) expect(b.sha256, `${what}: ${id} changed`).toBe(sum);
    }
  }
  const leftoversOf = (l: Listed) => (l.incomplete ?? []).map((x) => x.key);
  const tempLeft = () => (existsSync(tmp) ? readdirSync(tmp).filter((n) => n.startsWith("dbkeep-")) : []);

  beforeAll(async () => {
    s3 = await startS3();
    mkdirSync(tmp);
    env = { ...s3.env, TMPDIR: tmp };
    Object.assign(process.env, s3.env);
    // Big enough that a backup takes a while: 6 MB that compresses little.
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    const db = new Database(join(dir, "app.db"));
    db.exec("CREATE TABLE blob (n INTEGER PRIMARY KEY, b BLOB)");
    const ins = db.prepare("INSERT INTO blob (b) VALUES (?)");
    db.transaction(() => {
      for (let i = 0; i < 1500; i++) ins.run(randomBytes(4096));
    })();
    db.close();
    source = join(dir, "app.db");
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it("backup: killed at any moment, it leaves no partial or damaged backup, and the next run removes its leftovers", async () => {
    useStores("backup");
    const full = await timed(["backup", "app"]);
    const expected = sqliteContent(join(dir, "app.db"));
    for (let i = 0; i < DRILLS; i++) {
      const before = new Map((await listing("local")).backups.map((b) => [b.id, b.sha256] as const));
      const signal: NodeJS.Signals = i % 2 ? "SIGTERM" : "SIGKILL";
      const at = Math.floor(random() * full * 1.2);
      const what = `drill ${i}: ${signal} after ${at} ms of ~${full} ms (seed ${SEED})`;
      const r = await runKilled(["-c", cfg, "backup", "app"], signal, at);
      if (signal === "SIGTERM") {
        // Killed before node set up its handlers, the process ends by the signal itself: the shell's 143 too.
        expect([0, 143], `${what}: exit ${r.code} ${r.stderr}`).toContain(r.signal === "SIGTERM" ? 143 : r.code);
        expect(r.stderr, what).not.toMatch(/Premature close|EPIPE|internal error/);
      }
      await invariants(before, what);
      // A backup the killed run committed restores to the source's content.
      const l = await listing("local");
      for (const b of l.backups.filter((x) => !before.has(x.id))) {
        const copy = join(dir, `copy-${i}.db`);
        const back = await run(["restore", "app", b.id, "--to", `sqlite:${copy}`]);
        expect(back.code, `${what}: ${back.stderr}`).toBe(0);
        expect(sqliteContent(copy), what).toEqual(expected);
      }
    }
    // The next run removes what the killed runs left, at once (their processes are gone), in both stores.
    expect((await run(["backup", "app"])).code).toBe(0);
    for (const store of ["local", "cloud"]) {
      const l = await listed(store);
      expect(leftoversOf(l), `leftovers in ${store} (seed ${SEED}): ${JSON.stringify(l.incomplete)}`).toEqual([]);
    }
    expect(tempLeft(), `temp dirs (seed ${SEED})`).toEqual([]);
  }, 600_000);

  it("prune: killed at any moment, every backup is complete or gone, and the next prune finishes the job", async () => {
    useStores("prune");
    const plan = planJob(loadConfigFile(cfg), "app");
    let day = 0;
    for (let i = 0; i < DRILLS; i++) {
      // More backups than keep_last, so that each prune has something to delete (at times of their own, no sleeping).
      for (let k = 0; k < 2; k++) {
        const at = new Date(Date.UTC(2026, 0, 1 + day++, 3));
        const r = await runJob(plan, { log: quiet, signal: new AbortController().signal, now: () => at });
        expect(r.ok, r.error?.message).toBe(true);
      }
      const before = new Map((await listing("local")).backups.map((b) => [b.id, b.sha256] as const));
      const full = 1500;
      const signal: NodeJS.Signals = i % 2 ? "SIGTERM" : "SIGKILL";
      const at = Math.floor(random() * full);
      const what = `prune drill ${i}: ${signal} after ${at} ms (seed ${SEED})`;
      const r = await runKilled(["-c", cfg, "prune", "app"], signal, at);
      if (signal === "SIGTERM") expect([0, 143], `${what}: ${r.stderr}`).toContain(r.signal === "SIGTERM" ? 143 : r.code);
      await invariants(before, what);
      const next = await run(["prune", "app", "--orphan-grace", "0s"]);
      expect(next.code, next.stderr).toBe(0);
      for (const store of ["local", "cloud"]) {
        const l = await listing(store);
        expect(l.backups.length, `${what}: ${store}`).toBe(2);
        expect(leftoversOf(l), `${what}: ${store}`).toEqual([]);
      }
    }
  }, 600_000);

  it("sync: killed at any moment, the target holds whole copies or leftovers, and the next sync completes them", async () => {
    useStores("sync");
    const plan = planJob(loadConfigFile(cfg), "app");
    for (let k = 0; k < 4; k++) {
      const at = new Date(Date.UTC(2026, 1, 1 + k, 3));
      const r = await runJob(plan, { log: quiet, signal: new AbortController().signal, now: () => at });
      expect(r.ok, r.error?.message).toBe(true);
    }
    for (let i = 0; i < DRILLS; i++) {
      // The cloud store loses its copies; sync brings them back from the local store.
      const held = await listing("local");
      const lose = await run(["prune", "app", "--store", "cloud", "--keep-last", "1", "--force"]);
      expect(lose.code, lose.stderr).toBe(0);
      const signal: NodeJS.Signals = i % 2 ? "SIGTERM" : "SIGKILL";
      const at = Math.floor(random() * 1500);
      const what = `sync drill ${i}: ${signal} after ${at} ms (seed ${SEED})`;
      const r = await runKilled(["-c", cfg, "sync", "app"], signal, at);
      if (signal === "SIGTERM") expect([0, 143], `${what}: ${r.stderr}`).toContain(r.signal === "SIGTERM" ? 143 : r.code);
      await invariants(new Map(held.backups.map((b) => [b.id, b.sha256] as const)), what);
      const next = await run(["sync", "app", "--ignore-retention"]);
      expect(next.code, `${what}: ${next.stdout} ${next.stderr}`).toBe(0);
      const cloud = await listing("cloud");
      expect(cloud.backups.map((b) => b.id).sort(), `${what}: ${next.stdout}`).toEqual(held.backups.map((b) => b.id).sort());
      expect(leftoversOf(cloud), what).toEqual([]);
    }
  }, 600_000);
});
