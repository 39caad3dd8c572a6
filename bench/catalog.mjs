// Listing a store of many backups: `dbkeep list`, `status` and `prune --dry-run` over 10,000 backups in one local
// store, against reading every manifest with `find | xargs cat`, in the same run, interleaved.
//
//   npm run build && node bench/catalog.mjs                  # 10,000 backups, 5 runs per case
//   node bench/catalog.mjs --count 2000 --runs 3 --out results-catalog.json
//   node bench/catalog.mjs --baseline-cli /path/to/old/dist/bin/dbkeep.js   # an older build beside this one
//
// Cases with the catalog run warm (a listing before the measured ones wrote it); the `cold` cases remove it first,
// which is the first listing on a machine, or the first after an upgrade of dbkeep.

import { writeFile, rm, mkdir, copyFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { measure } from "./lib/proc.mjs";
import { catalogConfig, makeCatalogStore } from "./lib/catalog-store.mjs";
import { codeInfo, machineInfo, MB, median, round, table } from "./lib/report.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const WORK = join(ROOT, "bench", ".work", "catalog");
const CLI = join(ROOT, "dist", "bin", "dbkeep.js");
const TARGET_SECONDS = 1;
const TARGET_RSS_MB = 100;

const { values: opt } = parseArgs({
  options: {
    count: { type: "string", default: "10000" },
    runs: { type: "string", default: "5" },
    out: { type: "string" },
    "baseline-cli": { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (opt.help) {
  console.log("usage: node bench/catalog.mjs [--count N] [--runs N] [--out FILE] [--baseline-cli OLD_DIST_BIN]");
  process.exit(0);
}
const count = Number(opt.count);
const runs = Number(opt.runs);
const store = join(WORK, "store");
const state = join(WORK, "state");
const cfg = join(WORK, "dbkeep.yaml");

await mkdir(WORK, { recursive: true });
console.log(`writing ${count} backups to ${store} ...`);
await makeCatalogStore(store, count);
await copyFile(join(ROOT, "examples", "app.db"), join(WORK, "app.db"));
await writeFile(cfg, catalogConfig(store, join(WORK, "app.db")));

const dbkeep = (cli, ...args) => [process.execPath, cli, "-c", cfg, ...args];
const cases = [
  { id: "find_cat", label: "find | xargs cat (baseline)", shell: `find ${store} -name '*.manifest.json' -print0 | xargs -0 cat > /dev/null` },
  { id: "list", label: "dbkeep list", argv: dbkeep(CLI, "list", "app-backup") },
  { id: "status", label: "dbkeep status", argv: dbkeep(CLI, "status", "app-backup") },
  { id: "prune_dry", label: "dbkeep prune --dry-run", argv: dbkeep(CLI, "prune", "app-backup", "--dry-run") },
  { id: "list_cold", label: "dbkeep list, no catalog yet", argv: dbkeep(CLI, "list", "app-backup"), cold: true, diagnostic: true },
  { id: "list_json", label: "dbkeep list --json", argv: dbkeep(CLI, "list", "app-backup", "--json"), diagnostic: true },
  ...(opt["baseline-cli"]
    ? [
        { id: "old_list", label: "older build: list", argv: dbkeep(opt["baseline-cli"], "list", "app-backup"), diagnostic: true },
        { id: "old_prune_dry", label: "older build: prune --dry-run", argv: dbkeep(opt["baseline-cli"], "prune", "app-backup", "--dry-run"), diagnostic: true },
      ]
    : []),
];

async function runCase(c) {
  if (c.cold) await rm(join(state, "catalog"), { recursive: true, force: true });
  const saved = process.env.DBKEEP_STATE_DIR;
  process.env.DBKEEP_STATE_DIR = state;
  try {
    const r = await measure(c.shell ? { shell: c.shell } : { argv: c.argv });
    const node = r.processes.node;
    const peak = Math.max(0, ...Object.values(r.processes).map((p) => p.peakRssBytes));
    return { seconds: r.seconds, peakRssBytes: node?.peakRssBytes ?? peak, cpuSeconds: Object.values(r.processes).reduce((s, p) => s + p.cpuSeconds, 0) };
  } finally {
    process.env.DBKEEP_STATE_DIR = saved;
  }
}

// One listing to write the catalog (and warm the page cache), then interleaved runs.
await runCase(cases[1]);
const results = Object.fromEntries(cases.map((c) => [c.id, []]));
for (let i = 0; i < runs; i++) {
  for (const c of cases) {
    results[c.id].push(await runCase(c));
  }
  // The cold case removed the catalog; the next warm runs must find it again.
  await runCase(cases[1]);
  process.stderr.write(`run ${i + 1}/${runs} done\n`);
}

const base = results.find_cat.map((r) => r.seconds);
const rows = cases.map((c) => {
  const s = results[c.id].map((r) => r.seconds);
  const paired = s.map((x, i) => x / base[i]);
  const rss = Math.max(...results[c.id].map((r) => r.peakRssBytes)) / MB;
  return [c.label, round(median(s)), round(median(s) / median(base)), round(median(paired)), round(rss, 1), round(median(results[c.id].map((r) => r.cpuSeconds)))];
});
console.log(`\n${count} backups, ${runs} runs per case (medians; ratio against the baseline of the same run)\n`);
console.log(table(["case", "seconds", "ratio", "paired", "peak RSS MB", "CPU s"], rows));
const verdict = cases
  .filter((c) => !c.diagnostic && c.argv)
  .map((c) => {
    const s = median(results[c.id].map((r) => r.seconds));
    const rss = Math.max(...results[c.id].map((r) => r.peakRssBytes)) / MB;
    return `${c.label}: ${s <= TARGET_SECONDS ? "met" : "NOT met"} (< ${TARGET_SECONDS} s), ${rss < TARGET_RSS_MB ? "met" : "NOT met"} (< ${TARGET_RSS_MB} MB)`;
  });
console.log("\n" + verdict.join("\n"));
const out = opt.out ?? join(WORK, `results-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
await writeFile(out, JSON.stringify({ count, runs, machine: machineInfo(), code: codeInfo(CLI), cases: cases.map((c) => ({ ...c, results: results[c.id] })) }, null, 2));
console.log(`\nraw results: ${out}`);
