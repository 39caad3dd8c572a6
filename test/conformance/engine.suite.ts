import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, dbkeep, tempDir } from "../helpers/env.js";

/**
 * What an engine's own test file provides to run the shared suite: datasources as they would stand in a config
 * file, and a way to read what a user cares about (schema and per-table or per-key content hashes).
 */
export interface EngineHarness {
  /** The engine's `engine:` value, e.g. "postgres". */
  engine: string;
  /** Creates the source (with the fixture loaded) and an empty target; returns their datasource options. */
  setup(): Promise<{ source: Record<string, unknown>; target: Record<string, unknown> }>;
  /** What a user compares after a restore: e.g. { schema: "...", "table t": "rows:hash" }. */
  snapshot(which: "source" | "target"): Promise<Record<string, string>>;
  teardown(): Promise<void>;
  /** Datasource options whose credentials are wrong, and the words the one-line error must contain. */
  authFailure?: { options: Record<string, unknown>; message: RegExp };
  /** Cuts the server's side of a running dump (e.g. pg_terminate_backend); the dump must then fail. */
  interruptDump?: () => Promise<boolean>;
  /**
   * Datasource options that keep the dump running long enough to be cut (default: zstd -19). A compressor that
   * reads its whole input into large buffers first (zstd -T0 at high levels) lets a small dump finish at once.
   */
  interruptWith?: Record<string, unknown>;
  /** A datasource whose client tool cannot be found, and the error it must give. */
  missingTool?: { options: Record<string, unknown>; message: RegExp };
  /** Formats / compressions to roundtrip (default: the datasource's own, with zstd). */
  variants?: { label: string; options: Record<string, unknown> }[];
}

function writeConfig(dir: string, datasources: Record<string, Record<string, unknown>>): string {
  const file = join(dir, "dbkeep.yaml");
  const jobs = Object.fromEntries(Object.keys(datasources).map((d) => [`${d}-job`, { datasource: d, store: "local", prefix: d }]));
  writeFileSync(file, stringify({ datasources, stores: { local: { type: "local", path: join(dir, "backups") } }, jobs }), { mode: 0o600 });
  return file;
}

function listed(cfg: string, job: string): { backups: unknown[]; incomplete?: unknown[] } {
  const r = dbkeep(["-c", cfg, "list", job, "--json", "--all"]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { backups: unknown[]; incomplete?: unknown[] };
}

export function engineConformance(h: EngineHarness): void {
  describe(`engine conformance: ${h.engine}`, () => {
    let source: Record<string, unknown>;
    let target: Record<string, unknown>;
    let dir: string;

    beforeAll(async () => {
      dir = tempDir();
      ({ source, target } = await h.setup());
    });
    afterAll(async () => {
      await h.teardown();
    });

    for (const v of h.variants ?? [{ label: "zstd", options: { compression: "zstd" } }]) {
      it(`${v.label}: backup, restore into an empty target, same schema and content`, async () => {
        const cfg = writeConfig(dir, { src: { ...source, ...v.options }, dst: target });
        const b = dbkeep(["-c", cfg, "backup", "src-job"]);
        expect(b.stderr).not.toContain("error:");
        expect(b.code).toBe(0);
        const r = dbkeep(["-c", cfg, "restore", "src-job", "--to", "dst", "--auto-confirm"]);
        expect(r.stderr).not.toContain("error:");
        expect(r.code).toBe(0);
        const [a, c] = [await h.snapshot("source"), await h.snapshot("target")];
        expect(Object.keys(a).length).toBeGreaterThan(1);
        expect(c).toEqual(a);
      });
    }

    if (h.authFailure) {
      const auth = h.authFailure;
      it("an authentication failure is one clear line and exit 1", () => {
        const cfg = writeConfig(tempDir(), { bad: auth.options });
        const r = dbkeep(["-c", cfg, "backup", "bad-job"]);
        expect(r.code).toBe(1);
        const errors = r.stderr.split("\n").filter((l) => l.startsWith("error: "));
        expect(errors).toHaveLength(1);
        expect(r.stderr).toMatch(auth.message);
        expect(r.stderr).toMatch(/\nhint: /);
        expect(listed(cfg, "bad-job").backups).toEqual([]);
      });
    }

    if (h.interruptDump) {
      const interrupt = h.interruptDump;
      it("a server that goes away mid-dump fails the job and leaves nothing listed", async () => {
        const cfg = writeConfig(tempDir(), { src: { ...source, ...(h.interruptWith ?? { compression: "zstd", compression_level: 19 }) } });
        const child = spawn(process.execPath, [CLI, "-c", cfg, "backup", "src-job"], { stdio: ["ignore", "pipe", "pipe"] });
        let stderr = "";
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<number>((r) => child.once("close", (code) => r(code ?? -1)));
        let cut = false;
        for (let i = 0; i < 400 && !cut && child.exitCode === null; i++) {
          await new Promise((r) => setTimeout(r, 25));
          cut = await interrupt();
        }
        expect(cut, "the dump should have been interrupted while running").toBe(true);
        expect(await exited).toBe(1);
        expect(stderr).toMatch(/error: /);
        const after = listed(cfg, "src-job");
        expect(after.backups).toEqual([]);
        expect(after.incomplete).toEqual([]);
      });
    }

    if (h.missingTool) {
      const missing = h.missingTool;
      it("a missing client tool says which and how to get it, exit 1", () => {
        const cfg = writeConfig(dir, { src: { ...source, ...missing.options } });
        const r = dbkeep(["-c", cfg, "backup", "src-job"]);
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(missing.message);
      });
    }
  });
}
