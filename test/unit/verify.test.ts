import { describe, expect, it } from "vitest";
import { applyRetention } from "../../src/core/retention.js";
import type { Manifest } from "../../src/core/manifest.js";
import { checkObjects, checkRowCounts, checkTables } from "../../src/verify/compare.js";
import { renderReport, summarize, type VerifyReport } from "../../src/verify/report.js";
import { hostTag, isDeadScratch, scratchName } from "../../src/verify/scratch.js";
import { deadPid, reportSchema } from "../helpers/verify.js";

const manifest = (extra: Partial<Manifest>): Manifest =>
  ({ manifest_version: 1, id: "app-1", engine: "postgres", database: "app", format: "plain", compression: "none", encryption: null, key: "app/app-1.sql", checksum_key: "app/app-1.sql.sha256", raw_bytes: 10, stored_bytes: 10, sha256: "0".repeat(64), started_at: "2026-01-01T00:00:00Z", finished_at: "2026-01-01T00:00:01Z", duration_seconds: 1, dbkeep_version: "0", ...extra }) as Manifest;

describe("verify checks against the manifest", () => {
  const m = manifest({ tables: [{ name: "a", rows: 3 }, { name: "b", rows_estimate: 9 }], objects: { indexes: ["a_pkey", "b_idx"], views: [] } });

  it("tables: missing and unexpected ones are named", () => {
    expect(checkTables(m, { tables: [{ name: "a", rows: 3 }, { name: "b", rows: 9 }], objects: {} }).status).toBe("PASS");
    expect(checkTables(m, { tables: [{ name: "a", rows: 3 }, { name: "c", rows: 1 }], objects: {} })).toMatchObject({ status: "FAIL", detail: "missing 1 of 2: b; unexpected: c" });
    expect(checkTables(manifest({}), { tables: [], objects: {} }).status).toBe("SKIP");
  });

  it("row_counts: exact counts must match, estimates are not compared, estimates only is a SKIP", () => {
    expect(checkRowCounts(m, { tables: [{ name: "a", rows: 3 }, { name: "b", rows: 1 }], objects: {} })).toMatchObject({ status: "PASS", detail: "1 table(s), 3 row(s), as recorded at backup time (1 with estimates only, not compared)" });
    expect(checkRowCounts(m, { tables: [{ name: "a", rows: 2 }], objects: {} })).toMatchObject({ status: "FAIL", detail: expect.stringContaining("a: 2 rows, expected 3") });
    expect(checkRowCounts(manifest({ tables: [{ name: "b", rows_estimate: 1 }] }), { tables: [], objects: {} }).status).toBe("SKIP");
  });

  it("objects: each kind the engine has is compared; kinds the manifest lacks are skipped", () => {
    const r = checkObjects(m, { tables: [], objects: { indexes: ["a_pkey"], views: [], triggers: ["t"] } });
    expect(r).toEqual([
      { name: "indexes", status: "FAIL", detail: "missing 1 of 2: b_idx", data: { missing: ["b_idx"], unexpected: [] } },
      { name: "views", status: "PASS", detail: "0 view(s) present" },
      { name: "triggers", status: "SKIP", detail: "not recorded at backup time" },
    ]);
    expect(checkObjects(manifest({}), { tables: [], objects: { indexes: [] } })[0]).toMatchObject({ status: "SKIP", detail: expect.stringContaining("older dbkeep") });
  });
});

describe("retention keep_verified", () => {
  const at = (d: number) => new Date(Date.UTC(2026, 0, d));
  const items = [1, 2, 3, 4].map((d) => ({ id: `b${d}`, at: at(d), verified: d === 1 || d === 2 }));

  it("keeps the newest N verified backups besides the other rules", () => {
    const r = applyRetention(items, { keep_last: 1, keep_verified: 1 });
    expect(r.keep.map((k) => [k.item.id, k.reasons])).toEqual([["b4", ["last 1"]], ["b2", ["verified 1"]]]);
    expect(r.remove.map((x) => x.id)).toEqual(["b3", "b1"]);
  });

  it("an unverified backup does not count towards the floor", () => {
    const r = applyRetention(items.map((x) => ({ ...x, verified: false })), { keep_last: 1, keep_verified: 2 });
    expect(r.keep.map((k) => k.item.id)).toEqual(["b4"]);
  });
});

describe("scratch names", () => {
  it("carry the job, the host tag and the pid, within 40 characters; only dead runs of this host are leftovers", () => {
    const n = scratchName("App-Backup_nightly-2");
    expect(n).toMatch(new RegExp(`^dbkeep_verify_appbacku_${hostTag()}_${process.pid}_[0-9a-f]{4}$`));
    expect(n.length).toBeLessThanOrEqual(40);
    expect(isDeadScratch(n)).toBe(false);
    const dead = `dbkeep_verify_app_${hostTag()}_${deadPid()}_abcd`;
    expect(isDeadScratch(dead)).toBe(true);
    expect(isDeadScratch(`${dead}_dbkeep_restore_0123abcd`)).toBe(true);
    const otherHost = hostTag() === "0000" ? "0001" : "0000";
    expect(isDeadScratch(`dbkeep_verify_app_${otherHost}_${deadPid()}_abcd`)).toBe(false);
    expect(isDeadScratch("app_dbkeep_restore_0123abcd")).toBe(false);
  });
});

describe("the report", () => {
  it("renders one line per check and a verdict, and matches the documented JSON shape", () => {
    const checks = [
      { name: "checksum", status: "PASS" as const, detail: "ok" },
      { name: "row_counts", status: "FAIL" as const, detail: "a: 2 rows, expected 3" },
      { name: "orphans", status: "SKIP" as const, detail: "no foreign keys" },
    ];
    const r: VerifyReport = {
      report_version: 1,
      ok: false,
      job: "app",
      backup: { id: "app-1", key: "app/app-1.sql", store: "local:x", engine: "postgres", format: "plain", taken_at: "2026-01-01T00:00:00.000Z", raw_bytes: 2048, stored_bytes: 1024, encrypted: false },
      target: { kind: "database", name: "dbkeep_verify_app_0000_1_abcd", where: "database dbkeep_verify_app_0000_1_abcd on 127.0.0.1:5432", kept: false },
      started_at: "2026-01-01T00:00:00.000Z",
      finished_at: "2026-01-01T00:00:02.000Z",
      seconds: 2,
      restore: { seconds: 1.5, bytes_per_second: 682, raw_bytes_per_second: 1365 },
      checks,
      summary: summarize(checks),
      leftovers_removed: [],
    };
    expect(reportSchema.parse(r)).toEqual(r);
    const text = renderReport(r);
    expect(text).toMatch(/^row_counts\s+FAIL\s+a: 2 rows, expected 3$/m);
    expect(text).toMatch(/^restore: 1\.5s \(2\.0 KiB restored, 1\.3 KiB\/s\)$/m);
    expect(text).toMatch(/^FAILED: 1 passed, 1 failed, 1 skipped$/m);
  });
});
