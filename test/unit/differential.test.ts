import { describe, expect, it } from "vitest";
import { PassThrough } from "node:stream";
import { nextRunKind, prepareDifferential, type DifferentialPlan } from "../../src/core/differential.js";
import { createLogger } from "../../src/core/log.js";
import { putText, serializeManifest, type Manifest } from "../../src/core/manifest.js";
import type { DifferentialSupport, DumpOptions, Engine } from "../../src/engines/engine.js";
import { createLocalStore } from "../../src/stores/local/index.js";
import { tempDir } from "../helpers/env.js";

const engine = { name: "postgres", database: "app" } as Engine;
const settings: DifferentialPlan = { basisColumn: "updated_at", basisColumns: {}, trackDeletes: false, maxChain: 2, fullEverySeconds: 86400, marginSeconds: 60 };

function manifest(id: string, at: string, differential: Manifest["differential"], job = "nightly"): Manifest {
  return {
    manifest_version: 2, id, job, engine: "postgres", database: "app", format: differential?.kind === "differential" ? "differential" : "plain",
    compression: "gzip", encryption: null, key: `app/${id}.sql.gz`, checksum_key: `app/${id}.sql.gz.sha256`, raw_bytes: 1, stored_bytes: 1,
    sha256: "0".repeat(64), started_at: at, finished_at: at, duration_seconds: 0, dbkeep_version: "test", ...(differential ? { differential } : {}),
  };
}

describe("which run of a differential job is a full backup", () => {
  it("first run, max_chain, full_every, a changed schema and other jobs' backups", async () => {
    const store = createLocalStore({ path: tempDir("dbkeep-chain-") });
    const kind = (now: string, digest = "d1") => nextRunKind({ job: "nightly", engine, store, settings, schemaDigest: digest, now: new Date(now) });
    // A backup is its data object (1 byte here) and its manifest.
    const put = async (m: Manifest) => {
      await putText(store, m.key, "x");
      await putText(store, `app/${m.id}.manifest.json`, serializeManifest(m));
    };

    await put(manifest("app-other", "2026-01-01T00:00:00.000Z", { kind: "full", schema_digest: "d1", safe_point: "2026-01-01T00:00:00.000Z" }, "other-job"));
    expect(await kind("2026-01-01T01:00:00Z")).toMatchObject({ kind: "full", reason: "no full backup of this job to build on" });

    await put(manifest("app-full", "2026-01-01T02:00:00.000Z", { kind: "full", schema_digest: "d1", safe_point: "2026-01-01T01:59:00.000Z" }));
    const next = await kind("2026-01-01T03:00:00Z");
    expect(next.kind).toBe("differential");
    expect(next.base?.id).toBe("app-full");
    expect((await kind("2026-01-01T03:00:00Z", "d2")).reason).toMatch(/tables or their columns changed/);
    expect((await kind("2026-01-02T02:00:00Z")).reason).toMatch(/older than full_every/);

    const diff = { kind: "differential" as const, schema_digest: "d1", base: { id: "app-full", manifest_key: "app/app-full.manifest.json", sha256: "0".repeat(64) } };
    await put(manifest("app-d1", "2026-01-01T04:00:00.000Z", diff));
    expect((await kind("2026-01-01T05:00:00Z")).kind).toBe("differential");
    await put(manifest("app-d2", "2026-01-01T05:00:00.000Z", diff));
    expect(await kind("2026-01-01T06:00:00Z")).toMatchObject({ kind: "full", reason: "2 differential(s) on full backup app-full already (max_chain 2)" });
  });
});

describe("the engine a differential job dumps with", () => {
  const log = createLogger({ level: "silent" });
  const calls: string[] = [];
  const support = {
    schemaDigest: async () => "d1",
    safePoint: async () => "2026-01-01T00:00:00.000Z",
    dump: () => {
      calls.push("differential");
      const stream = new PassThrough();
      stream.end("-- dbkeep differential complete\n");
      return { stream, done: Promise.resolve({}) };
    },
  } as unknown as DifferentialSupport;
  // Like PostgreSQL's plain and custom formats: its dump writes into DumpOptions.output when it is given one.
  const piped = {
    name: "postgres",
    database: "app",
    format: "custom",
    extension: ".dump",
    dumpsToPipe: true,
    differential: support,
    dump: (opts: DumpOptions) => {
      calls.push(opts.output ? "full into the pipe" : "full into the stream");
      const stream = new PassThrough();
      stream.end("x");
      return { stream, done: Promise.resolve({}) };
    },
    extras: () => [],
  } as unknown as Engine;
  const plan = { name: "nightly", differential: settings };

  it("a differential never claims the kernel pipe (dbkeep writes it into the stream); a full backup keeps the engine's", async () => {
    const store = createLocalStore({ path: tempDir("dbkeep-prep-") });
    const full = await prepareDifferential(plan, piped, store, log, new Date("2026-01-01T01:00:00Z"));
    expect(full.dumpsToPipe).toBe(true);
    const output = Promise.resolve({ fd: -1, started: () => undefined });
    const r = await full.dump({ signal: new AbortController().signal, log, output }).done;
    expect(calls).toEqual(["full into the pipe"]);
    expect(r.differential).toMatchObject({ kind: "full", schema_digest: "d1", safe_point: "2026-01-01T00:00:00.000Z" });

    const at = "2026-01-01T01:00:00.000Z";
    const base = manifest("app-full", at, { kind: "full", schema_digest: "d1", safe_point: "2026-01-01T00:59:00.000Z" });
    await putText(store, base.key, "x");
    await putText(store, "app/app-full.manifest.json", serializeManifest(base));
    const diff = await prepareDifferential(plan, piped, store, log, new Date("2026-01-01T02:00:00Z"));
    expect(diff.format).toBe("differential");
    expect(diff.dumpsToPipe).toBe(false);
    expect(diff.extras).toBeUndefined();
  });
});
