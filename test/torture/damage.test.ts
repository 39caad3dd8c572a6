import { appendFileSync, copyFileSync, cpSync, existsSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import Database from "better-sqlite3";
import { beforeAll, describe, expect, it } from "vitest";
import { loadConfigFile } from "../../src/config/load.js";
import { createLogger } from "../../src/core/log.js";
import { planJob, runJob } from "../../src/core/jobs.js";
import { dbkeep, ROOT, tempDir } from "../helpers/env.js";
import { sqliteContent } from "../helpers/sqlite.js";

/**
 * Damage drills: each file of a backup (data, sidecar, manifest) flipped, cut, extended and deleted. After each:
 * a restore that would read damaged bytes refuses before the target changes; list and status call the backup
 * damaged with exit code 1 (a changed sidecar that a restore does not read is a flaw, not damage); prune deletes
 * nothing that is intact, and nothing of a damaged backup; repair makes whole what its data proves.
 */
const SEED = Number(process.env.DRILL_SEED ?? Date.now() % 100000);
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => ((x = (x * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}
const random = rng(SEED);
const quiet = createLogger({ level: "silent" });
const sha = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

type File = "data" | "sidecar" | "manifest";
type Damage = "flip" | "cut" | "extend" | "delete";

/** Damages the file; for a flip, returns the offset of the flipped byte. */
function damage(path: string, how: Damage): number | undefined {
  const buf = readFileSync(path);
  if (how === "delete") rmSync(path);
  else if (how === "cut") truncateSync(path, Math.floor(buf.length / 2));
  else if (how === "extend") appendFileSync(path, "garbage after the end");
  else {
    const at = Math.floor(random() * buf.length);
    buf[at] = buf[at]! ^ (1 << Math.floor(random() * 8));
    writeFileSync(path, buf);
    return at;
  }
  return undefined;
}

describe(`damage drills (seed ${SEED}; DRILL_SEED=${SEED} repeats them)`, () => {
  const dir = tempDir("dbkeep-damage-");
  const pristine = join(dir, "pristine");
  const ids: string[] = [];
  let v1: Record<string, string>;
  let v2: Record<string, string>;

  function config(store: string): string {
    const cfg = join(dir, `${store.split("/").pop()}.yaml`);
    writeFileSync(
      cfg,
      `datasources:\n  app: { engine: sqlite, path: ${join(dir, "app.db")}, compression: zstd }\nstores:\n  local: { type: local, path: ${store} }\njobs:\n  app:\n    datasource: app\n    store: local\n    retention: { keep_last: 1 }\n`,
      { mode: 0o600 },
    );
    return cfg;
  }

  beforeAll(async () => {
    copyFileSync(join(ROOT, "examples/app.db"), join(dir, "app.db"));
    v1 = sqliteContent(join(dir, "app.db"));
    const plan = planJob(loadConfigFile(config(pristine)), "app");
    const r1 = await runJob(plan, { log: quiet, signal: new AbortController().signal, now: () => new Date("2026-01-01T03:00:00Z") });
    const db = new Database(join(dir, "app.db"));
    db.exec("CREATE TABLE drill (n INTEGER PRIMARY KEY, note TEXT); INSERT INTO drill (note) VALUES ('after the first backup')");
    db.close();
    v2 = sqliteContent(join(dir, "app.db"));
    const r2 = await runJob(plan, { log: quiet, signal: new AbortController().signal, now: () => new Date("2026-01-02T03:00:00Z") });
    if (!r1.ok || !r2.ok) throw r1.error ?? r2.error;
    ids.push(r1.manifest!.id, r2.manifest!.id);
  });

  const cases: [File, Damage][] = (["data", "sidecar", "manifest"] as File[]).flatMap((f) => (["flip", "cut", "extend", "delete"] as Damage[]).map((d): [File, Damage] => [f, d]));

  for (const [file, how] of cases) {
    it(`${file} ${how}`, () => {
      const store = join(dir, `case-${file}-${how}`);
      cpSync(pristine, store, { recursive: true });
      const cfg = config(store);
      const [older, newer] = ids as [string, string];
      const paths = { data: join(store, "app", `${newer}.db.zst`), sidecar: join(store, "app", `${newer}.db.zst.sha256`), manifest: join(store, "app", `${newer}.manifest.json`) };
      const everything = (id: string) => [`${id}.db.zst`, `${id}.db.zst.sha256`, `${id}.manifest.json`].map((f) => join(store, "app", f));
      const flipped = damage(paths[file], how);
      const survivors = [...everything(older), ...everything(newer)].filter(existsSync).map((p) => [p, sha(p)] as const);

      // The restore reads what it needs; damaged bytes it reads stop it before the target changes.
      const target = join(dir, `target-${file}-${how}.db`);
      copyFileSync(join(ROOT, "examples/app.db"), target);
      const before = sha(target);
      const restore = dbkeep(["-c", cfg, "restore", "app", newer, "--to", `sqlite:${target}`, "--auto-confirm"]);
      // A sidecar is `<sha256>  <name>`: a flip in the checksum is damage the restore reads; a flip in the name or
      // the spacing leaves the checksum agreeing, so the restore goes on and names the changed sidecar.
      const readsDamage = file !== "sidecar" || how === "cut" || (how === "flip" && flipped! < 64);
      const nameFlip = file === "sidecar" && how === "flip" && !readsDamage;
      if (readsDamage) {
        expect(restore.code, restore.stderr).toBe(1);
        expect(restore.stderr).toMatch(/damaged|does not match|disagrees/);
        expect(sha(target)).toBe(before);
      } else {
        expect(restore.code, restore.stderr).toBe(0);
        expect(sqliteContent(target)).toEqual(v2);
        if (nameFlip) expect(restore.stderr).toMatch(/sidecar .* changed elsewhere/);
      }

      // list and status: damaged, exit 1 (a data flip is known once the restore found it).
      const list = dbkeep(["-c", cfg, "list", "app", "--json"]);
      const doc = JSON.parse(list.stdout) as { backups: { id: string }[]; damaged: { id: string; problems: string[]; repairable: boolean }[]; flaws?: Record<string, string[]> };
      if (readsDamage) {
        expect(list.code).toBe(1);
        expect(doc.damaged.map((d) => d.id)).toEqual([newer]);
        expect(doc.backups.map((b) => b.id)).toEqual([older]);
        const status = dbkeep(["-c", cfg, "status", "app"]);
        expect(status.code).toBe(1);
        expect(status.stdout).toMatch(new RegExp(`${newer}.*DAMAGED`));
      } else {
        expect(list.code).toBe(0);
        expect(doc.backups.map((b) => b.id)).toEqual([newer, older]);
        // A listing knows a sidecar by its size: a changed name of the same length is found by restore and verify.
        if (!nameFlip) expect(doc.flaws?.[newer]?.[0]).toMatch(/sidecar/);
      }

      // keep_last: 1 over the complete backups. With the newer one damaged, the older is the newest complete one and
      // stays; nothing of the damaged one is deleted.
      const prune = dbkeep(["-c", cfg, "prune", "app"]);
      expect(prune.code, prune.stderr).toBe(0);
      if (readsDamage) {
        for (const [p, h] of survivors) expect(existsSync(p) && sha(p), p).toBe(h);
        expect(prune.stdout).toMatch(new RegExp(`KEEP\\s+${newer}\\s+\\(damaged`));
      } else {
        for (const p of everything(older)) expect(existsSync(p)).toBe(false);
      }

      // latest: the newest complete backup, named with a warning when a newer one is damaged.
      const latest = dbkeep(["-c", cfg, "restore", "app", "latest", "--to", `sqlite:${target}`, "--auto-confirm"]);
      expect(latest.code, latest.stderr).toBe(0);
      if (readsDamage) {
        expect(latest.stderr).toMatch(new RegExp(`newest backup is damaged \\(${newer}`));
        expect(sqliteContent(target)).toEqual(v1);
      } else {
        expect(sqliteContent(target)).toEqual(v2);
      }

      // repair: what the data proves is made whole; damaged data is not.
      const repair = dbkeep(["-c", cfg, "repair", "app"]);
      if (file === "data") {
        expect(repair.code).toBe(1);
        expect(repair.stdout).toMatch(/NOT REPAIRABLE/);
        expect(dbkeep(["-c", cfg, "list", "app"]).code).toBe(1);
      } else {
        expect(repair.code, repair.stdout + repair.stderr).toBe(0);
        const again = dbkeep(["-c", cfg, "list", "app", "--json"]);
        expect(again.code, again.stdout).toBe(0);
        expect((JSON.parse(again.stdout) as { backups: { id: string }[] }).backups.map((b) => b.id)).toContain(newer);
        const back = dbkeep(["-c", cfg, "restore", "app", newer, "--to", `sqlite:${target}`, "--auto-confirm"]);
        expect(back.code, back.stderr).toBe(0);
        expect(sqliteContent(target)).toEqual(v2);
      }
    });
  }
});
