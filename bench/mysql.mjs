// MariaDB/MySQL logical backup against `mariadb-dump | zstd -T0 -3` with the same dump flags, in the same run.
//
//   node bench/mysql.mjs --db perf_my_src --runs 5                 # an existing database (not created or dropped)
//   node bench/mysql.mjs --db perf_my_src --runs 5 --before OTHER/dist/bin/dbkeep.js   # an older build too
//
// Cases run interleaved (baseline, dbkeep, baseline, dbkeep, ...) and are reported as ratios to the baseline of the
// same pair: the machine's speed is not constant, so only figures taken side by side are comparable.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { measure } from "./lib/proc.mjs";
import { MB, median, round, table } from "./lib/report.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const { values: a } = parseArgs({
  options: {
    db: { type: "string", default: "perf_my_src" },
    runs: { type: "string", default: "5" },
    cli: { type: "string", default: join(ROOT, "dist", "bin", "dbkeep.js") },
    compression: { type: "string", default: "zstd" },
    before: { type: "string" },
    // e.g. --variant row_counts=estimate: this build once more with that URL option, as a third case.
    variant: { type: "string" },
  },
});
const DB = a.db;
// dbkeep's own mariadb-dump flags for a single database (src/engines/mysql/index.ts), so that only dbkeep differs.
const FLAGS = "--single-transaction --routines --triggers --skip-events --hex-blob --quick --skip-add-locks --default-character-set=utf8mb4 --no-tablespaces";
const CASES = [
  { id: "baseline", label: `mariadb-dump | zstd -T0 -3`, shell: (dir) => `mariadb-dump -uroot -h127.0.0.1 ${FLAGS} ${DB} | zstd -T0 -3 > ${dir}/dump.sql.zst` },
  { id: "dbkeep", label: `dbkeep ${a.compression}`, argv: (dir) => dbkeepArgv(a.cli, dir) },
  ...(a.variant ? [{ id: "variant", label: `dbkeep ${a.compression} ?${a.variant}`, argv: (dir) => dbkeepArgv(a.cli, dir, `?${a.variant}`) }] : []),
  ...(a.before ? [{ id: "before", label: `dbkeep ${a.compression} (--before)`, argv: (dir) => dbkeepArgv(a.before, dir) }] : []),
];
function dbkeepArgv(cli, dir, query = "") {
  return [process.execPath, cli, "backup", `mysql://root@127.0.0.1:3306/${DB}${query}`, "--to", dir, "--compression", a.compression, "--log-format", "json", "-q"];
}

const results = Object.fromEntries(CASES.map((c) => [c.id, []]));
const ratios = Object.fromEntries(CASES.map((c) => [c.id, []]));
for (let i = 0; i < Number(a.runs); i++) {
  for (const c of i % 2 ? [...CASES].reverse() : CASES) {
    const dir = await mkdtemp(join(tmpdir(), "bench-my-"));
    try {
      const r = await measure(c.shell ? { shell: c.shell(dir) } : { argv: c.argv(dir) });
      results[c.id].push(r);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  for (const c of CASES) ratios[c.id].push(results[c.id].at(-1).seconds / results.baseline.at(-1).seconds);
}
const rows = CASES.map((c) => {
  const rs = results[c.id];
  const cpu = (name) => round(median(rs.map((r) => r.processes[name]?.cpuSeconds ?? 0)));
  return [c.label, round(median(rs.map((r) => r.seconds))), round(median(ratios[c.id]), 3), cpu("node"), cpu("mariadb-dump"), cpu("zstd"), round(Math.max(...rs.map((r) => r.processes.node?.peakRssBytes ?? 0)) / MB, 0)];
});
console.log(table(["case", "wall s (median)", "paired ratio (median)", "node CPU-s", "mariadb-dump CPU-s", "zstd CPU-s", "node peak RSS MB"], rows));
for (const c of CASES.slice(1)) console.log(`${c.label} / baseline, each pair: ${ratios[c.id].map((r) => round(r, 3)).join(", ")}`);
