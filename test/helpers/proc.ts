import { readFileSync, readdirSync } from "node:fs";

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
