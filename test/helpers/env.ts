import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import pg from "pg";
import { afterAll, expect } from "vitest";

export const ROOT = resolve(import.meta.dirname, "../..");
export const CLI = join(ROOT, "dist/bin/dbkeep.js");
export const IN_CI = process.env.CI === "true" || process.env.CI === "1";

export const PG = { host: "127.0.0.1", port: 5432, user: "postgres" };
export function pgUrl(db: string, params = ""): string {
  return `postgres://${PG.user}@${PG.host}:${PG.port}/${db}${params ? `?${params}` : ""}`;
}

/** A temp dir removed after the file's tests. */
export function tempDir(prefix = "dbkeep-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Whether the local PostgreSQL answers. Under CI a missing server is a failure, not a skip: the harness
 * (scripts/test-env.sh) must have started it.
 */
export async function pgAvailable(): Promise<boolean> {
  const c = new pg.Client({ ...PG, database: "postgres", connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.end();
    return true;
  } catch (err) {
    if (IN_CI) throw new Error(`PostgreSQL is not reachable at ${PG.host}:${PG.port} under CI: ${(err as Error).message}`, { cause: err });
    return false;
  }
}

export async function pgQuery<T extends pg.QueryResultRow = Record<string, unknown>>(db: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ ...PG, database: db });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

export async function dropDb(name: string): Promise<void> {
  await pgQuery("postgres", `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
}

export async function createDb(name: string): Promise<void> {
  await dropDb(name);
  await pgQuery("postgres", `CREATE DATABASE "${name}"`);
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Locks and the run history of the CLI runs of one test file stay in a temp dir of their own. */
const STATE_DIR = mkdtempSync(join(tmpdir(), "dbkeep-state-"));
export const CLI_ENV: Record<string, string> = { DBKEEP_STATE_DIR: STATE_DIR };
// Jobs run in the test process itself (runJob) take their locks there too: test files running side by side use
// the same job names, and must not find each other's locks.
process.env.DBKEEP_STATE_DIR ??= STATE_DIR;

/** Runs the built CLI as a user would. */
export function dbkeep(args: string[], opts: { cwd?: string; env?: Record<string, string>; input?: string } = {}): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...CLI_ENV, ...opts.env },
    input: opts.input ?? "",
    encoding: "utf8",
    timeout: 300_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * The built CLI, asynchronously: receivers living in the test process must be able to answer while it runs
 * (the spawnSync of dbkeep() would block them).
 */
export function dbkeepAsync(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...CLI_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

export function cleanup(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

/** The one stored data file under `<dir>/backups` whose name ends with `suffix` (asserts there is exactly one). */
export function storedBackup(dir: string, suffix: string): string {
  const found: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith(suffix)) found.push(join(d, e.name));
    }
  };
  walk(join(dir, "backups"));
  expect(found).toHaveLength(1);
  return found[0] ?? "";
}
