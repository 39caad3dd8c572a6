// Bundles the compiled CLI (dist/cli/entry.js, which loads dist/cli/main.js, from tsc) into dist/bin/dbkeep.js, the program users run.
//
// Why: Node 20 loads an ES module graph file by file (resolve, stat, read, compile each), and dbkeep's CLI with
// zod, pino, commander and pg is about 280 files. As one entry plus a few chunks it starts about 0.1 s sooner
// (docs/benchmarks.md), and on a backup that time comes before pg_dump even starts.
//
// Plug-ins and packages that are imported on first use stay that way: each lazily imported module becomes a chunk
// loaded when it is needed, and the heavy SDKs and native add-ons are not bundled at all (they are loaded from
// node_modules, as before).
import { build } from "esbuild";
import { chmod, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(ROOT, "dist", "bin");

/** Loaded from node_modules at run time: native add-ons, cloud SDKs and drivers that are imported on first use. */
const EXTERNAL = [
  "better-sqlite3",
  "ssh2",
  "cpu-features",
  "@aws-sdk/*",
  "@azure/*",
  "@google-cloud/*",
  "nodemailer",
  "mysql2",
  "@redis/client",
  "yaml",
];

await rm(OUT, { recursive: true, force: true });
await mkdir(OUT, { recursive: true });
// The shim module that stands for `navigator` in bundled code (see `define` below).
const shim = join(OUT, ".navigator-shim.mjs");
await writeFile(shim, `export const __dbkeepNavigator = { userAgent: "Node.js/" + process.versions.node };\n`);
try {
  await build({
    entryPoints: { dbkeep: join(ROOT, "dist", "cli", "entry.js") },
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    outdir: OUT,
    chunkNames: "chunk-[hash]",
    external: EXTERNAL,
    sourcemap: "linked",
    logLevel: "warning",
    // CommonJS packages inside the bundle (pg, pino, commander) call require() for Node's own modules.
    banner: { js: "import { createRequire as __dbkeepCreateRequire } from 'node:module'; const require = __dbkeepCreateRequire(import.meta.url);" },
    // pg asks whether it runs on Cloudflare Workers when it is loaded: without a global `navigator` (Node 20 has
    // none) it constructs a fetch Response to find out, which loads Node's whole fetch implementation (about
    // 20 ms). Bundled code sees a navigator that says Node.js instead, as Node 21 and later provide one.
    inject: [shim],
    define: { navigator: "__dbkeepNavigator" },
  });
} finally {
  await rm(shim, { force: true });
}
// dist/bin is as deep as dist/cli, so the version lookup (../../package.json from the module) still finds the
// package's own package.json.
await chmod(join(OUT, "dbkeep.js"), 0o755);
