// Encryption overhead: the same stream through dbkeep's backup pipeline (compress -> [age encrypt] -> SHA-256 ->
// local store) with and without encryption, in one process, alternating the two so that drift hits both alike.
//
//   npm run build && node bench/encryption.mjs                 # 300 MB, gzip and zstd, 3 runs each
//   node bench/encryption.mjs --mb 500 --runs 5 --compression zstd
//
// The input is dump-like SQL text generated in memory (distinct rows, compresses about as a pg_dump does), so
// that neither a database nor a disk read is part of the figure: only what encryption adds to the pipeline.

import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import process from "node:process";
import { Readable } from "node:stream";
import { parseArgs } from "node:util";
import { streamToStore } from "../dist/core/pipeline.js";
import { createAgeEncryptStream, X25519Recipient } from "../dist/crypto/age.js";
import { generateIdentityFile } from "../dist/crypto/keys.js";
import { createLocalStore } from "../dist/stores/local/index.js";
import { machineInfo, MB, median, round, table } from "./lib/report.mjs";

const { values } = parseArgs({
  options: {
    mb: { type: "string", default: "300" },
    runs: { type: "string", default: "3" },
    compression: { type: "string", multiple: true },
  },
});
const total = Number(values.mb) * MB;
const runs = Number(values.runs);
const compressions = values.compression ?? ["gzip", "zstd"];

/** 32 distinct 1 MiB blocks of INSERT lines with random hex: repeats far apart, like a real table. */
const blocks = Array.from({ length: 32 }, (_, b) => {
  const lines = [];
  let n = 0;
  for (let i = 0; n < MB; i++) {
    const line = `INSERT INTO public.orders VALUES (${b * 100000 + i}, 'customer ${i % 977}', '${randomBytes(12).toString("hex")}', 2026-01-${String((i % 28) + 1).padStart(2, "0")}, ${(i * 7919) % 100000 / 100});\n`;
    lines.push(line);
    n += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, MB);
});

function source() {
  let sent = 0;
  let i = 0;
  return new Readable({
    read() {
      if (sent >= total) return this.push(null);
      this.push(blocks[i++ % blocks.length]);
      sent += MB;
    },
  });
}

const recipient = new X25519Recipient(generateIdentityFile().recipient);
const dir = await mkdtemp(join(tmpdir(), "dbkeep-bench-enc-"));
const store = createLocalStore({ path: dir }, "bench");
const signal = new AbortController().signal;

async function once(compression, encrypted, n) {
  const key = `run-${compression}-${encrypted ? "age" : "plain"}-${n}`;
  const t = performance.now();
  const r = await streamToStore({ source: source(), compression, store, key, signal, ...(encrypted ? { stages: [createAgeEncryptStream([recipient])] } : {}) });
  const seconds = (performance.now() - t) / 1000;
  await store.delete([key]);
  return { seconds, stored: r.storedBytes };
}

const rows = [];
const results = {};
try {
  for (const c of compressions) {
    await once(c, false, "warmup");
    const plain = [];
    const enc = [];
    const ratios = [];
    const stored = {};
    for (let n = 0; n < runs; n++) {
      const pair = {};
      for (const e of n % 2 ? [true, false] : [false, true]) {
        const r = await once(c, e, n);
        pair[e ? "age" : "plain"] = r.seconds;
        stored[e ? "age" : "plain"] = r.stored;
      }
      plain.push(pair.plain);
      enc.push(pair.age);
      // Each pair ran back to back, so its ratio is what load from elsewhere disturbs least.
      ratios.push(pair.age / pair.plain);
    }
    const p = median(plain);
    const a = median(enc);
    const ratio = median(ratios);
    results[c] = { plain_s: round(p, 3), encrypted_s: round(a, 3), ratio: round(ratio, 3), pair_ratios: ratios.map((x) => round(x, 3)), stored_plain: stored.plain, stored_age: stored.age };
    rows.push([c, round(p, 2), round(a, 2), round(total / MB / p, 0), round(total / MB / a, 0), round(ratio, 3), `${round((ratio - 1) * 100, 1)}%`]);
  }
} finally {
  await store.close();
  await rm(dir, { recursive: true, force: true });
}

process.stdout.write(`${values.mb} MB of dump-like text, ${runs} back-to-back pairs (medians), through compress -> [encrypt] -> SHA-256 -> local store\n\n`);
process.stdout.write(table(["compression", "plain s", "encrypted s", "plain MB/s", "encrypted MB/s", "ratio", "overhead"], rows) + "\n\n");
process.stdout.write(JSON.stringify({ machine: machineInfo(), node: process.version, results }, null, 2) + "\n");
