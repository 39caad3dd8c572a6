/**
 * GFS retention as a pure function: (backups, policy, timezone) -> what to keep, what to remove, and why.
 * Each rule is evaluated on its own over all backups and the union is kept (seed 000's wording, restic's
 * `forget`): keep_daily: 7 keeps the newest backup of each of the 7 most recent days that have a backup.
 */
export interface RetentionPolicy {
  keep_last?: number;
  keep_hourly?: number;
  keep_daily?: number;
  keep_weekly?: number;
  keep_monthly?: number;
  keep_yearly?: number;
  /** Never leave fewer than this many backups. */
  min_keep?: number;
}

export interface Dated {
  id: string;
  /** When the backup was taken. */
  at: Date;
}

export interface Decision<T extends Dated> {
  item: T;
  reasons: string[];
}

export interface RetentionResult<T extends Dated> {
  keep: Decision<T>[];
  remove: T[];
}

type Rule = "hourly" | "daily" | "weekly" | "monthly" | "yearly";
const RULES: Rule[] = ["hourly", "daily", "weekly", "monthly", "yearly"];

export function hasRules(p: RetentionPolicy): boolean {
  return [p.keep_last, p.keep_hourly, p.keep_daily, p.keep_weekly, p.keep_monthly, p.keep_yearly].some((n) => n !== undefined && n > 0);
}

export function applyRetention<T extends Dated>(backups: readonly T[], policy: RetentionPolicy, timeZone = "UTC"): RetentionResult<T> {
  const sorted = [...backups].sort((a, b) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const reasons = new Map<T, string[]>(sorted.map((b) => [b, []]));
  const add = (b: T, r: string) => reasons.get(b)?.push(r);

  if (!hasRules(policy)) {
    for (const b of sorted) add(b, "no retention rules");
  } else {
    sorted.slice(0, policy.keep_last ?? 0).forEach((b, i) => add(b, `last ${i + 1}`));
    const fmt = periodFormatter(timeZone);
    for (const rule of RULES) {
      let budget = policy[`keep_${rule}`] ?? 0;
      let lastPeriod: string | undefined;
      for (const b of sorted) {
        if (budget <= 0) break;
        const period = periodOf(fmt, b.at, rule);
        if (period === lastPeriod) continue;
        lastPeriod = period;
        add(b, `${rule} ${period}`);
        budget--;
      }
    }
  }
  const newest = sorted[0];
  if (newest && reasons.get(newest)?.length === 0) add(newest, "newest");
  const floor = policy.min_keep ?? 0;
  let kept = sorted.filter((b) => (reasons.get(b)?.length ?? 0) > 0).length;
  for (const b of sorted) {
    if (kept >= floor) break;
    if (reasons.get(b)?.length === 0) {
      add(b, `min_keep ${floor}`);
      kept++;
    }
  }
  const keep: Decision<T>[] = [];
  const remove: T[] = [];
  for (const b of sorted) {
    const r = reasons.get(b) ?? [];
    if (r.length > 0) keep.push({ item: b, reasons: r });
    else remove.push(b);
  }
  return { keep, remove };
}

function periodFormatter(timeZone: string): Intl.DateTimeFormat {
  return new Intl.DateTimeFormat("en-CA", {
    timeZone,
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    hourCycle: "h23",
  });
}

function periodOf(fmt: Intl.DateTimeFormat, at: Date, rule: Rule): string {
  const parts = Object.fromEntries(fmt.formatToParts(at).map((p) => [p.type, p.value])) as Record<string, string>;
  const y = parts.year ?? "";
  const m = parts.month ?? "";
  const d = parts.day ?? "";
  switch (rule) {
    case "hourly":
      return `${y}-${m}-${d} ${parts.hour ?? "00"}h`;
    case "daily":
      return `${y}-${m}-${d}`;
    case "weekly": {
      const { year, week } = isoWeek(Number(y), Number(m), Number(d));
      return `${year}-W${String(week).padStart(2, "0")}`;
    }
    case "monthly":
      return `${y}-${m}`;
    case "yearly":
      return y;
  }
}

/** ISO-8601 week of a calendar date (weeks start on Monday; week 1 holds the year's first Thursday). */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = new Date(Date.UTC(year, month - 1, day));
  const dow = date.getUTCDay() || 7;
  date.setUTCDate(date.getUTCDate() + 4 - dow); // the Thursday of this week decides its year
  const isoYear = date.getUTCFullYear();
  const jan1 = Date.UTC(isoYear, 0, 1);
  const week = Math.ceil(((date.getTime() - jan1) / 86400000 + 1) / 7);
  return { year: isoYear, week };
}
