import { InvalidArgumentError } from "commander";
import { durationSeconds } from "../config/schema.js";
import { didYouMean } from "../config/problems.js";

/**
 * Argument parsers for the numeric and enumerated flags of every command, given as the third argument of
 * `.option()`. A value they refuse stops the command before it does anything, with commander's one-line error
 * ("option '--parallel <n>' argument 'abc' is invalid. ...") and exit code 2.
 *
 * They return the value as text, checked and in its plain form ("07" becomes "7"): the commands read their flags as
 * strings, and `Number()` of what passed here is always the number the user meant.
 */

/** A whole number of at least `min` (and at most `max`), e.g. `--parallel`, `--keep-last`, `--jobs`. */
export function wholeNumber(min: number, max?: number): (value: string) => string {
  const range = max === undefined ? `of ${min} or more` : `from ${min} to ${max}`;
  return (value) => {
    const v = value.trim();
    if (!/^[+-]?\d+$/.test(v)) throw new InvalidArgumentError(`Expected a whole number ${range}.`);
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) throw new InvalidArgumentError(`Expected a whole number ${range}, not ${v}.`);
    return String(n);
  };
}

/** Any whole number, negative ones included (a compression level: its range depends on the codec, checked later). */
export function integer(value: string): string {
  const v = value.trim();
  if (!/^[+-]?\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError("Expected a whole number.");
  return String(Number(v));
}

/** One of `values`, exactly as written there (a close miss is named). */
export function oneOf(values: readonly string[]): (value: string) => string {
  return (value) => {
    if (values.includes(value)) return value;
    const near = didYouMean(value, values);
    throw new InvalidArgumentError(`Expected one of ${values.join(", ")}${near ? ` (did you mean ${near}?)` : ""}.`);
  };
}

/** A duration such as 30, 30s, 5m, 2h or 7d. */
export function duration(value: string): string {
  if (durationSeconds(value) === undefined) throw new InvalidArgumentError("Expected a duration such as 30s, 5m, 2h or 7d.");
  return value.trim();
}

/** A date and time that `new Date()` reads the same everywhere: ISO 8601 (2027-01-01 or 2027-01-01T00:00:00Z). */
export function isoDate(value: string): string {
  const v = value.trim();
  if (!/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(v) || Number.isNaN(new Date(v).getTime())) {
    throw new InvalidArgumentError("Expected a date such as 2027-01-01 or 2027-01-01T00:00:00Z.");
  }
  return v;
}

/** `host:port` with a port from 0 to 65535 (an IPv6 host in brackets: [::1]:9187). */
export function hostPort(value: string): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d{1,5})$/.exec(value.trim());
  if (!m || Number(m[2]) > 65535) throw new InvalidArgumentError("Expected host:port, e.g. 127.0.0.1:9187 or 0.0.0.0:9187.");
  return value.trim();
}

/** The kinds a backup may be labelled with (`backup --type`): seed 001's, plus the other retention periods. */
export const BACKUP_TYPES = ["hourly", "daily", "weekly", "monthly", "yearly", "manual"] as const;
