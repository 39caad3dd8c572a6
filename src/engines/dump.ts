import { PassThrough } from "node:stream";
import type { ManifestDifferential } from "../core/manifest.js";
import type { DifferentialDumpSettings, Dump, DumpResult } from "./engine.js";

/**
 * Runs an engine's dump in the background, writing into the stream the pipeline reads. If the dump fails, the
 * stream is destroyed with its error, so the stages downstream see an error and never a clean end.
 */
export function startDump(run: (out: PassThrough) => Promise<DumpResult>): Dump {
  const out = new PassThrough();
  const done = run(out).catch((err: unknown) => {
    out.destroy(err as Error);
    throw err;
  });
  done.catch(() => undefined); // awaited by the caller; never an unhandled rejection meanwhile
  return { stream: out, done };
}

/** The manifest's record of a differential dump (PostgreSQL and MySQL/MariaDB write the same one). */
export function differentialRecord(
  d: DifferentialDumpSettings,
  r: { cutoff: string; snapshotAt: string; basis: Record<string, string>; fullTables: { name: string; reason: string }[]; keyDigests: Record<string, string> },
): ManifestDifferential {
  return {
    kind: "differential",
    schema_digest: d.base.schema_digest,
    base: { id: d.base.id, manifest_key: d.base.manifest_key, sha256: d.base.sha256 },
    cutoff: r.cutoff,
    snapshot_at: r.snapshotAt,
    basis: r.basis,
    full_tables: r.fullTables,
    track_deletes: d.trackDeletes,
    ...(d.trackDeletes ? {} : { key_digests: r.keyDigests }),
  };
}
