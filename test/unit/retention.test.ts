import { describe, expect, it } from "vitest";
import { applyRetention, checkSpan, isoWeek, spanStart, type Dated } from "../../src/core/retention.js";

const b = (iso: string): Dated => ({ id: iso, at: new Date(iso) });
const kept = (r: ReturnType<typeof applyRetention>) => r.keep.map((d) => d.item.id).sort();

describe("retention", () => {
  it("keeps everything when no rule is set (seed 000)", () => {
    const r = applyRetention([b("2026-01-01T00:00:00Z"), b("2026-01-02T00:00:00Z")], {});
    expect(r.remove).toEqual([]);
  });

  it("keep_last keeps the N newest, whatever the input order", () => {
    const items = ["2026-01-03", "2026-01-01", "2026-01-05", "2026-01-04", "2026-01-02"].map((d) => b(`${d}T12:00:00Z`));
    const r = applyRetention(items, { keep_last: 2 });
    expect(kept(r)).toEqual(["2026-01-04T12:00:00Z", "2026-01-05T12:00:00Z"]);
    expect(r.keep.find((d) => d.item.id.startsWith("2026-01-05"))?.reasons).toEqual(["last 1"]);
  });

  it("keep_daily keeps the newest backup of each of the N most recent days that have one", () => {
    const items = [b("2026-03-01T01:00:00Z"), b("2026-03-01T23:00:00Z"), b("2026-03-03T05:00:00Z"), b("2026-03-04T05:00:00Z"), b("2026-03-04T06:00:00Z")];
    const r = applyRetention(items, { keep_daily: 3 });
    expect(kept(r)).toEqual(["2026-03-01T23:00:00Z", "2026-03-03T05:00:00Z", "2026-03-04T06:00:00Z"]);
    expect(r.keep.map((d) => d.reasons[0])).toEqual(["daily 2026-03-04", "daily 2026-03-03", "daily 2026-03-01"]);
  });

  it("rules combine by union, and the newest is always kept", () => {
    const items = [b("2025-12-31T10:00:00Z"), b("2026-01-01T10:00:00Z"), b("2026-01-02T10:00:00Z")];
    const r = applyRetention(items, { keep_last: 1, keep_yearly: 2 });
    expect(kept(r)).toEqual(["2025-12-31T10:00:00Z", "2026-01-02T10:00:00Z"]);
    const newestOnly = applyRetention(items, { keep_daily: 0, keep_weekly: 0, min_keep: 0, keep_hourly: 0, keep_last: 0, keep_monthly: 0 });
    expect(newestOnly.remove).toEqual([]); // no rule with a count > 0: nothing is deleted
  });

  it("periods follow the configured time zone", () => {
    // 23:30 UTC on Mar 1 is already Mar 2 in Tokyo.
    const items = [b("2026-03-01T10:00:00Z"), b("2026-03-01T23:30:00Z")];
    expect(kept(applyRetention(items, { keep_daily: 2 }, { timeZone: "UTC" }))).toEqual(["2026-03-01T23:30:00Z"]);
    expect(applyRetention(items, { keep_daily: 2 }, { timeZone: "Asia/Tokyo" }).keep.map((d) => d.reasons[0])).toEqual(["daily 2026-03-02", "daily 2026-03-01"]);
  });

  it("ISO weeks: Jan 1 can belong to the previous year's week 52 or 53", () => {
    expect(isoWeek(2021, 1, 1)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2023, 1, 1)).toEqual({ year: 2022, week: 52 });
    expect(isoWeek(2024, 12, 30)).toEqual({ year: 2025, week: 1 });
    expect(isoWeek(2026, 3, 4)).toEqual({ year: 2026, week: 10 });
  });

  it("keep_within keeps everything younger than the span before now; keep_within_daily the newest of each day in it", () => {
    const items = ["2026-01-01T10:00:00Z", "2026-01-10T10:00:00Z", "2026-01-10T20:00:00Z", "2026-01-14T10:00:00Z"].map(b);
    const now = new Date("2026-01-15T00:00:00Z");
    expect(kept(applyRetention(items, { keep_within: "7d" }, { now }))).toEqual(["2026-01-10T10:00:00Z", "2026-01-10T20:00:00Z", "2026-01-14T10:00:00Z"]);
    expect(kept(applyRetention(items, { keep_within_daily: "7d" }, { now }))).toEqual(["2026-01-10T20:00:00Z", "2026-01-14T10:00:00Z"]);
    expect(kept(applyRetention(items, { keep_within: "1m" }, { now }))).toHaveLength(4);
    // A future --now shows what would go: only the newest survives a 7-day window a year later.
    expect(kept(applyRetention(items, { keep_within: "7d" }, { now: new Date("2027-01-15T00:00:00Z") }))).toEqual(["2026-01-14T10:00:00Z"]);
    expect(spanStart(new Date("2026-03-31T12:00:00Z"), "1y1m2w3d4h").toISOString()).toBe("2025-02-14T08:00:00.000Z");
    expect(checkSpan("14d")).toBeUndefined();
    expect(checkSpan("14 days")).toMatch(/not a span/);
  });

  it("manual (pinned) backups are kept whatever the policy says", () => {
    const items = [{ ...b("2025-01-01T00:00:00Z"), pinned: true }, b("2026-01-01T00:00:00Z"), b("2026-01-02T00:00:00Z")];
    const r = applyRetention(items, { keep_last: 1 });
    expect(r.keep.map((d) => [d.item.id, d.reasons])).toEqual([["2026-01-02T00:00:00Z", ["last 1"]], ["2025-01-01T00:00:00Z", ["manual"]]]);
  });

  it("min_keep is a floor", () => {
    const items = ["01", "02", "03", "04"].map((d) => b(`2026-01-${d}T00:00:00Z`));
    expect(applyRetention(items, { keep_last: 1, min_keep: 3 }).keep).toHaveLength(3);
  });

  it("min_keep fills up with the newest backups no rule keeps, and only when the rules keep fewer", () => {
    // Two backups on one Monday and one from 2019: the weekly rule keeps the newer Monday one, the floor the other.
    const items = [b("2024-01-01T10:00:00Z"), b("2024-01-01T09:00:00Z"), b("2019-01-01T00:00:00Z")];
    const weekly = applyRetention(items, { keep_weekly: 1, min_keep: 2 });
    expect(weekly.keep.map((d) => [d.item.id, d.reasons])).toEqual([
      ["2024-01-01T10:00:00Z", ["weekly 2024-W01"]],
      ["2024-01-01T09:00:00Z", ["min_keep 2"]],
    ]);
    // With keep_daily: 2 the rules alone keep two backups (one per day), so the floor adds nothing.
    const daily = applyRetention(items, { keep_weekly: 1, keep_daily: 2, min_keep: 2 });
    expect(daily.keep.map((d) => d.item.id)).toEqual(["2024-01-01T10:00:00Z", "2019-01-01T00:00:00Z"]);
  });
});
