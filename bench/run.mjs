// The backup benchmark: dbkeep against plain pg_dump pipelines on the same database, in the same run.
//
//   npm run bench                                 # ~1 GB database, 3 runs per case
//   node bench/run.mjs --size-gb 3 --runs 1       # ~3 GB, to check that memory stays flat
//   node bench/run.mjs --rebuild --skip-restore   # regenerate the data; backups only
//   node bench/run.mjs --runs 9 --cases dbkeep_zstd --skip-restore --out results-zstd.json
//                                                 # more runs of one case (the baseline always runs)
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
import { codeInfo, machineInfo, MB, median, round, table } from "./lib/report.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const WORK = join(ROOT, "bench", ".work");
const CLI = join(ROOT, "dist", "bin", "dbkeep.js");
const RELAY = join(ROOT, "bench", "lib", "relay.mjs");
const BIG_BUFFERS = join(ROOT, "bench", "lib", "big-buffers.mjs");
const PG = "-h 127.0.0.1 -U postgres";
const SOURCE_URL = `postgres://postgres@127.0.0.1:5432/${BENCH_DB}`;
const RESTORE_DB = `${BENCH_DB}_restore`;
const RESTORE_BASELINE_DB = `${BENCH_DB}_restore2`;
const EMPTY_DB = `${BENCH_DB}_empty`;
const BASELINE = "pg_dump_zstd";

// The targets from the project's issue.
const TARGET_RATIO = 1.1;
const TARGET_RSS_MB = 150;

// `compressor` names the process whose memory and CPU are reported next to the case; diagnostics are excluded from
// the verdict on the targets.
const CASES = [
  { id: "pg_dump_custom", label: "pg_dump -Fc", shell: (dir) => `pg_dump ${PG} -Fc ${BENCH_DB} > ${dir}/dump.pgc` },
  { id: BASELINE, label: "pg_dump | zstd -T0 -3", compressor: "zstd", shell: (dir) => `pg_dump ${PG} ${BENCH_DB} | zstd -T0 -3 > ${dir}/dump.sql.zst` },
  { id: "dbkeep_zstd", label: "dbkeep zstd", compressor: "zstd", argv: (dir) => dbkeepArgv("zstd", dir) },
  { id: "dbkeep_gzip", label: "dbkeep gzip", argv: (dir) => dbkeepArgv("gzip", dir) },
  { id: "dbkeep_lz4", label: "dbkeep lz4", compressor: "lz4", argv: (dir) => dbkeepArgv("lz4", dir) },
  // The same pipeline as dbkeep zstd without dbkeep, with and without the raw dump passing through Node.
  { id: "relay_node", label: "node relay (diag.)", compressor: "zstd", diagnostic: true,
    argv: (dir) => [process.execPath, RELAY, "through-node", join(dir, "dump.sql.zst")] },
  { id: "relay_direct", label: "node direct pipe (diag.)", compressor: "zstd", diagnostic: true,
    argv: (dir) => [process.execPath, RELAY, "direct", join(dir, "dump.sql.zst")] },
  // The baseline with the 1 MiB pipe buffer dbkeep gives its own dump pipe (src/core/os-pipe.ts): how much of the
  // difference to dbkeep is the pipe.
  { id: "pipe_1mib", label: "... with a 1 MiB pipe (diag.)", compressor: "zstd", diagnostic: true,
    shell: (dir) => `pg_dump ${PG} ${BENCH_DB} | { perl -e 'fcntl(STDIN, 1031, 1048576) or die "F_SETPIPE_SZ: $!"'; exec zstd -T0 -3; } > ${dir}/dump.sql.zst` },
  // The baseline made durable as dbkeep's file is (fdatasync before it counts as done): how much of the difference to
  // dbkeep is writing the data to disk, which the baseline leaves to the kernel after it exits.
  { id: "durable", label: "... then sync -d (diag.)", compressor: "zstd", diagnostic: true,
    shell: (dir) => `pg_dump ${PG} ${BENCH_DB} | zstd -T0 -3 > ${dir}/dump.sql.zst && sync -d ${dir}/dump.sql.zst` },
  // Only with --cases: dbkeep zstd with 1 MiB instead of 16 KiB stream buffers, to test where its time goes.
  { id: "dbkeep_zstd_1mib", label: "dbkeep zstd 1 MiB bufs (diag.)", compressor: "zstd", diagnostic: true, optional: true,
    argv: (dir) => [process.execPath, "--import", BIG_BUFFERS, ...dbkeepArgv("zstd", dir).slice(1)] },
];
// The last run's outputs of these two are kept for the restore comparison.
const RESTORED = new Set(["dbkeep_zstd", BASELINE]);

function options() {
  const { values } = parseArgs({
    options: {
      "size-gb": { type: "string", default: "1" },
      runs: { type: "string", default: "3" },
      rebuild: { type: "boolean", default: false },
      "skip-restore": { type: "boolean", default: false },
      cases: { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`usage: npm run bench -- [options]   (or: node bench/run.mjs [options])

Backs up a PostgreSQL database of about --size-gb GB (built on first use as dbkeep_bench) with
pg_dump -Fc, pg_dump | zstd -T0 -3 and dbkeep (zstd, gzip, lz4), interleaved, and reports wall-time
ratios to the pg_dump | zstd baseline and peak memory. See docs/benchmarks.md.

  --size-gb N       database size (default 1)
  --runs N          runs of each case (default 3); medians are reported
  --rebuild         rebuild the database even if it exists
  --skip-restore    do not restore and compare the last outputs
  --cases a,b       only these cases (always with the baseline), e.g. --cases dbkeep_zstd
  --out FILE        where to write the JSON results (default bench/.work/results-<size>gb.json)
`);
    process.exit(0);
  }
  const sizeGb = Number(values["size-gb"]);
  const runs = Number.parseInt(values.runs, 10);
  if (!(sizeGb > 0) || !(runs > 0)) throw new Error("--size-gb and --runs must be positive numbers");
  const wanted = values.cases?.split(",").map((x) => x.trim()) ?? CASES.filter((c) => !c.optional).map((c) => c.id);
  const unknown = wanted.filter((id) => !CASES.some((c) => c.id === id));
  if (unknown.length) throw new Error(`unknown case(s) ${unknown.join(", ")}; cases: ${CASES.map((c) => c.id).join(", ")}`);
  const cases = CASES.filter((c) => c.id === BASELINE || wanted.includes(c.id));
  const skipRestore = values["skip-restore"] || !cases.some((c) => c.id === "dbkeep_zstd");
  return { sizeGb, runs, rebuild: values.rebuild, skipRestore, cases, out: values.out };
}

function log(msg) {
  process.stdout.write(`${msg}\n`);
}

function dbkeepArgv(compression, dir, source = SOURCE_URL) {
  return [process.execPath, CLI, "backup", source, "--to", dir, "--compression", compression, "--log-format", "json", "-q"];
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
  const how = c.argv ? { argv: c.argv(dir) } : { shell: c.shell(dir) };
  const m = await measure({ ...how, wrapTime: true, timeFile });
  const outputBytes = await dirBytes(dir);
  if (!keep) await rm(dir, { recursive: true, force: true });
  return { ...m, outputBytes, dir };
}

/**
 * Runs every case `runs` times, reversing the order on every other run so no case always goes first. The baseline
 * and dbkeep zstd are neighbours in either order, which is what makes their per-run ratio meaningful.
 */
async function runBackups(cases, runs) {
  const results = Object.fromEntries(cases.map((c) => [c.id, []]));
  const kept = {};
  for (let r = 0; r < runs; r++) {
    const order = r % 2 === 0 ? cases : [...cases].reverse();
    for (const c of order) {
      const keep = r === runs - 1 && RESTORED.has(c.id);
      const load1 = loadavg()[0];
      const res = await runCase(c, { keep });
      if (keep) kept[c.id] = res.dir;
      results[c.id].push({ ...res, load1 });
      log(`  run ${r + 1}/${runs}  ${c.label.padEnd(30)} ${res.seconds.toFixed(1).padStart(7)} s  ${(res.outputBytes / MB).toFixed(0)} MB`);
    }
  }
  return { results, kept };
}

/** dbkeep's cost that does not depend on the data: a zstd backup of an empty database, median of 3. */
async function fixedCost() {
  await dropDatabase(EMPTY_DB);
  await createDatabase(EMPTY_DB);
  const seconds = [];
  let rss = 0;
  try {
    for (let i = 0; i < 3; i++) {
      const dir = await mkdtemp(join(WORK, "empty-"));
      const m = await measure({ argv: dbkeepArgv("zstd", dir, `postgres://postgres@127.0.0.1:5432/${EMPTY_DB}`) });
      seconds.push(m.seconds);
      rss = Math.max(rss, m.processes.node?.peakRssBytes ?? 0);
      await rm(dir, { recursive: true, force: true });
    }
  } finally {
    await dropDatabase(EMPTY_DB);
  }
  return { median_seconds: round(median(seconds), 2), node_peak_rss_mb: round(rss / MB, 1) };
}

function summarize(cases, results) {
  const base = results[BASELINE].map((r) => r.seconds);
  const baseMedian = median(base);
  return cases.map((c) => {
    const rs = results[c.id];
    const med = median(rs.map((r) => r.seconds));
    // Each run's time over the baseline's time in the same run: less sensitive to a slow spell than medians.
    const paired = median(rs.map((r, i) => r.seconds / base[i]));
    const peak = (name) => Math.max(0, ...rs.map((r) => r.processes[name]?.peakRssBytes ?? 0)) / MB || null;
    const cpu = (name) => median(rs.map((r) => r.processes[name]?.cpuSeconds ?? 0)) || null;
    return {
      id: c.id,
      label: c.label,
      diagnostic: Boolean(c.diagnostic),
      runs_seconds: rs.map((r) => round(r.seconds, 2)),
      median_seconds: round(med, 2),
      ratio_vs_baseline: round(med / baseMedian, 3),
      paired_ratio_median: round(paired, 3),
      load1_at_start: rs.map((r) => round(r.load1, 2)),
      output_bytes: rs.at(-1).outputBytes,
      // dbkeep's own node process: the figure the memory target is about.
      node_peak_rss_mb: round(peak("node"), 1),
      pg_dump_peak_rss_mb: round(peak("pg_dump"), 1),
      compressor_peak_rss_mb: c.compressor ? round(peak(c.compressor), 1) : null,
      gnu_time_max_rss_mb: HAVE_GNU_TIME ? round(Math.max(...rs.map((r) => r.gnuTimeMaxRssBytes ?? 0)) / MB, 1) : null,
      cpu_seconds_median: { node: round(cpu("node"), 1), pg_dump: round(cpu("pg_dump"), 1), ...(c.compressor ? { [c.compressor]: round(cpu(c.compressor), 1) } : {}) },
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
    ["case", "median s", "runs s", "vs pg_dump|zstd", "paired", "output MB", "node RSS MB", "pg_dump RSS MB", "compressor RSS MB", "CPU s node/pg_dump/comp"],
    rows.map((r) => {
      const cpu = [r.cpu_seconds_median.node, r.cpu_seconds_median.pg_dump, Object.values(r.cpu_seconds_median)[2]];
      return [r.label, r.median_seconds.toFixed(2), r.runs_seconds.join(" "), `${r.ratio_vs_baseline.toFixed(2)}x`, `${r.paired_ratio_median.toFixed(2)}x`, (r.output_bytes / MB).toFixed(0),
        r.node_peak_rss_mb, r.pg_dump_peak_rss_mb, r.compressor_peak_rss_mb, cpu.map((x) => x ?? "-").join(" / ")];
    }),
  ));
}

function printVerdict(rows, restores) {
  const z = rows.find((r) => r.id === "dbkeep_zstd");
  if (z) {
    const ok = z.ratio_vs_baseline <= TARGET_RATIO;
    log(`\ntarget: dbkeep zstd <= ${TARGET_RATIO}x pg_dump|zstd wall time: ${z.ratio_vs_baseline.toFixed(2)}x (paired ${z.paired_ratio_median.toFixed(2)}x) -> ${ok ? "met" : "MISSED"}`);
  }
  const dbkeep = rows.filter((r) => r.id.startsWith("dbkeep_") && !r.diagnostic);
  if (dbkeep.length) {
    const rss = Math.max(...dbkeep.map((r) => r.node_peak_rss_mb ?? Infinity));
    log(`target: dbkeep node peak RSS < ${TARGET_RSS_MB} MB: ${rss} MB (highest of the dbkeep cases) -> ${rss < TARGET_RSS_MB ? "met" : "MISSED"}`);
  }
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
  const { results, kept } = await runBackups(opts.cases, opts.runs);
  const rows = summarize(opts.cases, results);
  const fixed = await fixedCost();
  log(`  dbkeep zstd backup of an empty database: ${fixed.median_seconds} s, node peak RSS ${fixed.node_peak_rss_mb} MB`);
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
    dbkeep: codeInfo(CLI),
    loadavg_at_end: loadavg().map((x) => round(x, 2)),
    backups: rows,
    dbkeep_empty_database: fixed,
    restores,
    total_seconds: round((performance.now() - started) / 1000, 0),
  };
  const file = opts.out ? join(WORK, opts.out) : join(WORK, `results-${sizeLabel}.json`);
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
