// Compressor micro-benchmark: how fast can a Node process push a dump through each compressor?
//
//   node bench/compressors.mjs                 # ~300 MB sample cut from a pg_dump of dbkeep_bench
//   node bench/compressors.mjs some-dump.sql   # any file
//   node bench/compressors.mjs --runs 5 --mb 500
//
// Each case streams the file from Node through the compressor into a SHA-256 hash (as dbkeep's pipeline does)
// and discards the output. This is what decided how dbkeep compresses: node:zlib in-process for gzip, the
// zstd and lz4 command-line tools as child processes (Node 20 has no zstd).

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, statSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { PassThrough, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import zlib from "node:zlib";
import { BENCH_DB } from "./lib/dataset.mjs";
import { startSampler } from "./lib/proc.mjs";
import { machineInfo, MB, median, round, table } from "./lib/report.mjs";

const WORK = fileURLToPath(new URL("./.work/", import.meta.url));

const CASES = [
  { id: "none", label: "no compression (read + SHA-256)", make: () => inProcess(new PassThrough()) },
  { id: "zlib_gzip6", label: "node:zlib gzip -6 (in-process)", make: () => inProcess(zlib.createGzip({ level: 6 })) },
  { id: "gzip6", label: "gzip -6 (child process)", make: () => child("gzip", ["-6", "-c"]) },
  { id: "zstd3", label: "zstd -3 (child process)", make: () => child("zstd", ["-q", "-c", "-3"]) },
  { id: "zstd3_t0", label: "zstd -3 -T0 (child process)", make: () => child("zstd", ["-q", "-c", "-3", "-T0"]) },
  { id: "lz4_1", label: "lz4 -1 (child process)", make: () => child("lz4", ["-q", "-c", "-1"]) },
];

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { runs: { type: "string", default: "3" }, mb: { type: "string", default: "300" } },
  });
  return { file: positionals[0], runs: Number.parseInt(values.runs, 10), mb: Number(values.mb) };
}

function log(msg) {
  process.stdout.write(`${msg}\n`);
}

/** Hashes and counts what it is given, like dbkeep's HashStage in front of the store. */
function hashSink() {
  const hash = createHash("sha256");
  const sink = new Writable({
    write(chunk, _enc, cb) {
      hash.update(chunk);
      sink.bytes += chunk.length;
      cb();
    },
  });
  sink.bytes = 0;
  return sink;
}

function inProcess(transform) {
  return {
    async run(file) {
      const sink = hashSink();
      await pipeline(createReadStream(file), transform, sink);
      return { outBytes: sink.bytes };
    },
  };
}

function child(tool, args) {
  return {
    async run(file) {
      const proc = spawn(tool, args, { stdio: ["pipe", "pipe", "inherit"] });
      const sampler = startSampler(proc.pid);
      const sink = hashSink();
      const exited = new Promise((resolve, reject) => {
        proc.once("error", reject);
        proc.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`${tool} exited with ${code}`))));
      });
      await Promise.all([pipeline(createReadStream(file), proc.stdin), pipeline(proc.stdout, sink), exited]);
      const cpu = sampler.stop().reduce((s, p) => s + p.cpu, 0);
      return { outBytes: sink.bytes, childCpu: cpu };
    },
  };
}

/**
 * A sample of about `mb` MB of a full pg_dump of the bench database: 1 MiB blocks spread evenly over the whole
 * dump, so every table is represented in its share (a plain prefix would be mostly the first tables in name
 * order) while each block keeps the local redundancy a compressor's window sees.
 */
async function makeSample(mb) {
  const target = join(WORK, `sample-${mb}mb.sql`);
  if (existsSync(target)) return target;
  const full = join(WORK, "sample-full.sql.tmp");
  log(`dumping ${BENCH_DB} to cut a ${mb} MB sample (run npm run bench first if the database does not exist)`);
  const dump = spawn("pg_dump", ["-h", "127.0.0.1", "-U", "postgres", BENCH_DB], { stdio: ["ignore", "pipe", "inherit"] });
  const dumped = new Promise((resolve, reject) => dump.once("close", (c) => (c === 0 ? resolve() : reject(new Error(`pg_dump exited with ${c}`)))));
  await Promise.all([pipeline(dump.stdout, createWriteStream(full)), dumped]);
  const fraction = Math.min(1, (mb * MB) / statSync(full).size);
  await pipeline(createReadStream(full, { highWaterMark: MB }), blockSampler(fraction), createWriteStream(`${target}.tmp`));
  await rename(`${target}.tmp`, target);
  await rm(full, { force: true });
  return target;
}

function blockSampler(fraction) {
  let block = 0;
  return new Transform({
    transform(chunk, _enc, cb) {
      const keep = Math.floor((block + 1) * fraction) > Math.floor(block * fraction);
      block++;
      cb(null, keep ? chunk : undefined);
    },
  });
}

async function timeCase(c, file) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await c.make().run(file);
  const seconds = (performance.now() - t0) / 1000;
  const { user, system } = process.cpuUsage(cpu0);
  return { seconds, outBytes: r.outBytes, nodeCpu: (user + system) / 1e6, childCpu: r.childCpu };
}

async function main() {
  const opts = options();
  await mkdir(WORK, { recursive: true });
  const file = opts.file ?? (await makeSample(opts.mb));
  const bytes = statSync(file).size;
  log(`input: ${file}, ${(bytes / MB).toFixed(0)} MB; ${opts.runs} runs per case, order reversed on every other run`);
  await timeCase(CASES[0], file); // warms the page cache so the first case does not pay for the disk

  const runs = Object.fromEntries(CASES.map((c) => [c.id, []]));
  for (let r = 0; r < opts.runs; r++) {
    for (const c of r % 2 === 0 ? CASES : [...CASES].reverse()) {
      const res = await timeCase(c, file);
      runs[c.id].push(res);
      log(`  run ${r + 1}  ${c.label.padEnd(34)} ${(bytes / MB / res.seconds).toFixed(0).padStart(5)} MB/s`);
    }
  }

  const rows = CASES.map((c) => {
    const rs = runs[c.id];
    const sec = median(rs.map((x) => x.seconds));
    return {
      id: c.id,
      label: c.label,
      median_seconds: round(sec, 2),
      mb_per_s: round(bytes / MB / sec, 0),
      runs_mb_per_s: rs.map((x) => round(bytes / MB / x.seconds, 0)),
      ratio: round(bytes / rs[0].outBytes, 2),
      node_cpu_seconds: round(median(rs.map((x) => x.nodeCpu)), 1),
      child_cpu_seconds: rs[0].childCpu === undefined ? null : round(median(rs.map((x) => x.childCpu)), 1),
    };
  });
  const doc = { date: new Date().toISOString(), input: file, input_bytes: bytes, runs: opts.runs, machine: machineInfo(), cases: rows };
  const out = join(WORK, "results-compressors.json");
  await writeFile(out, JSON.stringify(doc, null, 2) + "\n");

  log(`\nmedian of ${opts.runs} (MB/s of uncompressed input; CPU seconds per run):`);
  log(table(["case", "MB/s", "runs MB/s", "ratio", "node CPU s", "child CPU s"],
    rows.map((r) => [r.label, r.mb_per_s, r.runs_mb_per_s.join(" "), `${r.ratio}x`, r.node_cpu_seconds, r.child_cpu_seconds])));
  const zl = rows.find((r) => r.id === "zlib_gzip6");
  const gz = rows.find((r) => r.id === "gzip6");
  log(`\nnode:zlib gzip vs gzip CLI: ${(zl.mb_per_s / gz.mb_per_s).toFixed(2)}x the throughput`);
  log(`written ${out}`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exitCode = 1;
});
