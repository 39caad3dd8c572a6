import type { ChildProcess } from "node:child_process";
import { PassThrough, type Readable } from "node:stream";
import { DbkeepError, isDbkeepError } from "../core/errors.js";
import { spawnTool, type SpawnedTool, type SpawnOptions } from "../core/subprocess.js";

/** Streams for stores whose work is done by a command-line tool (restic, rclone). */

export interface Captured {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a tool to its end and returns its exit status and output, whatever the status: the store reads the tool's
 * stderr to say what went wrong. A tool that cannot start, was aborted or timed out still throws.
 */
export async function capture(path: string, args: string[], opts: SpawnOptions & { input?: string } = {}): Promise<Captured> {
  const tool = spawnTool(path, args, { ...opts, stdio: ["pipe", "pipe", "pipe"], errorCode: "STORE_FAILED" });
  let stdout = "";
  let stderr = "";
  tool.child.stdout?.setEncoding("utf8");
  tool.child.stdout?.on("data", (c: string) => (stdout += c));
  tool.child.stderr?.on("data", (c: string) => (stderr += c));
  tool.child.stdin?.on("error", () => undefined);
  tool.child.stdin?.end(opts.input ?? "");
  try {
    await tool.done;
  } catch (err) {
    if (isDbkeepError(err) && (err.code === "TOOL_NOT_FOUND" || err.code === "ABORTED" || err.code === "TIMEOUT")) throw err;
    if (tool.child.exitCode === null && tool.child.signalCode === null) throw err;
  }
  return { code: tool.child.exitCode, signal: tool.child.signalCode, stdout, stderr };
}

/** Collects a running tool's stderr (spawnTool keeps only a redacted tail in its error). */
export function collectStderr(child: ChildProcess): () => string {
  let stderr = "";
  child.stderr?.on("data", (c: string | Buffer) => {
    stderr += c.toString();
    if (stderr.length > 256 * 1024) stderr = stderr.slice(-128 * 1024);
  });
  return () => stderr;
}

/**
 * Stops a tool: `first` (SIGINT lets restic remove its lock), then SIGKILL if it is still running after `graceMs`.
 * Resolves when it has exited.
 */
export async function stopTool(tool: SpawnedTool, first: NodeJS.Signals = "SIGKILL", graceMs = 5000): Promise<void> {
  const { child } = tool;
  const running = () => child.exitCode === null && child.signalCode === null;
  if (running()) {
    child.kill(first);
    if (first !== "SIGKILL") {
      const t = setTimeout(() => running() && child.kill("SIGKILL"), graceMs);
      t.unref();
      await tool.done.catch(() => undefined);
      clearTimeout(t);
    }
  }
  await tool.done.catch(() => undefined);
}

/**
 * Writes `body` into the tool's stdin with backpressure and closes stdin only when the body ended normally: a body
 * that errors or an abort throws (the error of the body as it is, or an AbortError) with stdin left open, so the
 * caller can kill the tool before it could take the partial input for a whole one. Returns the bytes written.
 * If the tool closes its stdin early (it failed), stops writing and returns; the tool's exit status tells why.
 */
export async function feedStdin(body: Readable, child: ChildProcess, signal?: AbortSignal): Promise<{ bytes: number; complete: boolean }> {
  const stdin = child.stdin;
  if (!stdin) throw new DbkeepError("INTERNAL", "tool has no stdin");
  let open = true;
  stdin.on("error", () => (open = false));
  stdin.on("close", () => (open = false));
  if (body.errored) throw body.errored;
  const aborted = () => (signal?.reason instanceof Error ? signal.reason : Object.assign(new Error("The operation was aborted"), { name: "AbortError" }));
  // Like stream.addAbortSignal, but the listener goes when the put ends (one signal may serve many puts).
  const onAbort = () => body.destroy(aborted());
  if (signal?.aborted) onAbort();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    let bytes = 0;
    for await (const chunk of body) {
      const buf = chunk as Buffer;
      if (!open) return { bytes, complete: false };
      bytes += buf.length;
      if (!stdin.write(buf)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            stdin.removeListener("drain", done);
            stdin.removeListener("close", done);
            signal?.removeEventListener("abort", done);
            resolve();
          };
          stdin.once("drain", done);
          stdin.once("close", done);
          signal?.addEventListener("abort", done, { once: true });
        });
        if (signal?.aborted) throw aborted();
      }
    }
    if (!open) return { bytes, complete: false };
    await new Promise<void>((resolve) => stdin.end(resolve));
    return { bytes, complete: true };
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * The tool's stdout as a stream that ends only when the tool exited with 0 and errors (with `mapError`'s error)
 * otherwise: a reader never takes a truncated output for a whole one. Destroying the stream stops the tool.
 */
export function stdoutStream(tool: SpawnedTool, mapError: (err: unknown) => Error): Readable {
  const out = new PassThrough();
  tool.child.stdout!.pipe(out, { end: false });
  tool.done.then(
    () => out.end(),
    (err: unknown) => out.destroy(mapError(err)),
  );
  out.on("close", () => {
    if (tool.child.exitCode === null && tool.child.signalCode === null) tool.child.kill("SIGTERM");
  });
  return out;
}
