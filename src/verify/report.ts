import { formatBytes, formatDuration } from "../core/format.js";

/** Version of the report's JSON shape (docs/verify.md); bumped only when a field changes meaning or goes away. */
export const REPORT_VERSION = 1;

export type CheckStatus = "PASS" | "FAIL" | "SKIP";

/**
 * One check of a verification. `name` is stable (scripts match on it): checksum, restore, tables, row_counts,
 * indexes, foreign_keys, views, functions, triggers, sequences, types, migrations, orphans, integrity,
 * `assertion:<name>`, health_check.
 */
export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What was compared, for the machine reader: e.g. the missing tables, the tables whose counts differ. */
  data?: Record<string, unknown>;
}

export interface VerifyReport {
  report_version: typeof REPORT_VERSION;
  /** True when no check failed (SKIP does not fail a verification). */
  ok: boolean;
  job: string | null;
  backup: {
    id: string;
    key: string;
    store: string;
    engine: string;
    format: string;
    taken_at: string;
    raw_bytes: number;
    stored_bytes: number;
    encrypted: boolean;
  };
  /** Where the backup was restored: never the datasource it came from. */
  target: { kind: "database" | "cluster" | "file" | "server"; name: string; where: string; kept: boolean };
  started_at: string;
  finished_at: string;
  seconds: number;
  /** The restore alone (stream, checksum, decrypt, decompress, apply): the RTO to plan with. */
  restore: { seconds: number; bytes_per_second: number; raw_bytes_per_second: number } | null;
  checks: CheckResult[];
  summary: { pass: number; fail: number; skip: number };
  /** Scratch targets of earlier, killed runs that this run removed. */
  leftovers_removed: string[];
}

export function summarize(checks: CheckResult[]): VerifyReport["summary"] {
  return {
    pass: checks.filter((c) => c.status === "PASS").length,
    fail: checks.filter((c) => c.status === "FAIL").length,
    skip: checks.filter((c) => c.status === "SKIP").length,
  };
}

/** The report as a terminal table: one line per check, then the restore time and the verdict. */
export function renderReport(r: VerifyReport): string {
  const rows = r.checks.map((c) => [c.name, c.status, c.detail]);
  const w0 = Math.max(5, ...rows.map((x) => x[0]!.length));
  const lines = [`verify ${r.backup.id} (${r.backup.engine} ${r.backup.format}, ${formatBytes(r.backup.stored_bytes)}) in ${r.target.where}`, ""];
  lines.push(`${"CHECK".padEnd(w0)}  STATUS  DETAIL`);
  for (const [name, status, detail] of rows) lines.push(`${name!.padEnd(w0)}  ${status!.padEnd(6)}  ${detail}`);
  lines.push("");
  if (r.restore) {
    lines.push(`restore: ${formatDuration(r.restore.seconds)} (${formatBytes(r.backup.raw_bytes)} restored, ${formatBytes(r.restore.raw_bytes_per_second)}/s)`);
  }
  if (r.leftovers_removed.length) lines.push(`removed leftovers of killed runs: ${r.leftovers_removed.join(", ")}`);
  if (r.target.kept) lines.push(`kept: ${r.target.where} (drop it by hand when done)`);
  const { pass, fail, skip } = r.summary;
  lines.push(`${r.ok ? "VERIFIED" : "FAILED"}: ${pass} passed, ${fail} failed, ${skip} skipped`);
  return lines.join("\n") + "\n";
}
