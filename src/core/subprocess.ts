import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import type { Readable } from "node:stream";
import { accessSync, constants } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";
import { DbkeepError, type ErrorCode } from "./errors.js";
import { redact } from "./redact.js";

/** Which Debian package provides a tool, for the "not found" hint. */
const PACKAGES: Record<string, string> = {
  pg_dump: "postgresql-client",
  pg_restore: "postgresql-client",
  pg_dumpall: "postgresql-client",
  psql: "postgresql-client",
  zstd: "zstd",
  lz4: "lz4",
  gzip: "gzip",
  pigz: "pigz",
  tar: "tar",
  "redis-cli": "redis-tools",
  "redis-server": "redis-server",
  mysqldump: "mariadb-client",
  mysql: "mariadb-client",
  "mariadb-dump": "mariadb-client",
  mariadb: "mariadb-client",
  mydumper: "mydumper",
  myloader: "mydumper",
  mongodump: "mongodb-database-tools",
  mongorestore: "mongodb-database-tools",
  db2: "the IBM Db2 client",
  db2ckbkp: "the IBM Db2 client",
};

/**
 * The environment a child process gets: enough to run, nothing of the parent's other variables
 * (which may hold unrelated secrets).
 */
export function minimalEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"]) {
    const v = process.env[name];
    if (v !== undefined) env[name] = v;
  }
  env.PATH ??= "/usr/local/bin:/usr/bin:/bin";
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

/**
 * Finds an executable in binDir (if given) or PATH, or throws TOOL_NOT_FOUND with an install hint. The lookup is
 * synchronous, as a shell's is: a few access() calls take microseconds, while each one sent to the thread pool waits
 * for a turn of the event loop (on a backup's start that made finding pg_dump take longer than connecting).
 */
export async function resolveTool(name: string, binDir?: string): Promise<string> {
  const dirs = binDir ? [binDir] : (process.env.PATH ?? "/usr/bin:/bin").split(delimiter);
  if (isAbsolute(name)) dirs.unshift("");
  for (const dir of dirs) {
    const candidate = dir ? join(dir, name) : name;
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // try the next directory
    }
  }
  const pkg = PACKAGES[name];
  const where = binDir ? ` in ${binDir}` : "";
  throw new DbkeepError("TOOL_NOT_FOUND", `${name} not found${where}`, {
    hint: pkg ? `install ${pkg} or set bin_dir` : "install it or set bin_dir",
  });
}

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

export interface SpawnedTool {
  child: ChildProcess;
  /** Resolves when the process exits with code 0; rejects with a DbkeepError carrying the stderr tail otherwise. */
  done: Promise<Exited>;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  stdio?: StdioOptions;
  cwd?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Error code and context used when the process fails. */
  errorCode?: ErrorCode;
  context?: string;
  /** Decides the hint (and retryability) from the tool's stderr. */
  explain?: (stderr: string) => { hint?: string; retryable?: boolean; code?: ErrorCode } | undefined;
  /**
   * Runs the tool in a process group of its own, and a stop (abort, timeout) signals the whole group: for a tool
   * that runs others (pg_dumpall runs pg_dump per database), whose children would otherwise outlive it, keep
   * writing into its output and hold its stderr open.
   */
  group?: boolean;
}

const STDERR_KEEP = 64 * 1024;

/** Spawns a tool with a minimal environment and turns its failure into one clear DbkeepError. */
export function spawnTool(path: string, args: string[], opts: SpawnOptions = {}): SpawnedTool {
  const name = path.split("/").pop() ?? path;
  const child = spawn(path, args, {
    env: opts.env ?? minimalEnv(),
    stdio: opts.stdio ?? ["pipe", "pipe", "pipe"],
    cwd: opts.cwd,
    ...(opts.group ? { detached: true } : {}),
  });
  let closed = false;
  const signalTool = (sig: NodeJS.Signals) => {
    if (opts.group && child.pid !== undefined && !closed) {
      try {
        process.kill(-child.pid, sig);
        return;
      } catch {
        /* the group is gone */
      }
    }
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  };
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
    if (stderr.length > STDERR_KEEP) stderr = stderr.slice(-STDERR_KEEP);
  });
  let killedFor: "abort" | "timeout" | undefined;
  const kill = (why: "abort" | "timeout") => {
    // A group is stopped until its last member lets go of stderr ("close"), also when the tool itself exited.
    if (opts.group ? !closed : child.exitCode === null && child.signalCode === null) {
      killedFor ??= why;
      signalTool("SIGTERM");
      setTimeout(() => signalTool("SIGKILL"), 3000).unref();
    }
  };
  const onAbort = () => kill("abort");
  if (opts.signal) {
    if (opts.signal.aborted) queueMicrotask(onAbort);
    else opts.signal.addEventListener("abort", onAbort, { once: true });
  }
  const timer = opts.timeoutMs ? setTimeout(() => kill("timeout"), opts.timeoutMs) : undefined;
  timer?.unref();

  const done = new Promise<Exited>((resolve, reject) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (err.code === "ENOENT") {
        reject(new DbkeepError("TOOL_NOT_FOUND", `${name} not found`, { hint: `install ${PACKAGES[name] ?? name} or set bin_dir`, cause: err }));
      } else {
        reject(new DbkeepError(opts.errorCode ?? "ENGINE_FAILED", `${name} could not start: ${err.message}`, { cause: err }));
      }
    });
    child.once("close", (code, signal) => {
      closed = true;
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      const result = { code, signal, stderr };
      if (code === 0) return resolve(result);
      const ctx = opts.context ? ` (${opts.context})` : "";
      if (killedFor === "timeout") {
        return reject(new DbkeepError("TIMEOUT", `${name} timed out after ${Math.round((opts.timeoutMs ?? 0) / 1000)}s${ctx}`, {
          hint: "raise the datasource's timeout (seconds)",
          retryable: true,
        }));
      }
      if (killedFor === "abort") {
        return reject(new DbkeepError("ABORTED", `${name} was stopped${ctx}`));
      }
      const how = code === null ? `was killed by ${signal}` : `failed with exit code ${code}`;
      const explained = opts.explain?.(stderr);
      reject(new DbkeepError(explained?.code ?? opts.errorCode ?? "ENGINE_FAILED", `${name} ${how}${ctx}`, {
        details: redact(stderrTail(stderr)),
        hint: explained?.hint,
        retryable: explained?.retryable ?? false,
      }));
    });
  });
  // A rejection nobody awaits yet must not crash the process; callers await `done` themselves.
  done.catch(() => undefined);
  return { child, done };
}

function stderrTail(stderr: string, lines = 6): string {
  return stderr.trim().split("\n").slice(-lines).join("\n");
}

/** Runs a tool to completion and returns its stdout (for short outputs such as --version). */
export async function runTool(path: string, args: string[], opts: SpawnOptions & { input?: string } = {}): Promise<string> {
  const { child, done } = spawnTool(path, args, { ...opts, stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (c: string) => (out += c));
  child.stdin?.on("error", () => undefined);
  child.stdin?.end(opts.input ?? "");
  await done;
  return out;
}

/**
 * Writes `input` into a tool's stdin for as long as the tool reads, and keeps consuming `input` to its end either
 * way (tar stops reading at the end-of-archive blocks, pg_restore --list after the table of contents; the caller's
 * checksum still needs every byte). If the input
 * errors, the tool is killed: it must not take a truncated archive for a whole one.
 */
export async function feedWhileReading(input: Readable, tool: SpawnedTool): Promise<void> {
  const stdin = tool.child.stdin;
  let open = stdin !== null;
  stdin?.on("error", () => (open = false));
  stdin?.on("close", () => (open = false));
  try {
    for await (const chunk of input) {
      if (!open || !stdin) continue;
      if (!stdin.write(chunk as Buffer)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            stdin.removeListener("drain", done);
            stdin.removeListener("close", done);
            resolve();
          };
          stdin.once("drain", done);
          stdin.once("close", done);
        });
      }
    }
  } catch (err) {
    tool.child.kill("SIGKILL");
    throw err;
  }
  if (open) stdin?.end();
}
