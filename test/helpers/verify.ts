import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { z } from "zod";
import { resealManifest } from "./manifest.js";

/** The report's JSON shape as docs/verify.md documents it: every run's --json output is checked against it. */
const check = z.strictObject({
  name: z.string().regex(/^(checksum|restore|tables|row_counts|indexes|foreign_keys|views|functions|triggers|sequences|types|events|migrations|orphans|integrity|health_check|assertion:[A-Za-z0-9_.-]+)$/),
  status: z.enum(["PASS", "FAIL", "SKIP"]),
  detail: z.string().min(1),
  data: z.record(z.string(), z.unknown()).optional(),
});
export const reportSchema = z.strictObject({
  report_version: z.literal(1),
  ok: z.boolean(),
  job: z.string().nullable(),
  backup: z.strictObject({
    id: z.string(),
    key: z.string(),
    store: z.string(),
    engine: z.string(),
    format: z.string(),
    taken_at: z.string().datetime(),
    raw_bytes: z.number().int().nonnegative(),
    stored_bytes: z.number().int().nonnegative(),
    encrypted: z.boolean(),
  }),
  target: z.strictObject({ kind: z.enum(["database", "cluster", "file", "server"]), name: z.string(), where: z.string(), kept: z.boolean() }),
  started_at: z.string().datetime(),
  finished_at: z.string().datetime(),
  seconds: z.number().nonnegative(),
  restore: z.strictObject({ seconds: z.number().nonnegative(), bytes_per_second: z.number().nonnegative(), raw_bytes_per_second: z.number().nonnegative() }).nullable(),
  checks: z.array(check).min(1),
  summary: z.strictObject({ pass: z.number().int(), fail: z.number().int(), skip: z.number().int() }),
  leftovers_removed: z.array(z.string()),
});
export type Report = z.infer<typeof reportSchema>;

/** Parses `verify --json` output and checks its shape and internal consistency. */
export function parseReport(stdout: string): Report {
  const r = reportSchema.parse(JSON.parse(stdout));
  expect(r.summary.pass + r.summary.fail + r.summary.skip).toBe(r.checks.length);
  expect(r.ok).toBe(r.summary.fail === 0);
  return r;
}

export function checkOf(r: Report, name: string): Report["checks"][number] {
  const c = r.checks.find((x) => x.name === name);
  expect(c, `check ${name} in ${JSON.stringify(r.checks.map((x) => x.name))}`).toBeDefined();
  return c!;
}

function walk(dir: string, suffix: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...walk(join(dir, e.name), suffix));
    else if (e.name.endsWith(suffix)) out.push(join(dir, e.name));
  }
  return out;
}

/** The one manifest in a store directory. */
export function manifestPath(store: string): string {
  const found = walk(store, ".manifest.json");
  expect(found).toHaveLength(1);
  return found[0]!;
}

export function editManifest(store: string, edit: (m: Record<string, unknown>) => void): void {
  const p = manifestPath(store);
  const m = JSON.parse(readFileSync(p, "utf8")) as Record<string, unknown>;
  edit(m);
  writeFileSync(p, resealManifest(m));
}

/**
 * Rewrites the data of an uncompressed, unencrypted backup (a changed dump stored in its place), with the
 * manifest and sidecar updated to match: the backup is intact, its content is what `edit` made of it.
 */
export function rewriteDump(store: string, edit: (text: string) => string): void {
  const mp = manifestPath(store);
  const m = JSON.parse(readFileSync(mp, "utf8")) as { key: string; checksum_key: string; sha256: string; raw_bytes: number; stored_bytes: number; compression: string };
  expect(m.compression).toBe("none");
  const data = join(store, m.key);
  const before = readFileSync(data, "latin1");
  const after = Buffer.from(edit(before), "latin1");
  expect(after.toString("latin1")).not.toBe(before);
  writeFileSync(data, after);
  m.sha256 = createHash("sha256").update(after).digest("hex");
  m.raw_bytes = m.stored_bytes = after.length;
  writeFileSync(mp, resealManifest(m as unknown as Record<string, unknown>));
  writeFileSync(join(store, m.checksum_key), `${m.sha256}  ${m.key.split("/").pop()}\n`);
}

export function flipByte(file: string, at: number): void {
  const fd = openSync(file, "r+");
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, at);
  b[0] = b[0]! ^ 0x01;
  writeSync(fd, b, 0, 1, at);
  closeSync(fd);
}

/** The data file of the one backup in a store directory. */
export function dataPath(store: string): string {
  const m = JSON.parse(readFileSync(manifestPath(store), "utf8")) as { key: string };
  return join(store, m.key);
}

/** A process id that existed and is gone (a leftover's owner). */
export function deadPid(): number {
  const r = spawnSync("sh", ["-c", "echo $$"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}
