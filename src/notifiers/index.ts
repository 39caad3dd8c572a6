import { hostname } from "node:os";
import { basename, extname } from "node:path";
import type { Config } from "../config/load.js";
import { DbkeepError } from "../core/errors.js";
import type { RunEvent } from "./notifier.js";

export type { Notifier, NotifyOptions, RunEvent } from "./notifier.js";
export { createNotifier } from "./registry.js";

/**
 * What `dbkeep notify test` sends: a "test" event with the job's datasource and store when a job is given, so
 * that templates and filters on the receiving side can be checked with real values.
 */
export function testEvent(config: Config, job?: string, now: Date = new Date()): RunEvent {
  const at = now.toISOString();
  const base: RunEvent = {
    kind: "test",
    status: "test",
    job: job ?? "test",
    message: "dbkeep test notification",
    startedAt: at,
    finishedAt: at,
    durationSeconds: 0,
    store: "test",
    repository: "test",
    dbType: "test",
    database: "test",
    host: hostname(),
    tags: [],
  };
  if (job === undefined) return base;
  const j = config.jobs[job];
  if (!j) {
    const names = Object.keys(config.jobs);
    throw new DbkeepError("USAGE", `unknown job "${job}"${config.file ? ` in ${config.file}` : ""}`, {
      hint: names.length ? `jobs: ${names.join(", ")}` : "the config defines no jobs",
    });
  }
  const ds = config.datasources[j.datasource]!;
  const storeName = j.stores[0]!;
  const store = `${config.stores[storeName]!.type}:${storeName}`;
  const o = ds.options;
  const file = typeof o.path === "string" ? o.path : "";
  const database = typeof o.database === "string" ? o.database : file ? basename(file, extname(file)) : "unknown";
  return {
    ...base,
    store,
    repository: store,
    dbType: ds.engine === "postgresql" ? "postgres" : ds.engine,
    database,
    // As a job run's events have it: the server's host, a SQLite database's path.
    host: typeof o.host === "string" ? o.host : file || hostname(),
    tags: [job, database],
  };
}
