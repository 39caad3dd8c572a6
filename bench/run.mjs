// The backup benchmark: dbkeep against plain pg_dump pipelines on the same database, in the same run.
//
//   npm run bench                                 # ~1 GB database, 3 runs per case
//   node bench/run.mjs --size-gb 3 --runs 1       # ~3 GB, to check that memory stays flat
//   node bench/run.mjs --rebuild --skip-restore   # regenerate the data; backups only
//
// The baselines run interleaved with dbkeep because the machine's speed is not constant (other work, page cache,
// thermal limits): only figures taken side by side are comparable, so ratios are reported, not absolute times.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { BENCH_DB, createDatabase, dropDatabase, ensureBenchDatabase } from "./lib/dataset.mjs";
import { dirBytes, GNU_TIME, HAVE_GNU_TIME, measure } from "./lib/proc.mjs";
import { machineInfo, MB, median, round, table } from "./lib/report.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const WORK = join(ROOT, "bench", ".work");
const CLI = join(ROOT, "dist", "cli", "main.js");
const PG = "-h 127.0.0.1 -U postgres";
const SOURCE_URL = `postgres://postgres@127.0.0.1:5432/${BENCH_DB}`;
const RESTORE_DB = `${BENCH_DB}_restore`;
const RESTORE_BASELINE_DB = `${BENCH_DB}_restore2`;
const BASELINE = "pg_dump_zstd";

// The targets from the project's issue.
const TARGET_RATIO = 1.1;
const TARGET_RSS_MB = 150;

const CASES = [
  { id: "pg_dump_custom", label: "pg_dump -Fc", shell: (dir) => `pg_dump ${PG} -Fc ${BENCH_DB} > ${dir}/dump.pgc` },
  { id: BASELINE, label: "pg_dump | zstd -T0 -3", shell: (dir) => `pg_dump ${PG} ${BENCH_DB} | zstd -T0 -3 > ${dir}/dump.sql.zst` },
  { id: "dbkeep_zstd", label: "dbkeep zstd", compression: "zstd" },
  { id: "dbkeep_gzip", label: "dbkeep gzip", compression: "gzip" },
  { id: "dbkeep_lz4", label: "dbkeep lz4", compression: "lz4" },
];

function options() {
  const { values } = parseArgs({
    options: {
      "size-gb": { type: "string", default: "1" },
      runs: { type: "string", default: "3" },
      rebuild: { type: "boolean", default: false },
      "skip-restore": { type: "boolean", default: false },
    },
  });
  const sizeGb = Number(values["size-gb"]);
  const runs = Number.parseInt(values.runs, 10);
  if (!(sizeGb > 0) || !(runs > 0)) throw new Error("--size-gb and --runs must be positive numbers");
  return { sizeGb, runs, rebuild: values.rebuild, skipRestore: values["skip-restore"] };
}

function log(msg) {
  process.stdout.write(`${msg}\n`);
}

function dbkeepArgv(compression, dir) {
  return [process.execPath, CLI, "backup", SOURCE_URL, "--to", dir, "--compression", compression, "--log-format", "json", "-q"];
}

function checkPrerequisites() {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build (npm run bench does)`);
  if (!HAVE_GNU_TIME) {
    log(`note: ${GNU_TIME} not found (Debian: apt-get install time); peak RSS comes from /proc sampling only`);
  }
}

/** Streams a full pg_dump once, counting its bytes: warms the page cache for every case and gives the raw size. */
async function rawDumpBytes() {
  const child = spawn("pg_dump", [...PG.split(" "), BENCH_DB], { stdio: ["ignore", "pipe", "inherit"] });
  let bytes = 0;
  child.stdout.on("data", (b) => (bytes += b.length));
  const code = await new Promise((resolve) => child.once("close", resolve));
  if (code !== 0) throw new Error(`pg_dump exited with ${code}`);
  return bytes;
}

/** One timed run of one case, in a fresh directory; the directory is removed unless `keep`. */
async function runCase(c, { keep }) {
  const dir = await mkdtemp(join(WORK, `${c.id}-`));
  const timeFile = join(WORK, `.time-${c.id}`);
  const m = c.compression
    ? await measure({ argv: dbkeepArgv(c.compression, dir), wrapTime: true, timeFile })
    : await measure({ shell: c.shell(dir), wrapTime: true, timeFile });
  const outputBytes = await dirBytes(dir);
  if (!keep) await rm(dir, { recursive: true, force: true });
  return { ...m, outputBytes, dir };
}

/** Runs every case `runs` times, reversing the order on every other run so no case always goes first. */
async function runBackups(runs) {
  const results = Object.fromEntries(CASES.map((c) => [c.id, []]));
  const kept = {};
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? CASES : [...CASES].reverse();
    for (const c of order) {
      const last = r === runs - 1;
      const res = await runCase(c, { keep: last && (c.id === "dbkeep_zstd" || c.id === BASELINE) });
      if (last) kept[c.id] = res.dir;
      results[c.id].push(res);
      log(`  run ${r + 1}/${runs}  ${c.label.padEnd(24)} ${res.seconds.toFixed(1).padStart(7)} s  ${(res.outputBytes / MB).toFixed(0)} MB`);
    }
  }
  return { results, kept };
}

function summarize(results) {
  const baseMedian = median(results[BASELINE].map((r) => r.seconds));
  return CASES.map((c) => {
    const rs = results[c.id];
    const med = median(rs.map((r) => r.seconds));
    const peak = (name) => Math.max(0, ...rs.map((r) => r.processes[name]?.peakRssBytes ?? 0)) / MB || null;
    const cpu = (name) => median(rs.map((r) => r.processes[name]?.cpuSeconds ?? 0)) || null;
    return {
      id: c.id,
      label: c.label,
      runs_seconds: rs.map((r) => round(r.seconds, 2)),
      median_seconds: round(med, 2),
      ratio_vs_baseline: round(med / baseMedian, 3),
      output_bytes: rs.at(-1).outputBytes,
      // dbkeep's own node process: the figure the memory target is about.
      node_peak_rss_mb: round(peak("node"), 1),
      pg_dump_peak_rss_mb: round(peak("pg_dump"), 1),
      compressor_peak_rss_mb: round(peak(c.compression ?? "zstd"), 1),
      gnu_time_max_rss_mb: HAVE_GNU_TIME ? round(Math.max(...rs.map((r) => r.gnuTimeMaxRssBytes ?? 0)) / MB, 1) : null,
      cpu_seconds_median: { node: round(cpu("node"), 1), pg_dump: round(cpu("pg_dump"), 1), [c.compression ?? "zstd"]: round(cpu(c.compression ?? "zstd"), 1) },
    };
  });
}

async function checkpoint() {
  const c = new pg.Client({ host: "127.0.0.1", user: "postgres", database: "postgres" });
  await c.connect();
  try {
    await c.query("CHECKPOINT");
  } finally {
    await c.end();
  }
}

async function rowCounts(database) {
  const c = new pg.Client({ host: "127.0.0.1", user: "postgres", database });
  await c.connect();
  try {
    const counts = {};
    for (const t of ["customers", "orders", "events", "notes", "attachments"]) {
      counts[t] = Number((await c.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n);
    }
    return counts;
  } finally {
    await c.end();
  }
}

/** dbkeep restore of the kept dbkeep backup vs zstd -dc | psql of the kept baseline file; once each. */
async function runRestores(kept) {
  const zstFile = join(kept[BASELINE], (await readdir(kept[BASELINE]))[0]);
  await dropDatabase(RESTORE_DB);
  await dropDatabase(RESTORE_BASELINE_DB);
  const expected = await rowCounts(BENCH_DB);
  const out = [];
  try {
    // A checkpoint first, so neither restore pays for the other's dirty buffers.
    await checkpoint();
    const timeFile = join(WORK, ".time-restore");
    const argv = [process.execPath, CLI, "restore", kept.dbkeep_zstd, "latest", "--to", `postgres://postgres@127.0.0.1/${RESTORE_DB}`, "--auto-confirm", "--log-format", "json", "-q"];
    const d = await measure({ argv, wrapTime: true, timeFile });
    out.push(restoreRecord("dbkeep_restore", "dbkeep restore (zstd)", d, await rowCounts(RESTORE_DB), expected));
    log(`  dbkeep restore           ${d.seconds.toFixed(1).padStart(7)} s`);

    await checkpoint();
    await createDatabase(RESTORE_BASELINE_DB);
    const b = await measure({ shell: `zstd -dc ${zstFile} | psql ${PG} -q -d ${RESTORE_BASELINE_DB}`, wrapTime: true, timeFile });
    out.push(restoreRecord("baseline_restore", "zstd -dc | psql", b, await rowCounts(RESTORE_BASELINE_DB), expected));
    log(`  zstd -dc | psql          ${b.seconds.toFixed(1).padStart(7)} s`);
  } finally {
    await dropDatabase(RESTORE_DB);
    await dropDatabase(RESTORE_BASELINE_DB);
  }
  const base = out[1].seconds;
  for (const r of out) r.ratio_vs_baseline = round(r.seconds / base, 3);
  return out;
}

function restoreRecord(id, label, m, counts, expected) {
  return {
    id,
    label,
    seconds: round(m.seconds, 2),
    node_peak_rss_mb: round((m.processes.node?.peakRssBytes ?? 0) / MB, 1) || null,
    psql_peak_rss_mb: round((m.processes.psql?.peakRssBytes ?? 0) / MB, 1) || null,
    cpu_seconds: Object.fromEntries(Object.entries(m.processes).map(([k, v]) => [k, round(v.cpuSeconds, 1)])),
    rows_match: JSON.stringify(counts) === JSON.stringify(expected),
  };
}

function printBackupTable(rows) {
  log(table(
    ["case", "median s", "runs s", "vs pg_dump|zstd", "output MB", "node RSS MB", "pg_dump RSS MB", "compressor RSS MB", "CPU s node/pg_dump/comp"],
    rows.map((r) => {
      const cpu = Object.values(r.cpu_seconds_median);
      return [r.label, r.median_seconds.toFixed(2), r.runs_seconds.join(" "), `${r.ratio_vs_baseline.toFixed(2)}x`, (r.output_bytes / MB).toFixed(0),
        r.node_peak_rss_mb, r.pg_dump_peak_rss_mb, r.compressor_peak_rss_mb, cpu.map((x) => x ?? "-").join(" / ")];
    }),
  ));
}

function printVerdict(rows, restores) {
  const z = rows.find((r) => r.id === "dbkeep_zstd");
  const rss = Math.max(...rows.filter((r) => r.id.startsWith("dbkeep")).map((r) => r.node_peak_rss_mb ?? Infinity));
  log(`\ntarget: dbkeep zstd <= ${TARGET_RATIO}x pg_dump|zstd wall time: ${z.ratio_vs_baseline.toFixed(2)}x -> ${z.ratio_vs_baseline <= TARGET_RATIO ? "met" : "MISSED"}`);
  log(`target: dbkeep node peak RSS < ${TARGET_RSS_MB} MB: ${rss} MB (highest of the dbkeep cases) -> ${rss < TARGET_RSS_MB ? "met" : "MISSED"}`);
  for (const r of restores) log(`restore: ${r.label}: ${r.seconds} s (${r.ratio_vs_baseline}x), rows match source: ${r.rows_match}`);
}

async function main() {
  const opts = options();
  checkPrerequisites();
  await mkdir(WORK, { recursive: true });
  const machine = machineInfo();
  log(`dbkeep benchmark: ~${opts.sizeGb} GB, ${opts.runs} run(s) per case, ${machine.nproc} cores, node ${machine.node}`);

  const started = performance.now();
  const dbBytes = await ensureBenchDatabase({ sizeGb: opts.sizeGb, rebuild: opts.rebuild, log });
  const rawBytes = await rawDumpBytes();
  log(`database: ${(dbBytes / 1e9).toFixed(2)} GB on disk (pg_database_size), pg_dump output ${(rawBytes / 1e9).toFixed(2)} GB raw`);

  log("\nbackups:");
  const { results, kept } = await runBackups(opts.runs);
  const rows = summarize(results);
  let restores = [];
  try {
    if (!opts.skipRestore) {
      log("\nrestores (once each):");
      restores = await runRestores(kept);
    }
  } finally {
    for (const dir of Object.values(kept)) await rm(dir, { recursive: true, force: true });
  }

  const sizeLabel = `${String(opts.sizeGb).replace(".", "_")}gb`;
  const doc = {
    date: new Date().toISOString(),
    size_gb_requested: opts.sizeGb,
    database_bytes: dbBytes,
    raw_dump_bytes: rawBytes,
    zstd_ratio: round(rawBytes / rows.find((r) => r.id === BASELINE).output_bytes, 2),
    runs: opts.runs,
    baseline: BASELINE,
    gnu_time: HAVE_GNU_TIME,
    machine,
    loadavg_at_end: loadavg().map((x) => round(x, 2)),
    backups: rows,
    restores,
    total_seconds: round((performance.now() - started) / 1000, 0),
  };
  const file = join(WORK, `results-${sizeLabel}.json`);
  await writeFile(file, JSON.stringify(doc, null, 2) + "\n");

  log(`\nresults (median of ${opts.runs}; ratio = median / median of pg_dump | zstd -T0 -3):`);
  printBackupTable(rows);
  printVerdict(rows, restores);
  log(`\nwritten ${file}`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exitCode = 1;
});
