// SQLite snapshot micro-benchmark: the online backup API (what dbkeep uses) against VACUUM INTO.
//
//   node bench/sqlite-snapshot.mjs              # ~200 MB database in bench/.work, 3 runs each
//   node bench/sqlite-snapshot.mjs --mb 500 --runs 5 --rebuild
//
// Both make a consistent copy of a live database. The backup API copies pages as they are, a batch of pages per
// turn of the event loop; VACUUM INTO rebuilds the database into a new file in one blocking statement.

import { createHash } from "node:crypto";
import { existsSync, rmSync, statSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { clearInterval, setInterval } from "node:timers";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import { vocabulary } from "./lib/dataset.mjs";
import { machineInfo, MB, median, round, table } from "./lib/report.mjs";

const WORK = fileURLToPath(new URL("./.work/", import.meta.url));
const SOURCE = join(WORK, "snapshot-source.db");
const DEST = join(WORK, "snapshot-copy.db");

function options() {
  const { values } = parseArgs({
    options: {
      mb: { type: "string", default: "200" },
      runs: { type: "string", default: "3" },
      rebuild: { type: "boolean", default: false },
    },
  });
  return { mb: Number(values.mb), runs: Number.parseInt(values.runs, 10), rebuild: values.rebuild };
}

function log(msg) {
  process.stdout.write(`${msg}\n`);
}

/** A deterministic PRNG, so the source database is the same on every run. */
function prng(seed) {
  let s = seed >>> 0;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/** An application-like database (WAL mode, as most applications run SQLite) of about `mb` MB. */
function buildSource(mb) {
  for (const f of [SOURCE, `${SOURCE}-wal`, `${SOURCE}-shm`]) rmSync(f, { force: true });
  const db = new Database(SOURCE);
  db.pragma("journal_mode = WAL");
  db.exec(`
    CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total_cents INTEGER NOT NULL,
                         status TEXT NOT NULL, note TEXT, created_at TEXT NOT NULL);
    CREATE TABLE events (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
                         digest BLOB NOT NULL, at TEXT NOT NULL);
    CREATE INDEX orders_customer ON orders(customer_id);
    CREATE INDEX events_customer ON events(customer_id, at);`);
  const words = vocabulary();
  const rnd = prng(42);
  const word = () => words[Math.floor(words.length * rnd() ** 3)];
  const text = (n) => Array.from({ length: n }, word).join(" ");
  const iso = (i) => new Date(Date.UTC(2020, 0, 1) + i * 7000 + Math.floor(rnd() * 6e5)).toISOString();
  const insC = db.prepare("INSERT INTO customers VALUES (?, ?, ?, ?)");
  const insO = db.prepare("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)");
  const insE = db.prepare("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)");
  const statuses = ["paid", "shipped", "delivered", "cancelled", "refunded"];
  const kinds = ["page_view", "click", "search", "login", "checkout", "api_call"];
  const batch = db.transaction((start, n) => {
    for (let i = start; i < start + n; i++) {
      const c = 1 + Math.floor(rnd() * (i + 1));
      if (i % 10 === 0) insC.run(i / 10, `${word()}.${word()}${i % 997}@example.com`, `${word()} ${word()}`, iso(i));
      insO.run(i, c, Math.floor(rnd() * 90000), statuses[Math.floor(rnd() * 5)], rnd() < 0.4 ? text(5 + Math.floor(rnd() * 30)) : null, iso(i));
      const payload = JSON.stringify({ path: `/${word()}/${Math.floor(rnd() * 1e5)}`, ms: Math.floor(rnd() * 3000), tags: [word(), word()] });
      insE.run(i, c, kinds[Math.floor(rnd() * kinds.length)], payload, createHash("sha256").update(String(i)).digest(), iso(i));
    }
  });
  // The page count, not the file sizes: until the final checkpoint part of the data sits in the WAL file.
  const bytes = () => db.pragma("page_count", { simple: true }) * db.pragma("page_size", { simple: true });
  for (let i = 0; bytes() < mb * MB; i += 50_000) batch(i, 50_000);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
}

/** dbkeep's way: a read-only connection and the online backup API. */
async function viaBackupApi() {
  const src = new Database(SOURCE, { readonly: true, fileMustExist: true });
  try {
    await src.backup(DEST);
  } finally {
    src.close();
  }
}

function viaVacuumInto() {
  const src = new Database(SOURCE, { readonly: true, fileMustExist: true });
  try {
    src.prepare("VACUUM INTO ?").run(DEST);
  } finally {
    src.close();
  }
}

const CASES = [
  { id: "backup_api", label: "db.backup(dest) (online backup API)", run: viaBackupApi },
  { id: "vacuum_into", label: "VACUUM INTO dest", run: viaVacuumInto },
];

/** Wall time, and the longest time the event loop was blocked (a stuck event loop stalls progress and signals). */
async function timeCase(c) {
  await rm(DEST, { force: true });
  let maxGap = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
  }, 10);
  const t0 = performance.now();
  await c.run();
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(ticker);
  maxGap = Math.max(maxGap, performance.now() - last);
  const bytes = statSync(DEST).size;
  await rm(DEST, { force: true });
  return { seconds, bytes, maxEventLoopBlockMs: maxGap };
}

async function main() {
  const opts = options();
  await mkdir(WORK, { recursive: true });
  if (opts.rebuild || !existsSync(SOURCE) || Math.abs(statSync(SOURCE).size - opts.mb * MB) > 0.1 * opts.mb * MB) {
    log(`building ${SOURCE} (~${opts.mb} MB)`);
    buildSource(opts.mb);
  }
  const srcBytes = statSync(SOURCE).size;
  log(`source: ${(srcBytes / MB).toFixed(0)} MB; ${opts.runs} runs each, alternating`);
  await timeCase(CASES[0]); // warm-up: brings the source into the page cache

  const runs = Object.fromEntries(CASES.map((c) => [c.id, []]));
  for (let r = 0; r < opts.runs; r++) {
    for (const c of r % 2 === 0 ? CASES : [...CASES].reverse()) {
      const res = await timeCase(c);
      runs[c.id].push(res);
      log(`  run ${r + 1}  ${c.label.padEnd(36)} ${res.seconds.toFixed(2).padStart(6)} s`);
    }
  }
  const rows = CASES.map((c) => ({
    id: c.id,
    label: c.label,
    median_seconds: round(median(runs[c.id].map((x) => x.seconds)), 3),
    runs_seconds: runs[c.id].map((x) => round(x.seconds, 3)),
    output_mb: round(runs[c.id][0].bytes / MB, 1),
    max_event_loop_block_ms: round(Math.max(...runs[c.id].map((x) => x.maxEventLoopBlockMs)), 0),
  }));
  const out = join(WORK, "results-sqlite-snapshot.json");
  await writeFile(out, JSON.stringify({ date: new Date().toISOString(), source_bytes: srcBytes, runs: opts.runs, machine: machineInfo(), cases: rows }, null, 2) + "\n");

  log(`\nmedian of ${opts.runs}:`);
  log(table(["method", "median s", "runs s", "output MB", "longest event-loop block ms"],
    rows.map((r) => [r.label, r.median_seconds, r.runs_seconds.join(" "), r.output_mb, r.max_event_loop_block_ms])));
  const [api, vac] = rows;
  const faster = api.median_seconds <= vac.median_seconds ? api : vac;
  const slower = faster === api ? vac : api;
  log(`\nfaster: ${faster.label}, ${(slower.median_seconds / faster.median_seconds).toFixed(2)}x`);
  log(`written ${out}`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exitCode = 1;
});
