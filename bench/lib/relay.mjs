// Diagnostic for bench/run.mjs: pg_dump | zstd -T0 -3 driven from a bare Node process, to separate the cost of
// moving the dump through Node from the rest of what dbkeep does (startup, catalog queries, manifest, fsync).
//
//   node bench/lib/relay.mjs through-node OUT   pg_dump -> Node -> zstd -> Node (SHA-256) -> OUT, like dbkeep
//   node bench/lib/relay.mjs direct OUT         pg_dump -> zstd directly (a pipe between the two children);
//                                               Node only sees the compressed bytes (SHA-256) -> OUT

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import process from "node:process";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BENCH_DB } from "./dataset.mjs";

const [mode, out] = process.argv.slice(2);
if (!["through-node", "direct"].includes(mode) || !out) {
  process.stderr.write("usage: node bench/lib/relay.mjs through-node|direct OUTFILE\n");
  process.exit(2);
}

function exited(child, name) {
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => (code === 0 ? resolve() : reject(new Error(`${name} exited with ${code}`))));
  });
}

function hashing() {
  const hash = createHash("sha256");
  return new Transform({
    transform(chunk, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
}

const dump = spawn("pg_dump", ["-h", "127.0.0.1", "-U", "postgres", BENCH_DB], { stdio: ["ignore", "pipe", "inherit"] });
const zstdStdin = mode === "direct" ? dump.stdout : "pipe";
const zstd = spawn("zstd", ["-q", "-c", "-3", "-T0"], { stdio: [zstdStdin, "pipe", "inherit"] });
// zstd has its own copy of the pipe now; ours would keep pg_dump's stdout (and its 'close') open forever.
if (mode === "direct") dump.stdout.destroy();
const work = [exited(dump, "pg_dump"), exited(zstd, "zstd"), pipeline(zstd.stdout, hashing(), createWriteStream(out))];
if (mode === "through-node") work.push(pipeline(dump.stdout, zstd.stdin));
await Promise.all(work);
