import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { CLI, CLI_ENV } from "./env.js";

/** Every descendant of a process, with its argument list and environment. */
export function descendants(root: number): { pid: number; cmdline: string; environ: string }[] {
  const parents = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      parents.set(Number(d), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // the process is gone
    }
  }
  const out: { pid: number; cmdline: string; environ: string }[] = [];
  const walk = (pid: number) => {
    for (const [child, parent] of parents) {
      if (parent !== pid) continue;
      try {
        out.push({ pid: child, cmdline: readFileSync(`/proc/${child}/cmdline`, "utf8").split("\0").join(" "), environ: readFileSync(`/proc/${child}/environ`, "utf8") });
      } catch {
        // gone
      }
      walk(child);
    }
  };
  walk(root);
  return out;
}

export interface WatchedRun {
  code: number;
  output: string;
  /** Every descendant seen while the command ran (polled every 5 ms). */
  procs: { pid: number; cmdline: string; environ: string }[];
}

/** Runs the built CLI and records every child process it starts, with its argument list and environment. */
export async function runWatchingChildren(args: string[], env: Record<string, string>): Promise<WatchedRun> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...CLI_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr.on("data", (d: Buffer) => (output += d.toString()));
  const seen = new Map<number, { pid: number; cmdline: string; environ: string }>();
  const exited = new Promise<number>((r) => child.once("exit", (code) => r(code ?? -1)));
  let running = true;
  void exited.then(() => (running = false));
  while (running) {
    for (const p of descendants(child.pid!)) {
      // A process caught while it exits reads back an empty environment (and sometimes an empty argument list):
      // keep the fullest reading of each process so that a late poll never erases an earlier one.
      const before = seen.get(p.pid);
      if (!before || (before.cmdline === p.cmdline ? p.environ.length > before.environ.length : p.cmdline.length > 0)) seen.set(p.pid, p);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return { code: await exited, output, procs: [...seen.values()] };
}
