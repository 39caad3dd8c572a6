import { describe, expect, it } from "vitest";
import { applyRetention, hasRules } from "../../src/core/retention.js";
import { seed001Config } from "../../src/config/seeds/seed001.js";
import { unsupportedSeedVars, describeSidecarJob } from "../../src/config/seeds/report.js";

const at = (day: number, hour = 2) => new Date(Date.UTC(2026, 0, day, hour));
const mk = (id: string, day: number, type?: string, hour?: number) => ({ id, at: at(day, hour), ...(type ? { type } : {}), pinned: type === "manual" });

describe("retention by backup type (seed 001)", () => {
  const policy = { types: { daily: { keep_last: 2 }, weekly: { keep_last: 1 } } };

  it("counts each listed type apart, keeps manual backups and those of other types by the remaining rules", () => {
    const items = [mk("d1", 1, "daily"), mk("d2", 2, "daily"), mk("d3", 3, "daily"), mk("w1", 4, "weekly", 3), mk("m1", 5, "manual"), mk("d4", 6, "daily"), mk("w2", 11, "weekly", 3), mk("x", 12)];
    const r = applyRetention(items, policy);
    expect(r.remove.map((b) => b.id).sort()).toEqual(["d1", "d2", "w1"]);
    const why = Object.fromEntries(r.keep.map((d) => [d.item.id, d.reasons]));
    expect(why.d4).toEqual(["daily: last 1"]);
    expect(why.d3).toEqual(["daily: last 2"]);
    expect(why.w2).toEqual(["weekly: last 1"]);
    expect(why.m1).toContain("manual");
    // Nothing says how to prune untyped backups: none is deleted.
    expect(why.x).toEqual(["no retention rules"]);
  });

  it("daily backups never count against weekly ones however many there are", () => {
    const items = [mk("w", 1, "weekly", 3), ...Array.from({ length: 30 }, (_, i) => mk(`d${i}`, i + 2, "daily"))];
    const r = applyRetention(items, policy);
    expect(r.keep.map((d) => d.item.id)).toContain("w");
    expect(r.keep).toHaveLength(3);
  });

  it("a policy with only types has rules; the rest of the policy applies to untyped backups", () => {
    expect(hasRules(policy)).toBe(true);
    expect(hasRules({ types: { daily: {} } })).toBe(false);
    const r = applyRetention([mk("a", 1), mk("b", 2), mk("c", 3, "daily")], { keep_last: 1, types: { daily: { keep_last: 1 } } });
    expect(r.remove.map((b) => b.id)).toEqual(["a"]);
  });
});

describe("seed 001's environment", () => {
  const base = { POSTGRES_USER: "app", POSTGRES_DB: "appdb", POSTGRES_PASSWORD: "s3cret-value" };

  it("builds seed 001's defaults; the password is referred to by name only", () => {
    const { raw } = seed001Config(base);
    expect(JSON.stringify(raw)).not.toContain("s3cret-value");
    expect(raw.datasources).toEqual({ source: expect.objectContaining({ host: "postgres", port: 5432, user: "app", database: "appdb", password_env: "POSTGRES_PASSWORD", format: "custom", compression: "none", dump_compression: 9 }) });
    expect(raw.stores).toEqual({ local: { type: "local", path: "/backups" } });
    const text = describeSidecarJob(raw);
    expect(text).toContain("engine:    postgres, database appdb on postgres:5432");
    expect(text).toContain("password from $POSTGRES_PASSWORD");
    expect(text).not.toContain("s3cret-value");
  });

  it("refuses what would back up something else or nothing: a missing POSTGRES_DB, bad numbers, a retention count of 0", () => {
    expect(() => seed001Config({ POSTGRES_USER: "app" })).toThrow(/POSTGRES_DB not set/);
    expect(() => seed001Config({ ...base, BACKUP_COMPRESSION_LEVEL: "10" })).toThrow(/BACKUP_COMPRESSION_LEVEL: expected a whole number from 0 to 9/);
    expect(() => seed001Config({ ...base, BACKUP_RETENTION_DAILY: "0" })).toThrow(/BACKUP_RETENTION_DAILY/);
    expect(() => seed001Config({ ...base, GCS_BUCKET_NAME: "b", GCS_RETENTION_ENABLED: "maybe" })).toThrow(/GCS_RETENTION_ENABLED: expected true or false/);
  });

  it("names the variables it does not use, with what to use instead", () => {
    const got = unsupportedSeedVars({ ...base, RESTORE_BACKUP_FILE: "x", GCS_BUCKET: "typo", BACKUP_INTERVAL_SECONDS: "60", PATH: "/bin" });
    expect(got.map((u) => u.name)).toEqual(["GCS_BUCKET", "RESTORE_BACKUP_FILE"]);
    expect(got[1]!.instead).toMatch(/dbkeep verify/);
  });
});
