import { Duplex, PassThrough, type Readable } from "node:stream";
import zlib from "node:zlib";
import { DbkeepError } from "./errors.js";
import { endAfter } from "./streams.js";
import { resolveTool, spawnTool } from "./subprocess.js";

export const COMPRESSIONS = ["gzip", "zstd", "lz4", "none"] as const;
export type Compression = (typeof COMPRESSIONS)[number];

/** File extension suffix per compression (seed 000's table). */
export const COMPRESSION_EXT: Record<Compression, string> = { gzip: ".gz", zstd: ".zst", lz4: ".lz4", none: "" };

/** Level ranges each compressor accepts; the defaults are the tools' own (gzip 6, zstd 3, lz4 1). */
const LEVELS: Record<Exclude<Compression, "none">, { min: number; max: number; def: number }> = {
  gzip: { min: 1, max: 9, def: 6 },
  zstd: { min: 1, max: 19, def: 3 },
  lz4: { min: 1, max: 12, def: 1 },
};

export function checkLevel(compression: Compression, level: number | undefined): string | undefined {
  if (compression === "none" || level === undefined) return undefined;
  const r = LEVELS[compression];
  if (level < r.min || level > r.max) return `${compression} level must be between ${r.min} and ${r.max}, got ${level}`;
  return undefined;
}

/**
 * Implementation per codec, chosen by measurement (bench/compressors.mjs, docs/benchmarks.md):
 * gzip runs in-process (node:zlib ran about 1.8x as fast as the gzip CLI), zstd and lz4 run as their CLI tools in a separate
 * process (Node 20 has no zstd; zstd -T0 uses every core and is the fastest stage of all).
 */
export async function createCompressor(compression: Compression, level?: number, signal?: AbortSignal): Promise<Duplex> {
  switch (compression) {
    case "none":
      return new PassThrough();
    case "gzip":
      return zlib.createGzip({ level: level ?? LEVELS.gzip.def });
    case "zstd":
      return processStage("zstd", ["-q", "-c", `-${level ?? LEVELS.zstd.def}`, "-T0", ...(level && level > 19 ? ["--ultra"] : [])], signal);
    case "lz4":
      return processStage("lz4", ["-q", "-c", `-${level ?? LEVELS.lz4.def}`], signal);
  }
}

export async function createDecompressor(compression: Compression, signal?: AbortSignal): Promise<Duplex> {
  switch (compression) {
    case "none":
      return new PassThrough();
    case "gzip":
      return zlib.createGunzip();
    case "zstd":
      return processStage("zstd", ["-q", "-d", "-c"], signal, "CORRUPT_BACKUP");
    case "lz4":
      return processStage("lz4", ["-q", "-d", "-c"], signal, "CORRUPT_BACKUP");
  }
}

/**
 * A child process as a Duplex: what is written goes to its stdin, its stdout is what is read.
 * The readable side ends only after the tool exited with 0, so a failing tool can never look like a clean EOF;
 * a non-zero exit destroys the duplex with the tool's error and the surrounding pipeline fails.
 */
export async function processStage(
  tool: string,
  args: string[],
  signal?: AbortSignal,
  errorCode: "ENGINE_FAILED" | "CORRUPT_BACKUP" = "ENGINE_FAILED",
): Promise<Duplex> {
  const path = await resolveTool(tool);
  const { child, done } = spawnTool(path, args, { signal, errorCode, context: "compression stage" });
  const stdin = child.stdin;
  const stdout = child.stdout;
  if (!stdin || !stdout) throw new DbkeepError("INTERNAL", `${tool} has no pipes`);
  stdin.on("error", () => undefined); // EPIPE surfaces through `done`
  const duplex = new Duplex({
    write(chunk: Buffer, _enc, cb) {
      if (stdin.write(chunk)) cb();
      else stdin.once("drain", () => cb());
    },
    final(cb) {
      stdin.end();
      cb();
    },
    read() {
      stdout.resume();
    },
    destroy(err, cb) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      cb(err);
    },
  });
  stdout.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) stdout.pause();
  });
  stdout.on("end", () => {
    done.then(
      () => duplex.push(null),
      (err: unknown) => duplex.destroy(err as Error),
    );
  });
  done.catch((err: unknown) => duplex.destroy(err as Error));
  return duplex;
}

/** Detects the compression of stored bytes from their first bytes (magic numbers). */
export function sniffCompression(head: Buffer): Compression | undefined {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  if (head.length >= 4 && head.readUInt32LE(0) === 0x184d2204) return "lz4";
  return undefined;
}

/** Whether `compression` runs as a process that can read a dump tool's stdout directly. */
export function compressesNatively(compression: Compression): boolean {
  return compression === "zstd" || compression === "lz4";
}

/**
 * A compressor process reading `input` (the read end of a pipe a dump tool writes into) directly: the raw dump never passes
 * through node. Its output ends only after the compressor exited with 0 and `upstream` (the dump) succeeded.
 * `rawBytes` comes from the compressor's own final report, which gives exact byte counts at these verbosities
 * (`zstd -vv`: "(N B => M B, ...)", `lz4 -v`: "Compressed N bytes into M bytes").
 */
export async function nativeCompressor(
  compression: Compression,
  level: number | undefined,
  input: number,
  upstream: Promise<unknown>,
  signal?: AbortSignal,
): Promise<{ stream: Readable; rawBytes: Promise<number> }> {
  const c = await spawnNative(compression, level, input, "pipe", signal);
  return { stream: endAfter(c.stdout!, Promise.all([c.done, upstream, c.rawBytes])), rawBytes: c.rawBytes };
}

/**
 * As nativeCompressor, but the compressor writes into an open file itself (a store's staged file): node never
 * touches the compressed bytes on their way to disk. `done` settles when the compressor exited.
 */
export async function nativeCompressorToFile(
  compression: Compression,
  level: number | undefined,
  input: number,
  fd: number,
  signal?: AbortSignal,
): Promise<{ done: Promise<unknown>; rawBytes: Promise<number> }> {
  const c = await spawnNative(compression, level, input, fd, signal);
  return { done: c.done, rawBytes: c.rawBytes };
}

async function spawnNative(compression: Compression, level: number | undefined, input: number, output: "pipe" | number, signal?: AbortSignal) {
  const tool = compression === "zstd" ? "zstd" : "lz4";
  const args =
    compression === "zstd"
      ? ["-vv", "-c", `-${level ?? LEVELS.zstd.def}`, "-T0", ...(level && level > 19 ? ["--ultra"] : [])]
      : ["-v", "-c", `-${level ?? LEVELS.lz4.def}`];
  const path = await resolveTool(tool);
  const { child, done } = spawnTool(path, args, {
    signal, context: "compression stage", stdio: [input, output, "pipe"],
    explain: (stderr) => (/No space left on device/i.test(stderr) ? { code: "STORE_FAILED", hint: "the disk holding the store is full" } : undefined),
  });
  const rawBytes = done.then((r) => {
    const m = compression === "zstd" ? /\(\s*(\d+) B =>/.exec(r.stderr) : /Compressed\s+(\d+) bytes into/.exec(r.stderr);
    if (!m) throw new DbkeepError("INTERNAL", `${tool} did not report the size it read`, { details: r.stderr.slice(-500) });
    return Number(m[1]);
  });
  rawBytes.catch(() => undefined);
  return { stdout: child.stdout as Readable | null, done, rawBytes };
}
