import { DbkeepError } from "../core/errors.js";
import { formatBytes, formatDuration } from "../core/format.js";
import { backupPrefix, openEngine, openStore, runJob, type JobPlan } from "../core/jobs.js";
import type { Logger } from "../core/log.js";
import { listFor, resolveBackup } from "../core/listing.js";
import { runRestore } from "../core/restore.js";
import type { DifferentialPlan } from "../core/differential.js";
import { identitiesFor } from "../crypto/settings.js";
import { ENGINES } from "../engines/registry.js";
import type { ConsoleBackupOps } from "./console.js";

/** The defaults of a job's `mode: differential`, for `backup --differential` on a job without that mode. */
const DEFAULT_DIFFERENTIAL: DifferentialPlan = { basisColumn: "updated_at", basisColumns: {}, trackDeletes: false, maxChain: 7, fullEverySeconds: 7 * 86400, marginSeconds: 60 };

/**
 * backup, list and restore of the console, on a job's plan (the job of the datasource in the config, or a plan for
 * `--to STORE`). They call the same core functions as `dbkeep backup`, `list` and `restore`.
 */
export function createConsoleBackupOps(plan: JobPlan, describe: string, log: Logger): ConsoleBackupOps {
  const warn = (m: string) => log.warn(m);

  /** The plan narrowed to some tables: the datasource's own table selection is replaced. */
  function partialPlan(tables: string[]): JobPlan {
    const { section } = plan.datasource;
    const { exclude_tables: _x, schemas: _s, exclude_schemas: _xs, ...options } = section.options;
    const narrowed = { ...options, tables };
    const plugin = ENGINES[section.engine];
    const parsed = plugin?.schema.safeParse(narrowed);
    if (!parsed?.success) {
      const unknownKey = parsed?.error.issues.some((i) => i.code === "unrecognized_keys");
      throw new DbkeepError("USAGE", unknownKey ? `partial backups (--table) are not supported for ${section.engine} datasources yet` : `backup --table: ${parsed?.error.issues[0]?.message ?? "invalid table selection"}`, {
        hint: unknownKey ? "run backup without --table for a full backup" : "name tables as table or schema.table (globs allowed)",
      });
    }
    return { ...plan, datasource: { ...plan.datasource, section: { ...section, options: narrowed } } };
  }

  async function differentialPlan(base: JobPlan): Promise<JobPlan> {
    const engine = await openEngine(base, warn);
    if (!engine.differential) {
      throw new DbkeepError("USAGE", `differential backups need PostgreSQL, or MySQL/MariaDB with one database and mysqldump; this is ${base.datasource.section.engine}`, {
        hint: "make a full backup instead (backup, or full database -path DIR)",
      });
    }
    if (base.differential) return base;
    return { ...base, differential: DEFAULT_DIFFERENTIAL };
  }

  /**
   * A full backup that differentials can build on (seed 004's `full database`): the differential mode with no room
   * for a differential, so that the run is a full backup that records its safe point. Engines without differentials
   * make a plain full backup.
   */
  async function basePlan(base: JobPlan): Promise<JobPlan> {
    const engine = await openEngine(base, warn);
    if (!engine.differential) return base;
    return { ...base, differential: { ...(base.differential ?? DEFAULT_DIFFERENTIAL), maxChain: 0 } };
  }

  return {
    describe,
    async backup({ tables, differential, base, signal, say }) {
      let p = tables.length ? partialPlan(tables) : plan;
      if (differential) p = await differentialPlan(p);
      else if (base && !tables.length) p = await basePlan(p);
      say(`backing up ${p.datasource.section.engine} ${tables.length ? `tables ${tables.join(", ")} ` : ""}to ${describe}${differential ? " (differential when a full backup to build on exists)" : ""} ...`);
      const r = await runJob(p, { log, signal });
      if (!r.ok || !r.manifest) throw r.error ?? new DbkeepError("ENGINE_FAILED", "backup failed");
      const m = r.manifest;
      const kind = m.differential?.kind === "differential" ? "differential" : m.selection ? "partial" : "full";
      say(`${kind} backup ${m.id}: ${formatBytes(m.stored_bytes)} (${formatBytes(m.raw_bytes)} raw) in ${formatDuration(r.seconds)}, ${r.store} ${m.key}`);
    },
    async list({ say }) {
      const engine = await openEngine(plan, warn);
      const store = await openStore(plan, warn);
      try {
        const { backups } = await listFor(store, backupPrefix(plan, engine), plan.oneOff ? undefined : plan.name);
        if (backups.length === 0) say(`no backups in ${store.name}`);
        for (const b of backups) {
          const kind = b.differential?.kind === "differential" ? "differential" : b.selection ? "partial" : "full";
          say(`${b.id}  ${b.started_at.replace("T", " ").slice(0, 19)}  ${formatBytes(b.stored_bytes).padStart(9)}  ${kind}  ${b.key}`);
        }
        return backups.map((b) => b.id);
      } finally {
        await store.close();
      }
    },
    async restore({ ref, signal, ask, say }) {
      const engine = await openEngine(plan, warn);
      const store = await openStore(plan, warn);
      try {
        const { manifest: m } = resolveBackup(await listFor(store, backupPrefix(plan, engine), plan.oneOff ? undefined : plan.name), ref, store.name);
        say(`restoring ${m.id} into ${engine.name} database ${engine.database} ...`);
        const r = await runRestore({
          manifest: m,
          store,
          engine,
          log,
          signal,
          identities: () => (plan.encryption ? identitiesFor(plan.encryption, warn) : []),
          confirm: async (objects, what) => {
            const shown = objects.slice(0, 10).join(", ") + (objects.length > 10 ? `, ... (${objects.length} in all)` : "");
            say(`${what} already holds: ${shown}`);
            if (await ask(`Replace ${what} with backup ${m.id}?`)) return true;
            throw new DbkeepError("RESTORE_REFUSED", `restore cancelled: ${what} was not changed`);
          },
        });
        say(`restored ${m.id} into ${r.target} in ${formatDuration(r.seconds)}`);
      } finally {
        await store.close();
      }
    },
  };
}
