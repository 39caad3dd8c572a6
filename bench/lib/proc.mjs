// Runs one command and measures it: wall time, peak RSS of every process in its tree (sampled from /proc) and,
// when GNU time is installed, the kernel's own max RSS figure as a cross-check.

import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setInterval, clearInterval } from "node:timers";

export const GNU_TIME = "/usr/bin/time";
export const HAVE_GNU_TIME = existsSync(GNU_TIME);
const POLL_MS = 50;
const CLOCK_TICKS = 100; // USER_HZ; 100 on every Linux this runs on

/** A file's text, or undefined if it is gone. Synchronous: the sampler must stay cheap (below). */
function readText(path) {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined; // the process exited between listing and reading
  }
}

/** pid and all its descendants. Children hang off the thread that forked them, so every thread is asked. */
function processTree(pid) {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    let tasks;
    try {
      tasks = readdirSync(`/proc/${all[i]}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      const kids = readText(`/proc/${all[i]}/task/${tid}/children`);
      for (const k of kids?.trim().split(/\s+/) ?? []) if (k) all.push(Number(k));
    }
  }
  return all;
}

/** Name, high-water RSS and CPU seconds of one process, or undefined once it is gone. */
function sample(pid) {
  const status = readText(`/proc/${pid}/status`);
  const stat = readText(`/proc/${pid}/stat`);
  if (!status || !stat) return undefined;
  const field = (name) => status.match(new RegExp(`^${name}:\\s+(.*)$`, "m"))?.[1];
  const hwmKb = Number.parseInt(field("VmHWM") ?? "0", 10);
  // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces, so count after its ")".
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpu = (Number(rest[11]) + Number(rest[12])) / CLOCK_TICKS;
  return { name: field("Name") ?? "?", hwmBytes: hwmKb * 1024, cpu };
}

/**
 * Samples the tree of `rootPid` every 50 ms until stopped. VmHWM is the kernel's high-water mark, so a sample
 * loses only growth in the last interval before a process exits, never a short spike in between.
 *
 * The sampler shares the machine with what it measures, so it is kept cheap: synchronous reads, and the tree (one
 * read per thread of every process) walked again only every TREE_EVERY samples, since the processes of a backup
 * start at its beginning. Written with promise-based reads and a full walk each time, it used 0.4 to 0.8 CPU-s
 * per 1 GB run, more for the case with more threads (dbkeep's node has about ten), which inflated that case's time.
 */
const TREE_EVERY = 5;
export function startSampler(rootPid) {
  const seen = new Map(); // pid -> { name, hwmBytes, cpu }
  let pids = [rootPid];
  let ticks = 0;
  const tick = () => {
    if (ticks++ % TREE_EVERY === 0) pids = processTree(rootPid);
    for (const pid of pids) {
      const s = sample(pid);
      if (!s) continue;
      const prev = seen.get(pid);
      seen.set(pid, { name: s.name, hwmBytes: Math.max(s.hwmBytes, prev?.hwmBytes ?? 0), cpu: Math.max(s.cpu, prev?.cpu ?? 0) });
    }
  };
  const timer = setInterval(tick, POLL_MS);
  tick();
  return {
    stop() {
      clearInterval(timer);
      return [...seen.entries()].map(([pid, s]) => ({ pid, ...s }));
    },
  };
}

/** Peak RSS and CPU per process name (the largest instance; CPU summed), e.g. { node: {...}, zstd: {...} }. */
function byName(processes) {
  const out = {};
  for (const p of processes) {
    const o = (out[p.name] ??= { peakRssBytes: 0, cpuSeconds: 0, count: 0 });
    o.peakRssBytes = Math.max(o.peakRssBytes, p.hwmBytes);
    o.cpuSeconds += p.cpu;
    o.count++;
  }
  return out;
}

/**
 * Runs `argv` (or a shell command line when `shell` is set) with stdout discarded, and returns
 * { seconds, processes, gnuTimeMaxRssBytes, stderr }. Throws if the command fails.
 *
 * With `wrapTime`, the command runs under GNU time; its %M is the maximum over the process and every descendant it
 * reaped, so it is an upper bound for the main process and the per-process samples say which one it was.
 */
export async function measure({ argv, shell, wrapTime = false, timeFile }) {
  let cmd = shell ? ["bash", "-o", "pipefail", "-c", shell] : argv;
  const useTime = wrapTime && HAVE_GNU_TIME;
  if (useTime) cmd = [GNU_TIME, "-f", "%M", "-o", timeFile, ...cmd];
  const started = performance.now();
  const child = spawn(cmd[0], cmd.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  const sampler = startSampler(child.pid);
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-8000)));
  const code = await new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c, sig) => resolve(c ?? sig));
  });
  const seconds = (performance.now() - started) / 1000;
  const processes = sampler.stop();
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed (${code}):\n${stderr.trim()}`);
  let gnuTimeMaxRssBytes;
  if (useTime) {
    gnuTimeMaxRssBytes = Number.parseInt((readText(timeFile) ?? "").trim().split("\n").pop(), 10) * 1024;
    await rm(timeFile, { force: true });
  }
  return { seconds, processes: byName(processes.filter((p) => p.name !== "time")), gnuTimeMaxRssBytes, stderr };
}

/** Total size of the files under `dir`: a backup's data file plus its small manifest and checksum files. */
export async function dirBytes(dir) {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += statSync(join(e.parentPath ?? e.path, e.name)).size;
  }
  return total;
}
