import { spawnTool, minimalEnv } from "./subprocess.js";
import type { Logger } from "./log.js";

export interface HookContext {
  job: string;
  /** "success" or "failure" for after/on_failure hooks; "pending" for before. */
  status: "pending" | "success" | "failure";
  store: string;
  database: string;
  backup?: string;
  key?: string;
  bytes?: number;
  error?: string;
}

/**
 * Runs a hook command with /bin/sh, a minimal environment plus the job's outcome (DBKEEP_*), a timeout, and its
 * output in the log. Rejects with a DbkeepError when the command fails or times out.
 */
export async function runHook(which: string, command: string, ctx: HookContext, o: { timeoutSeconds: number; log: Logger; signal: AbortSignal }): Promise<void> {
  const env = minimalEnv({
    DBKEEP_HOOK: which,
    DBKEEP_JOB: ctx.job,
    DBKEEP_STATUS: ctx.status,
    DBKEEP_STORE: ctx.store,
    DBKEEP_DATABASE: ctx.database,
    DBKEEP_BACKUP: ctx.backup,
    DBKEEP_KEY: ctx.key,
    DBKEEP_BYTES: ctx.bytes === undefined ? undefined : String(ctx.bytes),
    DBKEEP_ERROR: ctx.error,
  });
  const { child, done } = spawnTool("/bin/sh", ["-c", command], {
    env,
    signal: o.signal,
    timeoutMs: o.timeoutSeconds * 1000,
    context: `${which} hook of job ${ctx.job}`,
    errorCode: "HOOK_FAILED",
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines = (stream: NodeJS.ReadableStream | null, level: "info" | "warn") => {
    let buf = "";
    stream?.setEncoding("utf8");
    stream?.on("data", (c: string) => {
      buf += c;
      const parts = buf.split("\n");
      buf = parts.pop() ?? "";
      for (const l of parts) if (l.trim()) o.log[level]({ hook: which }, l);
    });
    stream?.on("end", () => {
      if (buf.trim()) o.log[level]({ hook: which }, buf);
    });
  };
  lines(child.stdout, "info");
  lines(child.stderr, "warn");
  o.log.info({ hook: which, command }, `running ${which} hook`);
  await done;
}
