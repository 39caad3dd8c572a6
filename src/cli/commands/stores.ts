import type { Command } from "commander";
import { DbkeepError, toDbkeepError } from "../../core/errors.js";
import { openStoreRef } from "../../core/jobs.js";
import { redact } from "../../core/redact.js";
import { probeStore, type ProbeStep } from "../../core/sync.js";
import type { Context } from "../context.js";

export function registerStores(program: Command, ctx: () => Context): void {
  const stores = program.command("stores").description("work with the stores of the config");
  stores
    .command("check")
    .description("check that each store can be reached and written: write, read, list and delete a probe object")
    .argument("[stores...]", "store names (default: every store of the config)")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      `
Examples:
  dbkeep stores check
  dbkeep stores check r2 offsite
  dbkeep stores check --json

Writes a small object under .dbkeep-probe/ in each store, reads it back, lists it and deletes it.
Exit code 1 when a step fails in any store.`,
    )
    .action(async (names: string[], flags: { json?: boolean }) => {
      const c = ctx();
      const config = c.config();
      const all = Object.keys(config.stores);
      for (const n of names) if (!config.stores[n]) throw new DbkeepError("USAGE", `unknown store "${n}"`, { hint: `stores: ${all.join(", ") || "none defined"}` });
      const chosen = names.length ? names : all;
      if (chosen.length === 0) throw new DbkeepError("USAGE", "the config defines no stores");
      const results: { store: string; ok: boolean; steps: ProbeStep[]; error?: string; hint?: string }[] = [];
      for (const name of chosen) {
        try {
          const store = await openStoreRef({ name, section: config.stores[name]! }, (m) => c.log.warn(m));
          try {
            const steps = await probeStore(store, c.signal);
            results.push({ store: name, ok: steps.every((s) => s.ok), steps });
          } finally {
            await store.close();
          }
        } catch (err) {
          const e = toDbkeepError(err);
          results.push({ store: name, ok: false, steps: [], error: redact(e.message), ...(e.hint ? { hint: e.hint } : {}) });
        }
      }
      if (flags.json) process.stdout.write(JSON.stringify({ ok: results.every((r) => r.ok), stores: results }, null, 2) + "\n");
      else {
        const width = Math.max(...results.map((r) => r.store.length));
        for (const r of results) {
          if (r.error) {
            process.stdout.write(`${r.store.padEnd(width)}  FAILED  cannot open: ${r.error}${r.hint ? ` (hint: ${r.hint})` : ""}\n`);
            continue;
          }
          const bad = r.steps.filter((s) => !s.ok);
          if (bad.length === 0) process.stdout.write(`${r.store.padEnd(width)}  ok      ${r.steps.map((s) => `${s.step} ${s.ms}ms`).join(", ")}\n`);
          for (const s of bad) process.stdout.write(`${r.store.padEnd(width)}  FAILED  ${s.step}: ${s.error}${s.hint ? ` (hint: ${s.hint})` : ""}\n`);
        }
      }
      if (results.some((r) => !r.ok)) process.exitCode = 1;
    });
}
