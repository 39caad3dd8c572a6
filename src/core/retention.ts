/**
 * GFS retention as a pure function: (backups, policy, now, time zone) -> what to keep, what to remove, and why.
 *
 * Each rule is evaluated on its own over all backups and the union is kept (seed 000's wording; restic's
 * `forget` works the same way): keep_daily: 7 keeps the newest backup of each of the 7 most recent days that have a
 * backup, whatever the other rules keep. Periods are calendar periods in the given time zone (ISO weeks for
 * weekly). The newest backup and pinned (manual) backups are always kept; without any rule nothing is removed.
 */
export interface RetentionPolicy {
  keep_last?: number;
  keep_hourly?: number;
  keep_daily?: number;
  keep_weekly?: number;
  keep_monthly?: number;
  keep_yearly?: number;
  /** Keep every backup taken within this span before now, e.g. "14d", "1y6m", "36h". */
  keep_within?: string;
  /** Keep the newest backup of each hour/day/... within this span before now. */
  keep_within_hourly?: string;
  keep_within_daily?: string;
  keep_within_weekly?: string;
  keep_within_monthly?: string;
  keep_within_yearly?: string;
  /** Never leave fewer than this many backups. */
  min_keep?: number;
  /**
   * Also keep the newest N backups that passed a verification by restore (`dbkeep verify`): a backup that was
   * never verified does not count towards this safety floor. A floor, not a rule: alone it deletes nothing.
   */
  keep_verified?: number;
  /**
   * A policy of its own for the backups of each type (seed 001: `daily: { keep_last: 7 }, weekly: { keep_last: 4 }`):
   * each type is a series of its own, so daily backups never count against weekly ones; backups of a type not
   * listed here (or of none) follow the rest of this policy.
   */
  types?: Record<string, RetentionPolicy>;
}

export interface Dated {
  id: string;
  /** When the backup was taken. */
  at: Date;
  /** Kept until deleted by hand (manual backups). */
  pinned?: boolean;
  /** Passed its last verification by restore. */
  verified?: boolean;
  /** The backup's type (daily, weekly, manual, ...), for policies with `types`. */
  type?: string;
}

export interface Decision<T extends Dated> {
  item: T;
  reasons: string[];
}

export interface RetentionResult<T extends Dated> {
  keep: Decision<T>[];
  remove: T[];
}

export interface RetentionOptions {
  timeZone?: string;
  /** The reference time of keep_within rules; defaults to the newest backup's time. */
  now?: Date;
}

type Period = "hourly" | "daily" | "weekly" | "monthly" | "yearly";
const PERIODS: Period[] = ["hourly", "daily", "weekly", "monthly", "yearly"];
const COUNT_KEYS = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"] as const;
const WITHIN_KEYS = ["keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly", "keep_within_monthly", "keep_within_yearly"] as const;

export function hasRules(p: RetentionPolicy): boolean {
  if (Object.values(p.types ?? {}).some(hasRules)) return true;
  return COUNT_KEYS.some((k) => (p[k] ?? 0) > 0) || WITHIN_KEYS.some((k) => p[k] !== undefined);
}

const SPAN = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$/;

/** Checks a keep_within span: years, months, weeks, days, hours, in that order ("1y6m", "2w", "36h"). */
export function checkSpan(span: string): string | undefined {
  return span !== "" && SPAN.test(span) ? undefined : `"${span}" is not a span like 14d, 2w, 6m, 1y6m or 36h (y years, m months, w weeks, d days, h hours)`;
}

/** `now` minus the span, by calendar in UTC (months and years have their real lengths). */
export function spanStart(now: Date, span: string): Date {
  const m = SPAN.exec(span);
  if (!m || span === "") throw new Error(checkSpan(span));
  const [y, mo, w, d, h] = m.slice(1).map((x) => Number(x ?? 0)) as [number, number, number, number, number];
  const t = new Date(now.getTime());
  t.setUTCFullYear(t.getUTCFullYear() - y, t.getUTCMonth() - mo, t.getUTCDate() - w * 7 - d);
  t.setUTCHours(t.getUTCHours() - h);
  return t;
}

export function applyRetention<T extends Dated>(backups: readonly T[], policy: RetentionPolicy, opts: RetentionOptions = {}): RetentionResult<T> {
  const { types, ...rest } = policy;
  if (types && Object.keys(types).length > 0) {
    // Each listed type is its own series under its own policy; the rest is one series under the remaining rules.
    const out: RetentionResult<T> = { keep: [], remove: [] };
    const parts = new Map<string | undefined, T[]>();
    for (const b of backups) {
      const k = b.type !== undefined && b.type in types ? b.type : undefined;
      parts.set(k, [...(parts.get(k) ?? []), b]);
    }
    for (const [type, part] of parts) {
      const r = applyRetention(part, type === undefined ? rest : types[type]!, opts);
      out.keep.push(...r.keep.map((d) => (type === undefined ? d : { ...d, reasons: d.reasons.map((x) => `${type}: ${x}`) })));
      out.remove.push(...r.remove);
    }
    const at = (b: T) => b.at.getTime();
    out.keep.sort((a, b) => at(b.item) - at(a.item));
    out.remove.sort((a, b) => at(b) - at(a));
    return out;
  }
  // Newest first; ties broken by id so that the result does not depend on the input order.
  const sorted = [...backups].sort((a, b) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
  const reasons = new Map<T, string[]>(sorted.map((b) => [b, []]));
  const add = (b: T, r: string) => reasons.get(b)?.push(r);
  const newest = sorted[0];
  const now = opts.now ?? newest?.at ?? new Date(0);
  const fmt = periodFormatter(opts.timeZone ?? "UTC");

  if (!hasRules(policy)) {
    for (const b of sorted) add(b, "no retention rules");
  } else {
    sorted.slice(0, policy.keep_last ?? 0).forEach((b, i) => add(b, `last ${i + 1}`));
    for (const period of PERIODS) {
      keepPerPeriod(sorted, period, policy[`keep_${period}`] ?? 0, undefined, fmt, add, period);
      const span = policy[`keep_within_${period}`];
      if (span) keepPerPeriod(sorted, period, Number.POSITIVE_INFINITY, spanStart(now, span), fmt, add, `within ${span} ${period}`);
    }
    if (policy.keep_within) {
      const start = spanStart(now, policy.keep_within);
      for (const b of sorted) if (b.at >= start) add(b, `within ${policy.keep_within}`);
    }
  }
  for (const b of sorted) if (b.pinned) add(b, "manual");
  sorted.filter((b) => b.verified).slice(0, policy.keep_verified ?? 0).forEach((b, i) => add(b, `verified ${i + 1}`));
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

/** Keeps the newest backup of each of the `budget` most recent periods that have one (and are not before `start`). */
function keepPerPeriod<T extends Dated>(sorted: T[], period: Period, budget: number, start: Date | undefined, fmt: Intl.DateTimeFormat, add: (b: T, r: string) => void, label: string): void {
  let lastPeriod: string | undefined;
  for (const b of sorted) {
    if (budget <= 0 || (start && b.at < start)) break;
    const p = periodOf(fmt, b.at, period);
    if (p === lastPeriod) continue;
    lastPeriod = p;
    add(b, `${label} ${p}`);
    budget--;
  }
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

/** The calendar period of an instant in the formatter's time zone: "2026-03-04 05h", "2026-03-04", "2026-W10", ... */
export function periodOf(fmt: Intl.DateTimeFormat, at: Date, period: Period): string {
  const parts = Object.fromEntries(fmt.formatToParts(at).map((p) => [p.type, p.value])) as Record<string, string>;
  const y = parts.year ?? "";
  const m = parts.month ?? "";
  const d = parts.day ?? "";
  switch (period) {
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
