import { Cron } from "croner";
import { DbkeepError } from "../core/errors.js";

/** When a job runs: a cron expression (seconds optional) in a time zone, or a fixed interval. */
export interface Schedule {
  readonly description: string;
  /** The first run time strictly after `after`. */
  next(after: Date): Date | undefined;
  /** Whether a run was due in (from, to]: a missed run after downtime. */
  missedBetween(from: Date, to: Date): boolean;
}

export function cronSchedule(expression: string, timeZone = "UTC"): Schedule {
  let cron: Cron;
  try {
    cron = new Cron(expression, { paused: true, timezone: timeZone });
  } catch (err) {
    throw new DbkeepError("CONFIG_INVALID", `invalid schedule "${expression}": ${(err as Error).message}`, {
      hint: 'use a cron expression such as "0 2 * * *" (daily at 02:00) or "*/30 * * * * *" (every 30 seconds)',
    });
  }
  return {
    description: `cron "${expression}" (${timeZone})`,
    next: (after) => cron.nextRun(after) ?? undefined,
    missedBetween(from, to) {
      const n = cron.nextRun(from);
      return n !== null && n.getTime() <= to.getTime();
    },
  };
}

/** Every `seconds`, counted from the previous run's start (the first run is due at once). */
export function intervalSchedule(seconds: number): Schedule {
  if (!(seconds > 0)) throw new DbkeepError("CONFIG_INVALID", `invalid interval: ${seconds} seconds`);
  return {
    description: `every ${seconds}s`,
    next: (after) => new Date(after.getTime() + seconds * 1000),
    missedBetween: (from, to) => to.getTime() - from.getTime() >= seconds * 1000,
  };
}

/** Checks a cron expression for the config schema. */
export function checkCron(expression: string): string | undefined {
  try {
    new Cron(expression, { paused: true });
    return undefined;
  } catch (err) {
    return `invalid cron expression "${expression}": ${(err as Error).message}`;
  }
}
