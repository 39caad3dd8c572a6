import { formatBytes, formatDuration } from "../core/format.js";
import { redact } from "../core/redact.js";
import type { RunEvent } from "./notifier.js";

/** The word a person scans for first: in subjects, titles and the one-line messages. */
export function statusWord(e: RunEvent): string {
  return { start: "STARTED", success: "OK", failure: "FAILED", test: "TEST" }[e.kind];
}

/** `dbkeep: appdb-backup FAILED`: subjects and titles. */
export function title(e: RunEvent): string {
  return redact(`dbkeep: ${e.job} ${statusWord(e)}`);
}

/**
 * One line per event, for chat and push services:
 * `dbkeep: appdb-backup FAILED on db-host: pg_dump failed ... (hint: ...)`,
 * `dbkeep: appdb-backup OK on db-host: appdb-20260210-143000 (12.1 MiB in 42s) to local:nightly`.
 */
export function oneLine(e: RunEvent): string {
  const head = `dbkeep: ${e.job} ${statusWord(e)} on ${e.host}`;
  let tail: string;
  if (e.kind === "failure") {
    tail = `${e.error ?? e.message}${e.hint ? ` (hint: ${e.hint})` : ""}`;
  } else if (e.kind === "success") {
    const facts = [e.bytes !== undefined ? formatBytes(e.bytes) : undefined, e.durationSeconds !== undefined ? `in ${formatDuration(e.durationSeconds)}` : undefined].filter(Boolean);
    tail = `${e.backup ?? e.key ?? e.message}${facts.length ? ` (${facts.join(" ")})` : ""} to ${e.store}`;
  } else {
    tail = e.message;
  }
  return redact(`${head}: ${tail}`).replace(/\s*\n\s*/g, " ");
}

/** The run's fields as label/value rows, in the order a person reads them; empty ones left out. */
export function fields(e: RunEvent): [string, string][] {
  const rows: [string, string | undefined][] = [
    ["Job", e.job],
    ["Status", e.status],
    ["Store", e.store],
    ["Database", `${e.database} (${e.dbType})`],
    ["Host", e.host],
    ["Backup", e.backup],
    ["Key", e.key],
    ["Size", e.bytes !== undefined ? `${formatBytes(e.bytes)} (${e.bytes} bytes)` : undefined],
    ["Started", e.startedAt],
    ["Finished", e.finishedAt],
    ["Duration", e.durationSeconds !== undefined ? formatDuration(e.durationSeconds) : undefined],
    ["Attempts", e.attempts !== undefined ? String(e.attempts) : undefined],
    ["Tags", e.tags.length ? e.tags.join(", ") : undefined],
    ["Error", e.error],
    ["Hint", e.hint],
  ];
  return rows.filter((r): r is [string, string] => r[1] !== undefined && r[1] !== "").map(([k, v]) => [k, redact(v)]);
}

/** Cuts a text to at most `max` UTF-8 bytes without splitting a character. */
export function truncateBytes(text: string, max: number): string {
  const buf = Buffer.from(text, "utf8");
  if (buf.length <= max) return text;
  const marker = "\n[truncated]";
  let end = max - Buffer.byteLength(marker);
  // Step back over UTF-8 continuation bytes so that the cut lands on a character boundary.
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--;
  return buf.subarray(0, end).toString("utf8") + marker;
}
