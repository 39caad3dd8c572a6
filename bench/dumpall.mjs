// All databases (`all_databases: true`, pg_dumpall) against `pg_dumpall | zstd -T0 -3 > file`.
//
//   npm run build && node bench/dumpall.mjs                  # 3 databases of ~100 MB, 5 interleaved pairs
//   node bench/dumpall.mjs --runs 7 --keep                  # keep the perf_da_* databases for the next run
//   node bench/dumpall.mjs --other-dist path/to/old/dist    # a third case: an older build, for before/after
//
// The databases perf_da_1..3 are generated server-side (reused when they exist, dropped at the end unless --keep).
// Every other database on the server is excluded from both pg_dumpall runs with --exclude-database, so both dump
// the same databases plus the roles and tablespaces. Cases run in turn within each round, the order rotating from
// one round to the next; ratios are taken per round against the baseline of that round, then the median.

import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import pg from "pg";
import { dirBytes, measure } from "./lib/proc.mjs";
import { machineInfo, MB, median, round, table } from "./lib/report.mjs";

const WORK = fileURLToPath(new URL("./.work/dumpall/", import.meta.url));
const DIST = fileURLToPath(new URL("../dist/bin/dbkeep.js", import.meta.url));
const PG = { host: "127.0.0.1", port: 5432, user: "postgres" };
const DBS = ["perf_da_1", "perf_da_2", "perf_da_3"];
const ROWS = 450_000; // ~100 MB on disk per database, ~75 MB of SQL each

const { values } = parseArgs({
  options: { runs: { type: "string", default: "5" }, keep: { type: "boolean", default: false }, "other-dist": { type: "string" } },
});
const runs = Number.parseInt(values.runs, 10);
const log = (msg) => process.stdout.write(`${msg}\n`);

async function withClient(database, fn) {
  const c = new pg.Client({ ...PG, database });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const FILL = `
SET synchronous_commit = off;
CREATE TABLE events (id bigint PRIMARY KEY, customer_id int, occurred_at timestamptz, kind text, amount numeric(12,2), payload jsonb, note text);
INSERT INTO events SELECT g, ((g::bigint * 7919) % 100000)::int,
  timestamptz '2026-01-01' + g * interval '37 seconds' + random() * interval '1 s',
  (ARRAY['order','refund','login','logout','payment','shipping'])[1 + g % 6], round((random() * 1000)::numeric, 2),
  jsonb_build_object('ip', md5(g::text), 'agent', 'client/' || (g % 17), 'n', g % 1000),
  md5(random()::text) || ' ' || (ARRAY['the customer asked','invoice pending','delivery delayed','refund resolved','card declined'])[1 + (g * 13) % 5]
FROM generate_series(1, ${ROWS}) g;
CREATE INDEX ON events (customer_id);`;

/**
 * --exclude-database patterns that leave out every database whose name does not start with `prefix`: the server is
 * shared, and a database another process creates during the run must not be dumped by one case and not another.
 */
export function allBut(prefix) {
  const out = [];
  for (let i = 0; i < prefix.length; i++) out.push(`${prefix.slice(0, i)}[^${prefix[i]}]*`, prefix.slice(0, i + 1));
  return out;
}

async function ensureDatabases() {
  const existing = new Set(await withClient("postgres", async (c) => (await c.query("SELECT datname FROM pg_database")).rows.map((r) => r.datname)));
  for (const db of DBS) {
    const ready = existing.has(db) && (await withClient(db, async (c) => (await c.query("SELECT to_regclass('events') IS NOT NULL AS ok")).rows[0].ok));
    if (ready) continue;
    log(`generating ${db}`);
    await withClient("postgres", async (c) => {
      await c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
      await c.query(`CREATE DATABASE "${db}"`);
    });
    await withClient(db, async (c) => {
      await c.query(FILL);
      // Hint bits set now, so that the first dump does not pay for writing them.
      await c.query("VACUUM (FREEZE, ANALYZE)");
    });
  }
}

async function main() {
  if (!existsSync(DIST)) throw new Error("dist/ is missing: run npm run build first");
  await ensureDatabases();
  const others = allBut("perf_da_");
  await rm(WORK, { recursive: true, force: true });
  await mkdir(WORK, { recursive: true });
  const excludes = others.map((d) => `'--exclude-database=${d}'`);
  const cfg = join(WORK, "dbkeep.yaml");
  const out = join(WORK, "out");
  await writeFile(
    cfg,
    `datasources:
  cluster:
    engine: postgres
    host: ${PG.host}
    user: ${PG.user}
    all_databases: true
    exclude_databases: [${others.map((d) => JSON.stringify(d)).join(", ")}]
    compression: zstd
stores:
  local:
    type: local
    path: ${out}
jobs:
  all:
    datasource: cluster
    store: local
`,
  );
  const cases = [
    { id: "baseline", label: "pg_dumpall | zstd -T0 -3 > file", shell: `pg_dumpall -h ${PG.host} -U ${PG.user} --no-password ${excludes.join(" ")} | zstd -q -T0 -3 > ${out}/dump.sql.zst` },
    { id: "dbkeep", label: "dbkeep backup (this build)", argv: [process.execPath, DIST, "-c", cfg, "backup", "all"] },
    ...(values["other-dist"]
      ? [{ id: "other", label: `dbkeep backup (${values["other-dist"]})`, argv: [process.execPath, resolve(values["other-dist"], "bin/dbkeep.js"), "-c", cfg, "backup", "all"] }]
      : []),
  ];
  log(`${JSON.stringify(machineInfo())}\nonly perf_da_* dumped (and the roles); ${runs} rounds`);
  const results = Object.fromEntries(cases.map((c) => [c.id, []]));
  for (let r = 0; r < runs; r++) {
    const order = cases.map((_, i) => cases[(i + r) % cases.length]);
    for (const c of order) {
      await rm(out, { recursive: true, force: true });
      await mkdir(out, { recursive: true });
      const m = await measure(c.argv ? { argv: c.argv } : { shell: c.shell });
      const stored = await dirBytes(out);
      const node = m.processes.node;
      results[c.id].push({ seconds: m.seconds, nodeCpu: node?.cpuSeconds ?? 0, nodeRss: node?.peakRssBytes ?? 0, stored });
      log(`  round ${r + 1} ${c.id}: ${round(m.seconds)} s${node ? `, node ${round(node.cpuSeconds)} CPU-s, ${round(node.peakRssBytes / MB, 0)} MB` : ""}, stored ${round(stored / MB, 1)} MB`);
    }
  }
  const base = results.baseline;
  const rows = cases.map((c) => {
    const xs = results[c.id];
    return [c.label, round(median(xs.map((x) => x.seconds))), round(median(xs.map((x, i) => x.seconds / base[i].seconds))),
      c.id === "baseline" ? "" : round(median(xs.map((x) => x.nodeCpu))), c.id === "baseline" ? "" : round(median(xs.map((x) => x.nodeRss)) / MB, 0),
      round(median(xs.map((x) => x.stored)) / MB, 1)];
  });
  log(`\n${table(["case", "wall s (median)", "ratio (median of pairs)", "node CPU-s", "node peak MB", "stored MB"], rows)}`);
  if (!values.keep) {
    await withClient("postgres", async (c) => {
      for (const db of DBS) await c.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
    });
    log(`dropped ${DBS.join(", ")}`);
  }
  await rm(WORK, { recursive: true, force: true });
}

await main();
