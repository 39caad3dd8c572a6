import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { listBackups } from "../../src/core/listing.js";
import { createLogger } from "../../src/core/log.js";
import { checksumLine, putText, serializeManifest, type Manifest } from "../../src/core/manifest.js";
import { prune } from "../../src/core/jobs.js";
import { reserveBackupId } from "../../src/core/reserve.js";
import { MemoryStore } from "../helpers/memory-store.js";

const log = createLogger({ format: "json", level: "silent" } as Parameters<typeof createLogger>[0]);
const AT = new Date("2026-05-01T10:20:30Z");

/**
 * The commit protocol of core/reserve.ts and core/listing.ts under every interleaving fast-check finds: backup ids
 * stay unique across concurrent runs (no run ever writes over another's objects), and prune never deletes what a
 * damaged backup or another job still holds.
 */
describe("backup ids: concurrent runs in the same second", () => {
  it("every run that reserves an id gets its own, and nothing one run wrote is overwritten by another", async () => {
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), fc.integer({ min: 2, max: 4 }), fc.constantFrom("none", "backup", "leftover"), async (s, runs, before) => {
        const store = new MemoryStore();
        // What the store already holds for that second: a complete backup, or what a killed run left.
        if (before === "backup") {
          store.set("app/app-20260501-102030.sql.gz", "old data");
          store.set("app/app-20260501-102030.manifest.json", "old manifest");
        } else if (before === "leftover") {
          store.set("app/app-20260501-102030.sql.gz", "left by a killed run");
        }
        store.step = (op, key) => s.schedule(Promise.resolve(), `${op} ${key}`);
        const run = async (i: number) => {
          const r = await reserveBackupId([store], { database: "app", at: AT, extension: ".sql", compression: "gzip", suffix: "", job: `job${i}`, backoffMs: () => 0 });
          await putText(store, r.keys.data, `data of run ${i}`);
          await putText(store, r.keys.manifest, `manifest of run ${i}`, undefined, { ifAbsent: true });
          await store.delete([...r.markers.values()]);
          return { i, id: r.keys.id, keys: r.keys };
        };
        const outcomes = await s.waitFor(Promise.all(Array.from({ length: runs }, (_, i) => run(i).catch((error: unknown) => ({ i, error })))));
        const ok = outcomes.flatMap((o) => ("id" in o ? [o] : []));
        expect(new Set(ok.map((o) => o.id)).size).toBe(ok.length);
        for (const o of ok) {
          expect(store.text(o.keys.data)).toBe(`data of run ${o.i}`);
          expect(store.text(o.keys.manifest)).toBe(`manifest of run ${o.i}`);
        }
        for (const o of outcomes) if ("error" in o) expect((o.error as Error).message).toMatch(/could not reserve a backup id/);
        if (before !== "none") {
          expect(ok.map((o) => o.id)).not.toContain("app-20260501-102030");
          expect(store.text("app/app-20260501-102030.sql.gz")).toBe(before === "backup" ? "old data" : "left by a killed run");
        }
        expect([...store.objects.keys()].filter((k) => k.includes(".pending-"))).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });
});

function manifestOf(id: string, job: string, at: Date, data: string): Manifest {
  const key = `app/${id}.sql.gz`;
  return {
    manifest_version: 1,
    id,
    job,
    engine: "sqlite",
    database: "app",
    format: "file",
    compression: "gzip",
    encryption: null,
    key,
    checksum_key: `${key}.sha256`,
    raw_bytes: data.length,
    stored_bytes: data.length,
    sha256: "0".repeat(64),
    started_at: at.toISOString(),
    finished_at: at.toISOString(),
    duration_seconds: 0,
    dbkeep_version: "test",
  };
}

const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);

interface Planned {
  job: "a" | "b";
  day: number;
  damage: "none" | "manifest-flip" | "manifest-gone" | "data-gone" | "data-cut" | "data-extended" | "sidecar-gone";
}

describe("prune against damaged and foreign backups", () => {
  it("deletes only the job's own complete backups that its policy drops, and never a damaged one without --force", async () => {
    const planned = fc.record({
      job: fc.constantFrom<"a" | "b">("a", "b"),
      day: fc.integer({ min: 0, max: 40 }),
      damage: fc.constantFrom<Planned["damage"]>("none", "none", "none", "manifest-flip", "manifest-gone", "data-gone", "data-cut", "data-extended", "sidecar-gone"),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(planned, { minLength: 1, maxLength: 14, selector: (p) => p.day }),
        fc.integer({ min: 1, max: 4 }),
        fc.boolean(),
        fc.constantFrom<"young" | "old" | "none">("young", "old", "none"),
        async (backups, keepLast, force, leftover) => {
          const store = new MemoryStore();
          const now = new Date("2026-07-01T00:00:00Z");
          store.clock = () => now;
          const expectIntact = new Map<string, string>();
          for (const p of backups) {
            const at = new Date(Date.UTC(2026, 4, 1 + p.day, 3));
            const id = `app-${stamp(at)}`;
            const data = `data ${id}`;
            const m = manifestOf(id, p.job, at, data);
            const manifest = serializeManifest(m);
            // Written when the backup was taken: every object is far older than prune's grace period.
            store.set(m.key, data, at);
            store.set(m.checksum_key, checksumLine(m.sha256, m.key), at);
            store.set(`app/${id}.manifest.json`, manifest, at);
            if (p.damage === "manifest-flip") store.set(`app/${id}.manifest.json`, manifest.replace(`"stored_bytes": ${data.length}`, `"stored_bytes": ${data.length + 1}`), at);
            if (p.damage === "manifest-gone") store.objects.delete(`app/${id}.manifest.json`);
            if (p.damage === "data-gone") store.objects.delete(m.key);
            if (p.damage === "data-cut") store.set(m.key, data.slice(0, 3), at);
            if (p.damage === "data-extended") store.set(m.key, data + "x", at);
            if (p.damage === "sidecar-gone") store.objects.delete(m.checksum_key);
            // Whatever is left of a damaged backup, and every object of job b, must survive a prune of job a.
            const mustStay = p.job === "b" || (p.damage !== "none" && p.damage !== "sidecar-gone" && !force);
            if (mustStay) for (const k of [m.key, m.checksum_key, `app/${id}.manifest.json`]) if (store.objects.has(k)) expectIntact.set(k, store.text(k)!);
          }
          if (leftover !== "none") {
            const at = new Date(now.getTime() - (leftover === "old" ? 5 : 0.1) * 3600e3);
            store.set("app/app-20260630-230000.pending-00112233aabbccdd.json", JSON.stringify({ id: "app-20260630-230000", purpose: "backup", job: "a", host: "elsewhere", pid: 1, started_at: at.toISOString(), token: "00112233aabbccdd" }), at);
            store.set("app/app-20260630-230000.sql.gz", "half a backup", at);
          }
          const before = await listBackups(store, "app/");
          const ownComplete = before.backups.filter((m) => m.job === "a");
          const r = await prune(store, "app/", { keep_last: keepLast }, { dryRun: false, force, now, orphanGraceSeconds: 3600, job: "a", log });
          for (const [k, v] of expectIntact) expect(store.text(k), `${k} must survive`).toBe(v);
          const after = await listBackups(store, "app/");
          // The job's newest complete backups that keep_last keeps are all still complete.
          for (const m of ownComplete.slice(0, keepLast)) expect(after.backups.map((b) => b.id)).toContain(m.id);
          expect(after.backups.filter((m) => m.job === "a").length).toBe(Math.min(keepLast, ownComplete.length));
          // A young leftover may be a run in progress; an old one goes.
          expect(store.objects.has("app/app-20260630-230000.sql.gz")).toBe(leftover === "young");
          if (!force) expect(r.damaged.every((d) => d.action === "keep")).toBe(true);
          // Nothing that prune left is half a group: no manifest without data, no marker of prune's own.
          expect(after.damaged.length).toBe(before.damaged.filter((d) => !(force && d.job === "a")).length);
          expect([...store.objects.keys()].filter((k) => k.includes(".pending-") && !k.includes("230000"))).toEqual([]);
        },
      ),
      { numRuns: 200 },
    );
  });
});
