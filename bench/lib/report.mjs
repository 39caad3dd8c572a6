// Small formatting helpers shared by the bench scripts.

import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import process from "node:process";

export const MB = 1024 * 1024;

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function round(x, digits = 2) {
  return x === undefined || x === null || Number.isNaN(x) ? null : Math.round(x * 10 ** digits) / 10 ** digits;
}

/** A plain-text table: left-aligned first column, right-aligned numbers. */
export function table(header, rows) {
  const cells = [header, ...rows].map((r) => r.map((c) => (c === null || c === undefined ? "-" : String(c))));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  return [line(cells[0]), widths.map((w) => "-".repeat(w)).join("  "), ...cells.slice(1).map(line)].join("\n");
}

function sh(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
  } catch {
    return "unavailable";
  }
}

/** What the figures depend on, recorded next to them. */
export function machineInfo() {
  return {
    nproc: sh("nproc", []),
    cpu_model: cpus()[0]?.model ?? "unknown",
    memory_gib: Math.round(totalmem() / 1024 ** 3),
    free_g: sh("free", ["-g"]),
    node: process.version,
    pg_dump: sh("pg_dump", ["--version"]),
    zstd: sh("zstd", ["--version"]),
    lz4: sh("lz4", ["--version"]).split("\n")[0],
    gzip: sh("gzip", ["--version"]).split("\n")[0],
    kernel: sh("uname", ["-sr"]),
    loadavg_at_start: sh("cat", ["/proc/loadavg"]),
  };
}

/**
 * Which dbkeep was measured: the commit, uncommitted changes under src/, and when dist/ was built (run.mjs runs
 * whatever dist/ holds; only npm run bench rebuilds it first).
 */
export function codeInfo(distMain) {
  const status = sh("git", ["status", "--porcelain", "--", "src"]);
  let built = null;
  try {
    built = statSync(distMain).mtime.toISOString();
  } catch {
    // not built
  }
  return { commit: sh("git", ["rev-parse", "--short", "HEAD"]), src_uncommitted: status ? status.split("\n") : [], dist_built_at: built };
}
