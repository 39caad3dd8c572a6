import { describe, expect, it } from "vitest";
import { configFromEnv } from "../../src/config/env.js";
import { validateConfig } from "../../src/config/load.js";
import { cronSchedule, intervalSchedule } from "../../src/daemon/schedule.js";

const at = (iso: string) => new Date(iso);

describe("schedules (an injectable clock: no sleeping)", () => {
  it("cron in a time zone: daily at 02:30 Berlin across both DST changes", () => {
    const s = cronSchedule("30 2 * * *", "Europe/Berlin");
    // 02:30 does not exist on 29 March 2026 (clocks jump 02:00 -> 03:00): the run happens at 03:00 local.
    expect(s.next(at("2026-03-28T12:00:00Z"))).toEqual(at("2026-03-29T01:00:00Z"));
    expect(s.next(at("2026-03-29T12:00:00Z"))).toEqual(at("2026-03-30T00:30:00Z"));
    // 02:30 happens twice on 25 October 2026: the job runs once.
    const first = s.next(at("2026-10-24T12:00:00Z"))!;
    expect(first).toEqual(at("2026-10-25T00:30:00Z"));
    expect(s.next(first)).toEqual(at("2026-10-26T01:30:00Z"));
  });

  it("seconds are optional; the time zone defaults to UTC", () => {
    expect(cronSchedule("*/15 * * * * *").next(at("2026-01-01T00:00:01Z"))).toEqual(at("2026-01-01T00:00:15Z"));
    expect(cronSchedule("0 2 * * *").next(at("2026-01-01T03:00:00Z"))).toEqual(at("2026-01-02T02:00:00Z"));
  });

  it("catch-up: a run was missed while the daemon was down only if one was due in between", () => {
    const s = cronSchedule("0 2 * * *", "UTC");
    expect(s.missedBetween(at("2026-01-01T02:00:05Z"), at("2026-01-02T01:59:00Z"))).toBe(false);
    expect(s.missedBetween(at("2026-01-01T02:00:05Z"), at("2026-01-02T02:30:00Z"))).toBe(true);
    const i = intervalSchedule(3600);
    expect(i.next(at("2026-01-01T00:00:00Z"))).toEqual(at("2026-01-01T01:00:00Z"));
    expect(i.missedBetween(at("2026-01-01T00:00:00Z"), at("2026-01-01T00:59:00Z"))).toBe(false);
  });

  it("an invalid expression is a config error naming it", () => {
    expect(() => cronSchedule("61 * * * *")).toThrow(/invalid schedule "61 \* \* \* \*"/);
    expect(() => validateConfig({ datasources: { d: { engine: "sqlite", path: "a.db" } }, stores: { s: { type: "local", path: "b" } }, jobs: { j: { datasource: "d", store: "s", schedule: "every day" } } })).toThrow(
      expect.objectContaining({ details: expect.stringContaining('jobs.j.schedule: invalid cron expression "every day"') }),
    );
  });
});

describe("sidecar mode: one job from environment variables", () => {
  it("takes seed 003's variables and keeps secrets in the environment", () => {
    const { raw, once } = configFromEnv({
      DB_TYPE: "postgres",
      PGHOST: "db",
      PGUSER: "app",
      PGPASSWORD: "s3cret",
      PGDATABASE: "shop",
      DBKEEP_STORE: "/backups",
      BACKUP_INTERVAL_SECONDS: "86400",
      KEEP_DAILIES: "7",
      KEEP_WEEKLIES: "4",
      TZ: "Europe/Berlin",
      WEBHOOK_URL: "https://hooks.example.com/x",
      WEBHOOK_AUTH_HEADER: "Authorization: Bearer t",
    });
    expect(once).toBe(false);
    const cfg = validateConfig(raw, "environment");
    expect(cfg.datasources.source?.options).toMatchObject({ engine: "postgres", host: "db", user: "app", database: "shop", password_env: "PGPASSWORD" });
    expect(JSON.stringify(raw)).not.toContain("s3cret");
    expect(cfg.jobs.backup).toMatchObject({ every: 86400, retention: { keep_daily: 7, keep_weekly: 4 }, notify: [{ notifier: "webhook", on: "always" }] });
    expect(cfg.timezone).toBe("Europe/Berlin");
  });

  it("DBKEEP_SOURCE URL, a cron schedule, and BACKUP_INTERVAL_SECONDS=0 for run-once", () => {
    const a = configFromEnv({ DBKEEP_SOURCE: "sqlite:/data/app.db", DBKEEP_STORE: "/backups", CRON_SCHEDULE: "0 3 * * *", KEEP_LAST: "3" });
    expect(validateConfig(a.raw).jobs.backup).toMatchObject({ schedule: "0 3 * * *", retention: { keep_last: 3 } });
    expect(configFromEnv({ DBKEEP_SOURCE: "sqlite:/data/app.db", DBKEEP_STORE: "/b", BACKUP_INTERVAL_SECONDS: "0" }).once).toBe(true);
    expect(() => configFromEnv({ DBKEEP_SOURCE: "postgres://u:pw@h/db", DBKEEP_STORE: "/b" })).toThrow(/DBKEEP_SOURCE holds a password/);
    expect(() => configFromEnv({ DB_TYPE: "postgres" })).toThrow(/needs DBKEEP_STORE/);
  });
});
