// What exact row counts cost a PostgreSQL backup: dbkeep zstd with row_counts: exact (count(*) of every table in
// the dump's exported snapshot, concurrently with pg_dump) against row_counts: estimate (statistics only), run
// interleaved on the same ~1 GB database. The figures are in docs/verify.md.
//
//   node bench/row-counts.mjs                 # 3 runs per case
//   node bench/row-counts.mjs --runs 5
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { BENCH_DB, ensureBenchDatabase } from "./lib/dataset.mjs";
import { measure } from "./lib/proc.mjs";
import { machineInfo, median, round, table } from "./lib/report.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(ROOT, "dist", "bin", "dbkeep.js");
const { values } = parseArgs({ options: { runs: { type: "string", default: "3" }, "size-gb": { type: "string", default: "1" } } });
const runs = Number.parseInt(values.runs, 10);
const log = (m) => process.stderr.write(m + "\n");

const size = await ensureBenchDatabase({ sizeGb: Number(values["size-gb"]), rebuild: false, log });
const times = { exact: [], estimate: [] };
for (let i = 0; i < runs; i++) {
  for (const mode of i % 2 ? ["estimate", "exact"] : ["exact", "estimate"]) {
    const dir = await mkdtemp(join(ROOT, "bench", `.rowcounts-${mode}-`));
    try {
      const url = `postgres://postgres@127.0.0.1:5432/${BENCH_DB}?compression=zstd&row_counts=${mode}`;
      const r = await measure({ argv: [process.execPath, CLI, "backup", url, "--to", dir, "--quiet"] });
      times[mode].push(r.seconds);
      log(`run ${i + 1} ${mode}: ${round(r.seconds)} s`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
const ex = median(times.exact);
const es = median(times.estimate);
process.stdout.write(`database ${BENCH_DB}: ${round(size / 1e9)} GB on disk; ${runs} runs per case; ${JSON.stringify(machineInfo())}\n`);
process.stdout.write(table(["row_counts", "median s", "runs"], [["estimate", String(round(es)), times.estimate.map((t) => round(t)).join(" ")], ["exact", String(round(ex)), times.exact.map((t) => round(t)).join(" ")]]) + "\n");
process.stdout.write(`exact / estimate: ${round(ex / es, 3)}\n`);
