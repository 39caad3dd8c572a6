// Start-up of the commands that touch no database: `dbkeep --version`, `--help` and `list` of an empty store,
// against `node -e 0` in the same run (interleaved, medians). Usage: node bench/startup.mjs [--runs N]
// [--baseline-cli OLD/dist/bin/dbkeep.js] to run an older build beside this one.
import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const runs = Number(arg("--runs", "15"));
const cli = fileURLToPath(new URL("../dist/bin/dbkeep.js", import.meta.url));
const baselineCli = arg("--baseline-cli");
const empty = mkdtempSync(join(tmpdir(), "dbkeep-bench-empty-"));
const env = { PATH: process.env.PATH, HOME: process.env.HOME, DBKEEP_STATE_DIR: join(empty, "state") };

const cases = [["node -e 0", ["-e", "0"]]];
for (const [label, path] of [["dbkeep", cli], ...(baselineCli ? [["before", baselineCli]] : [])]) {
  cases.push([`${label} --version`, [path, "--version"]], [`${label} --help`, [path, "--help"]], [`${label} list EMPTY`, [path, "list", empty]]);
}
const times = new Map(cases.map(([l]) => [l, []]));
for (let r = 0; r < runs; r++) {
  for (const [label, args] of cases) {
    const t = process.hrtime.bigint();
    const p = spawnSync(process.execPath, args, { env, stdio: ["ignore", "ignore", "ignore"] });
    if (p.status !== 0 && !label.includes("list")) throw new Error(`${label} exited ${p.status}`);
    times.get(label).push(Number(process.hrtime.bigint() - t) / 1e6);
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const base = median(times.get("node -e 0"));
console.log(`| command | median ms | vs node -e 0 |\n|---|---|---|`);
for (const [label] of cases) console.log(`| \`${label}\` | ${median(times.get(label)).toFixed(0)} | ${(median(times.get(label)) / base).toFixed(2)}x |`);
