import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { applyRetention, hasRules, periodOf, type Dated, type RetentionPolicy } from "../../src/core/retention.js";
import { ROOT } from "../helpers/env.js";
// @ts-expect-error plain JavaScript module shared with the fixture generator
import { hourlyWithGaps } from "../fixtures/retention/timelines.mjs";

const DIR = join(ROOT, "test/fixtures/retention");

interface Golden {
  name: string;
  description: string;
  timezone: string;
  policy: RetentionPolicy;
  backups: string[] | string;
  backup_count: number;
  expected: { id: string; reasons: string[] }[];
}

const RULES = ["hourly", "daily", "weekly", "monthly", "yearly"] as const;

/**
 * An independent oracle: for each rule, group all backups by period, take the newest of each group, and keep the
 * groups of the N most recent periods. (The implementation scans instead of grouping.)
 */
function oracle(items: Dated[], policy: RetentionPolicy, timeZone: string): Map<string, Set<string>> {
  const fmt = new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", hourCycle: "h23" });
  const byRule = new Map<string, Set<string>>();
  const newestFirst = [...items].sort((a, b) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? 1 : -1));
  byRule.set("last", new Set(newestFirst.slice(0, policy.keep_last ?? 0).map((b) => b.id)));
  for (const rule of RULES) {
    const groups = new Map<string, Dated>();
    for (const b of newestFirst) if (!groups.has(periodOf(fmt, b.at, rule))) groups.set(periodOf(fmt, b.at, rule), b);
    const newestOfEach = [...groups.values()].sort((a, b) => b.at.getTime() - a.at.getTime());
    byRule.set(rule, new Set(newestOfEach.slice(0, policy[`keep_${rule}`] ?? 0).map((b) => b.id)));
  }
  return byRule;
}

describe("retention: golden fixtures", () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith(".json"));
  it("has the fixtures the tests are about", () => {
    expect(files.sort()).toEqual(["dst-berlin.json", "hourly-3y-gaps.json", "iso-week-edges.json", "several-per-day.json"]);
  });
  for (const file of files) {
    const g = JSON.parse(readFileSync(join(DIR, file), "utf8")) as Golden;
    it(`${g.name}: ${g.description}`, () => {
      const backups: string[] = typeof g.backups === "string" ? (hourlyWithGaps() as string[]) : g.backups;
      expect(backups).toHaveLength(g.backup_count);
      const items = backups.map((iso) => ({ id: iso, at: new Date(iso) }));
      const r = applyRetention(items, g.policy, { timeZone: g.timezone });
      expect(r.keep.map((d) => ({ id: d.item.id, reasons: d.reasons }))).toEqual(g.expected);
      expect(r.keep.length + r.remove.length).toBe(items.length);
      // The oracle agrees rule by rule.
      const o = oracle(items, g.policy, g.timezone);
      for (const [rule, ids] of o) {
        const byImpl = new Set(r.keep.filter((d) => d.reasons.some((x) => x.startsWith(`${rule} `))).map((d) => d.item.id));
        expect([...byImpl].sort(), rule).toEqual([...ids].sort());
      }
    });
  }
});

const timeline = fc
  .array(fc.integer({ min: Date.UTC(2019, 0, 1), max: Date.UTC(2027, 0, 1) }), { minLength: 0, maxLength: 120 })
  .map((ts) => ts.map((t, i) => ({ id: `b${i}`, at: new Date(t - (t % 60000)) })));
const policy = fc.record(
  { keep_last: fc.nat(6), keep_hourly: fc.nat(6), keep_daily: fc.nat(10), keep_weekly: fc.nat(6), keep_monthly: fc.nat(6), keep_yearly: fc.nat(4), min_keep: fc.nat(5) },
  { requiredKeys: [] },
);
const zone = fc.constantFrom("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe");

describe("retention: properties over random timelines and policies", () => {
  it("does not depend on the input order", () => {
    fc.assert(
      fc.property(timeline, policy, zone, fc.integer(), (items, p, tz, seed) => {
        const shuffled = [...items];
        let x = seed >>> 0;
        for (let i = shuffled.length - 1; i > 0; i--) {
          x = (x * 1664525 + 1013904223) >>> 0;
          const j = x % (i + 1);
          [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
        }
        const ids = (xs: Dated[]) => xs.map((x) => x.id).sort();
        expect(ids(applyRetention(shuffled, p, { timeZone: tz }).remove)).toEqual(ids(applyRetention(items, p, { timeZone: tz }).remove));
      }),
      { numRuns: 200 },
    );
  });

  // min_keep is a floor on the count, filled with the newest backups no rule keeps: a policy with more rules may
  // meet the floor with other backups, so what the floor kept is not part of the subset property, only the count.
  it("adding a rule never deletes what a rule kept, nor leaves fewer; the newest is always kept; every kept backup has a reason", () => {
    fc.assert(
      fc.property(timeline, policy, policy, zone, (items, a, b, tz) => {
        const merged: RetentionPolicy = { ...a };
        for (const [k, v] of Object.entries(b) as [keyof RetentionPolicy, number][]) merged[k] = Math.max((merged[k] as number | undefined) ?? 0, v) as never;
        // Without any rule nothing is deleted at all (a safety rule, not a retention rule): compare from one rule on.
        fc.pre(hasRules(a));
        const fewer = applyRetention(items, a, { timeZone: tz });
        const more = applyRetention(items, merged, { timeZone: tz });
        const keptByRuleA = new Set(fewer.keep.filter((d) => d.reasons.some((r) => !r.startsWith("min_keep "))).map((d) => d.item.id));
        for (const d of more.remove) expect(keptByRuleA.has(d.id)).toBe(false);
        expect(more.keep.length).toBeGreaterThanOrEqual(fewer.keep.length);
        if (items.length > 0) {
          const newest = [...items].sort((x, y) => y.at.getTime() - x.at.getTime() || (x.id < y.id ? 1 : -1))[0]!;
          expect(more.keep.some((d) => d.item.id === newest.id)).toBe(true);
        }
        for (const d of more.keep) expect(d.reasons.length).toBeGreaterThan(0);
      }),
      { numRuns: 200 },
    );
  });

  it("no rule keeps more than its count, and each agrees with the group-by oracle", () => {
    fc.assert(
      fc.property(timeline, policy, zone, (items, p, tz) => {
        const r = applyRetention(items, p, { timeZone: tz });
        const o = oracle(items, p, tz);
        for (const rule of ["last", ...RULES]) {
          const n = ((p as RetentionPolicy)[`keep_${rule}` as keyof RetentionPolicy] as number | undefined) ?? 0;
          const kept = r.keep.filter((d) => d.reasons.some((x) => x.startsWith(`${rule} `)));
          expect(kept.length).toBeLessThanOrEqual(n);
          expect(kept.map((d) => d.item.id).sort()).toEqual([...(o.get(rule) ?? [])].sort());
        }
        expect(r.keep.length).toBeGreaterThanOrEqual(Math.min(p.min_keep ?? 0, items.length));
      }),
      { numRuns: 300 },
    );
  });
});
